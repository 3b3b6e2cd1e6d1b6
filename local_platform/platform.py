"""Start, inspect and stop the local platform. Every process it starts is recorded (pid and command line)
in the state directory, and `down` stops exactly those."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from catalog_sync.published import FileCounts
from catalog_sync.records import Association
from catalog_sync.sinks import open_sink
from catalog_sync.sync import sync_region
from dask_regions.demand import settings_environment
from local_platform.autoscaler import PoolSpec, write_spec
from local_platform.data import publish, sample_kind, write_cmip6_like, write_era5_like
from local_platform.fsx_standin import LocalFsx
from local_platform.state import (
    CATALOG_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    PUBLISHED_COUNTS_FILE,
    SIZES_FILE,
    STATE_FILE,
    PlatformState,
)
from local_platform.tls import create_local_tls, load_local_tls
from stackconfig import StackConfig, WorkerConfig

BIN = Path(sys.executable).parent
WORKER_THREADS = 2
START_TIMEOUT = 60.0
LOCAL_MAX_WORKERS = 2  # per pool: a 2-core machine gains nothing from more
AUTOSCALE_INTERVAL = 1.0
DEMAND_SETTINGS = {"interval": 1.0, "scale_in_window": 5.0, "target_duration": 2.0, "scale_up_timeout": 120.0}


class PlatformError(RuntimeError):
    """The platform could not do what was asked; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(entry: dict[str, Any]) -> bool:
    """The recorded process is still running and is still ours (a pid can be reused by another program)."""
    try:
        arguments = Path(f"/proc/{entry['pid']}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return entry["command"][0] in arguments[:2]  # scripts run as `<interpreter> <script> ...`


def group_alive(group: int) -> bool:
    """Whether any process of the group still runs (zombies, dead but not yet reaped, do not count)."""
    return bool(members(group))


@contextlib.contextmanager
def _exclusive(path: Path, refusal: str) -> Iterator[None]:
    """An exclusive, non-blocking lock on `path` for the duration (released by the OS if the holder dies)."""
    import fcntl

    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PlatformError(refusal) from None
        yield


def members(group: int) -> list[int]:
    """The live processes of a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def runs_from(pid: int, fsx_root: Path) -> bool:
    """Whether a process was started by the platform whose Lustre stand-in is `fsx_root` (its environment says
    so): how `down` and the tests tell this platform's processes from everything else on the machine."""
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"DASK_REGIONS_FSX_ROOT={fsx_root}".encode() in environment


def _reap(pid: int) -> None:
    """Collect a child's exit status if it is ours, so it leaves no zombie behind."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_for_port(port: int, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PlatformError(f"{what} exited at start; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise PlatformError(f"{what} did not listen on port {port} within {START_TIMEOUT:.0f} s; see {log}")


class LocalPlatform:
    def __init__(self, config: StackConfig, state_dir: Path, *, catalog: str = "sqlite", size: int = 1,
                 idle_timeout: float | None = None, report: Callable[[str], None] = lambda _: None) -> None:
        if catalog not in ("sqlite", "opensearch"):
            raise PlatformError(f"--catalog {catalog!r}: use sqlite or opensearch")
        if size < 1:
            raise PlatformError(f"--size {size}: use 1 or more (1 is small enough for a 2-core laptop)")
        self.config, self.state_dir, self.catalog_kind, self.size = config, state_dir.resolve(), catalog, size
        self.report = report
        if idle_timeout is not None and idle_timeout <= 0:
            raise PlatformError(f"--idle-timeout {idle_timeout:g}: use a number of seconds above 0")
        self.idle_timeout = idle_timeout
        self.fsx_root = self.state_dir / "fsx"

    # ------------------------------------------------------------------------------------------ up
    def up(self) -> PlatformState:
        """Start the platform; refused (changing nothing) while another `up` starts one from the same state
        directory, or while one runs there."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.state_dir / LOCK_FILE, f"another `up` or `demo` is starting a platform from "
                                                    f"{self.state_dir} right now: wait for it, then see `status`"):
            return self._up()

    def _up(self) -> PlatformState:
        running = PlatformState.load(self.state_dir)
        if running and any(_alive(p) for p in running.processes.values()):
            raise PlatformError(f"a platform (stack {running.stack!r}) is already running from {self.state_dir}: "
                                f"see `python -m local_platform status --state-dir {self.state_dir}`, or stop it "
                                "with `down`")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("fsx", "staging", CATALOG_FILE, "logs", "tls", SIZES_FILE, HISTORY_FILE):
            path = self.state_dir / stale
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        (self.state_dir / "logs").mkdir()
        state = PlatformState(stack=self.config.stack, state_dir=str(self.state_dir), catalog="",
                              tls_dir=str(self.state_dir / "tls"))
        create_local_tls(Path(state.tls_dir))
        state.save()
        try:
            self._start(state)
        except BaseException:
            self.down()
            raise
        return state

    def _start(self, state: PlatformState) -> None:
        for worker in self.config.workers:
            port = free_port()
            process = self._spawn(state, f"s3-{worker.region}",
                                  [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])
            _wait_for_port(port, f"the S3 emulation of {worker.region}", process, self._log(f"s3-{worker.region}"))
            state.s3_endpoints[worker.region] = f"http://127.0.0.1:{port}"
        if self.catalog_kind == "opensearch":
            from osmem_server import resolve_binary

            port = free_port()
            process = self._spawn(state, "catalog", [resolve_binary(), "-addr", f"127.0.0.1:{port}",
                                                     "-no-stdin-watch", "-no-ja"])
            _wait_for_port(port, "the catalog (osmem)", process, self._log("catalog"))
            state.catalog = f"http://127.0.0.1:{port}"
        else:
            state.catalog = f"sqlite:///{self.state_dir / CATALOG_FILE}"
        state.save()

        self.report("generating sample data and uploading it to the S3 emulations")
        for worker in self.config.workers:
            self._publish_dataset(state, worker.region)

        dashboard = free_port()
        scheduler_file = self.state_dir / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        tls = state.tls
        self._spawn(state, "scheduler", [str(BIN / "dask"), "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                                         "--port", "0", "--dashboard-address", f"127.0.0.1:{dashboard}",
                                         "--scheduler-file", str(scheduler_file),
                                         "--preload", "dask_regions.routing", "--preload", "dask_regions.demand",
                                         *tls.flags("scheduler")])
        deadline = time.monotonic() + START_TIMEOUT
        while not scheduler_file.exists():
            if time.monotonic() > deadline:
                raise PlatformError(f"the scheduler did not start; see {self._log('scheduler')}")
            time.sleep(0.1)
        state.scheduler_address = json.loads(scheduler_file.read_text())["address"]
        state.dashboard_url = f"http://127.0.0.1:{dashboard}/status"
        # As in AWS, no pool in the client region (a task combining regions runs in the pool holding most of its
        # inputs): the worker regions' pools follow the scheduler's demand between their bounds (the autoscaler).
        scaled = [PoolSpec(w.pool_name, w.min_tasks, min(w.max_tasks, LOCAL_MAX_WORKERS),
                           self._worker_command(w.pool_name, scheduler_file))
                  for w in self.config.workers]
        write_spec(self.state_dir, scaled, AUTOSCALE_INTERVAL,
                   max((self._idle_seconds(w) for w in self.config.workers), default=0.0))
        if scaled:
            self._spawn(state, "autoscaler", [sys.executable, "-m", "local_platform.autoscaler",
                                              "--state-dir", str(self.state_dir)])
        state.pools += [spec.name for spec in scaled]
        state.save()

        self.report("running the nightly sync once per worker region")
        for worker in self.config.workers:
            self._sync(state, worker.region)
        self._wait_for_scheduler(state)
        state.save()

    def _worker_command(self, pool: str, scheduler_file: Path) -> list[str]:
        tls = load_local_tls(self.state_dir / "tls")
        return [str(BIN / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1",
                "--nworkers", "1", "--nthreads", str(WORKER_THREADS), "--resources", f"{pool}={WORKER_THREADS}",
                "--no-dashboard", "--dashboard-address", "127.0.0.1:0",  # its HTTP server runs even without one
                "--local-directory", str(self.state_dir / "dask" / pool), *tls.flags("worker")]

    def _idle_seconds(self, worker: WorkerConfig) -> float:
        return self.idle_timeout if self.idle_timeout is not None else worker.idle_timeout_minutes * 60.0

    def _demand_environment(self) -> dict[str, str]:
        """The demand plugin's settings: the worker regions' pools with their local bounds and idle timeout."""
        pools = {w.pool_name: {"workers_per_task": 1, "threads_per_worker": WORKER_THREADS, "min_tasks": w.min_tasks,
                               "max_tasks": min(w.max_tasks, LOCAL_MAX_WORKERS),
                               "idle_timeout": self._idle_seconds(w)}
                 for w in self.config.workers}
        return settings_environment({**DEMAND_SETTINGS, "pools": pools})

    def _environment(self) -> dict[str, str]:
        root = str(Path(__file__).resolve().parent.parent)
        return {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "DASK_REGIONS_FSX_ROOT": str(self.fsx_root), "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": self.config.client.region,
                "DASK_DASK_REGIONS__REGIONS": json.dumps(sorted({w.region for w in self.config.workers})),
                "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
                **self._demand_environment()}

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _spawn(self, state: PlatformState, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with self._log(name).open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=self._environment(), start_new_session=True)
        state.processes[name] = {"pid": process.pid, "command": command}
        state.save()
        return process

    def _s3(self, state: PlatformState, region: str) -> Any:
        import boto3

        return boto3.client("s3", region_name=region, endpoint_url=state.s3_endpoints[region],
                            aws_access_key_id="local", aws_secret_access_key="local")

    def _publish_dataset(self, state: PlatformState, region: str) -> None:
        worker = next(w for w in self.config.workers if w.region == region)
        staging = self.state_dir / "staging" / region
        if sample_kind(worker.dataset.prefix) == "cmip6":
            write_cmip6_like(staging, years=range(2090 - 5 * self.size, 2101))
        else:
            write_era5_like(staging, years=tuple(range(2000, 2000 + self.size)))
        publish(self._s3(state, region), staging, worker.dataset.bucket, worker.dataset.prefix, region)

    def _sync(self, state: PlatformState, region: str) -> None:
        worker = next(w for w in self.config.workers if w.region == region)
        association = Association(region, worker.dataset.bucket, worker.dataset.prefix, worker.fsx_path)
        s3 = self._s3(state, region)
        sync_region(s3, association, open_sink(state.catalog), fsx=LocalFsx(s3, association, self.fsx_root),
                    file_system_id=f"fs-local-{region}", sleep=lambda _: None,
                    max_drop=self.config.sync_max_drop_percent / 100,  # the stack's limit, as in AWS
                    counts=FileCounts(self.state_dir / PUBLISHED_COUNTS_FILE))  # kept if the catalog restarts

    def _wait_for_scheduler(self, state: PlatformState) -> None:
        """Until the scheduler answers and the autoscaler has taken charge of the pools (it reports their sizes);
        pools start at their minimum and scale on demand."""
        from distributed import Client

        with Client(state.scheduler_address, timeout=START_TIMEOUT,  # type: ignore[no-untyped-call]
                    security=state.tls.security()) as client:
            client.scheduler_info()
        deadline = time.monotonic() + START_TIMEOUT
        while "autoscaler" in state.processes and not (self.state_dir / SIZES_FILE).exists():
            if time.monotonic() > deadline:
                raise PlatformError(f"the autoscaler did not start; see {self._log('autoscaler')}")
            time.sleep(0.1)

    # ----------------------------------------------------------------------------------- down, status
    def down(self) -> list[str]:
        """Stop every process this platform started (and nothing else); returns their names. A group whose leader
        has died is still stopped when any of its processes is this platform's."""
        state = PlatformState.load(self.state_dir)
        if state is None:
            return []
        fsx_root = Path(state.state_dir) / "fsx"
        stopped = []
        for name, entry in state.processes.items():
            group = entry["pid"]
            if _alive(entry) or any(runs_from(pid, fsx_root) for pid in members(group)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + 20
        for name in stopped:  # wait for each whole process group (nannies and workers included)
            group = state.processes[name]["pid"]
            while group_alive(group) and time.monotonic() < deadline:
                _reap(group)
                time.sleep(0.1)
            if group_alive(group):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            _reap(group)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        return stopped

    @staticmethod
    def status(state_dir: Path) -> tuple[PlatformState | None, dict[str, bool]]:
        state = PlatformState.load(state_dir.resolve())
        if state is None:
            return None, {}
        return state, {name: _alive(entry) for name, entry in state.processes.items()}
