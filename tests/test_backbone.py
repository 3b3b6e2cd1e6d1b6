"""BackboneNetwork on the recorded graph: one TGW per region, full-mesh peering, routes both ways, and a
reachability proof that fails when any piece is removed."""

from __future__ import annotations

import copy
from itertools import combinations

import pytest

from stackgraph.reachability import (
    ACCEPTER,
    PEERING,
    TGW,
    TGW_ROUTE,
    VPC,
    VPC_ATTACHMENT,
    VPC_ROUTE,
    analyse,
)
from stackgraph.synth import Graph, RecordedResource
from tests.conftest import site_regions
from tests.graph_checks import ordering_violations


def regions_of(graph: Graph) -> list[str]:
    return list(graph.outputs["regions"])


def test_one_transit_gateway_per_distinct_region_with_unique_asns(graph: Graph) -> None:
    tgws = graph.of_type(TGW)
    assert sorted(t.region for t in tgws if t.region) == sorted(regions_of(graph))
    asns = [t.inputs["amazonSideAsn"] for t in tgws]
    assert len(set(asns)) == len(asns)
    assert all(64512 <= asn <= 65534 for asn in asns)
    assert all(t.inputs["defaultRouteTablePropagation"] == "enable" for t in tgws)


def test_full_mesh_peering_accepted_in_the_peer_region(graph: Graph) -> None:
    regions = regions_of(graph)
    tgw_region = {t.id: t.region for t in graph.of_type(TGW)}
    peerings = graph.of_type(PEERING)
    assert len(peerings) == len(regions) * (len(regions) - 1) // 2
    pairs = {frozenset((p.region, p.inputs["peerRegion"])) for p in peerings}
    assert pairs == {frozenset(pair) for pair in combinations(regions, 2)}
    for peering in peerings:
        assert tgw_region[peering.inputs["transitGatewayId"]] == peering.region
        assert tgw_region[peering.inputs["peerTransitGatewayId"]] == peering.inputs["peerRegion"]
        accepters = [a for a in graph.of_type(ACCEPTER) if a.inputs["transitGatewayAttachmentId"] == peering.id]
        assert [a.region for a in accepters] == [peering.inputs["peerRegion"]]


def test_every_vpc_attaches_to_its_own_regions_tgw_through_its_attachment_subnets(graph: Graph) -> None:
    tgw_region = {t.id: t.region for t in graph.of_type(TGW)}
    vpcs = {v.id: v for v in graph.of_type(VPC)}
    attachments = graph.of_type(VPC_ATTACHMENT)
    assert sorted(a.inputs["vpcId"] for a in attachments) == sorted(vpcs)
    for attachment in attachments:
        vpc = vpcs[attachment.inputs["vpcId"]]
        assert attachment.region == vpc.region == tgw_region[attachment.inputs["transitGatewayId"]]
        subnets = [graph.by_id(s) for s in attachment.inputs["subnetIds"]]
        assert all(s is not None and s.inputs["tags"]["tier"] == "tgw-attach" for s in subnets)
        assert len({s.inputs["availabilityZone"] for s in subnets if s}) == len(subnets) >= 2


def test_static_tgw_routes_cover_every_remote_cidr_in_both_directions(graph: Graph) -> None:
    cidrs = graph.outputs["vpcCidrs"]
    regions = site_regions(graph)
    tgws = {t.region: t for t in graph.of_type(TGW)}
    routes = {(r.region, r.inputs["destinationCidrBlock"]) for r in graph.of_type(TGW_ROUTE)}
    expected = {(tgw_region, cidrs[site]) for tgw_region in tgws for site in cidrs if regions[site] != tgw_region}
    assert routes == expected
    for route in graph.of_type(TGW_ROUTE):
        assert route.inputs["transitGatewayRouteTableId"] == tgws[str(route.region)].outputs[
            "associationDefaultRouteTableId"]


def test_every_vpc_routes_every_other_vpc_to_its_local_tgw(graph: Graph) -> None:
    cidrs = graph.outputs["vpcCidrs"]
    backbone_routes = [r for r in graph.of_type(VPC_ROUTE) if r.inputs.get("transitGatewayId")]
    assert len(backbone_routes) == len(cidrs) * (len(cidrs) - 1)
    tgw_region = {t.id: t.region for t in graph.of_type(TGW)}
    assert all(tgw_region[r.inputs["transitGatewayId"]] == r.region for r in backbone_routes)


def test_routes_wait_for_accepters_and_attachments(graph: Graph) -> None:
    assert ordering_violations(graph) == []


def test_every_vpc_reaches_every_other_vpc_and_nothing_else(graph: Graph) -> None:
    result = analyse(graph)
    assert result.ok, result.report()
    sites = list(graph.outputs["vpcCidrs"])
    assert set(result.paths) == {(a, b) for a in sites for b in sites if a != b}


def test_cross_region_path_goes_through_both_tgws_and_the_peering(dev_graph: Graph) -> None:
    hops = analyse(dev_graph).paths[("client", "worker-us-west-2")]
    assert hops == ["client-private-rt", "backbone-tgw-eu-west-2", "backbone-peering-eu-west-2-us-west-2",
                    "backbone-tgw-us-west-2", "backbone-attach-worker-us-west-2", "worker-us-west-2"]


# ------------------------------------------------------------------ the checks fail when a piece is missing
def without(graph: Graph, token: str, index: int = 0) -> tuple[Graph, RecordedResource]:
    mutated = copy.deepcopy(graph)
    victim = mutated.of_type(token)[index]
    mutated.resources.remove(victim)
    return mutated, victim


@pytest.mark.parametrize(("token", "reason"), [
    (PEERING, "unknown attachment"),
    (ACCEPTER, "never accepted"),
    (TGW_ROUTE, "has no route to"),
    (VPC_ATTACHMENT, "not attached"),
])
def test_reachability_fails_when_a_backbone_piece_is_removed(dev_graph: Graph, token: str, reason: str) -> None:
    mutated, victim = without(dev_graph, token)
    result = analyse(mutated)
    assert not result.ok
    assert any(reason in why for why in result.failures.values()), (victim.name, result.report())


def test_reachability_fails_when_a_vpc_route_is_removed(dev_graph: Graph) -> None:
    index = next(i for i, r in enumerate(dev_graph.of_type(VPC_ROUTE)) if r.inputs.get("transitGatewayId"))
    mutated, victim = without(dev_graph, VPC_ROUTE, index)
    result = analyse(mutated)
    assert list(result.failures) == [(victim.name.split("-to-")[0].removeprefix("backbone-route-"),
                                      victim.name.split("-to-")[1])]


def test_reachability_flags_a_route_to_a_cidr_that_is_not_ours(dev_graph: Graph) -> None:
    mutated = copy.deepcopy(dev_graph)
    route = copy.deepcopy(mutated.of_type(TGW_ROUTE)[0])
    route.urn += "-extra"
    route.inputs["destinationCidrBlock"] = "8.8.8.0/24"
    mutated.resources.append(route)
    assert analyse(mutated).foreign_routes


def test_a_peering_accepted_in_the_wrong_region_does_not_count(dev_graph: Graph) -> None:
    mutated = copy.deepcopy(dev_graph)
    accepter = mutated.of_type(ACCEPTER)[0]
    accepter.region = "eu-west-2" if accepter.region != "eu-west-2" else "us-east-1"
    assert not analyse(mutated).ok


@pytest.mark.parametrize("token", [TGW_ROUTE, VPC_ROUTE])
def test_ordering_check_fails_when_a_dependency_is_dropped(dev_graph: Graph, token: str) -> None:
    mutated = copy.deepcopy(dev_graph)
    route = next(r for r in mutated.of_type(token) if r.type == TGW_ROUTE or r.inputs.get("transitGatewayId"))
    awaited = ACCEPTER if token == TGW_ROUTE else VPC_ATTACHMENT
    route.dependencies = tuple(d for d in route.dependencies if awaited.split(":")[-1] not in d)
    violations = ordering_violations(mutated)
    assert len(violations) == 1 and route.name in violations[0], violations
