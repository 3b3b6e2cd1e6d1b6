"""The estimated deploy time: the longest chain of typical creation times through the graph's dependencies."""

from __future__ import annotations

from collections import defaultdict

from stackgraph.synth import Graph

# Rough creation times, minutes: typical values reported for these services (OpenSearch domains and FSx
# file systems take tens of minutes, networking a few, IAM and S3 seconds). Not measured here.
CREATION_MINUTES = {
    "aws:opensearch/domain:Domain": 25, "aws:fsx/lustreFileSystem:LustreFileSystem": 15,
    "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation": 8,
    "aws:ec2transitgateway/transitGateway:TransitGateway": 5,
    "aws:ec2transitgateway/vpcAttachment:VpcAttachment": 3,
    "aws:ec2transitgateway/peeringAttachment:PeeringAttachment": 4,
    "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter": 2,
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": 1,
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": 1,
    "aws:sagemaker/notebookInstance:NotebookInstance": 7, "aws:ec2/natGateway:NatGateway": 2,
    "aws:lb/loadBalancer:LoadBalancer": 3, "aws:ecs/service:Service": 2,
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": 2, "aws:route53/zoneAssociation:ZoneAssociation": 1,
    "docker:index/image:Image": 8, "docker:index/registryImage:RegistryImage": 2,
    "aws:lambda/function:Function": 1, "aws:autoscaling/group:Group": 1,
}
DEFAULT_MINUTES = 0.2


def critical_path(graph: Graph) -> tuple[float, list[str]]:
    """Longest chain of creation times through the dependency graph (a component stands for its resources)."""
    custom = {r.urn: r for r in graph.resources if r.custom}
    children: dict[str, list[str]] = defaultdict(list)
    for resource in graph.resources:
        if resource.parent:
            children[resource.parent].append(resource.urn)

    def expand(urn: str) -> list[str]:
        if urn in custom:
            return [urn]
        return [leaf for child in children.get(urn, []) for leaf in expand(child)]

    finish: dict[str, tuple[float, list[str]]] = {}

    def done(urn: str) -> tuple[float, list[str]]:
        if urn not in finish:
            finish[urn] = (0.0, [])  # guards against cycles
            before = max((done(dep) for d in custom[urn].dependencies for dep in expand(d) if dep != urn),
                         default=(0.0, []), key=lambda item: (item[0], item[1]))  # ties: by name, stable
            minutes = CREATION_MINUTES.get(custom[urn].type, DEFAULT_MINUTES)
            finish[urn] = (before[0] + minutes, [*before[1], f"{custom[urn].name} ({minutes:g} min)"])
        return finish[urn]

    return max((done(urn) for urn in custom), default=(0.0, []), key=lambda item: (item[0], item[1]))
