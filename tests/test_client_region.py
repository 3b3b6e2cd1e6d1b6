"""ClientRegion on the recorded graph (dev stack and a 4-region stack): one scheduler under a private name
every worker VPC resolves, exact security rules, the catalog domain's settings, the notebook, the image."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from typing import Any

import pytest

from components.client_notebook import DASHBOARD_LINK
from stackgraph.synth import Graph, RecordedResource, synthesize
from tests.conftest import cached_graph
from wheel_build import wheel_name

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"


@pytest.fixture(params=["dev", "four-regions"])
def stack(request: pytest.FixtureRequest) -> Graph:
    return cached_graph(request.param)


def group(graph: Graph, logical: str) -> RecordedResource:
    return graph.named(logical)


def rules(graph: Graph, token: str, sg: RecordedResource) -> set[tuple[int, int, str]]:
    """(from, to, source) for every rule of a group; source is a CIDR or the logical name of a group."""
    names = {g.id: g.name for g in graph.of_type(SG)}
    return {(r.inputs["fromPort"], r.inputs["toPort"],
             r.inputs.get("cidrIpv4") or names[r.inputs["referencedSecurityGroupId"]])
            for r in graph.of_type(token) if r.inputs["securityGroupId"] == sg.id}


def site_cidrs(graph: Graph) -> list[str]:
    return list(graph.outputs["vpcCidrs"].values())


# ------------------------------------------------------------------------------ checks (used on mutations)
def scheduler_rule_violations(graph: Graph) -> list[str]:
    scheduler, alb = group(graph, "client-scheduler-sg"), group(graph, "client-dashboard-sg")
    # The dashboard port: from the load balancer, and from the notebook (its server proxies the dashboard).
    expected = {(8786, 8786, cidr) for cidr in site_cidrs(graph)} | {(8787, 8787, "client-dashboard-sg"),
                                                                     (8787, 8787, "client-notebook-sg")}
    found = rules(graph, INGRESS, scheduler)
    problems = [f"scheduler ingress {r} is not specified" for r in found - expected]
    problems += [f"scheduler ingress {r} is missing" for r in expected - found]
    if rules(graph, EGRESS, alb) != {(8787, 8787, "client-scheduler-sg")}:
        problems.append("the load balancer may send more than the dashboard port to the scheduler")
    return problems


def world_open_violations(graph: Graph, allowed: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    return [f"{r.name} admits {r.inputs.get('cidrIpv4') or r.inputs.get('cidrIpv6')}" for r in graph.of_type(INGRESS)
            if (r.inputs.get("cidrIpv4") in ("0.0.0.0/0",) or r.inputs.get("cidrIpv6") == "::/0"
                or (r.inputs.get("cidrIpv4") and not _ours(graph, r.inputs["cidrIpv4"], allowed)))]


def _ours(graph: Graph, cidr: str, allowed: set[str]) -> bool:
    return cidr in site_cidrs(graph) or cidr in allowed


def dns_association_violations(graph: Graph) -> list[str]:
    zone = graph.outputs["dnsZoneId"]
    associations = graph.of_type("aws:route53/zoneAssociation:ZoneAssociation")
    vpcs = {v.id: v for v in graph.of_type("aws:ec2/vpc:Vpc")}
    problems = []
    for site, vpc_id in graph.outputs["vpcIds"].items():
        if site == "client":
            continue  # the namespace is created in the client VPC
        found = [a for a in associations if a.inputs["vpcId"] == vpc_id and a.inputs["zoneId"] == zone]
        region = vpcs[vpc_id].region
        if [(a.inputs.get("vpcRegion"), a.region) for a in found] != [(region, region)]:
            problems.append(f"{site} does not resolve the scheduler's name (association in its own region)")
    return problems


# ------------------------------------------------------------------------------------------------ tests
def test_exactly_one_scheduler_on_fargate_registered_in_private_dns(stack: Graph) -> None:
    services = stack.of_type("aws:ecs/service:Service")
    (scheduler,) = [s for s in services if s.name == "client-scheduler"]
    assert scheduler.inputs["launchType"] == "FARGATE" and scheduler.inputs["desiredCount"] == 1
    assert scheduler.inputs["deploymentMaximumPercent"] == 100  # never two schedulers at once
    assert scheduler.inputs["networkConfiguration"]["assignPublicIp"] is False
    discovery = stack.named("client-scheduler-dns")
    assert scheduler.inputs["serviceRegistries"]["registryArn"] == discovery.outputs["arn"]
    assert discovery.inputs["name"] == "scheduler"
    namespace = stack.of_type("aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace")[0]
    assert namespace.inputs["name"] == "dev.cross-region-dask.internal"
    assert stack.outputs["schedulerAddress"] == "tls://scheduler.dev.cross-region-dask.internal:8786"
    clusters = stack.of_type("aws:ecs/cluster:Cluster")
    (cluster,) = [c for c in clusters if c.outputs["arn"] == scheduler.inputs["cluster"]]
    assert {"name": "containerInsights", "value": "enabled"} in cluster.inputs["settings"]


def test_scheduler_task_runs_the_image_by_digest_with_configured_size(stack: Graph) -> None:
    (task,) = [t for t in stack.of_type("aws:ecs/taskDefinition:TaskDefinition") if t.name == "client-scheduler"]
    assert (task.inputs["cpu"], task.inputs["memory"]) == ("2048", "4096")
    assert task.inputs["requiresCompatibilities"] == ["FARGATE"] and task.inputs["networkMode"] == "awsvpc"
    (container,) = json.loads(task.inputs["containerDefinitions"])
    assert container["command"][:5] == ["scheduler", "--protocol", "tls", "--port", "8786"]
    assert container["logConfiguration"]["options"]["awslogs-region"] == "eu-west-2"


def test_every_task_definition_uses_the_image_by_digest(stack: Graph) -> None:
    references = stack.outputs["imageReferences"]
    for task in stack.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        for container in json.loads(task.inputs["containerDefinitions"]):
            assert "@sha256:" in container["image"] and container["image"] == references[task.region]
    assert len({ref.rpartition("@")[2] for ref in references.values()}) == 1  # same bytes in every region
    assert set(references) == set(stack.outputs["regions"])


def test_scheduler_and_dashboard_rules_are_exactly_as_specified(stack: Graph) -> None:
    assert scheduler_rule_violations(stack) == []
    alb = group(stack, "client-dashboard-sg")
    assert rules(stack, INGRESS, alb) == {(80, 80, "10.0.0.0/16")}  # internal: the client VPC only


def test_every_worker_vpc_resolves_the_scheduler_name_in_its_own_region(stack: Graph) -> None:
    assert dns_association_violations(stack) == []
    assert len(stack.of_type("aws:route53/zoneAssociation:ZoneAssociation")) == len(stack.outputs["vpcIds"]) - 1


def test_nothing_is_open_to_the_world_by_default(stack: Graph) -> None:
    assert world_open_violations(stack) == []


def test_dashboard_is_internal_by_default(stack: Graph) -> None:
    balancer = stack.of_type("aws:lb/loadBalancer:LoadBalancer")[0]
    assert balancer.inputs["internal"] is True and balancer.inputs["dropInvalidHeaderFields"] is True
    private = {s.id for s in stack.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "private"}
    assert set(balancer.inputs["subnets"]) <= private
    assert stack.outputs["dashboardUrl"].startswith("http://internal-")
    (target,) = stack.of_type("aws:lb/targetGroup:TargetGroup")
    assert (target.inputs["port"], target.inputs["healthCheck"]["path"]) == (8787, "/dask-regions/health")


def test_ecs_exec_on_the_scheduler_only_when_asked_for(stack: Graph) -> None:
    def exec_of(graph: Graph) -> tuple[bool, bool]:
        (service,) = [s for s in graph.of_type("aws:ecs/service:Service") if s.name == "client-scheduler"]
        statements = json.loads(graph.named("client-scheduler-task-policy").inputs["policy"])["Statement"]
        channels = any("ssmmessages:OpenDataChannel" in str(s["Action"]) for s in statements)
        return bool(service.inputs.get("enableExecuteCommand")), channels

    assert exec_of(stack) == (False, False)
    enabled = synthesize("dev", {"client": {"region": "eu-west-2", "cidr": "10.0.0.0/16", "schedulerExec": True}})
    assert exec_of(enabled) == (True, True)
    from stackgraph.permissions import reference_findings

    assert reference_findings(enabled) == []  # the SSM channel actions as AWS's reference knows them
    assert set(enabled.outputs["schedulerService"]) == {"region", "cluster", "service"}


def test_dashboard_is_internet_facing_only_for_the_allow_list_and_https_with_a_certificate() -> None:
    certificate = "arn:aws:acm:eu-west-2:123456789012:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    graph = synthesize("dev", {"client": {"region": "eu-west-2", "cidr": "10.0.0.0/16",
                                          "dashboardAllowedCidrs": ["203.0.113.0/24"],
                                          "dashboardCertificateArn": certificate}})
    balancer = graph.of_type("aws:lb/loadBalancer:LoadBalancer")[0]
    public = {s.id for s in graph.of_type("aws:ec2/subnet:Subnet") if s.inputs["tags"]["tier"] == "public"}
    assert balancer.inputs["internal"] is False and set(balancer.inputs["subnets"]) <= public
    assert rules(graph, INGRESS, group(graph, "client-dashboard-sg")) == {(80, 80, "203.0.113.0/24"),
                                                                          (443, 443, "203.0.113.0/24")}
    assert world_open_violations(graph, {"203.0.113.0/24"}) == []
    listeners = {listener.inputs["port"]: listener for listener in graph.of_type("aws:lb/listener:Listener")}
    assert listeners[443].inputs["certificateArn"] == certificate
    assert listeners[443].inputs["sslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert listeners[80].inputs["defaultActions"][0]["type"] == "redirect"
    assert graph.outputs["dashboardUrl"].startswith("https://")


def test_access_logs_go_to_an_encrypted_versioned_private_bucket(stack: Graph) -> None:
    balancer = stack.of_type("aws:lb/loadBalancer:LoadBalancer")[0]
    logs = balancer.inputs["accessLogs"]
    assert logs["enabled"] is True
    bucket = next(b for b in stack.of_type("aws:s3/bucket:Bucket") if b.outputs["bucket"] == logs["bucket"])
    by_bucket = {r.type: r for r in stack.resources if r.inputs.get("bucket") == bucket.id}
    versioning = by_bucket["aws:s3/bucketVersioning:BucketVersioning"].inputs["versioningConfiguration"]
    assert versioning["status"] == "Enabled"
    block = by_bucket["aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"].inputs
    assert all(block[k] for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    encryption = by_bucket["aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"]
    assert encryption.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    policy = json.loads(by_bucket["aws:s3/bucketPolicy:BucketPolicy"].inputs["policy"])
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in policy["Statement"])
    delivery = next(s for s in policy["Statement"] if s.get("Sid") == "LoadBalancerLogDelivery")
    assert delivery["Principal"]["AWS"] == "arn:aws:iam::652711504416:root"  # eu-west-2's ELB account


def test_catalog_domain_settings(stack: Graph) -> None:
    (domain,) = stack.of_type("aws:opensearch/domain:Domain")
    inputs = domain.inputs
    assert inputs["engineVersion"].startswith("OpenSearch_2.")
    cluster = inputs["clusterConfig"]
    assert cluster["dedicatedMasterEnabled"] and cluster["dedicatedMasterCount"] == 3
    assert cluster["zoneAwarenessEnabled"] and cluster["zoneAwarenessConfig"]["availabilityZoneCount"] == 2
    assert (cluster["instanceType"], cluster["instanceCount"]) == ("r6g.large.search", 2)
    assert inputs["encryptAtRest"]["enabled"]
    assert inputs["encryptAtRest"]["kmsKeyId"].startswith("arn:aws:kms:eu-west-2")
    assert inputs["nodeToNodeEncryption"]["enabled"]
    assert inputs["domainEndpointOptions"] == {"enforceHttps": True,
                                               "tlsSecurityPolicy": "Policy-Min-TLS-1-2-PFS-2023-10"}
    subnets = [stack.by_id(s) for s in inputs["vpcOptions"]["subnetIds"]]
    assert len({s.inputs["availabilityZone"] for s in subnets if s}) == 2
    assert all(s is not None and s.inputs["tags"]["tier"] == "private" for s in subnets)
    assert {o["logType"] for o in inputs["logPublishingOptions"]} == {"INDEX_SLOW_LOGS", "SEARCH_SLOW_LOGS",
                                                                      "ES_APPLICATION_LOGS"}
    catalog_sg = group(stack, "client-catalog-sg")
    assert rules(stack, INGRESS, catalog_sg) == {(443, 443, cidr) for cidr in site_cidrs(stack)}
    log_policy = json.loads(stack.of_type("aws:cloudwatch/logResourcePolicy:LogResourcePolicy")[0]
                            .inputs["policyDocument"])
    assert log_policy["Statement"][0]["Principal"] == {"Service": "es.amazonaws.com"}
    assert "access_policies" not in inputs and "accessPolicies" not in inputs


def test_catalog_access_policy_names_roles_never_everyone(stack: Graph) -> None:
    (policy,) = stack.of_type("aws:opensearch/domainPolicy:DomainPolicy")
    document = json.loads(policy.inputs["accessPolicies"])
    notebook_role = stack.named("client-notebook-role").outputs["arn"]
    domain = stack.of_type("aws:opensearch/domain:Domain")[0]
    assert policy.inputs["domainName"] == domain.inputs["domainName"]
    for statement in document["Statement"]:
        assert statement["Principal"] != "*" and "*" not in json.dumps(statement["Principal"])
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert all(r.startswith(f"{domain.outputs['arn']}/") and r != f"{domain.outputs['arn']}/*" for r in resources)
    readers = [s for s in document["Statement"] if s["Sid"].startswith("Readers")]
    assert readers and all(r["Principal"]["AWS"] == [notebook_role] for r in readers)
    # What each may do on which path: tests/test_permissions.py (least privilege on the catalog).


def test_service_linked_role_only_when_configured() -> None:
    assert synthesize("dev").of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole") == []
    graph = synthesize("dev", {"createOpenSearchServiceLinkedRole": True})
    (role,) = graph.of_type("aws:iam/serviceLinkedRole:ServiceLinkedRole")
    assert role.inputs["awsServiceName"] == "opensearchservice.amazonaws.com"
    assert role.urn in graph.of_type("aws:opensearch/domain:Domain")[0].dependencies


@pytest.mark.processes
def test_notebook_is_private_encrypted_and_configured_for_this_stack(stack: Graph) -> None:
    (notebook,) = stack.of_type("aws:sagemaker/notebookInstance:NotebookInstance")
    inputs = notebook.inputs
    assert (inputs["directInternetAccess"], inputs["rootAccess"]) == ("Disabled", "Disabled")
    assert inputs["kmsKeyId"].startswith("arn:aws:kms:eu-west-2")
    assert (inputs["instanceType"], inputs["volumeSize"]) == ("ml.t3.2xlarge", 50)
    subnet = stack.by_id(inputs["subnetId"])
    assert subnet is not None and subnet.inputs["tags"]["tier"] == "private"
    (lifecycle,) = stack.of_type(
        "aws:sagemaker/notebookInstanceLifecycleConfiguration:NotebookInstanceLifecycleConfiguration")
    script = base64.b64decode(lifecycle.inputs["onStart"]).decode()
    assert stack.outputs["schedulerAddress"] in script and stack.outputs["catalogEndpoint"] in script
    assert "--constraint" in script and "--upgrade" not in script
    # The kernel installs the data plane's one wheel, as uploaded, with its notebook extra.
    (uploaded,) = [o for o in stack.of_type("aws:s3/bucketObjectv2:BucketObjectv2") if o.name.endswith("-wheel")]
    assert uploaded.inputs["key"] == f"notebook-env/{wheel_name()}"
    assert f'"$HOME/.dask-platform-dist/{wheel_name()}[notebook]"' in script
    # The dashboard through the notebook server's proxy, for the scheduler's host only.
    host = stack.outputs["schedulerAddress"].split("://")[1].rsplit(":", 1)[0]
    assert f'{{"ServerProxy": {{"host_allowlist": ["{host}"]}}}}' in script and "jupyter-server-proxy==" in script
    assert f'--env DASK_DISTRIBUTED__DASHBOARD__LINK "{DASHBOARD_LINK}"' in script
    # JupyterLab's Dask sidebar: the server's environment installs the wheel's lab extra at the kernel's pins, less
    # SageMaker's own Jupyter packages (tests/test_connect.py runs the sidebar's manager with the server's settings).
    assert f'"/home/ec2-user/.dask-platform-dist/{wheel_name()}[lab]"' in script
    assert 'grep -iv "^jupyter"' in script
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stderr  # the whole script parses
    role = stack.named("client-notebook-role")
    policy = json.loads(stack.named("client-notebook-policy").inputs["policy"])
    es = [s for s in policy["Statement"] if "es:" in str(s["Action"])]
    assert es and all(set(s["Action"] if isinstance(s["Action"], list) else [s["Action"]]) <= {
        "es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"} for s in es)
    assert "sagemaker.amazonaws.com" in role.inputs["assumeRolePolicy"]
    notebook_sg = group(stack, "client-notebook-sg")
    assert rules(stack, INGRESS, notebook_sg) == set()


def test_the_kernels_dashboard_link_is_the_scheduler_dashboard_through_the_proxy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dask
    from distributed.utils import format_dashboard_link

    monkeypatch.setenv("DASK_DISTRIBUTED__DASHBOARD__LINK", DASHBOARD_LINK)
    dask.config.refresh()
    try:
        assert format_dashboard_link("scheduler.dev.internal", 8787) == "/proxy/scheduler.dev.internal:8787/status"
    finally:
        monkeypatch.undo()
        dask.config.refresh()


def test_the_kernel_reads_the_servers_real_log_groups_and_may(stack: Graph) -> None:
    from stackgraph.permissions import Call, decide

    exported = stack.outputs["logGroups"]
    recorded = {(g.region, g.inputs["name"]) for g in stack.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert set(exported) == {"scheduler", *(f"workers-{r}" for r in stack.outputs["workerRegions"])}
    assert {(w["region"], w["group"]) for w in exported.values()} <= recorded
    (lifecycle,) = stack.of_type(
        "aws:sagemaker/notebookInstanceLifecycleConfiguration:NotebookInstanceLifecycleConfiguration")
    script = base64.b64decode(lifecycle.inputs["onStart"]).decode()
    # One double-quoted word for the kernel's shell, its quotes escaped.
    (word,) = re.findall(r'--env DASK_PLATFORM_LOG_GROUPS "((?:[^"\\]|\\.)*)"', script)
    assert json.loads(word.replace('\\"', '"')) == exported
    for where in exported.values():
        arn = f"arn:aws:logs:{where['region']}:123456789012:log-group:{where['group']}"
        assert decide(stack, Call("client-notebook-role", "logs:FilterLogEvents", arn)).allowed, arn


def test_every_log_group_has_retention(stack: Graph) -> None:
    groups = stack.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert groups and all(g.inputs["retentionInDays"] == 30 for g in groups)


def test_ecr_repositories_scan_on_push_with_immutable_tags_and_kms(stack: Graph) -> None:
    repositories = stack.of_type("aws:ecr/repository:Repository")
    dask = [r for r in repositories if r.name.startswith("dask-image-")]
    sync = [r for r in repositories if r.name.startswith("catalog-sync-image-")]
    assert len(dask) + len(sync) == len(repositories)
    assert sorted(str(r.region) for r in dask) == sorted(stack.outputs["regions"])
    assert sorted(str(r.region) for r in sync) == sorted(stack.outputs["workerRegions"])
    for repository in repositories:
        assert repository.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repository.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        (encryption,) = repository.inputs["encryptionConfigurations"]
        assert encryption["encryptionType"] == "KMS" and f":{repository.region}:" in encryption["kmsKey"]
    builds = sorted(b.inputs["build"]["dockerfile"].rsplit("/images/", 1)[1] for b in stack.of_type(
        "docker:index/image:Image"))
    assert builds == ["catalog-sync/Dockerfile", "dask/Dockerfile"]  # each built once


# ------------------------------------------------------------------ the checks fire on a mutated graph
def test_widening_a_scheduler_rule_is_caught() -> None:
    graph = cached_graph("dev")
    rule = next(r for r in graph.of_type(INGRESS) if r.name == "client-scheduler-from-worker-us-east-1")
    rule.inputs["cidrIpv4"] = "0.0.0.0/0"
    assert scheduler_rule_violations(graph) and world_open_violations(graph)


def test_an_extra_port_on_the_scheduler_is_caught() -> None:
    graph = cached_graph("dev")
    rule = next(r for r in graph.of_type(INGRESS) if r.name == "client-scheduler-from-worker-us-east-1")
    rule.inputs["toPort"] = 8800
    assert any("not specified" in p for p in scheduler_rule_violations(graph))


def test_removing_a_dns_association_is_caught() -> None:
    graph = cached_graph("dev")
    association = graph.of_type("aws:route53/zoneAssociation:ZoneAssociation")[0]
    graph.resources.remove(association)
    assert len(dns_association_violations(graph)) == 1


def test_an_association_in_the_wrong_region_is_caught() -> None:
    graph = cached_graph("dev")
    association: Any = graph.of_type("aws:route53/zoneAssociation:ZoneAssociation")[0]
    association.inputs["vpcRegion"] = "eu-west-2"
    assert len(dns_association_violations(graph)) == 1
