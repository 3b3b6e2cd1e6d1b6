"""The local platform's control plane: what ECS, Application Auto Scaling and EventBridge Scheduler do in AWS, for
the services and schedules the resource graph declares (`<state>/twin.json`, written by `up`).

- Every service keeps its tasks running: a fixed service (the scheduler) its declared count, started again when
  its essential container stops; a scaled service (a worker pool) follows the scheduler's demand figure for its
  pool (dask_regions.demand, the figure AWS scales on) between its bounds.
- A task is stopped as ECS stops one: SIGTERM, so the image's entrypoint drains its workers through the scheduler
  first; tasks protected from scale-in (dask_regions.protection, through the agent endpoint served here) are
  passed over until their protection expires.
- Each task finds its id at `$ECS_CONTAINER_METADATA_URI_V4/task` (the entrypoint names its workers with it) and
  its protection endpoint at `$ECS_AGENT_URI`, both served by this process.
- cron() schedules start their state machine on time (local_platform.nightly).

Run by the platform as `python -m local_platform.agent --state-dir <state>`. On SIGTERM it stops the pools
first (they drain through the live scheduler), then the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local_platform.emulation import emulation_client
from local_platform.function_url import FUNCTION_URL, URL_CONFIG, LocalBroker, local_broker
from local_platform.json_http import JsonHandler
from local_platform.state import HISTORY_FILE, SIZES_FILE, PlatformState, read_twin, size_key
from stackconfig import PROJECT_DIR

STOP_GRACE_SECONDS = 30.0  # a stopping task drains first; ECS's stop timeout plays this part in AWS
ENTRYPOINT = PROJECT_DIR / "images" / "dask" / "entrypoint.py"


class Stopping(BaseException):
    """SIGTERM or SIGINT: stop every task and exit (a BaseException, so that no `except Exception` keeps it)."""


@dataclass
class TaskSpec:
    """One service's task as this machine runs it: the entrypoint's arguments and the whole environment."""

    service: str
    region: str
    arguments: list[str]
    environment: dict[str, str]
    minimum: int
    maximum: int
    pool: str | None  # the worker pool whose demand moves it; None: a fixed service
    task_root: str  # where each task's own directories (its tmpfs mounts) go
    log_name: str  # its log files' prefix: the process names `get_logs()` gives in AWS (scheduler, workers-<region>)
    # a fixed service whose desired count is set through ECS (a scheduler that stops when idle): its region, cluster,
    # service and the AWS emulation holding it; None: its declared count
    ecs: dict[str, str] | None = None
    user: str | None = None  # whose cluster (client.users): its pool follows that user's scheduler's demand
    # a user's pool: its scaling target (region, endpoint, resource_id), whose maximum the broker sets
    target: dict[str, str] | None = None

    @property
    def size_key(self) -> str:
        return size_key(self.pool or "", self.user)


@dataclass
class Task:
    id: str
    process: subprocess.Popen[bytes]
    stopping_since: float | None = None
    protected_until: float = 0.0


@dataclass
class Agent:
    services: list[TaskSpec]
    log_dir: Path
    endpoint: str = ""  # this agent's HTTP address (metadata and protection)
    tasks: dict[str, list[Task]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    ecs_counts: dict[str, int] = field(default_factory=dict)  # service -> the desired count last read through ECS
    maxima: dict[str, int] = field(default_factory=dict)  # a user's pool -> the maximum last read (the broker's)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def find(self, task_id: str) -> Task | None:
        with self._lock:
            return next((t for tasks in self.tasks.values() for t in tasks if t.id == task_id), None)

    def step(self, demand: Mapping[str | None, dict[str, dict[str, Any]] | None]) -> dict[str, int]:
        """Bring every service to its desired count; returns the running (not stopping) tasks of each pool (by
        `size_key`). `demand`: each scheduler's figures, by its user (None: the team's); a scheduler's are None, or
        missing, while it cannot be asked: its pools then keep their size."""
        sizes = {}
        for spec in self.services:
            current = self._reap(spec)
            active = [t for t in current if t.stopping_since is None]
            figures = demand.get(spec.user)
            if spec.pool is None:
                wanted = self._desired(spec, len(active))
            elif figures is None:
                wanted = max(len(active), spec.minimum)
            else:
                figure = int(figures.get(spec.pool, {}).get("desired_tasks", 0))
                wanted = min(max(figure, spec.minimum), self._maximum(spec))
            for _ in range(wanted - len(active)):
                self._start(spec)  # joins `current`, the service's task list
            surplus = len(active) - wanted
            now = time.monotonic()
            for task in [t for t in reversed(active) if t.protected_until <= now][:max(surplus, 0)]:
                self._stop(task)
            if spec.pool is not None:
                sizes[spec.size_key] = len([t for t in current if t.stopping_since is None])
        return sizes

    def scheduler_running(self, user: str | None = None) -> bool:
        return any(t.process.poll() is None and t.stopping_since is None for s in self.services
                   if s.pool is None and s.user == user for t in self.tasks.get(s.service, []))

    def _maximum(self, spec: TaskSpec) -> int:
        """A pool's maximum: its local bound, and for a user's pool what its scaling target holds now (the broker
        sets it); while that cannot be read, the last maximum read, at first the local bound."""
        if spec.target is None:
            return spec.maximum
        target = spec.target
        known = self.maxima.get(spec.service, spec.maximum)
        try:
            autoscaling = emulation_client("application-autoscaling", target["region"], target["endpoint"])
            found = autoscaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[target["resource_id"]])[
                "ScalableTargets"]
            self.maxima[spec.service] = min(spec.maximum, int(found[0]["MaxCapacity"]))
        except Exception as error:
            print(f"agent: cannot read {spec.service}'s maximum ({error}); keeping {known}", flush=True)
        return self.maxima.get(spec.service, known)

    def _desired(self, spec: TaskSpec, running: int) -> int:
        """A fixed service's count: declared, or what its ECS service is set to now; while that cannot be read
        (the emulation busy or stopping), the last count read, at first the declared one."""
        if spec.ecs is None:
            return spec.minimum
        ecs = spec.ecs
        known = self.ecs_counts.get(spec.service, spec.minimum)
        try:
            client = emulation_client("ecs", ecs["region"], ecs["endpoint"])
            found = client.describe_services(cluster=ecs["cluster"], services=[ecs["service"]])["services"]
            wanted = int(found[0]["desiredCount"])
        except Exception as error:
            print(f"agent: cannot read {ecs['service']}'s desired count ({error}); keeping {known}", flush=True)
            return known
        self.ecs_counts[spec.service] = wanted
        if wanted != running:
            print(f"agent: {spec.service} set to {wanted} task(s) through ECS", flush=True)
        return wanted

    def _reap(self, spec: TaskSpec) -> list[Task]:
        alive = []
        for task in self.tasks.get(spec.service, []):
            if task.process.poll() is not None:
                if task.stopping_since is None:  # stopped on its own: ECS starts a replacement
                    self.restarts[spec.service] = self.restarts.get(spec.service, 0) + 1
                    print(f"agent: task {task.id} of {spec.service} exited with {task.process.returncode}; "
                          "starting a replacement", flush=True)
                continue
            if task.stopping_since is not None and time.monotonic() - task.stopping_since > STOP_GRACE_SECONDS:
                task.process.kill()  # past its stop timeout, as ECS does
            alive.append(task)
        with self._lock:
            self.tasks[spec.service] = alive
        return alive

    def _start(self, spec: TaskSpec) -> Task:
        task_id = f"local{next(self._serial):04d}"
        environment = {key: value.replace("{task}", task_id) for key, value in spec.environment.items()}
        environment["ECS_CONTAINER_METADATA_URI_V4"] = f"{self.endpoint}/v4/{task_id}"
        environment["ECS_AGENT_URI"] = f"{self.endpoint}/agent/{task_id}"
        Path(spec.task_root.replace("{task}", task_id)).mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.log_dir / f"{spec.log_name}-{task_id}.log").open("wb") as log:  # a user's: their directory
            process = subprocess.Popen([sys.executable, str(ENTRYPOINT), *spec.arguments], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment)
        print(f"agent: started task {task_id} of {spec.service} (pid {process.pid})", flush=True)
        task = Task(task_id, process)
        with self._lock:
            self.tasks.setdefault(spec.service, []).append(task)
        return task

    def _stop(self, task: Task) -> None:
        task.stopping_since = time.monotonic()
        task.process.terminate()  # the entrypoint drains the task's workers, then stops Dask
        print(f"agent: stopping task {task.id}", flush=True)

    def stop_all(self) -> None:
        """Pools first, so that they drain through the scheduler while it still runs; then the rest."""
        for fixed in (False, True):
            chosen = [t for s in self.services if (s.pool is None) == fixed for t in self.tasks.get(s.service, [])]
            for task in chosen:
                if task.process.poll() is None:
                    task.process.terminate()
            for task in chosen:
                try:
                    task.process.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    task.process.kill()
                    task.process.wait()


def _serve(agent: Agent, region_of: dict[str, str], port: int = 0,
           broker: LocalBroker | None = None) -> ThreadingHTTPServer:
    """The task metadata endpoint (`/v4/<task>/task`) and the agent's protection endpoint
    (`/agent/<task>/task-protection/v1/state`), on loopback; with client.users, the cluster broker's function URL
    and its URL's lookup (local_platform.function_url)."""

    class Handler(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if broker is not None and (lookup := URL_CONFIG.match(self.path.split("?")[0])):
                self._reply(*broker.url_config(lookup.group(1), f"http://127.0.0.1:{port}"))
                return
            parts = self.path.strip("/").split("/")
            task = agent.find(parts[1]) if len(parts) == 3 and parts[0] == "v4" and parts[2] == "task" else None
            if task is None:
                self._reply(404, {"error": "no such task"})
                return
            service = next((s for s, tasks in agent.tasks.items() if task in tasks), "")
            region = region_of.get(service, "")
            self._reply(200, {"TaskARN": f"arn:aws:ecs:{region}:000000000000:task/local/{task.id}"})

        def do_POST(self) -> None:  # noqa: N802
            called = FUNCTION_URL.match(self.path.split("?")[0])
            if broker is None or called is None:
                self._reply(404, {"error": "no such function URL"})
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            self._reply_json_text(*broker.request(called.group(1), dict(self.headers.items()), body))

        def do_PUT(self) -> None:  # noqa: N802
            parts = self.path.strip("/").split("/")
            task = agent.find(parts[1]) if len(parts) >= 2 and parts[0] == "agent" else None
            if task is None or parts[2:] != ["task-protection", "v1", "state"]:
                self._reply(404, {"error": "no such task"})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            minutes = float(body.get("ExpiresInMinutes", 120)) if body.get("ProtectionEnabled") else 0.0
            task.protected_until = time.monotonic() + minutes * 60
            self._reply(200, {"protection": {"ProtectionEnabled": bool(minutes), "ExpiresInMinutes": minutes}})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def pool_history(state_dir: Path) -> dict[str, list[int]]:
    """Each scaled pool's successive sizes, e.g. {"pool-us-east-1": [0, 2, 1, 0]}."""
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


class Demand:
    """A scheduler's demand figures, through a client that is made again after the scheduler restarted."""

    def __init__(self, state: PlatformState) -> None:
        self.state = state
        self.client: Any = None

    def read(self) -> dict[str, dict[str, Any]] | None:
        from distributed import Client

        from dask_regions.demand import pool_demand
        from dask_regions.idle import OBSERVER

        try:
            if self.client is None:
                # An observer, as the demand reader is none in AWS: it does not keep the scheduler from stopping
                # when idle (dask_regions.idle).
                self.client = Client(self.state.scheduler_address, security=self.state.tls.security(),  # type: ignore[no-untyped-call]
                                     timeout=5, name=OBSERVER)
            return pool_demand(self.client)
        except Exception as error:  # the scheduler is starting or restarting: ask again next time
            print(f"agent: no demand figures ({type(error).__name__}: {error})", flush=True)
            self.close()
            return None

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=2)
            self.client = None


def main(argv: list[str] | None = None) -> int:
    from local_platform.nightly import Schedules

    parser = argparse.ArgumentParser(prog="python -m local_platform.agent", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    state_dir = args.state_dir.resolve()
    state = PlatformState.load(state_dir)
    if state is None:
        print(f"no platform state in {state_dir}", file=sys.stderr)
        return 2
    twin = read_twin(state_dir)
    services = [TaskSpec(**s) for s in twin["services"]]
    agent = Agent(services, state_dir / "logs")
    broker = local_broker(twin.get("broker"))
    port = int(str(twin.get("agent_endpoint") or ":0").rsplit(":", 1)[1])
    server = _serve(agent, {s.service: s.region for s in services}, port, broker)
    agent.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    schedules = Schedules(twin, state_dir, datetime.now(UTC))

    def stop(*_: object) -> None:
        raise Stopping

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Each scheduler's demand (the team's, or each user's), read while it runs.
    demands = {user: Demand(state.for_user(user)) for user in sorted({s.user for s in services if s.pool}, key=str)}
    previous: dict[str, int] | None = None
    try:
        sizes = agent.step({})  # the schedulers' tasks first; pools start at their minimum
        while True:
            if sizes != previous:
                (state_dir / SIZES_FILE).write_text(json.dumps(sizes))
                with (state_dir / HISTORY_FILE).open("a") as history:
                    history.write(json.dumps({"time": time.time(), "sizes": sizes}) + "\n")
                previous = sizes
            time.sleep(float(twin["interval"]))
            schedules.fire_due(datetime.now(UTC))
            if broker is not None and (warnings := broker.fire_due()) is not None:
                print(f"agent: the cluster broker's schedule shared the regions again; warnings: {warnings}",
                      flush=True)
            # No scheduler task (stopped when idle): no figures to read, and its pools keep their size, as in AWS.
            sizes = agent.step({user: demand.read() if agent.scheduler_running(user) else None
                                for user, demand in demands.items()})
    except Stopping:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for demand in demands.values():
            demand.close()
        agent.stop_all()
        schedules.stop()
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
