"""`backbone: vpc-peering` (issue 32, point 3): a full mesh of VPC peering connections with routes both ways, proven
by the same reachability, journeys and policies as the Transit Gateway backbone, in every stack shape."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest

from plan import evaluate
from stackconfig import ConfigError, parse_stack_config, raw_stack_config
from stackconfig.schema import MAX_PEERINGS_PER_VPC
from stackconfig.validate import _check_backbone, _Checker
from stackgraph.reachability import TGW, VPC, VPC_PEERING, VPC_PEERING_ACCEPTER, VPC_ROUTE, analyse
from stackgraph.synth import PROJECT_DIR, Graph
from tests.conftest import SHAPES, cached_graph, shape_config
from tests.graph_checks import ordering_violations

PEERING = {"backbone": "vpc-peering"}


@pytest.fixture(params=sorted(SHAPES))
def peered(request: pytest.FixtureRequest) -> Graph:
    return cached_graph(request.param, **PEERING)


def sites(graph: Graph) -> dict[str, Any]:
    vpcs = {v.id: v for v in graph.of_type(VPC)}
    return {site: vpcs[vpc_id] for site, vpc_id in graph.outputs["vpcIds"].items()}


def test_a_full_mesh_of_peering_connections_accepted_in_each_peers_region(peered: Graph) -> None:
    vpcs = sites(peered)
    connections = peered.of_type(VPC_PEERING)
    assert not peered.of_type(TGW)  # no hourly backbone at all
    assert {frozenset((c.inputs["vpcId"], c.inputs["peerVpcId"])) for c in connections} == {
        frozenset((a.id, b.id)) for a, b in combinations(vpcs.values(), 2)}
    for connection in connections:
        peer = next(v for v in vpcs.values() if v.id == connection.inputs["peerVpcId"])
        assert connection.inputs["peerRegion"] == peer.region
        (accepter,) = [a for a in peered.of_type(VPC_PEERING_ACCEPTER)
                       if a.inputs["vpcPeeringConnectionId"] == connection.id]
        assert accepter.region == peer.region and accepter.inputs["autoAccept"] is True
    assert set(peered.outputs["peeringConnectionIds"].values()) == {c.id for c in connections}
    assert peered.outputs["backbone"] == "vpc-peering" and peered.outputs["transitGatewayIds"] == {}


def test_every_vpc_routes_every_other_vpc_through_their_connection_after_it_is_accepted(peered: Graph) -> None:
    routes = [r for r in peered.of_type(VPC_ROUTE) if r.inputs.get("vpcPeeringConnectionId")]
    count = len(sites(peered))
    assert len(routes) == count * (count - 1)
    assert ordering_violations(peered) == []
    result = analyse(peered)
    assert result.ok, result.report()
    assert all(len(hops) == 3 for hops in result.paths.values())  # route table, connection, the peer: one hop


def test_plan_proves_journeys_and_policies_the_same_way(peered: Graph) -> None:
    review = evaluate(peered)
    assert review.violations == [] and review.policy_violations == []
    assert all(verdict == "yes" for verdict in review.journeys.values())
    assert "VPC peering" in review.diagram


@pytest.mark.parametrize(("mutation", "reason"), [
    ("accepter", "is never accepted in its peer region"),
    ("route", "does not join this VPC to worker-us-west-2 (VPC peering is not transitive)"),
])
def test_reachability_fails_naming_the_broken_piece(mutation: str, reason: str) -> None:
    graph = cached_graph("dev", **PEERING)
    if mutation == "accepter":
        graph.resources = [r for r in graph.resources if not (
            r.type == VPC_PEERING_ACCEPTER and r.name == "backbone-pcx-accept-client-worker-us-east-1")]
    else:  # us-east-1 sends us-west-2's CIDR through its connection to the client: peering is not transitive
        route = graph.named("backbone-route-worker-us-east-1-to-worker-us-west-2", VPC_ROUTE)
        route.inputs["vpcPeeringConnectionId"] = graph.outputs["peeringConnectionIds"]["client-worker-us-east-1"]
    failures = analyse(graph).failures
    assert any(reason in why for why in failures.values()), failures


def test_an_unknown_backbone_is_refused_naming_the_allowed_ones() -> None:
    project, raw = raw_stack_config(PROJECT_DIR, "dev", {"backbone": "vpn"})
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="dev", project=project)
    assert [str(p) for p in caught.value.problems] == [
        "backbone: 'vpn' is not a backbone. Fix: use one of 'transit-gateway', 'vpc-peering'."]


def test_a_mesh_beyond_the_peering_quota_is_refused_naming_it() -> None:
    checker = _Checker()
    _check_backbone(checker, "vpc-peering", MAX_PEERINGS_PER_VPC + 2)
    (problem,) = checker.problems
    assert problem.path == "backbone" and "over AWS's default quota of 50" in problem.message
    _check_backbone(checker, "vpc-peering", MAX_PEERINGS_PER_VPC + 1)  # 50 connections per VPC: allowed
    assert len(checker.problems) == 1


def test_the_operators_figure_for_the_backbone_is_what_plan_computes() -> None:
    from plan.cost import estimate

    peering = estimate(cached_graph("dev", **PEERING), shape_config("dev", **PEERING))
    transit = estimate(cached_graph("dev"), shape_config("dev"))
    assert peering.idle_usd_per_month is not None and transit.idle_usd_per_month is not None
    saved = round(transit.idle_usd_per_month - peering.idle_usd_per_month)
    text = " ".join((PROJECT_DIR / "docs" / "operators.md").read_text().split())
    assert f"${saved} of the dev stack's ${transit.idle_usd_per_month:,.0f} a month idle" in text
