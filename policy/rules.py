"""The security policies of the platform, as pulumi-policy policies (importable: `policy/__main__.py` only
instantiates the pack, which starts a server when the Pulumi CLI runs it).

Each policy is named after the cdk-nag AwsSolutions rule it mirrors, or `ours-...` for the platform's own.
Exemptions live here, each with its reason, and are reported with the results.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from catalog_access import SECURITY_API, widenings
from platform_facts import DASHBOARD_PORT, REGION_PATTERN, SCHEDULER_PORT
from stackconfig.schema import MEMBER_NAME_PATTERN
from stackgraph.permissions import as_list, policies, reference_findings_by_owner
from stackgraph.reachability import analyse
from stackgraph.synth import Graph, RecordedResource

MANDATORY = EnforcementLevel.MANDATORY
Report = Callable[[str, Any], None]

# (policy, logical name) -> why the resource is exempt
EXEMPTIONS: dict[tuple[str, str], str] = {
    ("awssolutions-s1-server-access-logs", "client-access-logs"):
        "the access-log bucket receives the other buckets' and the load balancer's logs; it does not log into itself",
    ("awssolutions-s1-server-access-logs", "worker-[a-z0-9-]+-access-logs"):
        "a worker region's access-log bucket receives its region's buckets' logs; it does not log into itself",
    ("awssolutions-iam4-no-aws-managed-policies", "worker-[a-z0-9-]+-host-managed-0"):
        "AmazonEC2ContainerServiceforEC2Role: the ECS agent's own calls, most of which cannot be scoped",
    # The team's certificates, or (client.users) each user's cluster's.
    ("awssolutions-smg4-secret-rotation",
     f"dask-tls-(scheduler|client|worker)(-{MEMBER_NAME_PATTERN})?-{REGION_PATTERN}"):
        "Dask TLS certificates are rotated by `pulumi up` (replaced in their last 30 days), not by a rotation Lambda",
}


def _one_data_node(props: Mapping[str, Any]) -> bool:
    return int((props.get("clusterConfig") or {}).get("instanceCount") or 0) == 1


# (policy, logical name) -> (what the resource's properties must show, why it is then exempt): a choice the stack
# config makes, exempt only where it is made.
CHOSEN_EXEMPTIONS: dict[tuple[str, str], tuple[Callable[[Mapping[str, Any]], bool], str]] = {
    ("awssolutions-os4-dedicated-masters", "client-catalog"): (
        _one_data_node, "a one-node catalog (catalog.instanceCount 1, for a small team): masters would outnumber it"),
    ("awssolutions-os7-zone-awareness", "client-catalog"): (
        _one_data_node, "a one-node catalog lives in one zone (catalog.instanceCount 1); the sync rebuilds it nightly"),
}


def exemption(policy: str, name: str, props: Mapping[str, Any] | None = None) -> str | None:
    """Why `name` is exempt from `policy`; each exemption's pattern (a regular expression) must match the whole
    name, so that it names exactly the resources it exempts. A chosen exemption holds only when the resource's
    `props` show the choice."""
    for (exempt_policy, pattern), reason in EXEMPTIONS.items():
        if exempt_policy == policy and re.fullmatch(pattern, name):
            return reason
    for (exempt_policy, pattern), (chosen, why) in CHOSEN_EXEMPTIONS.items():
        if exempt_policy == policy and re.fullmatch(pattern, name) and props is not None and chosen(props):
            return why
    return None


def _resource(name: str, description: str, types: Iterable[str],
              check: Callable[[dict[str, Any], ResourceValidationArgs], str | None]) -> ResourceValidationPolicy:
    kinds = set(types)

    def validate(args: ResourceValidationArgs, report: Report) -> None:
        if args.resource_type in kinds and not exemption(name, args.name, dict(args.props)):
            message = check(dict(args.props), args)
            if message:
                report(f"{args.name}: {message}", args.urn)

    return ResourceValidationPolicy(name=name, description=description, validate=validate, enforcement_level=MANDATORY)


def _stack(name: str, description: str,
           check: Callable[[list[PolicyResource]], Iterable[tuple[str, str]]]) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: Report) -> None:
        for resource_name, message in check(list(args.resources)):
            if not exemption(name, resource_name):
                report(f"{resource_name}: {message}", None)

    return StackValidationPolicy(name=name, description=description, validate=validate, enforcement_level=MANDATORY)


def _of(resources: list[PolicyResource], token: str) -> list[PolicyResource]:
    return [r for r in resources if r.resource_type == token]


def _statements(document: Any) -> list[dict[str, Any]]:
    parsed = json.loads(document) if isinstance(document, str) else document or {}
    statements = parsed.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def _denies_insecure_transport(document: Any) -> bool:
    return any(s.get("Effect") == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")
               == "false" for s in _statements(document))


# ------------------------------------------------------------------------------------------ resources
def _world_open(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    source = props.get("cidrIpv4") or props.get("cidrIpv6")
    return f"admits the whole internet ({source})" if source in ("0.0.0.0/0", "::/0") else None


def _container_insights(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    settings = {s.get("name"): s.get("value") for s in props.get("settings") or []}
    return None if settings.get("containerInsights") == "enabled" else "container insights are off"


def _container_logs(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    containers = json.loads(props.get("containerDefinitions") or "[]")
    missing = [c.get("name") for c in containers if not c.get("logConfiguration")]
    return f"containers without logs: {missing}" if missing else None


def _access_logs(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    logs = props.get("accessLogs") or {}
    if not logs.get("enabled"):
        return "access logs are off"
    return None if props.get("dropInvalidHeaderFields") else "invalid HTTP header fields are not dropped"


def _domain(check: Callable[[dict[str, Any]], str | None]) -> Callable[[dict[str, Any], ResourceValidationArgs],
                                                                       str | None]:
    return lambda props, _: check(props)


def _no_everyone(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    for statement in _statements(props.get("accessPolicies")):
        principal = statement.get("Principal")
        if principal == "*" or (isinstance(principal, dict) and "*" in json.dumps(principal)):
            return "the access policy lets anyone in (Principal *)"
    return None


def _lambda_runtime(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    if props.get("packageType") == "Image":
        return None  # the image pins its own runtime (requirements.txt)
    runtime = str(props.get("runtime", ""))
    current = ("python3.12", "python3.13", "nodejs22.x", "java21", "provided.al2023")
    return None if runtime in current else f"runtime {runtime!r} is not a current one ({', '.join(current)})"


def _notebook(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    problems = []
    if not props.get("subnetId"):
        problems.append("not in a VPC (SM1)")
    if not props.get("kmsKeyId"):
        problems.append("volume not encrypted with a KMS key (SM2)")
    if props.get("directInternetAccess") != "Disabled":
        problems.append("direct internet access (SM3)")
    if props.get("rootAccess") != "Disabled":
        problems.append("root access enabled")
    return "; ".join(problems) or None


def _iam_wildcards(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    for statement in _statements(props.get("policy")):
        resources = statement.get("Resource")
        wildcard = resources == "*" or (isinstance(resources, list) and "*" in resources)
        if wildcard and statement.get("Effect") == "Allow" and not str(statement.get("Sid", "")).endswith(
                ("HasNoResourceScoping", "HaveNoResourceScoping")):
            return (f"allows {statement.get('Action')} on every resource without a written reason (put it in the "
                    "statement's Sid, e.g. '...HasNoResourceScoping')")
    return None


def _dask_over_tls(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    """Dask containers speak TLS and get their credentials from Secrets Manager, never in plain environment."""
    for container in json.loads(props.get("containerDefinitions") or "[]"):
        command = [str(part) for part in container.get("command") or []]
        if not command or command[0] not in ("scheduler", "worker"):
            continue
        protocol = command[command.index("--protocol") + 1] if "--protocol" in command[:-1] else None
        if any(part.startswith("tcp://") for part in command) or (
                command[0] == "scheduler" and protocol != "tls") or (
                command[0] == "worker" and not (command[1:] and command[1].startswith("tls://"))):
            return f"container {container.get('name')} starts Dask without TLS ({' '.join(command[:3])} ...)"
        secrets = {s.get("name"): str(s.get("valueFrom", "")) for s in container.get("secrets") or []}
        wanted = ("DASK_TLS_CA", "DASK_TLS_CERT", "DASK_TLS_KEY")
        if any(not secrets.get(name, "").startswith("arn:aws:secretsmanager:") for name in wanted):
            return (f"container {container.get('name')} does not take {', '.join(wanted)} from Secrets Manager by "
                    "ARN")
        if any("PRIVATE KEY" in str(e.get("value", "")) for e in container.get("environment") or []):
            return f"container {container.get('name')} has a private key in its plain environment"
    return None


def _managed_policy(props: dict[str, Any], _: ResourceValidationArgs) -> str | None:
    arn = str(props.get("policyArn", ""))
    return f"attaches the AWS managed policy {arn}" if arn.startswith("arn:aws:iam::aws:policy/") else None


RESOURCE_POLICIES = [
    _resource("awssolutions-ec23-no-world-open-ingress", "Security groups admit no traffic from 0.0.0.0/0 or ::/0.",
              ["aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"], _world_open),
    _resource("awssolutions-ecs4-container-insights", "ECS clusters have container insights on.",
              ["aws:ecs/cluster:Cluster"], _container_insights),
    _resource("awssolutions-ecs7-container-logging", "Every container sends its logs to CloudWatch.",
              ["aws:ecs/taskDefinition:TaskDefinition"], _container_logs),
    _resource("awssolutions-elb2-access-logs", "Load balancers log access and drop invalid headers.",
              ["aws:lb/loadBalancer:LoadBalancer"], _access_logs),
    _resource("awssolutions-os1-in-vpc", "OpenSearch domains live in a VPC.", ["aws:opensearch/domain:Domain"],
              _domain(lambda p: None if (p.get("vpcOptions") or {}).get("subnetIds") else "not in a VPC")),
    _resource("awssolutions-os2-node-to-node-encryption", "OpenSearch encrypts node-to-node traffic.",
              ["aws:opensearch/domain:Domain"],
              _domain(lambda p: None if (p.get("nodeToNodeEncryption") or {}).get("enabled")
                      else "no node-to-node TLS")),
    _resource("awssolutions-os4-dedicated-masters", "OpenSearch runs dedicated master nodes.",
              ["aws:opensearch/domain:Domain"],
              _domain(lambda p: None if (p.get("clusterConfig") or {}).get("dedicatedMasterEnabled")
                      else "no dedicated masters")),
    _resource("awssolutions-os5-no-anonymous-access", "The catalog's access policy names who may enter.",
              ["aws:opensearch/domainPolicy:DomainPolicy", "aws:opensearch/domain:Domain"], _no_everyone),
    _resource("awssolutions-os7-zone-awareness", "OpenSearch spreads over availability zones.",
              ["aws:opensearch/domain:Domain"],
              _domain(lambda p: None if (p.get("clusterConfig") or {}).get("zoneAwarenessEnabled")
                      else "zone awareness is off")),
    _resource("awssolutions-os8-encryption-at-rest", "OpenSearch encrypts data at rest.",
              ["aws:opensearch/domain:Domain"],
              _domain(lambda p: None if (p.get("encryptAtRest") or {}).get("enabled") else "no encryption at rest")),
    _resource("awssolutions-os9-slow-logs", "OpenSearch publishes index and search slow logs.",
              ["aws:opensearch/domain:Domain"],
              _domain(lambda p: None if {"INDEX_SLOW_LOGS", "SEARCH_SLOW_LOGS"} <= {
                  o.get("logType") for o in p.get("logPublishingOptions") or []} else "slow logs are not published")),
    _resource("awssolutions-l1-current-lambda-runtime", "Lambda functions run a current runtime.",
              ["aws:lambda/function:Function"], _lambda_runtime),
    _resource("awssolutions-sm1-sm2-sm3-notebook", "Notebooks: in a VPC, KMS-encrypted, no direct internet, no root.",
              ["aws:sagemaker/notebookInstance:NotebookInstance"], _notebook),
    _resource("awssolutions-iam5-wildcards-with-reason", "IAM wildcards only where AWS offers no scoping, said so.",
              ["aws:iam/rolePolicy:RolePolicy"], _iam_wildcards),
    _resource("awssolutions-iam4-no-aws-managed-policies", "Roles use inline, scoped policies (exemptions in code).",
              ["aws:iam/rolePolicyAttachment:RolePolicyAttachment"], _managed_policy),
    _resource("ours-dask-tls-only", "Dask speaks TLS only; its certificates come from Secrets Manager by ARN.",
              ["aws:ecs/taskDefinition:TaskDefinition"], _dask_over_tls),
    _resource("awssolutions-kms5-key-rotation", "KMS keys rotate.", ["aws:kms/key:Key"],
              lambda p, _: None if p.get("enableKeyRotation") else "key rotation is off"),
    _resource("awssolutions-sns3-ssl-only", "Topics refuse requests without TLS.", ["aws:sns/topicPolicy:TopicPolicy"],
              lambda p, _: None if _denies_insecure_transport(p.get("policy")) else "does not deny non-TLS requests"),
    _resource("awssolutions-sqs4-ssl-only", "Queues refuse requests without TLS.", ["aws:sqs/queuePolicy:QueuePolicy"],
              lambda p, _: None if _denies_insecure_transport(p.get("policy")) else "does not deny non-TLS requests"),
]


# ---------------------------------------------------------------------------------------------- stack
def _flow_logs(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    logged = {f.props.get("vpcId") for f in _of(resources, "aws:ec2/flowLog:FlowLog")}
    return [(v.name, "has no flow log") for v in _of(resources, "aws:ec2/vpc:Vpc") if v.props.get("id") not in logged]


def _bucket_settings(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    problems = []
    for bucket in _of(resources, "aws:s3/bucket:Bucket"):
        related = {r.resource_type: r for r in resources if r.props.get("bucket") == bucket.props.get("id")}
        block = related.get("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
        if block is None or not all(block.props.get(k) for k in ("blockPublicAcls", "blockPublicPolicy",
                                                                 "ignorePublicAcls", "restrictPublicBuckets")):
            problems.append((bucket.name, "public access is not fully blocked (S2)"))
        if "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration" not in related:
            problems.append((bucket.name, "no default encryption (S3 encryption)"))
        policy = related.get("aws:s3/bucketPolicy:BucketPolicy")
        if policy is None or not _denies_insecure_transport(policy.props.get("policy")):
            problems.append((bucket.name, "does not deny requests without TLS (S10)"))
    return problems


def _secret_rotation(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    rotated = {r.props.get("secretId") for r in _of(resources, "aws:secretsmanager/secretRotation:SecretRotation")}
    problems = [(s.name, "has no automatic rotation") for s in _of(resources, "aws:secretsmanager/secret:Secret")
                if s.props.get("id") not in rotated and s.props.get("arn") not in rotated]
    problems += [(s.name, "is not encrypted with a customer-managed KMS key")
                 for s in _of(resources, "aws:secretsmanager/secret:Secret") if not s.props.get("kmsKeyId")]
    return problems


def _server_access_logs(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    logged = {r.props.get("bucket") for r in _of(resources, "aws:s3/bucketLogging:BucketLogging")}
    return [(b.name, "writes no server access logs") for b in _of(resources, "aws:s3/bucket:Bucket")
            if b.props.get("id") not in logged]


def _pinned(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    return [(r.name, "is created without an explicit regional provider") for r in resources
            if r.resource_type.startswith("aws:") and not (r.provider and r.provider.props.get("region"))]


def _autoscaled_ignore_desired(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    problems = []
    scaled = {str(t.props.get("resourceId", "")).rsplit("/", 1)[-1] for t in
              _of(resources, "aws:appautoscaling/target:Target")}
    for service in _of(resources, "aws:ecs/service:Service"):
        if service.props.get("name") in scaled and "desiredCount" not in (service.opts.ignore_changes or []):
            problems.append((service.name, "is autoscaled but Pulumi would reset its desired count"))
    managed = {(p.props.get("autoScalingGroupProvider") or {}).get("autoScalingGroupArn")
               for p in _of(resources, "aws:ecs/capacityProvider:CapacityProvider")}
    for group in _of(resources, "aws:autoscaling/group:Group"):
        if group.props.get("arn") in managed and "desiredCapacity" not in (group.opts.ignore_changes or []):
            problems.append((group.name, "is scaled by a capacity provider but Pulumi would reset its capacity"))
    return problems


def _dask_ports_ours(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    """Scheduler, dashboard, worker and nanny ports admit only our VPCs (or another security group)."""
    ours = [ipaddress.ip_network(v.props["cidrBlock"]) for v in _of(resources, "aws:ec2/vpc:Vpc")]
    ports: set[int] = {SCHEDULER_PORT, DASHBOARD_PORT}
    for task in _of(resources, "aws:ecs/taskDefinition:TaskDefinition"):
        for container in json.loads(task.props.get("containerDefinitions") or "[]"):
            ports |= {int(m["containerPort"]) for m in container.get("portMappings", [])}
    problems = []
    for rule in _of(resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        low, high = int(rule.props.get("fromPort", 0)), int(rule.props.get("toPort", 65535))
        cidr = rule.props.get("cidrIpv4") or rule.props.get("cidrIpv6")
        if cidr and any(low <= p <= high for p in ports):
            network = ipaddress.ip_network(cidr)
            if not any(network.version == o.version and network.subnet_of(o) for o in ours):  # type: ignore[arg-type]
                problems.append((rule.name, f"opens a Dask port to {cidr}, outside the platform's VPCs"))
    return problems


MAX_OPEN_PREFIX = 8  # the most of the internet one security group may admit, together: a /8


def _ingress_bounded(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    """No security group admits more than a /8 of public addresses, counting all its rules together
    (0.0.0.0/1 plus 128.0.0.0/1 is the whole internet in two rules)."""
    public: dict[str, list[ipaddress.IPv4Network]] = {}
    for rule in _of(resources, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        if rule.props.get("cidrIpv6"):
            return [(rule.name, f"admits IPv6 {rule.props['cidrIpv6']}: the platform's ingress is IPv4 only")]
        cidr = rule.props.get("cidrIpv4")
        if cidr and not ipaddress.ip_network(cidr).is_private:
            public.setdefault(str(rule.props.get("securityGroupId")), []).append(ipaddress.IPv4Network(cidr))
    problems = []
    for group, networks in public.items():
        opened = sum(n.num_addresses for n in ipaddress.collapse_addresses(networks))
        if opened > 2 ** (32 - MAX_OPEN_PREFIX):
            problems.append((group, f"its ingress rules together admit {opened:,} public addresses, more than a "
                                    f"/{MAX_OPEN_PREFIX}"))
    return problems


# Where a catalog principal may write (POST/PUT/DELETE): a region's own load indices, or the read alias's searches;
# the domain's master user alone, its security API.
_CATALOG_WRITABLE = re.compile(rf"catalog-{REGION_PATTERN}-\*|catalog/_(search|msearch|mget)")
_SECURITY_PATH = re.compile(re.escape(SECURITY_API) + r"/\*")
_ES_CHANGES = ("es:ESHttpPost", "es:ESHttpPut", "es:ESHttpDelete", "es:ESHttpPatch")
_DOMAIN = "aws:opensearch/domain:Domain"


def _master_user(domain: Any) -> str | None:
    options = domain.inputs.get("advancedSecurityOptions") or {}
    return (options.get("masterUserOptions") or {}).get("masterUserArn")


def _security_admins(graph: Any) -> set[str]:
    """The domains' master users, as ARNs and as the role names identity policies attach to."""
    arns = {arn for arn in map(_master_user, graph.of_type(_DOMAIN)) if isinstance(arn, str)}
    names = {arn.rsplit("/", 1)[-1] for arn in arns}
    for role in graph.of_type("aws:iam/role:Role"):
        if role.outputs.get("arn") in arns:
            names |= {str(v) for v in (role.id, role.outputs.get("name"), role.outputs.get("id")) if v}
    return arns | names


def _grantees(policy: Any, statement: dict[str, Any]) -> set[str]:
    if policy.kind == "identity":
        return {str(policy.owner.inputs.get("role"))}
    principal = statement.get("Principal")
    return {str(p) for p in as_list(principal.get("AWS") if isinstance(principal, dict) else principal)}


def _catalog_least_privilege(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    """No policy lets anyone POST, PUT or DELETE on the catalog domain beyond a region's own load indices or the
    read alias's searches: a domain-wide grant allows `/_aliases`, `/_bulk` and `/_delete_by_query`, which could
    repoint or empty the catalog (OpenSearch without fine-grained access control authorises by path only)."""
    problems = []
    graph = graph_of(resources)
    admins = _security_admins(graph)
    for policy in policies(graph):
        for statement in policy.statements:
            actions = [a for a in as_list(statement.get("Action")) if isinstance(a, str)]
            changes = [a for a in actions if any(fnmatch.fnmatch(change.lower(), a.lower()) for change in _ES_CHANGES)]
            if statement.get("Effect") != "Allow" or not changes:
                continue
            for resource in as_list(statement.get("Resource")):
                path = str(resource).split(":domain/", 1)[-1].partition("/")[2] if ":domain/" in str(resource) else ""
                if _SECURITY_PATH.fullmatch(path) and _grantees(policy, statement) <= admins:
                    continue
                if not _CATALOG_WRITABLE.fullmatch(path):
                    problems.append((policy.owner.name, f"grants {', '.join(changes)} on {resource}: only a region's "
                                     "own load indices (catalog-<region>-*) or the read alias's searches"))
    return problems


def _catalog_fine_grained_access(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    """Every catalog domain checks each index a request touches (fine-grained access control, no internal users,
    no anonymous access, a master user), and the roles applied to it at deploy hold readers to reading and each
    region's writer to its own region's indices (catalog_access/). IAM paths alone cannot: request bodies
    and multi-index paths pass them."""
    graph = graph_of(resources)
    problems = []
    for domain in graph.of_type(_DOMAIN):
        options = domain.inputs.get("advancedSecurityOptions") or {}
        if not options.get("enabled"):
            problems.append((domain.name, "fine-grained access control is off: IAM paths cannot hold a writer to its "
                                          "own region's indices"))
            continue
        if options.get("internalUserDatabaseEnabled") or options.get("anonymousAuthEnabled"):
            problems.append((domain.name, "internal users or anonymous access are on: IAM roles only"))
        if not _master_user(domain):
            problems.append((domain.name, "no master user ARN: nobody could apply the catalog's roles"))
    configs = [(i.name, json.loads(str(i.inputs.get("input") or "{}")).get("config"))
               for i in graph.of_type("aws:lambda/invocation:Invocation")]
    configs = [(name, config) for name, config in configs if isinstance(config, dict)]
    if graph.of_type(_DOMAIN) and not configs:
        problems.append(("catalog", "no deploy-time invocation applies the catalog's security roles"))
    for name, config in configs:
        problems += [(name, widening) for widening in widenings(config)]
    return problems


def _backbone(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    """Every peering accepted in its peer region, and every VPC routes to every other (both ways)."""
    failures = analyse(graph_of(resources)).failures
    return [(src, f"cannot reach {dst}: {why}") for (src, dst), why in failures.items()]


def _authorization_reference(resources: list[PolicyResource]) -> Iterable[tuple[str, str]]:
    """Every action, resource ARN and condition key of every policy document, against AWS's authorization
    reference (stackgraph/permissions.py)."""
    return reference_findings_by_owner(graph_of(resources))


STACK_POLICIES = [
    _stack("ours-catalog-least-privilege",
           "Catalog writes are scoped to a region's own indices, reads to the read alias's searches.",
           _catalog_least_privilege),
    _stack("ours-catalog-fine-grained-access",
           "The catalog checks every index a request touches; readers only read, writers only their region's.",
           _catalog_fine_grained_access),
    _stack("ours-ingress-from-the-internet-bounded",
           "No security group admits more than a /8 of public addresses, all its rules together.", _ingress_bounded),
    _stack("ours-iam-authorization-reference",
           "Every policy's actions exist, its resources are of the actions' types (\"*\" where AWS takes no "
           "other), and its condition keys exist (AWS's service authorization reference).",
           _authorization_reference),
    _stack("awssolutions-vpc7-flow-logs", "Every VPC has flow logs.", _flow_logs),
    _stack("awssolutions-s2-s10-bucket-settings", "Buckets: public access blocked, encrypted, TLS only.",
           _bucket_settings),
    _stack("awssolutions-s1-server-access-logs", "Buckets write server access logs.", _server_access_logs),
    _stack("awssolutions-smg4-secret-rotation", "Secrets rotate (and are encrypted with our KMS keys).",
           _secret_rotation),
    _stack("ours-pinned-to-a-region", "Every AWS resource is created through an explicit regional provider.",
           _pinned),
    _stack("ours-autoscaled-ignore-desired", "Autoscaled services and capacity-provider groups ignore desired counts.",
           _autoscaled_ignore_desired),
    _stack("ours-dask-ports-only-from-our-cidrs", "No Dask port is open beyond the platform's CIDRs.",
           _dask_ports_ours),
    _stack("ours-backbone-peering-and-routes", "Peerings are accepted and every VPC routes to every other.",
           _backbone),
]
POLICIES = [*RESOURCE_POLICIES, *STACK_POLICIES]


# ------------------------------------------------------------------- running the policies on a recorded graph
@dataclass
class PolicyReport:
    violations: list[tuple[str, str]] = field(default_factory=list)  # (policy, message)
    exemptions: list[tuple[str, str, str]] = field(default_factory=list)  # (policy, resource, reason)


def _policy_resources(graph: Any) -> list[PolicyResource]:
    providers = {r.urn: r for r in graph.resources if r.type == "pulumi:providers:aws"}
    resources = []
    for r in graph.resources:
        if not r.custom or r.type == "pulumi:providers:aws":
            continue
        provider = providers.get(r.provider)
        policy_provider = PolicyProviderResource(provider.type, {"region": r.region}, provider.urn, provider.name) \
            if provider is not None and r.region else None
        options = PolicyResourceOptions(protect=bool(r.options.get("protect")), ignore_changes=list(r.ignore_changes),
                                        delete_before_replace=r.options.get("deleteBeforeReplace"), aliases=[],
                                        custom_timeouts=None, additional_secret_outputs=[])  # type: ignore[arg-type]
        props = {**r.inputs, **r.outputs, "id": r.id}
        resources.append(PolicyResource(r.type, props, r.urn, r.name, options, policy_provider, None, [], {}))
    return resources


def graph_of(resources: list[PolicyResource]) -> Any:
    """A recorded-graph view of policy resources, for the checks that walk the whole network."""
    graph = Graph(project="", stack="")
    for r in resources:
        region = r.provider.props.get("region") if r.provider else None
        graph.resources.append(RecordedResource(
            urn=r.urn, type=r.resource_type, name=r.name, parent="", custom=True, provider="", region=region,
            id=str(r.props.get("id", "")), inputs=dict(r.props), outputs=dict(r.props), dependencies=(),
            property_dependencies={}, ignore_changes=tuple(r.opts.ignore_changes or [])))
    return graph


def _checks(validate: Any) -> list[Any]:
    return [] if validate is None else list(validate) if isinstance(validate, list) else [validate]


def evaluate_policies(graph: Any) -> PolicyReport:
    """Run every policy over a recorded graph the way the Pulumi CLI would over a preview."""
    report = PolicyReport()
    resources = _policy_resources(graph)

    def reporter(name: str) -> Report:
        def violation(message: str, _urn: Any = None) -> None:
            report.violations.append((name, message))
        return violation

    for resource_policy in RESOURCE_POLICIES:
        for check in _checks(resource_policy.validate):
            for resource in resources:
                check(ResourceValidationArgs(resource.resource_type, resource.props, resource.urn, resource.name,
                                             resource.opts, resource.provider), reporter(resource_policy.name))
    for stack_policy in STACK_POLICIES:
        for stack_check in _checks(stack_policy.validate):
            stack_check(StackValidationArgs(resources), reporter(stack_policy.name))
    for policy_name in dict.fromkeys(policy for policy, _ in [*EXEMPTIONS, *CHOSEN_EXEMPTIONS]):
        for resource in resources:
            reason = exemption(policy_name, resource.name, resource.props)
            if reason:
                report.exemptions.append((policy_name, resource.name, reason))
    return report
