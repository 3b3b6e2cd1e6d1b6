"""RegionalVpc and providers on the recorded graph: subnets across AZs, NAT egress, S3 endpoint, flow logs,
and every AWS resource created through its own region's provider with the stack's default tags."""

from __future__ import annotations

import ipaddress

import pytest

from stackconfig import load_stack_file
from stackgraph.synth import PROJECT_DIR, Graph, synthesize
from tests.graph_checks import unpinned_resources

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"


def children_of(graph: Graph, site: str, token: str) -> list:  # type: ignore[type-arg]
    parent = next(r.urn for r in graph.resources if r.type == "crossregiondask:index:RegionalVpc" and r.name == site)
    return [r for r in graph.of_type(token) if r.parent == parent]


def test_every_aws_resource_is_pinned_to_its_sites_region(graph: Graph) -> None:
    assert unpinned_resources(graph) == []
    regions = {r.urn: r.region for r in graph.aws_resources}
    for component in graph.of_type("crossregiondask:index:RegionalVpc"):
        vpc = children_of(graph, component.name, VPC)[0]
        assert {regions[r.urn] for r in graph.aws_resources if r.parent == component.urn} == {vpc.region}


def test_providers_are_one_per_region_with_default_tags(graph: Graph) -> None:
    providers = graph.of_type("pulumi:providers:aws")
    assert sorted(p.inputs["region"] for p in providers) == sorted(graph.outputs["regions"])
    for provider in providers:
        tags = provider.inputs["defaultTags"]["tags"]
        assert {tags["project"], tags["stack"]} == {"cross-region-dask", "dev"}
        assert tags["team"]


def test_custom_tags_reach_the_providers() -> None:
    graph = synthesize("dev", {"tags": {"cost-centre": "cc-42"}})
    assert all(p.inputs["defaultTags"]["tags"]["cost-centre"] == "cc-42" for p in graph.of_type("pulumi:providers:aws"))


def test_vpc_layout_per_site(dev_graph: Graph) -> None:
    config = load_stack_file(PROJECT_DIR, "dev")
    for site in config.sites:
        (vpc,) = children_of(dev_graph, site.name, VPC)
        assert vpc.inputs["cidrBlock"] == site.cidr
        assert vpc.inputs["enableDnsSupport"] and vpc.inputs["enableDnsHostnames"]
        subnets = children_of(dev_graph, site.name, SUBNET)
        by_tier: dict[str, list] = {}  # type: ignore[type-arg]
        for subnet in subnets:
            by_tier.setdefault(subnet.inputs["tags"]["tier"], []).append(subnet)
            assert ipaddress.ip_network(subnet.inputs["cidrBlock"]).subnet_of(ipaddress.ip_network(site.cidr))
            assert subnet.inputs["mapPublicIpOnLaunch"] is False
        assert {tier: len(group) for tier, group in by_tier.items()} == {"private": 2, "tgw-attach": 2, "public": 2}
        for group in by_tier.values():
            assert len({s.inputs["availabilityZone"] for s in group}) == 2
            assert all(s.inputs["availabilityZone"].startswith(site.region) for s in group)


def test_three_availability_zones_when_asked() -> None:
    graph = synthesize("dev", {"availabilityZones": 3})
    private = [s for s in graph.of_type(SUBNET) if s.inputs["tags"]["tier"] == "private"]
    assert len(private) == 3 * 3
    assert len({s.inputs["availabilityZone"] for s in private if s.region == "eu-west-2"}) == 3


def test_private_egress_through_nat_and_s3_through_the_gateway_endpoint(dev_graph: Graph) -> None:
    for site in ("client", "worker-us-east-1", "worker-us-west-2"):
        (private_table,) = [t for t in children_of(dev_graph, site, "aws:ec2/routeTable:RouteTable")
                            if t.name.endswith("private-rt")]
        routes = [r for r in children_of(dev_graph, site, "aws:ec2/route:Route")
                  if r.inputs["routeTableId"] == private_table.id]
        (default,) = [r for r in routes if r.inputs["destinationCidrBlock"] == "0.0.0.0/0"]
        nat = dev_graph.by_id(default.inputs["natGatewayId"])
        assert nat is not None
        public_subnet = dev_graph.by_id(nat.inputs["subnetId"])
        assert public_subnet is not None and public_subnet.inputs["tags"]["tier"] == "public"
        (endpoint,) = children_of(dev_graph, site, "aws:ec2/vpcEndpoint:VpcEndpoint")
        assert endpoint.inputs["vpcEndpointType"] == "Gateway"
        assert endpoint.inputs["serviceName"] == f"com.amazonaws.{endpoint.region}.s3"
        assert endpoint.inputs["routeTableIds"] == [private_table.id]


def test_flow_logs_capture_all_traffic_into_a_log_group_with_retention(graph: Graph) -> None:
    retention = 30
    for vpc in graph.of_type(VPC):
        (flow_log,) = [f for f in graph.of_type("aws:ec2/flowLog:FlowLog") if f.inputs["vpcId"] == vpc.id]
        assert flow_log.inputs["trafficType"] == "ALL"
        group = next(g for g in graph.of_type("aws:cloudwatch/logGroup:LogGroup")
                     if g.outputs["arn"] == flow_log.inputs["logDestination"])
        assert group.inputs["retentionInDays"] == retention
        assert group.region == vpc.region
        role = next(r for r in graph.of_type("aws:iam/role:Role") if r.outputs["arn"] == flow_log.inputs["iamRoleArn"])
        assert "vpc-flow-logs.amazonaws.com" in role.inputs["assumeRolePolicy"]
        policy = next(p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id)
        assert group.outputs["arn"] in policy.inputs["policy"] and '"*"' not in policy.inputs["policy"]


def test_log_retention_follows_config() -> None:
    graph = synthesize("dev", {"logRetentionDays": 365})
    assert {g.inputs["retentionInDays"] for g in graph.of_type("aws:cloudwatch/logGroup:LogGroup")} == {365}


@pytest.mark.parametrize("shape", ["dev", "one-worker-in-client-region", "five-workers"])
def test_rules_are_named_after_sites_and_answer_to_their_former_cidr_names(shape: str) -> None:
    """Rule names say which site a rule admits, not its CIDR (the CIDR is in the rule); a stack deployed while
    they were named after CIDRs keeps its rules: each renamed rule has its former name as an alias."""
    from tests.conftest import cached_graph

    graph = cached_graph(shape)
    cidrs = set(graph.outputs["vpcCidrs"].values())
    rules = [r for r in graph.resources if r.type.startswith("aws:vpc/securityGroup")]
    assert [r.name for r in rules if any(cidr in r.name for cidr in cidrs)] == []
    site_cidrs = graph.outputs["vpcCidrs"]
    checked = 0
    for rule in rules:
        site = next((name for name in site_cidrs if rule.name.endswith((f"-from-{name}", f"-to-{name}"))), None)
        if site is None or rule.name.endswith("-workers-from-client"):  # named after its site all along
            continue
        # Workers' rules were named worker-<cidr>, the client region's rules <cidr>.
        former = rule.name.removesuffix(site) + ("worker-" if "-workers-" in rule.name else "") + site_cidrs[site]
        assert rule.options.get("aliases") == [former], (rule.name, rule.options)
        checked += 1
    assert checked >= 2 * len(site_cidrs)
