"""BackboneNetwork: a Transit Gateway per region, full-mesh inter-region peering, routes both ways.

Ids pass directly between regions as outputs (the reference handed them over through SSM parameters
read by custom resources in each region).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import pulumi
import pulumi_aws as aws

from components.network import RegionalVpc

# Private ASN range (RFC 6996); each Transit Gateway of a stack gets its own so peered TGWs never clash.
PRIVATE_ASN_BASE = 64512


@dataclass
class BackboneNetworkArgs:
    vpcs: Sequence[RegionalVpc]
    providers: Mapping[str, aws.Provider]  # one per region, keyed by region
    asn_base: int = PRIVATE_ASN_BASE


class BackboneNetwork(pulumi.ComponentResource):
    """Connects every VPC to every other VPC, in the same region or across regions."""

    transit_gateway_ids: dict[str, pulumi.Output[str]]
    peering_attachment_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: BackboneNetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("crossregiondask:index:BackboneNetwork", name, None, opts)
        regions = list(dict.fromkeys(vpc.region for vpc in args.vpcs))
        missing = [r for r in regions if r not in args.providers]
        if missing:
            raise ValueError(f"BackboneNetwork {name}: no provider for region(s) {', '.join(missing)}")

        def child(region: str, depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=self, provider=args.providers[region], depends_on=list(depends_on))

        gateways = {
            region: aws.ec2transitgateway.TransitGateway(
                f"{name}-tgw-{region}",
                description=f"{name} backbone in {region}",
                amazon_side_asn=args.asn_base + index,
                auto_accept_shared_attachments="disable",
                default_route_table_association="enable",
                default_route_table_propagation="enable",
                dns_support="enable",
                tags={"Name": f"{name}-tgw-{region}"},
                opts=child(region),
            )
            for index, region in enumerate(regions)
        }

        # Each VPC attaches to its region's TGW and, by default propagation, publishes its CIDR there.
        attachments = {
            vpc.site_name: aws.ec2transitgateway.VpcAttachment(
                f"{name}-attach-{vpc.site_name}",
                transit_gateway_id=gateways[vpc.region].id,
                vpc_id=vpc.vpc_id,
                subnet_ids=vpc.attachment_subnet_ids,
                dns_support="enable",
                transit_gateway_default_route_table_association=True,
                transit_gateway_default_route_table_propagation=True,
                tags={"Name": f"{name}-attach-{vpc.site_name}"},
                opts=child(vpc.region),
            )
            for vpc in args.vpcs
        }

        # Every VPC routes every other VPC's CIDR to its local TGW, once its attachment exists.
        for vpc in args.vpcs:
            for remote in args.vpcs:
                if remote is vpc:
                    continue
                aws.ec2.Route(
                    f"{name}-route-{vpc.site_name}-to-{remote.site_name}",
                    route_table_id=vpc.private_route_table_id,
                    destination_cidr_block=remote.cidr,
                    transit_gateway_id=gateways[vpc.region].id,
                    opts=child(vpc.region, [attachments[vpc.site_name]]),
                )

        # Full mesh: one peering per pair of regions, accepted in the peer region. Peering attachments never
        # propagate routes, so each side gets a static route per remote CIDR, after the accepter.
        self.peering_attachment_ids = {}
        for requester, peer in combinations(regions, 2):
            pair = f"{requester}-{peer}"
            peering = aws.ec2transitgateway.PeeringAttachment(
                f"{name}-peering-{pair}",
                transit_gateway_id=gateways[requester].id,
                peer_transit_gateway_id=gateways[peer].id,
                peer_region=peer,
                tags={"Name": f"{name}-peering-{pair}"},
                opts=child(requester),
            )
            accepter = aws.ec2transitgateway.PeeringAttachmentAccepter(
                f"{name}-accept-{pair}",
                transit_gateway_attachment_id=peering.id,
                tags={"Name": f"{name}-peering-{pair}"},
                opts=child(peer),
            )
            for local, remote_region, attachment_id in ((requester, peer, peering.id), (peer, requester, accepter.id)):
                for remote in (v for v in args.vpcs if v.region == remote_region):
                    aws.ec2transitgateway.Route(
                        f"{name}-tgw-route-{local}-to-{remote.site_name}",
                        transit_gateway_route_table_id=gateways[local].association_default_route_table_id,
                        destination_cidr_block=remote.cidr,
                        transit_gateway_attachment_id=attachment_id,
                        opts=child(local, [accepter]),
                    )
            self.peering_attachment_ids[pair] = peering.id

        self.transit_gateway_ids = {region: tgw.id for region, tgw in gateways.items()}
        self.register_outputs({
            "transitGatewayIds": self.transit_gateway_ids,
            "peeringAttachmentIds": self.peering_attachment_ids,
        })
