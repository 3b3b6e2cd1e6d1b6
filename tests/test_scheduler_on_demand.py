"""The scheduler on demand (issue 31, point 2): it stops its own service when idle (dask_regions.idle) and
`dask_regions.connect()` starts it again, waiting and saying so. Unit tests of the plugin's rule and of the start's
wait with stand-ins for the scheduler, ECS and the clock; then the twin, where ECS is the region's AWS emulation
(moto) and the agent runs the scheduler's service at the desired count set there."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask.config
import pytest

from dask_regions.demand import DemandSettings, PoolSizing
from dask_regions.errors import ConnectError
from dask_regions.idle import FIRE_AND_FORGET, OBSERVER, IdleShutdown, SchedulerService, start_scheduler
from platform_facts import SCHEDULER_IDLE_SHUTDOWN_VARIABLE, SCHEDULER_SERVICE_VARIABLE, regions_variable
from tests.conftest import cached_graph


class FakeService(SchedulerService):
    """ECS as the plugin and connect() see it: a desired and a running count."""

    def __init__(self, desired: int = 1, fail: bool = False) -> None:
        super().__init__("eu-west-2", "cluster", "scheduler")
        object.__setattr__(self, "state", {"desired": desired, "running": desired, "sets": [], "fail": fail})

    def desired_and_running(self) -> tuple[int, int]:
        return self.state["desired"], self.state["running"]  # type: ignore[attr-defined]

    def set_desired(self, count: int) -> None:
        if self.state["fail"]:  # type: ignore[attr-defined]
            raise RuntimeError("AccessDeniedException")
        self.state["sets"].append(count)  # type: ignore[attr-defined]
        self.state["desired"] = count  # type: ignore[attr-defined]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scheduler(clients: list[str], tasks: int = 0, workers: dict[str, int] | None = None) -> Any:
    states = [SimpleNamespace(resources={pool: 3}) for pool, count in (workers or {}).items() for _ in range(count)]
    return SimpleNamespace(clients={c: None for c in clients}, tasks=dict.fromkeys(range(tasks)),
                           workers={i: w for i, w in enumerate(states)})


def plugin(service: FakeService, clock: Clock, **sched: Any) -> IdleShutdown:
    demand = DemandSettings(pools={"pool-us-east-1": PoolSizing(workers_per_task=2, min_tasks=1)})
    idle = IdleShutdown(after=600, interval=30, service=service, demand=demand, clock=clock)
    idle.scheduler = scheduler(**sched)
    return idle


def check(idle: IdleShutdown) -> None:
    async def run() -> None:
        idle.check()
        if idle._stop_task is not None:
            await idle._stop_task
    loop = asyncio.new_event_loop()  # not asyncio.run: it leaves no current loop, which the Pulumi mocks need
    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


def test_the_scheduler_stops_after_the_quiet_time_with_no_client_and_no_task() -> None:
    service, clock = FakeService(), Clock()
    idle = plugin(service, clock, clients=[FIRE_AND_FORGET, f"Client-{OBSERVER}-1"])  # neither is a user
    clock.now = 599
    check(idle)
    assert service.state["sets"] == []  # type: ignore[attr-defined]
    clock.now = 601
    check(idle)
    assert service.state["sets"] == [0] and idle.stopping  # type: ignore[attr-defined]


@pytest.mark.parametrize("busy", [{"clients": ["Client-a1"]}, {"clients": [], "tasks": 3}])
def test_a_client_or_a_held_task_restarts_the_quiet_time(busy: dict[str, Any]) -> None:
    service, clock = FakeService(), Clock()
    idle = plugin(service, clock, **busy)
    clock.now = 1000
    check(idle)
    assert idle.quiet_since == 1000 and service.state["sets"] == []  # type: ignore[attr-defined]
    idle.scheduler = scheduler(clients=[])
    clock.now = 1599
    check(idle)
    assert service.state["sets"] == []  # type: ignore[attr-defined]


def test_the_quiet_time_runs_from_the_moment_the_last_client_left() -> None:
    service, clock = FakeService(), Clock()
    idle = plugin(service, clock, clients=["Client-a1"])
    check(idle)  # busy at 0
    clock.now = 20
    idle.scheduler = scheduler(clients=[])
    idle.remove_client(idle.scheduler, "Client-a1")
    clock.now = 619
    check(idle)
    assert service.state["sets"] == []  # type: ignore[attr-defined]
    clock.now = 621
    check(idle)
    assert service.state["sets"] == [0]  # type: ignore[attr-defined]


def test_it_waits_for_the_pools_to_shrink_to_their_minimum(caplog: pytest.LogCaptureFixture) -> None:
    service, clock = FakeService(), Clock()
    idle = plugin(service, clock, clients=[], workers={"pool-us-east-1": 3})  # minimum: 1 task of 2 workers
    clock.now = 700
    with caplog.at_level("INFO", logger="dask_regions.idle"):
        check(idle)
    assert service.state["sets"] == []  # type: ignore[attr-defined]
    assert "waiting for the pools to shrink first: pool-us-east-1 has 3 worker(s), its minimum 2" in caplog.text
    idle.scheduler = scheduler(clients=[], workers={"pool-us-east-1": 2})
    check(idle)
    assert service.state["sets"] == [0]  # type: ignore[attr-defined]


def test_a_failed_stop_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    service, clock = FakeService(fail=True), Clock()
    idle = plugin(service, clock, clients=[])
    clock.now = 700
    check(idle)
    assert not idle.stopping and "could not set eu-west-2" not in caplog.text
    assert "could not set cluster/scheduler (eu-west-2) to 0 tasks (AccessDeniedException)" in caplog.text
    service.state["fail"] = False  # type: ignore[attr-defined]
    check(idle)
    assert idle.stopping and service.state["sets"] == [0]  # type: ignore[attr-defined]


def test_start_sets_one_task_reports_while_it_waits_and_returns_the_wait() -> None:
    service, clock = FakeService(desired=0), Clock()
    said: list[str] = []
    answers = iter([False] * 40 + [True])

    def sleep(seconds: float) -> None:
        clock.now += seconds

    waited = start_scheduler(service, lambda: next(answers), timeout=300, report=said.append, clock=clock,
                             sleep=sleep)
    assert service.state["sets"] == [1] and waited == 40  # type: ignore[attr-defined]
    assert said[0] == "The scheduler is stopped (no one used it for a while); starting it: cluster/scheduler " \
                      "(eu-west-2) ..."
    assert [line for line in said if "still starting" in line] == [
        "  still starting after 15 s: 0 of 1 task(s) running", "  still starting after 30 s: 0 of 1 task(s) running"]
    assert said[-1] == "The scheduler answers, after 40 s."


def test_a_scheduler_that_does_not_come_up_ends_the_wait_naming_what_is_missing() -> None:
    service, clock = FakeService(desired=0), Clock()

    def sleep(seconds: float) -> None:
        clock.now += seconds
        service.state["running"] = 0  # type: ignore[attr-defined]

    with pytest.raises(ConnectError, match=r"did not answer within 60 s of being started: ECS reports 0 of 1 "
                                           r"task\(s\) running for cluster/scheduler \(eu-west-2\). Fix: read the "
                                           r"service's events \(`aws ecs describe-services --cluster cluster"):
        start_scheduler(service, lambda: False, timeout=60, report=lambda _: None, clock=clock, sleep=sleep)


def test_a_malformed_service_handle_in_the_kernel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCHEDULER_SERVICE_VARIABLE, "cluster/scheduler")
    with pytest.raises(ConnectError, match=f"{SCHEDULER_SERVICE_VARIABLE} is not the scheduler service's JSON"):
        SchedulerService.from_environment()


# -------------------------------------------------------------------------------------------- the graph
def test_the_dev_stack_declares_the_stop_the_start_and_only_their_permissions() -> None:
    graph = cached_graph("dev")
    (task,) = [t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition") if t.name == "client-scheduler"]
    (container,) = json.loads(task.inputs["containerDefinitions"])
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert environment[SCHEDULER_IDLE_SHUTDOWN_VARIABLE] == "60 minutes"
    service = graph.named("client-scheduler", "aws:ecs/service:Service")
    assert environment[regions_variable("idle-shutdown.service")] == service.inputs["name"]
    assert "dask_regions.idle" in container["command"] and service.ignore_changes == ("desiredCount",)
    arn = (f"arn:aws:ecs:eu-west-2:123456789012:service/{environment[regions_variable('idle-shutdown.cluster')]}/"
           f"{service.inputs['name']}")
    task_policy = json.loads(graph.named("client-scheduler-task-policy", "aws:iam/rolePolicy:RolePolicy")
                             .inputs["policy"])
    assert {"Sid": "StopItsOwnServiceWhenIdle", "Effect": "Allow", "Action": "ecs:UpdateService",
            "Resource": arn} in task_policy["Statement"]
    notebook_policy = json.loads(graph.named("client-notebook-policy", "aws:iam/rolePolicy:RolePolicy")
                                 .inputs["policy"])
    ecs = [s for s in notebook_policy["Statement"] if any(str(a).startswith("ecs:") for a in
                                                          ([s["Action"]] if isinstance(s["Action"], str)
                                                           else s["Action"]))]
    assert ecs == [{"Effect": "Allow", "Action": ["ecs:DescribeServices", "ecs:UpdateService"], "Resource": arn}]
    assert graph.outputs["schedulerService"]["region"] == "eu-west-2"


def test_an_always_on_scheduler_declares_neither() -> None:
    from tests.test_cost import overridden

    graph, _ = overridden(idleShutdownMinutes=0)
    (task,) = [t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition") if t.name == "client-scheduler"]
    assert SCHEDULER_IDLE_SHUTDOWN_VARIABLE not in task.inputs["containerDefinitions"]
    assert "ecs:UpdateService" not in str(graph.named("client-scheduler-task-policy",
                                                      "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert "ecs:" not in str(graph.named("client-notebook-policy", "aws:iam/rolePolicy:RolePolicy").inputs["policy"])
    assert graph.named("client-scheduler", "aws:ecs/service:Service").ignore_changes == ()


# ------------------------------------------------------------------------------------------------ the twin
@pytest.mark.slow
@pytest.mark.processes
def test_the_twins_scheduler_stops_when_idle_and_connect_starts_it_again(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import dask_regions as dr
    from local_platform.__main__ import DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW, overrides
    from local_platform.platform import LocalPlatform
    from tests.platform_helpers import processes_of
    from tests.test_twin import _wait

    local = overrides("dev", DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW)  # pools shrink at once after work
    local["client"] = {**local["client"], "idleShutdownMinutes": 1}
    state_dir = tmp_path / "state"
    platform = LocalPlatform("dev", state_dir, overrides=local)
    state = platform.up()
    try:
        for name, value in state.client_environment().items():  # the twin's kernel
            monkeypatch.setenv(name, value)
        dask.config.refresh()
        cluster = dr.connect()
        with cluster.get_client() as client:  # a client held open keeps the scheduler in use: closed here
            assert client.submit(sum, [1, 2], resources={"pool-us-east-1": 1}).result(timeout=120) == 3
        cluster.close()
        (first,) = processes_of(state_dir, b"scheduler", b"dask_regions.idle")
        # no client for a minute, the pool back to zero, then the next check (every 30 s): the service goes to 0
        _wait(lambda: not processes_of(state_dir, b"scheduler", b"dask_regions.idle"), 300, "the scheduler to stop")
        logs = "".join(p.read_text() for p in (state_dir / "logs").glob("scheduler-*.log"))
        assert "idle shutdown: no client for 1 minutes" in logs
        assert "set to 0 task(s) through ECS" in (state_dir / "logs" / "agent.log").read_text()

        said = io.StringIO()
        with redirect_stdout(said):
            cluster = dr.connect(timeout=5)
        assert "The scheduler is stopped (no one used it for a while); starting it:" in said.getvalue()
        assert "The scheduler answers, after" in said.getvalue()  # how long: bench/scheduler_restart.py
        (second,) = processes_of(state_dir, b"scheduler", b"dask_regions.idle")
        assert second != first
        # the same address, and a pool that grows from zero again on the restarted scheduler's demand
        with cluster.get_client() as client:
            assert client.submit(sum, [3, 4], resources={"pool-us-east-1": 1}).result(timeout=120) == 7
        cluster.close()
    finally:
        platform.down()
        monkeypatch.undo()
        dask.config.refresh()
    assert processes_of(state_dir) == []
