"""WorkerRegion on the recorded graph (dev, a 4-region stack, a worker in the client region), port-level
reachability, and the worker command run for real against a Dask scheduler."""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from components.worker_pool import worker_command
from stackconfig import S3Location, StackConfig, WorkerConfig, load_stack_file
from stackgraph.reachability import service_reachability
from stackgraph.synth import PROJECT_DIR, Graph
from tests.conftest import cached_graph, shape_config

SHAPES = ["dev", "four-regions", "three-workers"]  # three-workers has one in the client region
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"


@pytest.fixture(params=SHAPES)
def stack(request: pytest.FixtureRequest) -> Graph:
    return cached_graph(request.param)


@pytest.fixture(params=SHAPES)
def stack_and_config(request: pytest.FixtureRequest) -> tuple[Graph, StackConfig]:
    return cached_graph(request.param), shape_config(request.param)


def worker_sites(graph: Graph) -> list[str]:
    return [site for site in graph.outputs["vpcIds"] if site != "client"]


def site_cidr(graph: Graph, site: str) -> str:
    return str(graph.outputs["vpcCidrs"][site])


def rules_of(graph: Graph, token: str, group_name: str) -> set[tuple[int, int, str]]:
    group = graph.named(group_name)
    return {(r.inputs["fromPort"], r.inputs["toPort"], r.inputs["cidrIpv4"]) for r in graph.of_type(token)
            if r.inputs["securityGroupId"] == group.id}


def container(graph: Graph, site: str) -> dict[str, Any]:
    (task,) = [t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition") if t.name == f"{site}-workers"]
    (definition,) = json.loads(task.inputs["containerDefinitions"])
    return dict(definition)


def test_one_lustre_file_system_and_association_per_worker_with_the_exact_dataset(
        stack_and_config: tuple[Graph, StackConfig]) -> None:
    check_associations(*stack_and_config)


def test_dev_associations_are_the_reference_paths() -> None:
    found = {(a.inputs["dataRepositoryPath"], a.inputs["fileSystemPath"])
             for a in cached_graph("dev").of_type("aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation")}
    assert found == {("s3://era5-pds", "/us-east-1/era5-pds"),
                     ("s3://cmip6-pds/CMIP6/ScenarioMIP/MOHC", "/us-west-2/CMIP6/ScenarioMIP/MOHC")}


def check_associations(stack: Graph, config: StackConfig) -> None:
    associations = stack.of_type("aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation")
    file_systems = {f.id: f for f in stack.of_type("aws:fsx/lustreFileSystem:LustreFileSystem")}
    assert len(associations) == len(file_systems) == len(config.workers)
    # Spelled out, not through WorkerConfig.fsx_path, so a drift in that mapping shows here.
    expected = {(w.region, w.dataset.uri, f"/{w.region}/{w.lustre_file_system_path}") for w in config.workers}
    found = {(a.region, a.inputs["dataRepositoryPath"], a.inputs["fileSystemPath"]) for a in associations}
    assert found == expected
    for association in associations:
        assert association.inputs["batchImportMetaDataOnCreate"] is True
        assert "s3" not in association.inputs  # no auto-import policy
        assert file_systems[association.inputs["fileSystemId"]].region == association.region


def test_lustre_file_system_settings(stack: Graph) -> None:
    for file_system in stack.of_type("aws:fsx/lustreFileSystem:LustreFileSystem"):
        inputs = file_system.inputs
        assert (inputs["deploymentType"], inputs["dataCompressionType"]) == ("PERSISTENT_2", "LZ4")
        assert (inputs["storageCapacity"], inputs["perUnitStorageThroughput"]) == (1200, 1000)
        assert inputs["kmsKeyId"].startswith(f"arn:aws:kms:{file_system.region}:")
        assert inputs["logConfiguration"]["level"] == "WARN_ERROR"
        group = next(g for g in stack.of_type("aws:cloudwatch/logGroup:LogGroup")
                     if g.outputs["arn"] == inputs["logConfiguration"]["destination"])
        assert group.inputs["name"].startswith("/aws/fsx/")
        subnet = stack.by_id(inputs["subnetIds"])
        assert subnet is not None and subnet.inputs["tags"]["tier"] == "private"


def test_lustre_security_group_allows_exactly_the_lustre_ports_from_the_worker_vpc(stack: Graph) -> None:
    for site in worker_sites(stack):
        cidr = site_cidr(stack, site)
        assert rules_of(stack, INGRESS, f"{site}-lustre-sg") == {(988, 988, cidr), (1018, 1023, cidr)}


def test_hosts_join_the_cluster_mount_lustre_and_require_imdsv2(stack: Graph) -> None:
    for site in worker_sites(stack):
        template = stack.named(f"{site}-host", "aws:ec2/launchTemplate:LaunchTemplate")
        assert template.inputs["metadataOptions"]["httpTokens"] == "required"
        assert template.inputs["imageId"].startswith("ami-")
        (device,) = template.inputs["blockDeviceMappings"]
        assert device["ebs"]["encrypted"] == "true" and device["ebs"]["kmsKeyId"].startswith("arn:aws:kms:")
        script = base64.b64decode(template.inputs["userData"]).decode()
        cluster = stack.outputs["workerRegions"][site.removeprefix("worker-")]["clusterName"]
        file_system = stack.outputs["workerRegions"][site.removeprefix("worker-")]
        assert f"ECS_CLUSTER={cluster}" in script
        assert f"{file_system['fileSystemDnsName']}@tcp:/{file_system['mountName']} /fsx lustre" in script
        group = next(g for g in stack.of_type("aws:autoscaling/group:Group") if g.name == f"{site}-hosts")
        assert (group.inputs["minSize"], group.inputs["maxSize"]) == (0, 12)
        assert "desiredCapacity" in group.ignore_changes and group.inputs["protectFromScaleIn"] is True
        provider = next(p for p in stack.of_type("aws:ecs/capacityProvider:CapacityProvider")
                        if p.name == f"{site}-capacity")
        scaling = provider.inputs["autoScalingGroupProvider"]
        assert scaling["autoScalingGroupArn"] == group.outputs["arn"]
        assert scaling["managedScaling"]["status"] == "ENABLED"


def test_worker_command_pool_ports_and_image(stack: Graph) -> None:
    for site in worker_sites(stack):
        region = site.removeprefix("worker-")
        definition = container(stack, site)
        command = definition["command"]
        assert command[:2] == ["worker", stack.outputs["schedulerAddress"]]
        assert command[command.index("--resources") + 1] == f"pool-{region}=3"
        assert command[command.index("--worker-port") + 1] == "9000:9009"
        assert command[command.index("--nanny-port") + 1] == "9010:9019"
        assert command[command.index("--nworkers") + 1] == "10"
        assert {m["containerPath"]: m["readOnly"] for m in definition["mountPoints"]} == {"/fsx": True}
        assert definition["image"] == stack.outputs["imageReferences"][region]
        ports = sorted(m["containerPort"] for m in definition["portMappings"])
        assert ports == list(range(9000, 9020))
        assert stack.outputs["workerRegions"][region]["poolName"] == f"pool-{region}"


def test_worker_security_group_admits_exactly_the_worker_ports_from_our_cidrs(stack: Graph) -> None:
    client = site_cidr(stack, "client")
    for site in worker_sites(stack):
        others = {site_cidr(stack, other) for other in worker_sites(stack) if other != site}
        expected = {(9000, 9019, cidr) for cidr in {client, site_cidr(stack, site), *others}}
        assert rules_of(stack, INGRESS, f"{site}-workers-sg") == expected
        egress = rules_of(stack, EGRESS, f"{site}-workers-sg")
        assert (8786, 8786, client) in egress and all(r[2] != "0.0.0.0/0" or r[:2] == (443, 443) for r in egress)


def test_service_ignores_desired_count_and_scales_within_bounds(stack: Graph) -> None:
    for site in worker_sites(stack):
        service = next(s for s in stack.of_type("aws:ecs/service:Service") if s.name == f"{site}-workers")
        assert "desiredCount" in service.ignore_changes
        target = stack.named(f"{site}-workers", "aws:appautoscaling/target:Target")
        assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (0, 16)
        assert target.inputs["resourceId"].endswith(f"/{service.outputs['name']}")
        policy = stack.named(f"{site}-workers-demand", "aws:appautoscaling/policy:Policy")
        assert policy.inputs["resourceId"] == target.inputs["resourceId"]  # details: tests/test_scaling.py


def test_scaling_on_cpu_keeps_the_reference_target() -> None:
    from stackgraph.synth import synthesize

    graph = synthesize("dev", {"workers": [{"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds",
                                            "scaleOn": "cpu", "minTasks": 1}]})  # CPU cannot start from 0
    for site in worker_sites(graph):
        policy = graph.named(f"{site}-workers-cpu", "aws:appautoscaling/policy:Policy")
        tracking = policy.inputs["targetTrackingScalingPolicyConfiguration"]
        assert tracking["targetValue"] == 40
        assert tracking["predefinedMetricSpecification"]["predefinedMetricType"] == "ECSServiceAverageCPUUtilization"
        assert tracking["scaleInCooldown"] == tracking["scaleOutCooldown"] == 300


def test_scaling_bounds_and_sizes_follow_config() -> None:
    from stackgraph.synth import synthesize

    graph = synthesize("dev", {"workers": [{"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds",
                                            "minTasks": 1, "maxTasks": 4, "cpuTargetPercent": 60, "scaleOn": "cpu",
                                            "workersPerTask": 4, "threadsPerWorker": 2, "taskMemoryMiB": 8192,
                                            "workerPortStart": 12000, "lustreStorageGiB": 2400,
                                            "lustreThroughputPerTiB": 250, "maxInstances": 3}]})
    target = graph.of_type("aws:appautoscaling/target:Target")[0]
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (1, 4)
    assert graph.of_type("aws:appautoscaling/policy:Policy")[0].inputs[
        "targetTrackingScalingPolicyConfiguration"]["targetValue"] == 60
    command = container(graph, "worker-us-east-1")["command"]
    assert "pool-us-east-1=2" in command and "12000:12003" in command and "12004:12007" in command
    assert "2048MiB" in command
    assert rules_of(graph, INGRESS, "worker-us-east-1-workers-sg") >= {(12000, 12007, "10.0.0.0/16")}
    lustre = graph.of_type("aws:fsx/lustreFileSystem:LustreFileSystem")[0].inputs
    assert (lustre["storageCapacity"], lustre["perUnitStorageThroughput"]) == (2400, 250)
    assert graph.of_type("aws:autoscaling/group:Group")[0].inputs["maxSize"] == 3


def test_scheduler_port_reachable_from_every_worker_vpc(stack: Graph) -> None:
    for site in worker_sites(stack):
        assert service_reachability(stack, site, "client-scheduler-sg", 8786, f"{site}-workers-sg") is None


def test_worker_ports_reachable_from_the_client_vpc_and_not_beyond(stack: Graph) -> None:
    for site in worker_sites(stack):
        for port in (9000, 9009, 9010, 9019):
            assert service_reachability(stack, "client", f"{site}-workers-sg", port, "client-scheduler-sg") is None
        assert service_reachability(stack, "client", f"{site}-workers-sg", 9020) is not None
        assert service_reachability(stack, "client", f"{site}-lustre-sg", 988) is not None
        assert service_reachability(stack, site, f"{site}-lustre-sg", 988, f"{site}-host-sg") is None


def test_port_reachability_fails_without_the_route_or_the_rule() -> None:
    graph = cached_graph("dev")
    rule = next(r for r in graph.of_type(INGRESS) if r.name == "client-scheduler-from-worker-us-east-1")
    graph.resources.remove(rule)
    assert "does not admit" in str(service_reachability(graph, "worker-us-east-1", "client-scheduler-sg", 8786))
    graph = cached_graph("dev")
    graph.resources.remove(graph.named("backbone-accept-eu-west-2-us-east-1"))
    reason = service_reachability(graph, "worker-us-east-1", "client-scheduler-sg", 8786)
    assert reason is not None and reason.startswith("no route")


def test_a_drifted_pool_name_or_port_range_is_caught() -> None:
    graph = cached_graph("dev")
    task = graph.named("worker-us-east-1-workers", "aws:ecs/taskDefinition:TaskDefinition")
    definitions = json.loads(task.inputs["containerDefinitions"])
    definitions[0]["command"][definitions[0]["command"].index("--resources") + 1] = "pool-us-west-2=3"
    task.inputs["containerDefinitions"] = json.dumps(definitions)
    with pytest.raises(AssertionError):
        test_worker_command_pool_ports_and_image(graph)
    graph = cached_graph("dev")
    rule = next(r for r in graph.of_type(INGRESS) if r.name == "worker-us-east-1-workers-from-client")
    rule.inputs["toPort"] = 9030
    with pytest.raises(AssertionError):
        test_worker_security_group_admits_exactly_the_worker_ports_from_our_cidrs(graph)


def test_a_drifted_association_path_is_caught() -> None:
    graph = cached_graph("dev")
    association = graph.of_type("aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation")[0]
    association.inputs["fileSystemPath"] = "/era5-pds"
    with pytest.raises(AssertionError):
        check_associations(graph, shape_config("dev"))


# ---------------------------------------------------------------- the command and the pool rule, for real
def free_port_range(count: int) -> int:
    for start in range(20000, 60000, 97):
        try:
            sockets = []
            for port in range(start, start + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                sockets.append(s)
            return start
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")


@pytest.mark.processes
def test_the_task_definition_command_starts_real_workers_with_the_pool_resource(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    dask_cli = shutil.which("dask", path=str(Path(sys.executable).parent))
    assert dask_cli
    config = replace(load_stack_file(PROJECT_DIR, "dev").workers[0], workers_per_task=2, threads_per_worker=2,
                     task_memory_mib=2048, worker_port_start=free_port_range(4))
    with LocalCluster(n_workers=0, processes=False, protocol="tcp://", host="127.0.0.1", scheduler_port=0,
                      dashboard_address=None) as cluster, \
            Client(cluster) as client:
        command = worker_command(config, cluster.scheduler_address)
        command[command.index("--name") + 1] = "us-east-1"
        # As in the image (PYTHONPATH=/opt/dask): the command preloads dask_regions.protection.
        env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "PYTHONPATH": str(PROJECT_DIR)}
        process = subprocess.Popen([dask_cli, *command, "--host", "127.0.0.1", "--local-directory", str(tmp_path)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            client.wait_for_workers(2, timeout=90)
            workers = client.scheduler_info()["workers"].values()
            assert {tuple(w["resources"].items()) for w in workers} == {(("pool-us-east-1", 2),)}
            ports = sorted(int(address.rsplit(":", 1)[1]) for address in client.scheduler_info()["workers"])
            assert ports == [config.worker_ports[0], config.worker_ports[1]]
            assert all(w["nthreads"] == 2 for w in workers)
        finally:
            process.terminate()
            process.wait(timeout=30)


PINNED_STARTED = threading.Barrier(3)


def wait_with_the_others(_: int) -> bool:
    """Passes only if all three pinned tasks are running at the same time."""
    PINNED_STARTED.wait(timeout=60)
    return True


@pytest.mark.processes
def test_pool_slots_let_a_worker_run_a_pinned_task_on_every_thread() -> None:
    from distributed import Client, LocalCluster

    config = WorkerConfig("us-east-1", "10.1.0.0/16", S3Location("era5-pds", ""), "era5-pds", threads_per_worker=3)
    assert config.pool_slots == config.threads_per_worker
    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None,
                      resources={config.pool_name: config.pool_slots}) as cluster, Client(cluster) as client:
        futures = client.map(wait_with_the_others, range(3), resources={config.pool_name: 1}, pure=False)
        assert client.gather(futures) == [True, True, True]
        assert not PINNED_STARTED.broken


@pytest.mark.processes
def test_one_slot_per_worker_would_serialise_pinned_tasks() -> None:
    """The trap the rule avoids: with `pool=1`, a 3-thread worker runs pinned tasks one at a time."""
    from distributed import Client, LocalCluster

    HOLD.clear()
    with LocalCluster(n_workers=1, threads_per_worker=3, processes=False, dashboard_address=None,
                      resources={"pool-x": 1}) as cluster, Client(cluster) as client:
        first, second = client.map(_hold, [1, 2], resources={"pool-x": 1}, pure=False)
        states = _worker_states_once_both_arrive(client, {first.key, second.key})
        assert sorted(states.values()) == ["constrained", "executing"]  # the second waits for the slot
        HOLD.set()
        assert client.gather([first, second]) == [1, 2]


HOLD = threading.Event()


def _hold(value: int) -> int:
    HOLD.wait(timeout=60)
    return value


def _worker_states_once_both_arrive(client: Any, keys: set[str]) -> dict[str, str]:
    """Poll (bounded) until the worker knows both tasks and runs one, then return their states."""
    def states(dask_worker: Any) -> dict[str, str]:
        return {str(k): ts.state for k, ts in dask_worker.state.tasks.items() if k in keys}

    for _ in range(600):
        (found,) = client.run(states).values()
        if len(found) == len(keys) and "executing" in found.values() and "waiting" not in found.values() \
                and "ready" not in found.values():
            return dict(found)
        threading.Event().wait(0.05)
    raise AssertionError(f"the worker never received both tasks: {found}")


def test_bad_worker_ports_and_memory_are_config_errors() -> None:
    from stackconfig import ConfigError, parse_stack_config

    raw = {"client": {"region": "eu-west-2", "cidr": "10.0.0.0/16"},
           "workers": [{"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds",
                        "workerPortStart": 65530, "workersPerTask": 10, "taskMemoryMiB": 4096}]}
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(copy.deepcopy(raw), stack="t")
    paths = {p.path for p in caught.value.problems}
    assert paths == {"workers[0].workerPortStart", "workers[0].taskMemoryMiB"}


def test_a_scratch_file_system_takes_no_throughput_tier_nor_a_key_and_is_priced_as_scratch() -> None:
    from plan.cost import default_table, estimate
    from stackconfig import parse_stack_config, raw_stack_config
    from stackgraph.synth import PROJECT_DIR, synthesize

    workers = [{"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds",
                "lustreDeploymentType": "SCRATCH_2"}]
    graph = synthesize("dev", {"workers": workers})
    (file_system,) = graph.of_type("aws:fsx/lustreFileSystem:LustreFileSystem")
    assert file_system.inputs["deploymentType"] == "SCRATCH_2"
    assert "perUnitStorageThroughput" not in file_system.inputs and "kmsKeyId" not in file_system.inputs
    assert file_system.inputs["dataCompressionType"] == "LZ4" and graph.of_type(
        "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation")  # still linked to its dataset
    project, raw = raw_stack_config(PROJECT_DIR, "dev", {"workers": workers})
    cost = estimate(graph, parse_stack_config(raw, stack="dev", project=project))
    (line,) = [entry for entry in cost.by_resource if entry.resource == "worker-us-east-1-lustre"]
    assert line.idle_usd_per_month == pytest.approx(
        1200 * default_table().price("lustre-SCRATCH_2-gb-month", "us-east-1").usd)


def test_an_unknown_lustre_deployment_type_is_refused_naming_the_allowed_ones() -> None:
    from stackconfig import ConfigError, parse_stack_config, raw_stack_config
    from stackgraph.synth import PROJECT_DIR

    workers = [{"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds",
                "lustreDeploymentType": "SCRATCH_1"}]
    project, raw = raw_stack_config(PROJECT_DIR, "dev", {"workers": workers})
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="dev", project=project)
    assert [str(p) for p in caught.value.problems] == [
        "workers[0].lustreDeploymentType: 'SCRATCH_1' is not a deployment type the platform deploys. Fix: use one "
        "of 'PERSISTENT_2', 'SCRATCH_2'."]
