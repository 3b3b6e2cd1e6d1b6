"""The security policy pack: the dev and a 4-region stack pass every mandatory policy, exemptions are reported
with their reasons, and every policy has a failing fixture (a small mutation of the recorded graph)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from policy.rules import POLICIES, evaluate_policies
from stackgraph.synth import Graph, RecordedResource
from tests.conftest import cached_graph


def first(graph: Graph, token: str, name: str | None = None) -> RecordedResource:
    return next(r for r in graph.of_type(token) if name is None or r.name == name)


def set_prop(resource: RecordedResource, key: str, value: Any) -> None:
    resource.inputs[key] = value
    resource.outputs[key] = value


def nested(resource: RecordedResource, key: str, inner: str, value: Any) -> None:
    set_prop(resource, key, {**(resource.inputs.get(key) or {}), inner: value})


def remove(graph: Graph, token: str) -> None:
    graph.resources.remove(first(graph, token))


DOMAIN = "aws:opensearch/domain:Domain"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def unlogged_task(graph: Graph) -> None:
    task = first(graph, "aws:ecs/taskDefinition:TaskDefinition")
    containers = json.loads(task.inputs["containerDefinitions"])
    del containers[0]["logConfiguration"]
    set_prop(task, "containerDefinitions", json.dumps(containers))


def wildcard_without_reason(graph: Graph) -> None:
    policy = first(graph, "aws:iam/rolePolicy:RolePolicy")
    set_prop(policy, "policy", json.dumps({"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))


def dask_on_plain_tcp(graph: Graph) -> None:
    task = first(graph, "aws:ecs/taskDefinition:TaskDefinition", "worker-us-east-1-workers")
    containers = json.loads(task.inputs["containerDefinitions"])
    containers[0]["command"][1] = containers[0]["command"][1].replace("tls://", "tcp://")
    set_prop(task, "containerDefinitions", json.dumps(containers))


def widen_a_writer(graph: Graph) -> None:
    """The mistake least privilege guards against: one region's writer may change every region's indices."""
    (invocation,) = graph.of_type("aws:lambda/invocation:Invocation")
    event = json.loads(invocation.inputs["input"])
    for role in event["config"]["roles"].values():
        for permission in role["index_permissions"]:
            if permission["index_patterns"] == ["catalog-us-west-2-*"]:
                permission["index_patterns"] = ["catalog-*"]
    set_prop(invocation, "input", json.dumps(event))


FIXTURES: dict[str, tuple[Callable[[Graph], None], str]] = {
    "ours-dask-tls-only": (dask_on_plain_tcp, "container worker starts Dask without TLS"),
    "awssolutions-smg4-secret-rotation": (
        lambda g: setattr(first(g, "aws:secretsmanager/secret:Secret"), "name", "someones-secret"),
        "someones-secret: has no automatic rotation"),
    "awssolutions-ec23-no-world-open-ingress": (
        lambda g: set_prop(first(g, INGRESS), "cidrIpv4", "0.0.0.0/0"), "admits the whole internet (0.0.0.0/0)"),
    "awssolutions-ecs4-container-insights": (
        lambda g: set_prop(first(g, "aws:ecs/cluster:Cluster"), "settings", []), "container insights are off"),
    "awssolutions-ecs7-container-logging": (unlogged_task, "containers without logs"),
    "awssolutions-elb2-access-logs": (
        lambda g: nested(first(g, "aws:lb/loadBalancer:LoadBalancer"), "accessLogs", "enabled", False),
        "access logs are off"),
    "awssolutions-os1-in-vpc": (lambda g: set_prop(first(g, DOMAIN), "vpcOptions", None), "not in a VPC"),
    "awssolutions-os2-node-to-node-encryption": (
        lambda g: nested(first(g, DOMAIN), "nodeToNodeEncryption", "enabled", False), "no node-to-node TLS"),
    "awssolutions-os4-dedicated-masters": (
        lambda g: nested(first(g, DOMAIN), "clusterConfig", "dedicatedMasterEnabled", False), "no dedicated masters"),
    "awssolutions-os5-no-anonymous-access": (
        lambda g: set_prop(first(g, "aws:opensearch/domainPolicy:DomainPolicy"), "accessPolicies", json.dumps(
            {"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "es:*"}]})), "lets anyone in"),
    "awssolutions-os7-zone-awareness": (
        lambda g: nested(first(g, DOMAIN), "clusterConfig", "zoneAwarenessEnabled", False), "zone awareness is off"),
    "awssolutions-os8-encryption-at-rest": (
        lambda g: nested(first(g, DOMAIN), "encryptAtRest", "enabled", False), "no encryption at rest"),
    "awssolutions-os9-slow-logs": (
        lambda g: set_prop(first(g, DOMAIN), "logPublishingOptions", []), "slow logs are not published"),
    "awssolutions-l1-current-lambda-runtime": (
        lambda g: [set_prop(first(g, "aws:lambda/function:Function"), k, v)
                   for k, v in (("packageType", "Zip"), ("runtime", "python3.9"))], "is not a current one"),
    "awssolutions-sm1-sm2-sm3-notebook": (
        lambda g: set_prop(first(g, "aws:sagemaker/notebookInstance:NotebookInstance"), "directInternetAccess",
                           "Enabled"), "direct internet access (SM3)"),
    "awssolutions-iam5-wildcards-with-reason": (wildcard_without_reason, "without a written reason"),
    "awssolutions-iam4-no-aws-managed-policies": (
        lambda g: setattr(first(g, "aws:iam/rolePolicyAttachment:RolePolicyAttachment"), "name",
                          "client-notebook-managed-0"), "attaches the AWS managed policy"),
    "awssolutions-kms5-key-rotation": (
        lambda g: set_prop(first(g, "aws:kms/key:Key"), "enableKeyRotation", False), "key rotation is off"),
    "awssolutions-sns3-ssl-only": (
        lambda g: set_prop(first(g, "aws:sns/topicPolicy:TopicPolicy"), "policy", "{}"), "does not deny non-TLS"),
    "awssolutions-sqs4-ssl-only": (
        lambda g: set_prop(first(g, "aws:sqs/queuePolicy:QueuePolicy"), "policy", "{}"), "does not deny non-TLS"),
    "awssolutions-vpc7-flow-logs": (lambda g: remove(g, "aws:ec2/flowLog:FlowLog"), "has no flow log"),
    "awssolutions-s2-s10-bucket-settings": (
        lambda g: set_prop(first(g, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"), "blockPublicPolicy",
                           False), "public access is not fully blocked (S2)"),
    "awssolutions-s1-server-access-logs": (
        lambda g: remove(g, "aws:s3/bucketLogging:BucketLogging"), "writes no server access logs"),
    "ours-pinned-to-a-region": (
        lambda g: setattr(first(g, "aws:ec2/vpc:Vpc"), "region", None), "without an explicit regional provider"),
    "ours-autoscaled-ignore-desired": (
        lambda g: setattr(first(g, "aws:ecs/service:Service", "worker-us-east-1-workers"), "ignore_changes", ()),
        "would reset its desired count"),
    "ours-dask-ports-only-from-our-cidrs": (
        lambda g: set_prop(first(g, INGRESS, "worker-us-east-1-workers-from-client"), "cidrIpv4", "203.0.113.0/24"),
        "opens a Dask port to 203.0.113.0/24, outside the platform's VPCs"),
    "ours-backbone-peering-and-routes": (
        lambda g: g.resources.remove(g.named("backbone-accept-eu-west-2-us-east-1")), "cannot reach"),
    "ours-ingress-from-the-internet-bounded": (lambda g: [
        set_prop(rule, "cidrIpv4", cidr) for rule, cidr in zip(
            [r for r in g.of_type(INGRESS) if r.inputs.get("securityGroupId") == g.of_type(INGRESS)[0].inputs.get(
                "securityGroupId")][:2] * 2, ["0.0.0.0/1", "128.0.0.0/1"], strict=False)],
        "together admit 4,294,967,296 public addresses, more than a /8"),
    "ours-catalog-least-privilege": (
        lambda g: set_prop(g.named("client-notebook-policy"), "policy", json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "es:ESHttpPost",
                "Resource": g.of_type("aws:opensearch/domain:Domain")[0].outputs["arn"] + "/*"}]})),
        "grants es:ESHttpPost on arn:aws:es:"),
    "ours-catalog-fine-grained-access": (widen_a_writer, "may indices:admin/delete on us-east-1's index"),
    "ours-iam-authorization-reference": (
        lambda g: set_prop(g.named("client-scheduler-task-policy"), "policy", json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "cloudwatch:PutMetricData",
                                                   "Resource": "arn:aws:cloudwatch:eu-west-2:1:alarm:x"}]})),
        "cloudwatch:PutMetricData supports no resource-level permissions"),
}


@pytest.mark.parametrize("shape", ["dev", "four-regions"])
def test_the_stacks_pass_every_mandatory_policy(shape: str) -> None:
    report = evaluate_policies(cached_graph(shape))
    assert report.violations == []
    assert {(policy, resource.split("-")[0]) for policy, resource, _ in report.exemptions} == {
        ("awssolutions-s1-server-access-logs", "client"), ("awssolutions-s1-server-access-logs", "worker"),
        ("awssolutions-iam4-no-aws-managed-policies", "worker"), ("awssolutions-smg4-secret-rotation", "dask")}
    assert all(reason for _, _, reason in report.exemptions)


def test_tls_exemptions_name_exactly_the_secrets() -> None:
    from policy.rules import exemption

    assert exemption("awssolutions-smg4-secret-rotation", "dask-tls-worker-us-east-1")
    for name in ("dask-tls-ca-key", "dask-tls-worker-key", "dask-tls-client", "dask-tls-worker-us-east-1-copy"):
        assert exemption("awssolutions-smg4-secret-rotation", name) is None, name


def test_a_writer_widened_to_the_whole_domain_fails_the_catalog_policy() -> None:
    graph = cached_graph("dev")
    policy = graph.named("worker-us-east-1-catalog-sync-function-policy")
    document = json.loads(policy.inputs["policy"])
    domain = graph.of_type("aws:opensearch/domain:Domain")[0].outputs["arn"]
    document["Statement"].append({"Effect": "Allow", "Action": "es:ESHttp*", "Resource": f"{domain}/*"})
    set_prop(policy, "policy", json.dumps(document))
    messages = [m for name, m in evaluate_policies(graph).violations if name == "ours-catalog-least-privilege"]
    assert messages and "grants es:ESHttp* on" in messages[0]


@pytest.mark.parametrize("mistake, expected", [
    ({"enabled": False}, "fine-grained access control is off"),
    ({"internalUserDatabaseEnabled": True}, "internal users or anonymous access are on"),
    ({"anonymousAuthEnabled": True}, "internal users or anonymous access are on"),
    ({"masterUserOptions": {}}, "no master user ARN"),
])
def test_the_catalog_domain_must_check_every_index_a_request_touches(mistake: dict[str, Any], expected: str) -> None:
    graph = cached_graph("dev")
    assert not [v for v in evaluate_policies(graph).violations if v[0] == "ours-catalog-fine-grained-access"]
    domain = graph.of_type("aws:opensearch/domain:Domain")[0]
    set_prop(domain, "advancedSecurityOptions", {**domain.inputs["advancedSecurityOptions"], **mistake})
    messages = [m for name, m in evaluate_policies(graph).violations if name == "ours-catalog-fine-grained-access"]
    assert messages and expected in messages[0], messages


def test_only_the_domains_master_user_may_call_its_security_api() -> None:
    graph = cached_graph("dev")
    policy = graph.named("client-notebook-policy")
    document = json.loads(policy.inputs["policy"])
    domain = graph.of_type("aws:opensearch/domain:Domain")[0].outputs["arn"]
    document["Statement"].append({"Effect": "Allow", "Action": "es:ESHttpPut",
                                  "Resource": f"{domain}/_plugins/_security/api/*"})
    set_prop(policy, "policy", json.dumps(document))
    messages = [m for name, m in evaluate_policies(graph).violations if name == "ours-catalog-least-privilege"]
    assert messages == [f"client-notebook-policy: grants es:ESHttpPut on {domain}/_plugins/_security/api/*: only a "
                        "region's own load indices (catalog-<region>-*) or the read alias's searches"]


def test_every_policy_has_a_failing_fixture() -> None:
    assert set(FIXTURES) == {policy.name for policy in POLICIES}


@pytest.mark.parametrize("policy", sorted(FIXTURES))
def test_each_policy_fires_on_its_fixture_with_a_useful_message(policy: str) -> None:
    graph = cached_graph("dev")
    mutate, expected = FIXTURES[policy]
    mutate(graph)
    messages = [message for name, message in evaluate_policies(graph).violations if name == policy]
    assert messages and any(expected in message for message in messages), messages
