"""Structural checks over a recorded graph: region pinning, creation order, physical-name collisions.

Each returns a list of human-readable violations (empty = fine), so tests and operator tooling share them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from stackgraph.reachability import ACCEPTER, PEERING, ROUTE_TABLE, TGW_ROUTE, VPC_ATTACHMENT, VPC_ROUTE
from stackgraph.synth import Graph

# Inputs that are a resource's own physical name, which AWS keeps unique per region (or account for IAM).
NAME_INPUTS = ("name", "namePrefix", "domainName", "policyName", "family")
NAME_INPUTS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "aws:s3/bucket:Bucket": ("bucket", "bucketPrefix"),
    "aws:opensearch/domainPolicy:DomainPolicy": (),  # its domainName points at the domain
}
# Names unique only inside a parent (a Cloud Map service within its namespace), not in the account.
SCOPED_NAME_TYPES = ("aws:servicediscovery/service:Service",)
GLOBAL_SERVICES = ("aws:iam/", "aws:s3/bucket:")


def unpinned_resources(graph: Graph) -> list[str]:
    """AWS resources not created through an explicit provider with a region."""
    return [f"{r.type} {r.name} has no explicit regional provider" for r in graph.aws_resources if not r.region]


def ordering_violations(graph: Graph) -> list[str]:
    """TGW routes must wait for their peering's accepter; VPC routes to a TGW must wait for the attachment."""
    problems: list[str] = []
    peerings = {p.id: p for p in graph.of_type(PEERING)}
    accepters = graph.of_type(ACCEPTER)
    for route in graph.of_type(TGW_ROUTE):
        attachment_id = route.inputs.get("transitGatewayAttachmentId")
        peering = peerings.get(str(attachment_id))  # the accepter side uses the same attachment id
        if peering is None:
            continue  # a route to a VPC attachment: nothing to wait for
        accepter = next((a for a in accepters if a.inputs.get("transitGatewayAttachmentId") == peering.id), None)
        if accepter is None or accepter.urn not in route.dependencies:
            problems.append(f"{route.name} does not wait for the accepter of {peering.name}")
    table_vpc = {t.id: t.inputs.get("vpcId") for t in graph.of_type(ROUTE_TABLE)}
    attachments = graph.of_type(VPC_ATTACHMENT)
    for route in graph.of_type(VPC_ROUTE):
        tgw_id = route.inputs.get("transitGatewayId")
        if not tgw_id:
            continue
        vpc_id = table_vpc.get(str(route.inputs.get("routeTableId")))
        attachment = next((a for a in attachments if a.inputs.get("vpcId") == vpc_id
                           and a.inputs.get("transitGatewayId") == tgw_id), None)
        if attachment is None or attachment.urn not in route.dependencies:
            problems.append(f"{route.name} does not wait for its VPC's Transit Gateway attachment")
    return problems


def _named(graph: Graph) -> list[tuple[tuple[str, str, str], str]]:
    """((scope, type, physical name), logical name) for every explicitly named AWS resource."""
    named = []
    for resource in graph.aws_resources:
        if resource.type in SCOPED_NAME_TYPES:
            continue
        scope = "global" if resource.type.startswith(GLOBAL_SERVICES) else str(resource.region)
        for key in NAME_INPUTS_BY_TYPE.get(resource.type, NAME_INPUTS):
            value = resource.inputs.get(key)
            if isinstance(value, str) and value:
                named.append(((scope, resource.type, value), resource.name))
    return named


def physical_names(graph: Graph) -> dict[tuple[str, str, str], str]:
    """(scope, type, physical name) -> logical name, for every explicitly named AWS resource."""
    return dict(_named(graph))


def physical_name_collisions(graphs: Iterable[Graph]) -> list[str]:
    """Explicit physical names used twice in one account scope, within or across the given stacks."""
    seen: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for graph in graphs:
        for key, logical in _named(graph):
            seen[key].append(f"{graph.stack}:{logical}")
    return [f"{kind} {name!r} in {scope} is used by {', '.join(owners)}"
            for (scope, kind, name), owners in seen.items() if len(owners) > 1]
