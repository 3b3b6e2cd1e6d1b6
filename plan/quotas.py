"""The default service quotas a stack's graph approaches: what it declares counted per region (or per Transit
Gateway), against each quota's default, warned at 80%. The counts are this stack's alone: anything else in the
account (the region's default VPC, other stacks) counts toward the same quotas. A default names its source and date,
or is labelled unverified (recalled from AWS's documentation, not confirmed by a source read here)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from stackgraph.synth import Graph

WARN_SHARE = 0.8
CHECKED = "2026-12-07"
VPC_QUOTAS = "docs.aws.amazon.com/vpc/latest/userguide/amazon-vpc-limits.html"
TGW_QUOTAS = "docs.aws.amazon.com/vpc/latest/tgw/transit-gateway-quotas.html"
UNVERIFIED = "unverified"


@dataclass(frozen=True)
class Quota:
    name: str
    default: int
    scope: str  # what one count is of: "region" or "transit gateway"
    source: str  # where the default was read (and when), or why it is unverified
    count: Callable[[Graph], Counter[str]]  # scope -> what this stack declares toward it
    labels: tuple[str, ...] = ()


@dataclass
class QuotaUse:
    quota: str
    scope: str
    used: int
    default: int
    share: float
    warn: bool
    source: str
    labels: list[str]


def _per_region(kind: str) -> Callable[[Graph], Counter[str]]:
    return lambda graph: Counter(str(r.region) for r in graph.of_type(kind))


def _peerings_per_gateway(graph: Graph) -> Counter[str]:
    counts: Counter[str] = Counter()
    for peering in graph.of_type("aws:ec2transitgateway/peeringAttachment:PeeringAttachment"):
        counts[str(peering.inputs["transitGatewayId"])] += 1
        counts[str(peering.inputs["peerTransitGatewayId"])] += 1
    return counts


def _lustre_gib(graph: Graph) -> Counter[str]:
    counts: Counter[str] = Counter()
    for file_system in graph.of_type("aws:fsx/lustreFileSystem:LustreFileSystem"):
        counts[str(file_system.region)] += int(file_system.inputs.get("storageCapacity") or 0)
    return counts


def _fargate_vcpus(graph: Graph) -> Counter[str]:
    """Each Fargate service's task vCPUs times its desired count (the scheduler: one task)."""
    tasks = {str(t.outputs.get("arn")): t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition")}
    counts: Counter[str] = Counter()
    for service in graph.of_type("aws:ecs/service:Service"):
        task = tasks.get(str(service.inputs.get("taskDefinition")))
        if service.inputs.get("launchType") == "FARGATE" and task is not None:
            vcpus = int(task.inputs.get("cpu") or 0) / 1024 * max(1, int(service.inputs.get("desiredCount") or 0))
            counts[str(service.region)] += round(vcpus)
    return counts


QUOTAS = (
    Quota("VPCs per region", 5, "region", f"{VPC_QUOTAS}, read {CHECKED}", _per_region("aws:ec2/vpc:Vpc")),
    Quota("Elastic IP addresses per region", 5, "region", f"{VPC_QUOTAS}, read {CHECKED}",
          _per_region("aws:ec2/eip:Eip")),
    Quota("Transit gateways per region", 5, "region", f"{TGW_QUOTAS}, read {CHECKED}",
          _per_region("aws:ec2transitgateway/transitGateway:TransitGateway")),
    Quota("Peering attachments per transit gateway", 50, "transit gateway", f"{TGW_QUOTAS}, read {CHECKED}",
          _peerings_per_gateway),
    Quota("FSx for Lustre storage per region, GiB", 100_800, "region",
          "recalled from the FSx for Lustre quotas page; no source read here confirms it", _lustre_gib, (UNVERIFIED,)),
    Quota("Fargate On-Demand vCPUs per region", 6, "region",
          "recalled: the lowest default AWS sets for new accounts (it grows with use); no source read here confirms it",
          _fargate_vcpus, (UNVERIFIED,)),
)


def quota_use(graph: Graph, quotas: tuple[Quota, ...] = QUOTAS) -> list[QuotaUse]:
    """Every quota the graph counts toward, per scope, largest share first."""
    found = []
    for quota in quotas:
        for scope, used in sorted(quota.count(graph).items()):
            share = used / quota.default
            found.append(QuotaUse(quota.name, scope, used, quota.default, round(share, 3), share >= WARN_SHARE,
                                  quota.source, list(quota.labels)))
    return sorted(found, key=lambda use: (-use.share, use.quota, use.scope))


def render_quotas(uses: list[QuotaUse]) -> list[str]:
    warned = [use for use in uses if use.warn]
    out = [f"## Default quotas ({len(warned)} at {WARN_SHARE:.0%} or more; this stack's resources alone: the "
           "region's default VPC and other stacks count too)", ""]
    for use in uses[:8]:
        flag = "WARN" if use.warn else "    "
        labels = f" [{', '.join(use.labels)}]" if use.labels else ""
        out.append(f"  {flag} {use.used:>7,} of {use.default:>7,}  {use.quota} ({use.scope}){labels}")
    if warned:
        out += ["", "  Ask for more before `pulumi up` (Service Quotas console), or spread the stack."]
    return out
