"""Security groups without inline rules, and one TCP rule per resource, so that no rule is silently replaced by
another and each can be named (and renamed with an alias)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


def security_group(name: str, description: str, vpc_id: pulumi.Input[str],
                   opts: pulumi.ResourceOptions) -> aws.ec2.SecurityGroup:
    """`<name>-sg` with no inline rules: add rules with tcp_rule."""
    return aws.ec2.SecurityGroup(f"{name}-sg", description=description, vpc_id=vpc_id, tags={"Name": name},
                                 opts=opts)


def tcp_rule(name: str, direction: str, group: aws.ec2.SecurityGroup, ports: tuple[int, int],
             opts: pulumi.ResourceOptions, *, cidr: str | None = None, source: aws.ec2.SecurityGroup | None = None,
             description: str | None = None, formerly: str | None = None) -> None:
    """One ingress ("in") or egress ("out") TCP rule for a port range, from/to a CIDR or another group.
    `formerly`: the rule's earlier name, so that a stack deployed before the rename keeps the rule (an alias)."""
    kind = aws.vpc.SecurityGroupIngressRule if direction == "in" else aws.vpc.SecurityGroupEgressRule
    if formerly is not None:
        opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(name=formerly)]))
    kind(name, security_group_id=group.id, ip_protocol="tcp", from_port=ports[0], to_port=ports[1], cidr_ipv4=cidr,
         referenced_security_group_id=source.id if source else None,
         description=description or name.split("-", 1)[-1], opts=opts)
