"""Demand-driven scaling per region and Spot capacity: the per-pool demand figure on a real cluster, its
publisher, draining to the own pool, the local agent, and the AWS wiring in the recorded graph."""

from __future__ import annotations

import itertools
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from components.scaling import MAX_STEPS, exact_capacity_steps
from dask_regions.demand import CloudWatchPublisher, PoolFigure, pool_demand
from stackconfig import ConfigError, load_stack_file
from stackgraph.synth import PROJECT_DIR, Graph, synthesize
from tests.regional_cluster import RegionalCluster

EAST, WEST = "pool-us-east-1", "pool-us-west-2"
FAST = {"interval": 0.2, "scale_in_window": 2.0, "idle_timeout": 4.0, "target_duration": 0.5}


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# -------------------------------------------------------------------------------------- the demand figure
@pytest.mark.slow
@pytest.mark.processes
def test_only_the_busy_pools_demand_rises_and_it_decays_to_zero_after_the_idle_timeout(tmp_path: Path) -> None:
    cluster = RegionalCluster(tmp_path, {EAST: 1, WEST: 1}, demand=FAST).start()
    try:
        with cluster.client() as client:
            futures = [client.submit(time.sleep, 1, pure=False, resources={EAST: 1}) for _ in range(8)]
            busy = wait_until(lambda: (d := pool_demand(client)) and d.get(EAST, {}).get("tasks", 0) >= 6 and d, 20,
                              "queued work")
            assert busy[EAST]["workers_needed"] >= 2  # 8 one-second tasks on one 2-thread worker: more workers
            assert busy[WEST]["tasks"] == 0 and busy[WEST]["workers_needed"] == 0  # the other region stays at 0
            client.gather(futures)
            del futures
            # Smoothing: just after the work ends, the figure has not fallen yet ...
            assert pool_demand(client)[EAST]["workers_needed"] >= 1
            # ... it keeps one warm worker until the idle timeout, then goes to zero.
            wait_until(lambda: pool_demand(client)[EAST]["workers_needed"] == 1
                       and pool_demand(client)[EAST]["raw_workers"] == 0, 8, "the scale-in window to pass")
            zero = wait_until(lambda: (f := pool_demand(client)[EAST])["workers_needed"] == 0 and f, 10,
                              "the idle timeout")
            assert zero["idle_seconds"] >= FAST["idle_timeout"]  # not before the pool was idle that long
            assert all(figure["workers_needed"] == 0 for figure in pool_demand(client).values())
    finally:
        cluster.close()


@pytest.mark.processes
def test_a_pool_holding_wanted_results_keeps_a_worker(tmp_path: Path) -> None:
    cluster = RegionalCluster(tmp_path, {EAST: 1}, demand=FAST).start()
    try:
        with cluster.client() as client:
            # Runs long enough for the plugin to see the pool busy: its idle time counts from then.
            held = client.submit(lambda: (time.sleep(1), b"x" * 1000)[1], resources={EAST: 1})
            held.result()
            figure = wait_until(lambda: (f := pool_demand(client)[EAST])["idle_seconds"] > FAST["idle_timeout"]
                                + FAST["scale_in_window"] and f, 20, "the idle timeout to pass")
            assert figure["holds_results"] and figure["workers_needed"] == 1  # results stay in their region
            del held
            wait_until(lambda: pool_demand(client)[EAST]["workers_needed"] == 0, 10, "release of the result")
    finally:
        cluster.close()


@pytest.mark.processes
def test_configured_pools_are_reported_in_tasks_within_their_bounds(tmp_path: Path) -> None:
    pools = {EAST: {"workers_per_task": 2, "threads_per_worker": 2, "min_tasks": 1, "max_tasks": 2}}
    cluster = RegionalCluster(tmp_path, {EAST: 1}, demand={**FAST, "pools": pools}).start()
    try:
        with cluster.client() as client:
            futures = [client.submit(time.sleep, 1, pure=False, resources={EAST: 1}) for _ in range(20)]
            busy = wait_until(lambda: (d := pool_demand(client)) and d.get(EAST, {}).get("workers_needed", 0) >= 5
                              and d, 20, "queued work")
            assert busy[EAST]["desired_tasks"] == 2 and busy[EAST]["scalable"]  # capped at max_tasks
            client.cancel(futures)
            wait_until(lambda: pool_demand(client)[EAST]["workers_needed"] == 0, 15, "idle")
            assert pool_demand(client)[EAST]["desired_tasks"] == 1  # never below min_tasks
    finally:
        cluster.close()


@pytest.mark.processes
def test_the_router_waits_for_a_configured_pool_to_scale_up_instead_of_failing(tmp_path: Path) -> None:
    """An empty configured pool is expected to grow (minutes on EC2): its tasks wait; an unknown pool's fail."""
    scalable = {"pool-eu-north-1": {"max_tasks": 1}}
    cluster = RegionalCluster(tmp_path, {EAST: 1}, missing_pool_timeout=1,
                              demand={**FAST, "pools": scalable, "scale_up_timeout": 60}).start()
    try:
        with cluster.client() as client:
            waiting = client.submit(sum, [1], resources={"pool-eu-north-1": 1})
            doomed = client.submit(sum, [2], resources={"pool-ap-south-1": 1})
            with pytest.raises(Exception, match="region ap-south-1 is not a configured region"):
                doomed.result(timeout=20)
            assert waiting.status == "pending"
            assert pool_demand(client)["pool-eu-north-1"]["desired_tasks"] == 1  # it asks for a worker
            import dask_regions

            dask_regions.wait_for_pools(client, ["pool-eu-north-1"], timeout=1)  # scalable: nothing to wait for
    finally:
        cluster.close()


@pytest.mark.processes
def test_a_task_no_worker_of_the_pool_can_run_holds_no_capacity_up(tmp_path: Path) -> None:
    """More slots than a worker offers: the demand figure ignores it, and the router fails it in its timeout."""
    from dask_regions.errors import UnrunnableTaskError

    pools = {EAST: {"threads_per_worker": 2, "max_tasks": 3}}
    cluster = RegionalCluster(tmp_path, {EAST: 1}, missing_pool_timeout=3, demand={**FAST, "pools": pools}).start()
    try:
        with cluster.client() as client:
            greedy = client.submit(sum, [1], resources={EAST: 5}, pure=False)
            wait_until(lambda: client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.unrunnable)), 10,
                       "the task to wait for a worker")
            figures = client.run_on_scheduler(lambda dask_scheduler: (
                dask_scheduler.plugins["dask-regions-demand"]._compute(),
                dask_scheduler.plugins["dask-regions-demand"].snapshot())[1])
            assert figures[EAST]["tasks"] == 0  # it does not count as work for the pool
            with pytest.raises(UnrunnableTaskError, match=f"asks for {EAST}=5, but each worker of {EAST} offers 2"):
                greedy.result(timeout=30)
    finally:
        cluster.close()


# -------------------------------------------------------------------------------------------- publishing
def _figure(pool: str = EAST, desired: int = 3) -> PoolFigure:
    return PoolFigure(pool=pool, region=pool.removeprefix("pool-"), tasks=9, expected_seconds=9.0, workers=1,
                      threads=2, raw_workers=desired, workers_needed=desired, desired_tasks=desired, min_tasks=0,
                      max_tasks=10, idle_seconds=0.0, holds_results=False, scalable=True)


def test_the_publisher_puts_the_figure_into_cloudwatch_in_the_pools_region(moto_endpoint: str) -> None:
    import boto3

    def client(region: str) -> Any:
        return boto3.client("cloudwatch", region_name=region, endpoint_url=moto_endpoint)

    CloudWatchPublisher("cross-region-dask-test", client_factory=client).publish([_figure(EAST, 3), _figure(WEST, 0)])
    for region, value in (("us-east-1", 3.0), ("us-west-2", 0.0)):
        metrics = client(region).list_metrics(Namespace="CrossRegionDask", MetricName="DesiredTasks")["Metrics"]
        dimensions = [{d["Name"]: d["Value"] for d in m["Dimensions"]} for m in metrics]
        assert {"Stack": "cross-region-dask-test", "Pool": f"pool-{region}"} in dimensions
        statistics = client(region).get_metric_statistics(
            Namespace="CrossRegionDask", MetricName="DesiredTasks", StartTime=time.time() - 600,
            EndTime=time.time() + 60, Period=60, Statistics=["Maximum"],
            Dimensions=[{"Name": "Stack", "Value": "cross-region-dask-test"},
                        {"Name": "Pool", "Value": f"pool-{region}"}])
        assert [p["Maximum"] for p in statistics["Datapoints"]] == [value]


def test_a_failed_publish_is_logged_and_retried_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    import boto3
    from botocore.config import Config

    def unreachable(region: str) -> Any:
        return boto3.client("cloudwatch", region_name=region, endpoint_url="http://127.0.0.1:9",
                            aws_access_key_id="x", aws_secret_access_key="x",
                            config=Config(retries={"max_attempts": 1}, connect_timeout=1))

    publisher = CloudWatchPublisher("s", attempts=3, backoff=0.01, client_factory=unreachable)
    with caplog.at_level(logging.WARNING, logger="dask_regions.demand"):
        publisher.publish([_figure()])  # must not raise
    assert publisher.failures == 3
    assert [r.getMessage().split(" failed ")[1][:16] for r in caplog.records] == [
        "(attempt 1 of 3)", "(attempt 2 of 3)", "(attempt 3 of 3)"]


@pytest.mark.slow
@pytest.mark.processes
def test_a_scheduler_whose_publishing_fails_keeps_scheduling(tmp_path: Path) -> None:
    cluster = RegionalCluster(tmp_path, {EAST: 1}, demand={**FAST, "publisher": "cloudwatch", "stack": "s"})
    cluster.env |= {"AWS_ENDPOINT_URL_CLOUDWATCH": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x",
                    "AWS_SECRET_ACCESS_KEY": "x", "AWS_MAX_ATTEMPTS": "1"}
    cluster.start()
    try:
        with cluster.client() as client:
            assert client.submit(sum, [1, 2], resources={EAST: 1}).result(timeout=30) == 3
            wait_until(lambda: "publishing the demand of pool-us-east-1 to CloudWatch in us-east-1 failed"
                       in (tmp_path / "scheduler.log").read_text(), 30, "a logged publish failure")
            assert client.submit(sum, [3, 4], resources={EAST: 1}).result(timeout=30) == 7
            assert cluster.processes["scheduler"].poll() is None
    finally:
        cluster.close()


# ------------------------------------------------------------------------------ draining on interruption
@pytest.mark.slow
@pytest.mark.processes
def test_a_draining_worker_hands_its_work_back_to_its_own_pool(tmp_path: Path) -> None:
    """SIGTERM to a worker task (scale-in, or ECS draining a Spot instance on its two-minute notice): the image's
    entrypoint retires the task's workers first: results move to the same pool, running work is redone there."""
    from local_platform.tls import create_local_tls
    from tests.test_dask_tls import ENTRYPOINT, _role_environment, _stop

    tls = create_local_tls(tmp_path / "ca")
    scheduler_file = tmp_path / "scheduler.json"
    extra = {"PYTHONPATH": str(PROJECT_DIR), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    processes = [subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file),
         "--preload", "dask_regions.routing"],
        env=_role_environment(tls, "scheduler", tmp_path / "run-s") | extra, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        def written() -> bool:  # Dask writes the file in place: it may exist before its JSON is whole
            try:
                return bool(json.loads(scheduler_file.read_text())["address"])
            except (OSError, ValueError, KeyError):
                return False

        wait_until(written, 60, "the scheduler")
        address = json.loads(scheduler_file.read_text())["address"]
        workers = {}
        for name, pool in (("us-east-1-task-a", EAST), ("us-east-1-task-b", EAST), ("us-west-2-task-a", WEST)):
            workers[name] = subprocess.Popen(
                [sys.executable, str(ENTRYPOINT), "worker", address, "--host", "127.0.0.1", "--nthreads", "2",
                 "--no-dashboard", "--resources", f"{pool}=2", "--name", name],
                env=_role_environment(tls, "worker", tmp_path / f"run-{name}") | extra, start_new_session=True,
                stdout=(tmp_path / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
            processes.append(workers[name])
        from distributed import Client

        with Client(address, security=tls.security(), timeout=30) as client:
            client.wait_for_workers(3, timeout=60)
            by_name = {info["name"]: addr for addr, info in client.scheduler_info(n_workers=-1)["workers"].items()}
            leaving, staying = by_name["us-east-1-task-a"], by_name["us-east-1-task-b"]
            results = [client.submit(lambda i: bytes(100_000) + bytes([i]), i, workers=[leaving],
                                     resources={EAST: 1}, pure=False) for i in range(4)]
            client.gather(results)
            running = [client.submit(time.sleep, 2, pure=False, resources={EAST: 1}) for _ in range(4)]
            wait_until(lambda: client.processing([leaving])[leaving], 30, "work on the leaving worker")
            workers["us-east-1-task-a"].send_signal(signal.SIGTERM)
            assert workers["us-east-1-task-a"].wait(timeout=60) is not None
            client.gather(running, errors="raise")  # the running work finished elsewhere in the pool
            holders = {w for ws in client.who_has(results).values() for w in ws}
            assert holders == {staying}  # every result now on the other us-east-1 worker, none in us-west-2
            assert [r[-1] for r in client.gather(results)] == [0, 1, 2, 3]
    finally:
        for process in reversed(processes):
            _stop(process)


def test_worker_names_get_the_ecs_task_id(tmp_path: Path) -> None:
    from tests.test_dask_tls import _entrypoint_module

    entrypoint = _entrypoint_module()
    arguments = ["worker", "tls://s:8786", "--nworkers", "2", "--name", "us-east-1"]
    assert entrypoint.unique_worker_name(arguments, "0123456789abcdef0123")[-1] == "us-east-1-0123456789ab"
    assert entrypoint.unique_worker_name(arguments, None) == arguments


@pytest.mark.processes
def test_busy_workers_protect_their_task_from_scale_in_and_idle_ones_let_it_expire(tmp_path: Path) -> None:
    """Against a stand-in for the ECS agent's task protection endpoint: renewals only while there is work."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls: list[tuple[float, dict[str, Any]]] = []

    class Agent(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            assert self.path == "/task-protection/v1/state"
            calls.append((time.monotonic(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cluster = RegionalCluster(tmp_path, {EAST: 1})
    cluster.env |= {"ECS_AGENT_URI": f"http://127.0.0.1:{server.server_address[1]}",
                    "DASK_DASK_REGIONS__PROTECTION__INTERVAL": "0.2"}
    cluster.worker_args = ["--preload", "dask_regions.protection"]
    cluster.start()
    try:
        with cluster.client() as client:
            time.sleep(1.5)
            assert calls == []  # idle: no protection asked
            futures = [client.submit(time.sleep, 1.5, pure=False, resources={EAST: 1}) for _ in range(2)]
            client.gather(futures)
            assert len(calls) >= 3 and all(body == {"ProtectionEnabled": True, "ExpiresInMinutes": 3}
                                           for _, body in calls)
            done = time.monotonic()
            time.sleep(1.5)
            assert not [t for t, _ in calls if t > done + 0.5]  # idle again: no renewal, the protection expires
    finally:
        cluster.close()
        server.shutdown()


# ------------------------------------------------------------------------------------------ the local agent
def _live_workers_of(pool: str, state_dir: Path) -> list[int]:
    """Worker processes of `pool` started by the platform of `state_dir` (never another platform's, or anyone's
    else on this machine)."""
    from tests.platform_helpers import processes_of

    return processes_of(state_dir, b"worker", pool.encode() + b"=")


@pytest.mark.slow
@pytest.mark.processes
def test_the_local_agent_starts_and_stops_real_worker_tasks_on_demand(tmp_path: Path) -> None:
    from distributed import Client

    from local_platform.__main__ import overrides
    from local_platform.platform import LocalPlatform
    from local_platform.state import PlatformState

    # No warm worker and a short scale-in window: local-only settings, through their stack config keys.
    platform = LocalPlatform("dev", tmp_path / "state", overrides=overrides("dev", 0, 2))
    state = platform.up()
    try:
        # minTasks 0: nothing idle runs
        assert _live_workers_of(EAST, tmp_path / "state") == [] and _live_workers_of(WEST, tmp_path / "state") == []
        with Client(state.scheduler_address, security=state.tls.security(), timeout=30) as client:
            futures = [client.submit(time.sleep, 0.5, pure=False, resources={EAST: 1}) for _ in range(12)]
            wait_until(lambda: len(_live_workers_of(EAST, tmp_path / "state")) >= 1, 30,
                       "a us-east-1 worker process")
            client.gather(futures)
            assert _live_workers_of(WEST, tmp_path / "state") == []  # no work there, no process there
            del futures
            wait_until(lambda: _live_workers_of(EAST, tmp_path / "state") == [], 40,
                       "the us-east-1 workers to stop")
        from local_platform.agent import pool_history

        story = pool_history(tmp_path / "state")
        assert story[EAST][0] == 0 and max(story[EAST]) >= 1 and story[EAST][-1] == 0
        assert PlatformState.load(tmp_path / "state") is not None
    finally:
        platform.down()
    assert _live_workers_of(EAST, tmp_path / "state") == []


# ---------------------------------------------------------------------------------------- AWS wiring
def _worker_graph(**worker: Any) -> Graph:
    base = {"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds"}
    return synthesize("dev", {"workers": [{**base, **worker}]})


def _of(graph: Graph, token: str, name: str) -> Any:
    return graph.named(name, token)


def test_each_worker_region_scales_on_its_pools_demand_down_to_zero(dev_graph: Graph) -> None:
    for region, pool in (("us-east-1", EAST), ("us-west-2", WEST)):
        target = _of(dev_graph, "aws:appautoscaling/target:Target", f"worker-{region}-workers")
        assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (0, 16)
        policy = _of(dev_graph, "aws:appautoscaling/policy:Policy", f"worker-{region}-workers-demand")
        assert policy.region == region and policy.inputs["policyType"] == "StepScaling"
        steps = policy.inputs["stepScalingPolicyConfiguration"]
        assert steps["adjustmentType"] == "ExactCapacity"
        assert [s["scalingAdjustment"] for s in steps["stepAdjustments"]] == list(range(17))
        alarm = _of(dev_graph, "aws:cloudwatch/metricAlarm:MetricAlarm", f"worker-{region}-workers-demand")
        assert alarm.region == region  # the metric lives where the pool is
        assert (alarm.inputs["namespace"], alarm.inputs["metricName"]) == ("CrossRegionDask", "DesiredTasks")
        assert alarm.inputs["dimensions"] == {"Stack": "cross-region-dask-dev", "Pool": pool}
        assert alarm.inputs["alarmActions"] == [policy.outputs["arn"]]
        assert not [p for p in dev_graph.of_type("aws:appautoscaling/policy:Policy") if p.name.endswith("-cpu")]
        hosts = _of(dev_graph, "aws:autoscaling/group:Group", f"worker-{region}-hosts")
        assert hosts.inputs["minSize"] == 0  # no tasks, no instances
    provider = _of(dev_graph, "aws:ecs/capacityProvider:CapacityProvider", "worker-us-east-1-capacity")
    assert provider.inputs["autoScalingGroupProvider"]["managedTerminationProtection"] == "ENABLED"


def test_the_scheduler_publishes_demand_for_the_configured_pools(dev_graph: Graph) -> None:
    task = _of(dev_graph, "aws:ecs/taskDefinition:TaskDefinition", "client-scheduler")
    (container,) = json.loads(task.inputs["containerDefinitions"])
    assert container["command"][-6:] == ["--preload", "dask_regions.routing", "--preload", "dask_regions.demand",
                                         "--preload", "dask_regions.idle"]
    environment = {e["name"]: e["value"] for e in container["environment"]}
    assert environment["DASK_DASK_REGIONS__DEMAND__PUBLISHER"] == "cloudwatch"
    pools = json.loads(environment["DASK_DASK_REGIONS__DEMAND__POOLS"])
    assert pools[EAST] == {"workers_per_task": 10, "threads_per_worker": 3, "min_tasks": 0, "max_tasks": 16,
                           "idle_timeout": 1800}
    role = next(r for r in dev_graph.of_type("aws:iam/role:Role") if r.outputs["arn"] == task.inputs["taskRoleArn"])
    policy = next(p for p in dev_graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id)
    # publishing the figures; and stopping its own service when idle (tests/test_scheduler_on_demand.py)
    statement, stop = json.loads(policy.inputs["policy"])["Statement"]
    assert stop["Sid"] == "StopItsOwnServiceWhenIdle"
    assert statement["Action"] == "cloudwatch:PutMetricData"
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "CrossRegionDask"}}


@pytest.mark.parametrize(("mode", "policies"), [("cpu", {"cpu"}), ("both", {"cpu", "demand"}),
                                                ("demand", {"demand"})])
def test_scale_on_chooses_the_policies(mode: str, policies: set[str]) -> None:
    graph = _worker_graph(scaleOn=mode, minTasks=2, maxTasks=5, idleTimeoutMinutes=7)
    found = {p.name.rsplit("-", 1)[1] for p in graph.of_type("aws:appautoscaling/policy:Policy")
             if p.name.startswith("worker-us-east-1-workers-")}
    assert found == policies
    target = _of(graph, "aws:appautoscaling/target:Target", "worker-us-east-1-workers")
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (2, 5)
    (container,) = json.loads(_of(graph, "aws:ecs/taskDefinition:TaskDefinition", "client-scheduler")
                              .inputs["containerDefinitions"])
    pools = json.loads({e["name"]: e["value"] for e in container["environment"]}["DASK_DASK_REGIONS__DEMAND__POOLS"])
    assert (pools.get(EAST) is None) == (mode == "cpu")
    if mode != "cpu":
        assert pools[EAST]["idle_timeout"] == 7 * 60 and pools[EAST]["min_tasks"] == 2


def test_spot_share_and_on_demand_base_become_the_capacity_provider_strategy() -> None:
    types = ["m5d.4xlarge", "m5ad.4xlarge", "m6id.4xlarge"]
    graph = _worker_graph(spotPercent=70, onDemandBaseTasks=2, spotInstanceTypes=types)
    spot_group = _of(graph, "aws:autoscaling/group:Group", "worker-us-east-1-spot-hosts")
    mixed = spot_group.inputs["mixedInstancesPolicy"]
    assert [o["instanceType"] for o in mixed["launchTemplate"]["overrides"]] == types
    assert mixed["instancesDistribution"]["onDemandPercentageAboveBaseCapacity"] == 0  # the group is all Spot
    assert spot_group.inputs["capacityRebalance"] is True and spot_group.inputs["minSize"] == 0
    assert "desiredCapacity" in spot_group.ignore_changes
    providers = {p.outputs["name"]: p.name for p in graph.of_type("aws:ecs/capacityProvider:CapacityProvider")}
    service = _of(graph, "aws:ecs/service:Service", "worker-us-east-1-workers")
    strategy = {providers[s["capacityProvider"]]: (s["base"], s["weight"])
                for s in service.inputs["capacityProviderStrategies"]}
    assert strategy == {"worker-us-east-1-capacity": (2, 30), "worker-us-east-1-spot-capacity": (0, 70)}
    (container,) = json.loads(_of(graph, "aws:ecs/taskDefinition:TaskDefinition", "worker-us-east-1-workers")
                              .inputs["containerDefinitions"])
    assert container["stopTimeout"] == 120  # time to drain on a Spot notice
    assert container["command"][-2:] == ["--preload", "dask_regions.protection"]
    task = _of(graph, "aws:ecs/taskDefinition:TaskDefinition", "worker-us-east-1-workers")
    role = next(r for r in graph.of_type("aws:iam/role:Role") if r.outputs["arn"] == task.inputs["taskRoleArn"])
    policy = next(p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id)
    # The task's protection (and, beside it, reading the region's reference sets: tests/test_permissions.py)
    (statement,) = [s for s in json.loads(policy.inputs["policy"])["Statement"] if "ecs:" in json.dumps(s["Action"])]
    assert statement["Action"] == ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"]
    assert statement["Resource"].startswith("arn:aws:ecs:us-east-1:123456789012:task/")
    import base64

    template = _of(graph, "aws:ec2/launchTemplate:LaunchTemplate", "worker-us-east-1-host")
    assert "ECS_ENABLE_SPOT_INSTANCE_DRAINING=true" in base64.b64decode(template.inputs["userData"]).decode()


def test_without_spot_there_is_one_on_demand_provider(dev_graph: Graph) -> None:
    assert not [g for g in dev_graph.of_type("aws:autoscaling/group:Group") if "spot" in g.name]
    service = _of(dev_graph, "aws:ecs/service:Service", "worker-us-east-1-workers")
    assert [(s["base"], s["weight"]) for s in service.inputs["capacityProviderStrategies"]] == [(0, 1)]


@pytest.mark.parametrize("max_tasks", [1, 2, 16, 19, 20, 50, 1000])
def test_exact_capacity_steps_cover_every_figure_and_never_give_fewer_tasks(max_tasks: int) -> None:
    steps = exact_capacity_steps(max_tasks)
    assert len(steps) <= MAX_STEPS and steps[0] == (0.0, 1.0, 0) and steps[-1][1] is None
    for previous, following in itertools.pairwise(steps):
        assert previous[1] == following[0]  # contiguous, no gaps or overlaps
    for figure in range(max_tasks + 3):
        (tasks,) = [t for low, high, t in steps if low <= figure and (high is None or figure < high)]
        assert tasks >= min(figure, max_tasks) and tasks <= max_tasks


@pytest.mark.parametrize(("worker", "key", "message"), [
    ({"spotPercent": 101}, "workers[0].spotPercent", "must be between 0 and 100"),
    ({"spotPercent": -5}, "workers[0].spotPercent", "must be between 0 and 100"),
    ({"scaleOn": "memory"}, "workers[0].scaleOn", "is not a scaling mode"),
    ({"idleTimeoutMinutes": -1}, "workers[0].idleTimeoutMinutes", "must be between 0 and 1440"),
    ({"minTasks": 5, "maxTasks": 2}, "workers[0].minTasks", "is greater than workers[0].maxTasks"),
    ({"maxTasks": 0}, "workers[0].maxTasks", "must be at least 1"),
    ({"onDemandBaseTasks": 20}, "workers[0].onDemandBaseTasks", "is greater than workers[0].maxTasks"),
    ({"spotInstanceTypes": ["m5d.2xlarge"]}, "workers[0].spotInstanceTypes[0]", "is not of instanceType's size"),
    ({"spotPercent": "half"}, "workers[0].spotPercent", "must be an integer"),
])
def test_bad_bounds_and_spot_shares_name_the_key(worker: dict[str, Any], key: str, message: str) -> None:
    base = {"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds"}
    with pytest.raises(ConfigError) as caught:
        load_stack_file(PROJECT_DIR, "dev", {"workers": [{**base, **worker}]})
    line = next(line for line in str(caught.value).splitlines() if f"- {key}:" in line)
    assert message in line and "Fix:" in line
