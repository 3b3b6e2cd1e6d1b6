"""RegionalVpc: the VPC every client or worker region is built in."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.naming import Naming
from stackconfig.addressing import plan_subnets


@dataclass
class RegionalVpcArgs:
    region: str
    cidr: str
    availability_zones: int
    log_retention_days: int
    naming: Naming
    # NAT for tasks that must reach AWS APIs and registries outside the VPC (ECR, ECS, FSx, CloudWatch).
    egress: bool = True


class RegionalVpc(pulumi.ComponentResource):
    """A VPC with private subnets in several AZs, Transit Gateway attachment subnets, optional public
    subnets with one NAT gateway, an S3 gateway endpoint and flow logs to CloudWatch."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    attachment_subnet_ids: list[pulumi.Output[str]]
    private_route_table_id: pulumi.Output[str]

    def __init__(self, name: str, args: RegionalVpcArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("crossregiondask:index:RegionalVpc", name, None, opts)
        if not isinstance(opts.provider, aws.Provider):
            raise ValueError(f"RegionalVpc {name}: pass the region's aws.Provider in opts.provider")
        self.site_name, self.region, self.cidr = name, args.region, args.cidr
        provider = opts.provider
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        plan = plan_subnets(args.cidr, args.availability_zones)

        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_support=True,
                          enable_dns_hostnames=True, tags={"Name": f"{name}-vpc"}, opts=child)
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
        wanted = args.availability_zones

        def zone(index: int) -> pulumi.Output[str]:
            def pick(names: list[str]) -> str:
                if len(names) < wanted:
                    raise ValueError(f"{args.region} has {len(names)} available AZs; "
                                     f"availabilityZones asks for {wanted}")
                return names[index]
            return zones.names.apply(pick)

        def subnets(kind: str, cidrs: tuple[str, ...], table: aws.ec2.RouteTable) -> list[aws.ec2.Subnet]:
            created = []
            for i, cidr in enumerate(cidrs):
                subnet_name = f"{name}-{kind}-{i}"
                subnet = aws.ec2.Subnet(subnet_name, vpc_id=vpc.id, cidr_block=cidr, availability_zone=zone(i),
                                        map_public_ip_on_launch=False,
                                        tags={"Name": subnet_name, "tier": kind}, opts=child)
                aws.ec2.RouteTableAssociation(f"{subnet_name}-rta", subnet_id=subnet.id, route_table_id=table.id,
                                              opts=child)
                created.append(subnet)
            return created

        private_table = aws.ec2.RouteTable(f"{name}-private-rt", vpc_id=vpc.id,
                                           tags={"Name": f"{name}-private-rt"}, opts=child)
        private = subnets("private", plan.private, private_table)
        attachment = subnets("tgw-attach", plan.attachment, private_table)

        public: list[aws.ec2.Subnet] = []
        if args.egress:
            gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{name}-igw"}, opts=child)
            public_table = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=vpc.id,
                                              tags={"Name": f"{name}-public-rt"}, opts=child)
            aws.ec2.Route(f"{name}-public-default", route_table_id=public_table.id,
                          destination_cidr_block="0.0.0.0/0", gateway_id=gateway.id, opts=child)
            public = subnets("public", plan.public, public_table)
            nat_ip = aws.ec2.Eip(f"{name}-nat-ip", domain="vpc", tags={"Name": f"{name}-nat-ip"}, opts=child)
            nat = aws.ec2.NatGateway(f"{name}-nat", allocation_id=nat_ip.id, subnet_id=public[0].id,
                                     tags={"Name": f"{name}-nat"},
                                     opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                                         depends_on=[gateway])))
            aws.ec2.Route(f"{name}-private-default", route_table_id=private_table.id,
                          destination_cidr_block="0.0.0.0/0", nat_gateway_id=nat.id, opts=child)

        # Same-region S3 traffic (datasets, FSx data repository) stays off the NAT gateway.
        aws.ec2.VpcEndpoint(f"{name}-s3", vpc_id=vpc.id, vpc_endpoint_type="Gateway",
                            service_name=f"com.amazonaws.{args.region}.s3",
                            route_table_ids=[private_table.id], tags={"Name": f"{name}-s3"}, opts=child)
        self._flow_logs(name, args, vpc, child)

        self.vpc_id = vpc.id
        self.private_subnet_ids = [s.id for s in private]
        self.public_subnet_ids = [s.id for s in public]
        self.attachment_subnet_ids = [s.id for s in attachment]
        self.private_route_table_id = private_table.id
        self.register_outputs({
            "vpcId": self.vpc_id,
            "privateSubnetIds": self.private_subnet_ids,
            "publicSubnetIds": self.public_subnet_ids,
            "attachmentSubnetIds": self.attachment_subnet_ids,
            "privateRouteTableId": self.private_route_table_id,
        })

    def _flow_logs(self, name: str, args: RegionalVpcArgs, vpc: aws.ec2.Vpc, child: pulumi.ResourceOptions) -> None:
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs", name=args.naming.log_group(args.region, name, "vpc-flow-logs"),
            retention_in_days=args.log_retention_days, opts=child)
        role = aws.iam.Role(f"{name}-flow-logs-role", assume_role_policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                           "Principal": {"Service": "vpc-flow-logs.amazonaws.com"}}],
        }), opts=child)
        aws.iam.RolePolicy(f"{name}-flow-logs-write", role=role.id, policy=log_group.arn.apply(lambda arn: json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow",
                           "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                           "Resource": [arn, f"{arn}:*"]}],
        })), opts=child)
        aws.ec2.FlowLog(f"{name}-flow-log", vpc_id=vpc.id, traffic_type="ALL",
                        log_destination_type="cloud-watch-logs", log_destination=log_group.arn,
                        iam_role_arn=role.arn, max_aggregation_interval=60, opts=child)
