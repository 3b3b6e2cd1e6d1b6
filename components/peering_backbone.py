"""PeeringBackbone: the backbone without hourly charges (`backbone: vpc-peering`), a full mesh of VPC peering
connections, routes both ways.

Every pair of the platform's VPCs (sites, so a worker VPC in the client's region too) gets one peering connection,
requested from the first site's region and accepted in the second's, and each VPC's private route table gets a
route to every other VPC's CIDR through it. Peering is not transitive, hence the full mesh: n(n-1)/2 connections,
each VPC in n-1 of them (AWS's default quota: 50 active peering connections per VPC; the stack config allows at most
11 VPCs). Cross-region peering carries no hourly charge, only data transfer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import pulumi
import pulumi_aws as aws

from components.network import RegionalVpc


@dataclass
class PeeringBackboneArgs:
    vpcs: Sequence[RegionalVpc]
    providers: Mapping[str, aws.Provider]  # one per region, keyed by region


class PeeringBackbone(pulumi.ComponentResource):
    """Connects every VPC to every other VPC by VPC peering, in the same region or across regions."""

    peering_connection_ids: dict[str, pulumi.Output[str]]  # "<site>-<site>" -> pcx id

    def __init__(self, name: str, args: PeeringBackboneArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("crossregiondask:index:PeeringBackbone", name, None, opts)
        missing = sorted({vpc.region for vpc in args.vpcs} - set(args.providers))
        if missing:
            raise ValueError(f"PeeringBackbone {name}: no provider for region(s) {', '.join(missing)}")

        def child(region: str, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=args.providers[region], depends_on=list(depends_on))

        self.peering_connection_ids = {}
        for requester, accepter in combinations(args.vpcs, 2):
            pair = f"{requester.site_name}-{accepter.site_name}"
            connection = aws.ec2.VpcPeeringConnection(
                f"{name}-pcx-{pair}", vpc_id=requester.vpc_id, peer_vpc_id=accepter.vpc_id,
                peer_region=accepter.region,  # also within one region: accepted below either way
                tags={"Name": f"{name}-pcx-{pair}"}, opts=child(requester.region))
            accepted = aws.ec2.VpcPeeringConnectionAccepter(
                f"{name}-pcx-accept-{pair}", vpc_peering_connection_id=connection.id, auto_accept=True,
                tags={"Name": f"{name}-pcx-{pair}"}, opts=child(accepter.region))
            # Routes both ways, once the connection is active (a route to a pending connection fails).
            for local, remote in ((requester, accepter), (accepter, requester)):
                aws.ec2.Route(
                    f"{name}-route-{local.site_name}-to-{remote.site_name}",
                    route_table_id=local.private_route_table_id, destination_cidr_block=remote.cidr,
                    vpc_peering_connection_id=connection.id, opts=child(local.region, [accepted]))
            self.peering_connection_ids[pair] = connection.id
        self.register_outputs({"peeringConnectionIds": self.peering_connection_ids})
