"""The local platform's autoscaler: the scheduler's per-pool demand (dask_regions.demand, the same plugin and
figure as in AWS) starts and stops `dask worker` processes per pool between the pool's bounds, as ECS and its
scaling policy do in AWS. A worker is stopped by retiring it through the scheduler, so its results stay in its
pool.

Run by the platform as `python -m local_platform.autoscaler --state-dir <state>`; it reads the pools from
`<state>/autoscale.json` and stops its workers when it is stopped (they share its process group).
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask_regions.demand import pool_demand
from dask_regions.drain import workers_named
from local_platform.state import HISTORY_FILE, SIZES_FILE, SPEC_FILE, PlatformState

RETIRE_GRACE_SECONDS = 30.0


class Stopping(BaseException):
    """SIGTERM or SIGINT: stop the pools and exit (a BaseException, so that no `except Exception` keeps it)."""


@dataclass
class PoolSpec:
    """One autoscaled pool: its bounds (worker processes) and the `dask worker` command without `--name`."""

    name: str
    minimum: int
    maximum: int
    command: list[str]


@dataclass
class _Worker:
    name: str
    process: subprocess.Popen[bytes]
    retiring_since: float | None = None


@dataclass
class LocalAutoscaler:
    client: Any
    pools: dict[str, PoolSpec]
    environment: dict[str, str]
    log_dir: Path
    workers: dict[str, list[_Worker]] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def step(self) -> dict[str, int]:
        """Bring every pool to its demand (within bounds); returns the live worker processes per pool."""
        demand = pool_demand(self.client)
        sizes = {}
        for pool, spec in self.pools.items():
            current = self._reap(pool)
            active = [w for w in current if w.retiring_since is None]
            wanted = min(max(int(demand.get(pool, {}).get("desired_tasks", 0)), spec.minimum), spec.maximum)
            for _ in range(wanted - len(active)):
                current.append(self._start(spec))
            for worker in list(reversed(active))[: max(len(active) - wanted, 0)]:
                self._retire(worker)
            sizes[pool] = len([w for w in current if w.retiring_since is None])
        return sizes

    def _reap(self, pool: str) -> list[_Worker]:
        alive = []
        for worker in self.workers.get(pool, []):
            if worker.process.poll() is not None:
                continue
            if worker.retiring_since is not None and time.monotonic() - worker.retiring_since > RETIRE_GRACE_SECONDS:
                worker.process.terminate()  # retired but still running: the nanny did not exit on its own
                continue
            alive.append(worker)
        self.workers[pool] = alive
        return alive

    def _start(self, spec: PoolSpec) -> _Worker:
        name = f"{spec.name}-{next(self._serial)}"
        with (self.log_dir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen([*spec.command, "--name", name], stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=self.environment)
        print(f"autoscaler: started {name} (pid {process.pid})", flush=True)
        return _Worker(name, process)

    def _retire(self, worker: _Worker) -> None:
        worker.retiring_since = time.monotonic()
        addresses = workers_named(self.client, worker.name)
        if addresses:
            self.client.retire_workers(workers=addresses, close_workers=True, remove=True)
        else:
            worker.process.terminate()  # never joined: nothing to hand back
        print(f"autoscaler: retired {worker.name}", flush=True)

    def stop(self) -> None:
        for worker in (w for pool in self.workers.values() for w in pool):
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in (w for pool in self.workers.values() for w in pool):
            try:
                worker.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def pool_history(state_dir: Path) -> dict[str, list[int]]:
    """Each autoscaled pool's successive sizes, e.g. {"pool-us-east-1": [0, 2, 1, 0]}."""
    path = state_dir / HISTORY_FILE
    story: dict[str, list[int]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        for pool, size in json.loads(line)["sizes"].items():
            sizes = story.setdefault(pool, [])
            if not sizes or sizes[-1] != size:
                sizes.append(size)
    return story


def current_sizes(state_dir: Path) -> dict[str, int]:
    path = state_dir / SIZES_FILE
    return {str(k): int(v) for k, v in json.loads(path.read_text()).items()} if path.exists() else {}


def write_spec(state_dir: Path, pools: list[PoolSpec], interval: float, idle_timeout: float) -> None:
    (state_dir / SPEC_FILE).write_text(json.dumps({"interval": interval, "idle_timeout": idle_timeout,
                                                   "pools": [p.__dict__ for p in pools]}))


def main(argv: list[str] | None = None) -> int:
    import os

    from distributed import Client

    parser = argparse.ArgumentParser(prog="python -m local_platform.autoscaler", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    state = PlatformState.load(args.state_dir.resolve())
    if state is None:
        print(f"no platform state in {args.state_dir}", file=sys.stderr)
        return 2
    spec = json.loads((args.state_dir / SPEC_FILE).read_text())
    pools = {p["name"]: PoolSpec(**p) for p in spec["pools"]}

    def stop(*_: object) -> None:
        raise Stopping  # at once, also out of a call to a scheduler that is gone

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    client = Client(state.scheduler_address, security=state.tls.security(), timeout=60)  # type: ignore[no-untyped-call]
    scaler = LocalAutoscaler(client, pools, dict(os.environ), args.state_dir / "logs")
    previous: dict[str, int] | None = None
    sizes = dict.fromkeys(pools, 0)  # it starts no worker before its first look at the demand
    try:
        while True:
            if sizes != previous:
                (args.state_dir / SIZES_FILE).write_text(json.dumps(sizes))
                with (args.state_dir / HISTORY_FILE).open("a") as history:
                    history.write(json.dumps({"time": time.time(), "sizes": sizes}) + "\n")
                previous = sizes
            time.sleep(float(spec["interval"]))
            sizes = scaler.step()
    except Stopping:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already
        scaler.stop()
        client.close(timeout=2)  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
