"""Prove from a recorded graph that every VPC can route to every other VPC, and how.

The walk follows what AWS would do with the declared resources: the source subnets' route table
(longest prefix match), then either the local Transit Gateway's default route table (static routes plus the CIDRs
its VPC attachments propagate), accepted peering attachments to the next Transit Gateway, and finally the
destination VPC's attachment; or a VPC peering connection that joins the source VPC to the destination VPC,
accepted in the peer's region (peering is not transitive: one hop, straight to the destination). Anything missing
(a route, an attachment, an accepter) breaks the path and is reported with the reason.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from stackgraph.synth import Graph, RecordedResource

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
ROUTE_TABLE = "aws:ec2/routeTable:RouteTable"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"
VPC_ROUTE = "aws:ec2/route:Route"
TGW = "aws:ec2transitgateway/transitGateway:TransitGateway"
VPC_ATTACHMENT = "aws:ec2transitgateway/vpcAttachment:VpcAttachment"
PEERING = "aws:ec2transitgateway/peeringAttachment:PeeringAttachment"
ACCEPTER = "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter"
TGW_ROUTE = "aws:ec2transitgateway/route:Route"
VPC_PEERING = "aws:ec2/vpcPeeringConnection:VpcPeeringConnection"
VPC_PEERING_ACCEPTER = "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter"
MAX_TGW_HOPS = 8


def vpc_label(graph: Graph, vpc: RecordedResource) -> str:
    """The site name ('client', 'worker-us-east-1') of the component that owns the VPC."""
    if vpc.parent:
        parent = graph.by_urn(vpc.parent)
        if parent.type == "crossregiondask:index:RegionalVpc":
            return parent.name
    return vpc.name


@dataclass
class Reachability:
    paths: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (src, dst) -> hops
    failures: dict[tuple[str, str], str] = field(default_factory=dict)  # (src, dst) -> why not
    foreign_routes: list[str] = field(default_factory=list)  # routes to CIDRs that are not ours

    @property
    def ok(self) -> bool:
        return not self.failures and not self.foreign_routes

    def report(self) -> str:
        lines = [f"{src} -> {dst}: {why}" for (src, dst), why in sorted(self.failures.items())]
        return "\n".join(lines + self.foreign_routes)


def _net(cidr: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(str(cidr))
    except ValueError:
        return None


def _longest_match(entries: list[tuple[str, Any]], destination: str) -> Any | None:
    """Longest-prefix match of `destination` (a CIDR) among (cidr, target) entries."""
    wanted = _net(destination)
    best: tuple[int, Any] | None = None
    for cidr, target in entries:
        network = _net(cidr)
        if network is None or wanted is None or network.version != wanted.version:
            continue
        if wanted.subnet_of(network) and (best is None or network.prefixlen > best[0]):  # type: ignore[arg-type]
            best = (network.prefixlen, target)
    return best[1] if best else None


class _Network:
    """Indexes of the recorded graph that the walk needs."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.vpcs = graph.of_type(VPC)
        self.tgws = {r.id: r for r in graph.of_type(TGW)}
        self.vpc_attachments = graph.of_type(VPC_ATTACHMENT)
        self.peerings = {r.id: r for r in graph.of_type(PEERING)}
        self.accepters = graph.of_type(ACCEPTER)
        self.tgw_routes = graph.of_type(TGW_ROUTE)
        self.vpc_peerings = {r.id: r for r in graph.of_type(VPC_PEERING)}
        self.vpc_peering_accepters = graph.of_type(VPC_PEERING_ACCEPTER)
        self.vpc_routes = graph.of_type(VPC_ROUTE)
        subnet_vpc = {s.id: s.inputs.get("vpcId") for s in graph.of_type(SUBNET)}
        tables = {t.id: t for t in graph.of_type(ROUTE_TABLE)}
        self.tables_of_vpc: dict[str, list[RecordedResource]] = {}
        for association in graph.of_type(ASSOCIATION):
            table = tables.get(association.inputs.get("routeTableId", ""))
            vpc_id = subnet_vpc.get(association.inputs.get("subnetId", ""))
            if table is not None and vpc_id is not None and table not in self.tables_of_vpc.get(vpc_id, []):
                self.tables_of_vpc.setdefault(vpc_id, []).append(table)

    def routes_of(self, table: RecordedResource) -> list[RecordedResource]:
        return [r for r in self.vpc_routes if r.inputs.get("routeTableId") == table.id]

    def private_tables(self, vpc: RecordedResource) -> list[RecordedResource]:
        """Route tables of subnets with no internet gateway route: where workloads run."""
        return [t for t in self.tables_of_vpc.get(vpc.id, [])
                if not any(str(r.inputs.get("gatewayId", "")).startswith("igw-") for r in self.routes_of(t))]

    def tgw_table(self, tgw: RecordedResource) -> list[tuple[str, Any]]:
        """Entries of a TGW's default route table: static routes and propagated VPC CIDRs."""
        table_id = tgw.outputs.get("associationDefaultRouteTableId")
        entries: list[tuple[str, Any]] = [
            (r.inputs.get("destinationCidrBlock", ""), r.inputs.get("transitGatewayAttachmentId"))
            for r in self.tgw_routes
            if table_id and r.inputs.get("transitGatewayRouteTableId") == table_id and not r.inputs.get("blackhole")
        ]
        if tgw.inputs.get("defaultRouteTablePropagation", "enable") == "enable":
            for attachment in self.vpc_attachments:
                if (attachment.inputs.get("transitGatewayId") == tgw.id
                        and attachment.inputs.get("transitGatewayDefaultRouteTablePropagation", True)):
                    vpc = next((v for v in self.vpcs if v.id == attachment.inputs.get("vpcId")), None)
                    if vpc is not None:
                        entries.append((vpc.inputs.get("cidrBlock", ""), attachment.id))
        return entries

    def vpc_peering_accepted(self, connection: RecordedResource) -> bool:
        """Accepted, automatically, in the peer VPC's region (the requester's when it names none)."""
        region = connection.inputs.get("peerRegion") or connection.region
        return any(a.inputs.get("vpcPeeringConnectionId") == connection.id and a.inputs.get("autoAccept")
                   and a.region == region for a in self.vpc_peering_accepters)

    def accepted(self, peering: RecordedResource) -> bool:
        return any(a.inputs.get("transitGatewayAttachmentId") == peering.id
                   and a.region == peering.inputs.get("peerRegion") for a in self.accepters)


def _walk(net: _Network, src: RecordedResource, dst: RecordedResource) -> tuple[list[str] | None, str]:
    dst_cidr = str(dst.inputs.get("cidrBlock"))
    tables = net.private_tables(src)
    if not tables:
        return None, "the VPC has no private subnet route table"
    hops: list[str] = []
    for table in tables:
        entries: list[tuple[str, Any]] = [(str(src.inputs.get("cidrBlock")), "local")]
        entries += [(str(r.inputs.get("destinationCidrBlock")), r) for r in net.routes_of(table)]
        best = _longest_match(entries, dst_cidr)
        if best is None or best == "local":
            return None, f"route table {table.name} has no route to {dst_cidr}"
        if best.inputs.get("vpcPeeringConnectionId"):
            path, why = _through_vpc_peering(net, best, src, dst, table)
            if path is None:
                return None, why
            hops = path
            continue
        tgw = net.tgws.get(str(best.inputs.get("transitGatewayId", "")))
        if tgw is None:
            return None, f"route table {table.name} sends {dst_cidr} to something that is not our Transit Gateway"
        if tgw.region != src.region:
            return None, f"route table {table.name} points at the Transit Gateway of another region ({tgw.region})"
        if not any(a.inputs.get("vpcId") == src.id and a.inputs.get("transitGatewayId") == tgw.id
                   for a in net.vpc_attachments):
            return None, f"the VPC is not attached to {tgw.name}"
        path, why = _through_tgws(net, tgw, dst, [f"{table.name}", f"{tgw.name}"], {tgw.id})
        if path is None:
            return None, why
        hops = path
    return hops, ""


def _through_vpc_peering(net: _Network, route: RecordedResource, src: RecordedResource, dst: RecordedResource,
                         table: RecordedResource) -> tuple[list[str] | None, str]:
    connection = net.vpc_peerings.get(str(route.inputs.get("vpcPeeringConnectionId")))
    if connection is None:
        return None, f"route table {table.name} sends {dst.inputs.get('cidrBlock')} to a peering that is not ours"
    ends = {connection.inputs.get("vpcId"), connection.inputs.get("peerVpcId")}
    if ends != {src.id, dst.id}:
        return None, (f"{connection.name} does not join this VPC to {vpc_label(net.graph, dst)} (VPC peering is not "
                      "transitive)")
    peer = dst if connection.inputs.get("peerVpcId") == dst.id else src
    if (connection.inputs.get("peerRegion") or connection.region) != peer.region:
        return None, f"{connection.name} names peer region {connection.inputs.get('peerRegion')}, but the peer VPC " \
                     f"is in {peer.region}"
    if not net.vpc_peering_accepted(connection):
        return None, f"{connection.name} is never accepted in its peer region {peer.region}"
    return [table.name, connection.name, vpc_label(net.graph, dst)], ""


def _through_tgws(net: _Network, tgw: RecordedResource, dst: RecordedResource, hops: list[str],
                  visited: set[str]) -> tuple[list[str] | None, str]:
    dst_cidr = str(dst.inputs.get("cidrBlock"))
    target = _longest_match(net.tgw_table(tgw), dst_cidr)
    if target is None:
        return None, f"{tgw.name} has no route to {dst_cidr}"
    attachment = next((a for a in net.vpc_attachments if a.id == target), None)
    if attachment is not None:
        if attachment.inputs.get("vpcId") != dst.id:
            return None, f"{tgw.name} sends {dst_cidr} to the wrong VPC"
        return [*hops, attachment.name, vpc_label(net.graph, dst)], ""
    peering = net.peerings.get(str(target))
    if peering is None:
        return None, f"{tgw.name} sends {dst_cidr} to an unknown attachment {target}"
    if not net.accepted(peering):
        return None, f"{peering.name} is never accepted in its peer region {peering.inputs.get('peerRegion')}"
    ends = (peering.inputs.get("transitGatewayId"), peering.inputs.get("peerTransitGatewayId"))
    if tgw.id not in ends:
        return None, f"{tgw.name} routes through {peering.name}, which does not attach it"
    next_tgw = net.tgws.get(str(ends[1] if ends[0] == tgw.id else ends[0]))
    if next_tgw is None or next_tgw.id in visited or len(visited) >= MAX_TGW_HOPS:
        return None, f"{peering.name} leads to no further Transit Gateway (or loops)"
    if next_tgw.id == ends[1] and next_tgw.region != peering.inputs.get("peerRegion"):
        return None, (f"{peering.name} names peer region {peering.inputs.get('peerRegion')} "
                      f"but the peer is in {next_tgw.region}")
    return _through_tgws(net, next_tgw, dst, [*hops, peering.name, next_tgw.name], visited | {next_tgw.id})


def analyse(graph: Graph) -> Reachability:
    """Every ordered pair of VPCs: the path between them, or why there is none; plus foreign routes."""
    net = _Network(graph)
    result = Reachability()
    for src in net.vpcs:
        for dst in net.vpcs:
            if src is dst:
                continue
            key = (vpc_label(graph, src), vpc_label(graph, dst))
            path, why = _walk(net, src, dst)
            if path is None:
                result.failures[key] = why
            else:
                result.paths[key] = path
    ours = {_net(v.inputs.get("cidrBlock")) for v in net.vpcs}
    for route in net.vpc_routes + net.tgw_routes:
        via_backbone = (route.type == TGW_ROUTE or route.inputs.get("transitGatewayId")
                        or route.inputs.get("vpcPeeringConnectionId"))
        if via_backbone and _net(route.inputs.get("destinationCidrBlock")) not in ours:
            result.foreign_routes.append(
                f"{route.name} routes {route.inputs.get('destinationCidrBlock')} over the backbone, "
                "which is not one of our VPC CIDRs")
    return result


INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"


def _admits(graph: Graph, token: str, group: RecordedResource, port: int, cidr: str,
            peer: RecordedResource | None = None) -> bool:
    """Whether a rule of `group` covers `port` for the whole of `cidr` (TCP), or names the security group `peer`
    (a group reference holds within one VPC)."""
    wanted = _net(cidr)
    for rule in graph.of_type(token):
        inputs = rule.inputs
        if inputs.get("securityGroupId") != group.id or inputs.get("ipProtocol") not in ("tcp", "-1"):
            continue
        if not inputs.get("fromPort", 0) <= port <= inputs.get("toPort", 65535):
            continue
        if peer is not None and inputs.get("referencedSecurityGroupId") == peer.id \
                and peer.inputs.get("vpcId") == group.inputs.get("vpcId"):
            return True
        allowed = _net(inputs.get("cidrIpv4"))
        if allowed is not None and wanted is not None and wanted.subnet_of(allowed):  # type: ignore[arg-type]
            return True
    return False


def service_reachability(graph: Graph, src_site: str, dst_group: str, port: int,
                         src_group: str | None = None, routes: Reachability | None = None) -> str | None:
    """Why a TCP connection from anywhere in `src_site`'s VPC (from `src_group`, if given) to `port` on the
    security group `dst_group` cannot be made, or None when routes and both groups allow it. Pass `routes`
    (from `analyse(graph)`) when asking many times about one graph."""
    vpcs = {v.id: v for v in graph.of_type(VPC)}
    src_vpc = vpcs.get(str(graph.outputs.get("vpcIds", {}).get(src_site)))
    target = next((g for g in graph.of_type(SECURITY_GROUP) if g.name == dst_group), None)
    if src_vpc is None or target is None:
        return f"unknown site {src_site!r} or security group {dst_group!r}"
    dst_vpc = vpcs.get(str(target.inputs.get("vpcId")))
    if dst_vpc is None:
        return f"{dst_group} is in no VPC of ours"
    src_cidr, dst_cidr = str(src_vpc.inputs["cidrBlock"]), str(dst_vpc.inputs["cidrBlock"])
    if src_vpc is not dst_vpc:
        route = routes if routes is not None else analyse(graph)
        key = (vpc_label(graph, src_vpc), vpc_label(graph, dst_vpc))
        if key not in route.paths:
            return f"no route: {route.failures.get(key, 'unknown')}"
    source = next((g for g in graph.of_type(SECURITY_GROUP) if g.name == src_group), None) if src_group else None
    if src_group is not None and source is None:
        return f"unknown security group {src_group!r}"
    if not _admits(graph, INGRESS, target, port, src_cidr, peer=source):
        return f"{dst_group} does not admit {src_group or src_cidr} on port {port}"
    if source is not None and not _admits(graph, EGRESS, source, port, dst_cidr, peer=target):
        return f"{src_group} may not send to {dst_cidr} on port {port}"
    return None
