"""A real multi-pool Dask cluster as separate processes: a scheduler with the region router preloaded and
one `dask worker` process per pool (each with its own nannies), all in their own process groups."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from stackconfig import PROJECT_DIR

DASK = shutil.which("dask", path=str(Path(sys.executable).parent)) or "dask"


class RegionalCluster:
    def __init__(self, directory: Path, pools: dict[str, int], *, threads: int = 2, combine_pool: str | None = None,
                 missing_pool_timeout: float = 30, fsx_root: Path | None = None,
                 hide_data_from_scheduler: bool = False, isolate_regions: bool = False,
                 demand: dict[str, object] | None = None, regions: list[str] | None = None,
                 pool_env: dict[str, dict[str, str]] | None = None) -> None:
        self.directory, self.pools, self.threads = directory, pools, threads
        self.scheduler_file = directory / "scheduler.json"
        self.env = {**os.environ, "DASK_DASK_REGIONS__MISSING_POOL_TIMEOUT": str(missing_pool_timeout),
                    "PYTHONPATH": str(PROJECT_DIR),
                    "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
                    "DASK_DASK_REGIONS__WARM_CONNECTIONS": "True"}  # as the platform deploys its scheduler
        if combine_pool:
            self.env["DASK_DASK_REGIONS__COMBINE_POOL"] = combine_pool
        if regions is not None:  # the configured regions (as the platform sets them); unset: those of seen pools
            self.env["DASK_DASK_REGIONS__REGIONS"] = json.dumps(regions)
        self.preloads = ["dask_regions.routing"]
        if demand is not None:  # the per-pool demand plugin, with settings as the platform passes them
            self.preloads.append("dask_regions.demand")
            from tests.platform_helpers import settings_environment

            self.env |= settings_environment(demand)
        if fsx_root:
            self.env["DASK_REGIONS_FSX_ROOT"] = str(fsx_root)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.pool_env = pool_env or {}  # a pool's own variables, e.g. its region's AWS endpoint
        self.worker_args: list[str] = []  # extra `dask worker` arguments, e.g. preloads
        # The scheduler in its own mount namespace with an empty file system over every region's data.
        self.fsx_root = fsx_root
        self.hide = [fsx_root] if fsx_root and (hide_data_from_scheduler or isolate_regions) else []
        # Each pool in its own mount namespace in which every other region's data directory is empty: a task
        # that reads another region's files fails there (FileNotFoundError) instead of reading across regions.
        self.isolate_regions = isolate_regions

    def _hidden_from(self, pool: str) -> list[Path]:
        if not (self.isolate_regions and self.fsx_root):
            return []
        return [path for path in sorted(self.fsx_root.iterdir()) if path.is_dir() and f"pool-{path.name}" != pool]

    def _spawn(self, name: str, args: list[str], hide: list[Path] | None = None,
               env: dict[str, str] | None = None) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        command = [DASK, *args]
        if hide:
            mounts = " && ".join(f"mount -t tmpfs -o size=1m hidden-region-data {shlex.quote(str(path))}"
                                 for path in hide)
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mounts} && exec "$0" "$@"',
                       *command]
        self.processes[name] = subprocess.Popen(command, env={**self.env, **(env or {})}, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> RegionalCluster:
        self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(self.scheduler_file),
                                  *(arg for module in self.preloads for arg in ("--preload", module))],
                    hide=self.hide)
        deadline = time.monotonic() + 60
        while not self.scheduler_file.exists():
            if time.monotonic() > deadline or self.processes["scheduler"].poll() is not None:
                raise RuntimeError("scheduler did not start: " + (self.directory / "scheduler.log").read_text())
            time.sleep(0.1)
        for pool, workers in self.pools.items():
            self.start_pool(pool, workers)
        return self

    def start_pool(self, pool: str, workers: int) -> None:
        self._spawn(pool, ["worker", "--scheduler-file", str(self.scheduler_file), "--host", "127.0.0.1",
                           "--nworkers", str(workers), "--nthreads", str(self.threads), "--no-dashboard",
                           "--resources", f"{pool}={self.threads}", "--name", pool,
                           "--local-directory", str(self.directory / pool), *self.worker_args],
                    hide=self._hidden_from(pool), env=self.pool_env.get(pool))

    def stop_pool(self, pool: str) -> None:
        process = self.processes.pop(pool)
        os.killpg(process.pid, signal.SIGKILL)  # a region going away, not a polite shutdown
        process.wait(timeout=30)

    @property
    def address(self) -> str:
        return str(json.loads(self.scheduler_file.read_text())["address"])

    def client(self) -> Any:
        from distributed import Client

        client = Client(self.address, timeout=60)
        client.wait_for_workers(sum(self.pools.values()), timeout=120)
        return client

    def close(self) -> None:
        from local_platform.processes import stop_groups

        stop_groups(self.processes.values())
        self.processes.clear()
