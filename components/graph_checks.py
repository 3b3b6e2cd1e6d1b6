"""Structural checks over a recorded graph: region pinning, creation order, physical-name collisions.

Each returns a list of human-readable violations (empty = fine), so tests and operator tooling share them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from components.reachability import ACCEPTER, PEERING, ROUTE_TABLE, TGW_ROUTE, VPC_ATTACHMENT, VPC_ROUTE
from components.synth import Graph

# Inputs that are physical names AWS enforces uniqueness on (per region, or per account for IAM).
PHYSICAL_NAME_INPUTS = ("name", "namePrefix", "bucket", "bucketPrefix", "roleName", "functionName",
                        "domainName", "clusterName", "repositoryName", "stateMachineName", "topicName")
GLOBAL_SERVICES = ("aws:iam/",)


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


def physical_names(graph: Graph) -> dict[tuple[str, str, str], str]:
    """(scope, type, physical name) -> logical name, for every explicitly named AWS resource."""
    names: dict[tuple[str, str, str], str] = {}
    for resource in graph.aws_resources:
        scope = "global" if resource.type.startswith(GLOBAL_SERVICES) else str(resource.region)
        for key in PHYSICAL_NAME_INPUTS:
            value = resource.inputs.get(key)
            if isinstance(value, str) and value:
                names[(scope, resource.type, value)] = resource.name
    return names


def physical_name_collisions(graphs: Iterable[Graph]) -> list[str]:
    """Explicit physical names used twice in one account scope, within or across the given stacks."""
    seen: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for graph in graphs:
        for resource in graph.aws_resources:
            scope = "global" if resource.type.startswith(GLOBAL_SERVICES) else str(resource.region)
            for key in PHYSICAL_NAME_INPUTS:
                value = resource.inputs.get(key)
                if isinstance(value, str) and value:
                    seen[(scope, resource.type, value)].append(f"{graph.stack}:{resource.name}")
    return [f"{kind} {name!r} in {scope} is used by {', '.join(owners)}"
            for (scope, kind, name), owners in seen.items() if len(owners) > 1]
