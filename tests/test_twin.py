"""The deployment twin (issue 16): the local platform runs what the resource graph declares.

Without processes: every resource of every recorded stack is either run or listed with its reason; the sizing
rule; the schedule expressions; the Step Functions interpreter's retry, catch and refusals.
With a running platform (each test its own state directory): a changed worker command and environment in the
component reach the local worker; the scheduler's and workers' DASK_* settings are the declared ones; the
scheduler's essential task is started again when it dies; the declared schedules run the declared state machine
and Lambda handler with the declared environment.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from dask_regions.catalog import Catalog
from local_platform.declared import LOCAL_SIZES, RUN, UNRUN, read_deployment, sized_demand_pools
from local_platform.nightly import ScheduleError, Schedules, next_time
from local_platform.platform import LocalPlatform
from local_platform.state import TWIN_FILE, PlatformState
from local_platform.step_functions import DefinitionError, TaskFailedError, run
from stackgraph.synth import synthesize
from tests.conftest import SHAPES, cached_graph
from tests.platform_helpers import processes_of, sync_history

DEMAND_POOLS = "DASK_DASK_REGIONS__DEMAND__POOLS"


# ------------------------------------------------------------------------------------------ the declaration
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_declared_resource_is_run_or_listed_with_its_reason(shape: str) -> None:
    graph = cached_graph(shape)
    deployment = read_deployment(graph)
    listed = [name for names in [*deployment.run.values(), *deployment.unrun.values()] for name in names]
    assert sorted(listed) == sorted(r.name for r in graph.resources if not r.type.startswith("crossregiondask:"))
    assert set(RUN).isdisjoint(UNRUN)
    assert [c.command[0] for c in deployment.containers].count("scheduler") == 1
    assert len(deployment.pools()) == len(graph.of_type("aws:appautoscaling/target:Target"))


def test_a_stack_of_users_is_read_with_each_users_scheduler_pools_secrets_logs_and_the_broker() -> None:
    from cluster_broker import SETTINGS_VARIABLE
    from stackconfig import PROJECT_DIR, raw_stack_config

    users = [{"name": "ana", "group": "climate"}, {"name": "bo", "group": "climate"}]
    graph = synthesize("dev", {"client": {**raw_stack_config(PROJECT_DIR, "dev")[1]["client"],
                                          "groups": [{"name": "climate"}], "users": users}})
    deployment = read_deployment(graph)
    listed = [name for names in [*deployment.run.values(), *deployment.unrun.values()] for name in names]
    assert sorted(listed) == sorted(r.name for r in graph.resources if not r.type.startswith("crossregiondask:"))
    assert sorted(deployment.schedulers(), key=str) == ["ana", "bo"]  # no team scheduler
    for container in deployment.containers:  # every secret from its own user's CA, every log in their directory
        assert container.user in ("ana", "bo")
        assert {ref.material for ref in container.secrets.values()} == {f"{container.command[0]}-{container.user}"}
        assert deployment.log_names[container.log_group].startswith(f"{container.user}/")
    assert deployment.scheduler_users == {f"scheduler-{user}.dev.cross-region-dask.internal": user
                                          for user in ("ana", "bo")}
    assert deployment.broker is not None and SETTINGS_VARIABLE in deployment.broker.environment
    assert [s.expression for s in deployment.broker_schedules] == ["rate(5 minutes)"]
    assert all(s.target in deployment.machines for s in deployment.schedules)


def test_the_twin_runs_no_pool_the_graph_does_not_declare() -> None:
    deployment = read_deployment(synthesize("dev"))
    pools = {c.flag("--resources") for c in deployment.pools()}
    assert pools == {"pool-us-east-1=3", "pool-us-west-2=3"}  # none in the client region, as in AWS


def test_the_sizing_rule_changes_counts_only() -> None:
    declared = {"pool-a": {"workers_per_task": 10, "threads_per_worker": 3, "min_tasks": 0, "max_tasks": 16,
                           "idle_timeout": 1800}}
    sized = json.loads(sized_demand_pools(json.dumps(declared)))
    assert sized == {"pool-a": {**declared["pool-a"], "workers_per_task": LOCAL_SIZES.workers_per_task,
                                "max_tasks": LOCAL_SIZES.max_tasks}}


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("cron(0 0 * * ? *)", "2026-11-30T03:00:00", "2026-12-01T00:00:00"),
    ("cron(30 2 * * ? *)", "2026-11-30T02:29:00", "2026-11-30T02:30:00"),
    ("cron(0/15 * * * ? *)", "2026-11-30T03:01:00", "2026-11-30T03:15:00"),
    ("cron(0 12 ? * MON-FRI *)", "2026-11-28T13:00:00", "2026-11-30T12:00:00"),  # Saturday -> Monday
    ("cron(0 0 1 JAN ? *)", "2026-11-30T00:00:00", "2027-01-01T00:00:00"),
    ("at(2026-11-30T05:00:00)", "2026-11-30T04:00:00", "2026-11-30T05:00:00"),
    ("at(2026-11-30T05:00:00)", "2026-11-30T06:00:00", None),
])
def test_schedule_expressions_fire_when_eventbridge_scheduler_fires_them(expression: str, after: str,
                                                                         expected: str | None) -> None:
    moment = next_time(expression, datetime.fromisoformat(after).replace(tzinfo=UTC))
    assert (moment.replace(tzinfo=None).isoformat() if moment else None) == expected


def test_an_expression_the_local_scheduler_cannot_evaluate_is_refused_by_name() -> None:
    with pytest.raises(ScheduleError, match="L, W and #"):
        next_time("cron(0 0 L * ? *)", datetime.now(UTC))
    with pytest.raises(ScheduleError, match="rate"):
        next_time("rate(5 minutes)", datetime.now(UTC))


# ------------------------------------------------------------------------------------------ the interpreter
def _definition() -> dict[str, Any]:
    from components.nightly_sync import workflow_definition

    return workflow_definition("arn:aws:lambda:us-east-1:123456789012:function:f")


def test_the_state_machine_retries_lambda_errors_and_catches_the_rest() -> None:
    calls: list[str] = []
    flaky = {"count": 0}

    def invoke(_: str, payload: dict[str, Any]) -> Any:
        calls.append(payload["action"])
        if payload["action"] == "start_import" and flaky["count"] < 2:
            flaky["count"] += 1
            raise TaskFailedError("Lambda.ServiceException", "throttled")
        if payload["action"] == "start_import":
            return {"taskId": "t", "polls": 0}
        if payload["action"] == "poll_import":
            return {"taskId": "t", "done": True, "succeeded": True, "polls": 1}
        if payload["action"] == "index":
            raise TaskFailedError("SinkError", "the catalog refused the load")
        return {"aborted": "x"}

    execution = run(_definition(), {"region": "r"}, invoke, sleep=lambda _: None)
    assert calls == ["start_import"] * 3 + ["poll_import", "index", "abort"]
    assert (execution.status, execution.error) == ("FAILED", "CatalogSyncFailed")
    assert execution.states[-3:] == ["Index", "Abort", "SyncFailed"]


def test_a_state_the_interpreter_does_not_run_is_refused_by_name() -> None:
    definition = _definition()
    definition["States"]["Fanout"] = {"Type": "Map", "Next": "Done"}
    with pytest.raises(DefinitionError, match="state Fanout: type 'Map'"):
        run(definition, {}, lambda *_: None)
    definition = _definition()
    definition["States"]["StartImport"]["TimeoutSeconds"] = 5
    with pytest.raises(DefinitionError, match="TimeoutSeconds not run locally"):
        run(definition, {}, lambda *_: None)


# ------------------------------------------------------------------------------------------ a running twin
def _environment(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(p.split("=", 1) for p in pairs if "=" in p)


def _wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)
    return value


@pytest.fixture
def changed_component(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The worker component declares one more flag and one more setting (as a change to it would)."""
    import components.worker_pool as worker_pool

    command, environment = worker_pool.worker_command, worker_pool.worker_environment
    monkeypatch.setattr(worker_pool, "worker_command", lambda *a: [*command(*a), "--lifetime", "1h"])
    monkeypatch.setattr(worker_pool, "worker_environment",
                        lambda config: [*environment(config), {"name": "DASK_TWIN_PROBE", "value": "declared"}])
    yield


@pytest.mark.slow
@pytest.mark.processes
def test_a_changed_worker_command_and_environment_reach_the_local_worker(changed_component: None,
                                                                         tmp_path: Path) -> None:
    from distributed import Client

    platform = LocalPlatform("dev", tmp_path / "state", overrides={"workers": [
        {"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds"}]})
    state = platform.up()
    try:
        with Client(state.scheduler_address, security=state.tls.security(), timeout=30) as client:
            client.submit(sum, [1, 2], resources={"pool-us-east-1": 1}).result(timeout=120)  # a task starts

            def seen(dask_worker: Any) -> tuple[Any, Any]:
                import dask

                return dask.config.get("twin-probe", None), dask_worker.lifetime

            answers = client.run(seen)
        assert set(map(tuple, answers.values())) == {("declared", 3600)}, answers
        (worker,) = processes_of(tmp_path / "state", b"entrypoint.py", b"worker")
        assert _environment(worker)["DASK_TWIN_PROBE"] == "declared"
    finally:
        platform.down()
    assert processes_of(tmp_path / "state") == []


@pytest.mark.slow
@pytest.mark.processes
def test_dask_settings_are_the_declared_ones_and_the_scheduler_is_started_again(tmp_path: Path) -> None:
    from distributed import Client

    from local_platform.__main__ import DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW, overrides

    local = overrides("dev", DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW)  # the demo's, through stack config keys
    deployment = read_deployment(synthesize("dev", local))
    platform = LocalPlatform("dev", tmp_path / "state", overrides=local)
    state = platform.up()
    try:
        with Client(state.scheduler_address, security=state.tls.security(), timeout=30) as client:
            client.submit(sum, [1, 2], resources={"pool-us-west-2": 1}).result(timeout=120)
        (scheduler,) = processes_of(tmp_path / "state", b"scheduler", b"dask_regions.routing")
        workers = processes_of(tmp_path / "state", b"bin/dask", b"worker")  # what the entrypoint started
        assert workers
        for pid, container in [(scheduler, deployment.scheduler())] + [(w, deployment.pools()[0]) for w in workers]:
            running = {k: v for k, v in _environment(pid).items() if k.startswith("DASK_")}
            declared = {k: v for k, v in container.environment.items() if k.startswith("DASK_")}
            # The documented differences: the sizing rule, the task's own TLS directory, the Lustre stand-in's
            # mount, and what the image's entrypoint itself sets (as in AWS).
            assert running.pop(DEMAND_POOLS, None) == (sized_demand_pools(declared.pop(DEMAND_POOLS))
                                                       if DEMAND_POOLS in declared else None)
            assert running.pop("DASK_TLS_DIR").startswith(str(tmp_path / "state" / "tasks"))
            declared.pop("DASK_TLS_DIR", None)
            running.pop("DASK_REGIONS_FSX_ROOT", None)
            assert running.pop("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION") == "True"
            running.pop("DASK_TLS_READY", None)
            assert running == declared
            assert not {"DASK_TLS_KEY", "DASK_TLS_CERT"} & set(_environment(pid))  # the key is in a file only
        assert json.loads(_environment(scheduler)[DEMAND_POOLS])["pool-us-east-1"]["idle_timeout"] == 0

        os.kill(scheduler, signal.SIGKILL)  # the essential container stops: ECS starts the task again
        _wait(lambda: [p for p in processes_of(tmp_path / "state", b"scheduler", b"dask_regions.routing")
                       if p != scheduler], 60, "a new scheduler task")
        with Client(state.scheduler_address, security=state.tls.security(), timeout=60) as client:
            assert client.submit(sum, [3, 4], resources={"pool-us-east-1": 1}).result(timeout=120) == 7
        assert "exited with -9; starting a replacement" in (tmp_path / "state" / "logs" / "agent.log").read_text()
    finally:
        platform.down()
    assert processes_of(tmp_path / "state") == []


@pytest.mark.slow
@pytest.mark.processes
def test_the_declared_schedules_run_the_state_machine_and_handler_with_the_declared_environment(
        tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    platform = LocalPlatform("dev", state_dir, overrides={"syncMaxDropPercent": 10})
    platform.up()
    try:
        first = sync_history(state_dir)  # the at() schedules, fired by `up`
        assert {(r["schedule"], r["status"]) for r in first} == {
            ("worker-us-east-1-catalog-sync-first-sync", "SUCCEEDED"),
            ("worker-us-west-2-catalog-sync-first-sync", "SUCCEEDED")}
        assert first[0]["states"] == ["StartImport", "WaitForImport", "PollImport", "ImportFinished?", "BeginIndex",
                                      "Index", "Indexed?", "BeginReferences", "Reference", "Referenced?", "Swap",
                                      "Done"]
        # ERA5's months name their collection's reference set, written to the declared bucket in the region's
        # emulation, where the region's workers read it.
        state = PlatformState.load(state_dir)
        assert state is not None
        months = Catalog.open(state.catalog).find(variable="air_temperature_at_2_metres")
        (uri,) = {m.references for m in months}
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        declared_buckets = {name for region, name in read_deployment(cached_graph("dev")).buckets
                            if region == "us-east-1"}
        assert bucket in declared_buckets
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=state.s3_endpoints["us-east-1"],
                          aws_access_key_id="local", aws_secret_access_key="local")
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
        twin = json.loads((state_dir / TWIN_FILE).read_text())
        declared = read_deployment(synthesize("dev", {"syncMaxDropPercent": 10})).functions
        for arn, function in twin["functions"].items():
            assert function["handler"] == declared[arn].handler
            assert function["environment"]["MAX_DROP"] == declared[arn].environment["MAX_DROP"] == "0.1"
        # The nightly cron() schedules, a day later: each starts its state machine once.
        schedules = Schedules(twin, state_dir, datetime.now(UTC) - timedelta(days=1))
        fired = schedules.fire_due(datetime.now(UTC))
        schedules.stop()
        assert sorted(fired) == ["worker-us-east-1-catalog-sync-schedule", "worker-us-west-2-catalog-sync-schedule"]
        nightly = sync_history(state_dir)[len(first):]
        assert {(r["schedule"], r["status"]) for r in nightly} == {(name, "SUCCEEDED") for name in fired}
    finally:
        platform.down()


# ------------------------------------------------------------------------------------------ the agent alone
@pytest.fixture
def sleeping_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tasks that only sleep, in place of the image's entrypoint."""
    import local_platform.agent as agent

    script = tmp_path / "task.py"
    script.write_text("import time\ntime.sleep(120)\n")
    monkeypatch.setattr(agent, "ENTRYPOINT", script)
    (tmp_path / "logs").mkdir()
    return tmp_path


@pytest.mark.processes
def test_the_agent_keeps_services_at_their_count_and_passes_over_protected_tasks(sleeping_tasks: Path) -> None:
    import urllib.request

    from local_platform.agent import Agent, TaskSpec, _serve

    root = str(sleeping_tasks / "tasks" / "{task}")
    fixed = TaskSpec("scheduler", "eu-west-2", [], {}, 1, 1, None, root, "scheduler")
    pool = TaskSpec("workers", "us-east-1", [], {}, 0, 2, "pool-us-east-1", root, "workers-us-east-1")
    agent = Agent([fixed, pool], sleeping_tasks / "logs")
    server = _serve(agent, {"scheduler": "eu-west-2", "workers": "us-east-1"})
    agent.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert agent.step({}) == {"pool-us-east-1": 0}  # no demand figure yet: the minimum
        assert agent.step({None: {"pool-us-east-1": {"desired_tasks": 5}}}) == {"pool-us-east-1": 2}  # within bounds
        first, second = agent.tasks["workers"]
        request = urllib.request.Request(f"{agent.endpoint}/agent/{first.id}/task-protection/v1/state", method="PUT",
                                         data=json.dumps({"ProtectionEnabled": True, "ExpiresInMinutes": 3}).encode())
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.load(answer)["protection"]["ProtectionEnabled"] is True
        with urllib.request.urlopen(f"{agent.endpoint}/v4/{second.id}/task", timeout=5) as answer:
            assert json.load(answer)["TaskARN"] == f"arn:aws:ecs:us-east-1:000000000000:task/local/{second.id}"
        assert agent.step({None: {"pool-us-east-1": {"desired_tasks": 0}}}) == {"pool-us-east-1": 1}
        assert second.stopping_since is not None and first.stopping_since is None  # the protected one stays
        (scheduler,) = agent.tasks["scheduler"]
        scheduler.process.kill()
        scheduler.process.wait()
        agent.step({None: {"pool-us-east-1": {"desired_tasks": 0}}})
        assert [t.id for t in agent.tasks["scheduler"]] != [scheduler.id] and agent.restarts == {"scheduler": 1}
    finally:
        agent.stop_all()
        server.shutdown()
    assert all(t.process.poll() is not None for tasks in agent.tasks.values() for t in tasks)


@pytest.mark.processes
def test_a_users_pool_follows_its_own_schedulers_demand_within_the_maximum_the_broker_set(
        sleeping_tasks: Path) -> None:
    """client.users: each user's pool has a pool name every user's has too; it moves on its own user's figures alone,
    and never past what its scaling target holds now (the broker sets it), nor the local sizes."""
    import boto3
    from moto.server import ThreadedMotoServer

    from local_platform.agent import Agent, TaskSpec

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"  # type: ignore[union-attr]
    autoscaling = boto3.client("application-autoscaling", region_name="us-east-1", endpoint_url=endpoint,
                               aws_access_key_id="local", aws_secret_access_key="local")
    ecs = boto3.client("ecs", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="local",
                       aws_secret_access_key="local")
    ecs.create_cluster(clusterName="pools")
    root = str(sleeping_tasks / "tasks" / "{task}")

    def pool(user: str) -> TaskSpec:
        resource = f"service/pools/workers-{user}"
        ecs.create_service(cluster="pools", serviceName=f"workers-{user}", desiredCount=0)
        autoscaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource, MinCapacity=0,
                                             MaxCapacity=16, ScalableDimension="ecs:service:DesiredCount")
        return TaskSpec(f"workers-{user}", "us-east-1", [], {}, 0, 2, "pool-us-east-1", root, f"{user}/workers",
                        user=user, target={"region": "us-east-1", "endpoint": endpoint, "resource_id": resource})

    (sleeping_tasks / "logs" / "ana").mkdir()
    (sleeping_tasks / "logs" / "bo").mkdir()
    agent = Agent([pool("ana"), pool("bo")], sleeping_tasks / "logs")
    try:
        wanted = {"pool-us-east-1": {"desired_tasks": 5}}
        assert agent.step({"ana": wanted, "bo": None}) == {"ana:pool-us-east-1": 2, "bo:pool-us-east-1": 0}
        autoscaling.register_scalable_target(ServiceNamespace="ecs", ResourceId="service/pools/workers-ana",
                                             MinCapacity=0, MaxCapacity=1,
                                             ScalableDimension="ecs:service:DesiredCount")  # the broker's share
        assert agent.step({"ana": wanted, "bo": wanted}) == {"ana:pool-us-east-1": 1, "bo:pool-us-east-1": 2}
        assert [p.name for p in (sleeping_tasks / "logs" / "bo").glob("workers-*.log")]  # each user's directory
    finally:
        agent.stop_all()
        server.stop()


def test_the_local_function_url_knows_the_caller_by_the_signature_and_throttles_a_second_request() -> None:
    from local_platform.function_url import THROTTLED, local_broker

    assert local_broker(None) is None
    spec = {"name": "broker", "region": "eu-west-2", "settings": "{}", "endpoints": {},
            "schedules": [{"name": "rebalance", "expression": "rate(5 minutes)", "input": {"action": "rebalance"}}]}
    broker = local_broker(spec)
    assert broker is not None and broker.every == 300.0
    assert broker.fire_due(broker._next - 1) is None  # not yet: the first comes one period after the start
    due = broker._next
    broker.broker = lambda: SimpleNamespace(rebalance=lambda: ["a warning"])  # type: ignore[method-assign]
    assert broker.fire_due(due) == ["a warning"] and broker._next == due + 300  # then every 5 minutes
    assert broker.fire_due(due + 299) is None
    with pytest.raises(ValueError, match=r"schedule odd \(cron\(0 0 \* \* \? \*\), .*\): the twin fires the broker's "
                                         r"rebalance on rate\(N minutes\) only"):
        local_broker({**spec, "schedules": [{"name": "odd", "expression": "cron(0 0 * * ? *)",
                                             "input": {"action": "rebalance"}}]})
    assert broker.url_config("broker", "http://here") == (200, {
        "FunctionUrl": "http://here/lambda-url/broker/", "FunctionArn": "broker", "AuthType": "AWS_IAM"})
    assert broker.url_config("other", "http://here")[0] == 404
    signed = {"Authorization": "AWS4-HMAC-SHA256 Credential=role-of-ana/20261207/eu-west-2/lambda/aws4_request, "
                               "SignedHeaders=host, Signature=x"}
    assert broker.request("broker", {}, "{}")[0] == 403  # unsigned
    assert broker.request("broker", {"Authorization": signed["Authorization"].replace("eu-west-2", "us-east-1")},
                          "{}")[0] == 403  # signed for another region
    assert broker._busy.acquire()
    try:
        assert broker.request("broker", signed, "{}") == (429, json.dumps(THROTTLED))  # one at a time
    finally:
        broker._busy.release()
    seen = []
    import local_platform.function_url as function_url

    def handle(event: dict[str, Any], _: Any) -> dict[str, Any]:
        seen.append(event["requestContext"]["authorizer"]["iam"]["userArn"])
        return {"statusCode": 200, "body": '{"cluster": "starting"}'}

    original = function_url.handle
    function_url.handle = handle  # type: ignore[assignment]
    try:
        broker.broker = lambda: None  # type: ignore[assignment,method-assign,return-value]
        assert broker.request("broker", signed, '{"action": "start"}') == (200, '{"cluster": "starting"}')
    finally:
        function_url.handle = original
    assert seen == ["arn:aws:sts::000000000000:assumed-role/role-of-ana/local"]  # as cluster_broker.caller_role reads
