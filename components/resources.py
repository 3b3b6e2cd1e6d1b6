"""Small builders the components share: service roles with inline policies, security groups without inline
rules, and one TCP rule per resource (so that no rule is silently replaced by another)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from platform_facts import CATALOG_READ_ALIAS


def assume_role_policy(service: str, account: str | None = None) -> str:
    """Trust `service`; with `account`, only on behalf of that account (confused-deputy protection)."""
    statement: dict[str, Any] = {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": service}}
    if account:
        statement["Condition"] = {"StringEquals": {"aws:SourceAccount": account}}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def pull_and_log_statements(repository_arn: str, log_group_arn: str) -> list[dict[str, Any]]:
    """What an ECS task's execution role needs to pull the image from its repository and write to its log
    group, nothing more."""
    return [
        # GetAuthorizationToken has no resource-level permissions: "*" is the only valid resource.
        {"Sid": "EcrAuthorizationHasNoResourceScoping", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken",
         "Resource": "*"},
        {"Effect": "Allow", "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                       "ecr:BatchCheckLayerAvailability"], "Resource": repository_arn},
        {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{log_group_arn}:*"}]


# The read alias every reader searches, and each region's load indices `catalog-<region>-<dataset>-<stamp>`.
CATALOG_SEARCHES = ("_search", "_msearch", "_mget")


def catalog_reader_statements(domain_arn: str) -> list[dict[str, Any]]:
    """Readers may only search the read alias and GET from it. OpenSearch without fine-grained access control
    authorises by action and request path only: `ESHttpPost` on `domain/*` would also allow `/_aliases`, `/_bulk`
    and `/_delete_by_query`."""
    alias = f"{domain_arn}/{CATALOG_READ_ALIAS}"
    return [{"Effect": "Allow", "Action": ["es:ESHttpGet", "es:ESHttpHead"], "Resource": [alias, f"{alias}/*"]},
            {"Effect": "Allow", "Action": "es:ESHttpPost",
             "Resource": [f"{alias}/{search}" for search in CATALOG_SEARCHES]}]


def catalog_writer_statements(domain_arn: str, region: str) -> list[dict[str, Any]]:
    """A region's nightly sync may create, fill, alias and delete its own region's load indices only. No
    domain-level path (`/_aliases`, `/_bulk`): each of those could touch other regions. Paths cannot see request
    bodies or multi-index paths, so the domain's fine-grained access control enforces the same rule per index
    (catalog_sync/access.py); both must allow."""
    own = f"{domain_arn}/{CATALOG_READ_ALIAS}-{region}"
    return [{"Effect": "Allow", "Action": ["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPut", "es:ESHttpPost",
                                           "es:ESHttpDelete"], "Resource": f"{own}-*"}]


def lambda_in_vpc_statements() -> list[dict[str, Any]]:
    """What any of our VPC-attached, traced Lambda functions needs beyond its own work."""
    return [
        # Lambda manages its VPC network interfaces through these calls, which take no resource scoping.
        {"Sid": "VpcNetworkInterfacesHaveNoResourceScoping", "Effect": "Allow", "Action": [
            "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
            "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"], "Resource": "*"},
        {"Sid": "XRayHasNoResourceScoping", "Effect": "Allow",
         "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"}]


def service_role(name: str, service: str, opts: pulumi.ResourceOptions, *,
                 statements: pulumi.Input[list[dict[str, Any]]] | None = None, managed: Sequence[str] = (),
                 account: pulumi.Input[str] | None = None) -> aws.iam.Role:
    """`<name>-role` trusted by `service`, with the inline policy `<name>-policy` and managed policies."""
    trust: pulumi.Input[str] = (pulumi.Output.from_input(account).apply(lambda a: assume_role_policy(service, a))
                                if account is not None else assume_role_policy(service))
    role = aws.iam.Role(f"{name}-role", assume_role_policy=trust, opts=opts)
    if statements is not None:
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=pulumi.Output.from_input(statements).apply(
            lambda s: json.dumps({"Version": "2012-10-17", "Statement": s})), opts=opts)
    for index, policy_arn in enumerate(managed):
        aws.iam.RolePolicyAttachment(f"{name}-managed-{index}", role=role.name, policy_arn=policy_arn, opts=opts)
    return role


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


class RegionalComponent(pulumi.ComponentResource):
    """A component whose children all go through one region's provider and are named after it."""

    def __init__(self, type_: str, name: str, vpc_id: pulumi.Input[str], opts: pulumi.ResourceOptions) -> None:
        super().__init__(type_, name, None, opts)
        if not isinstance(opts.provider, aws.Provider):
            raise ValueError(f"{type_.rsplit(':', 1)[-1]} {name}: pass the region's aws.Provider in opts.provider")
        self._name = name
        self._vpc_id = vpc_id
        self._child = pulumi.ResourceOptions(parent=self, provider=opts.provider)
        self._invoke = pulumi.InvokeOutputOptions(parent=self, provider=opts.provider)

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(**kwargs))

    def _security_group(self, role: str, description: str) -> aws.ec2.SecurityGroup:
        return security_group(f"{self._name}-{role}", description, self._vpc_id, self._child)

    def _rule(self, direction: str, group: aws.ec2.SecurityGroup, rule: str, ports: tuple[int, int], *,
              cidr: str | None = None, source: aws.ec2.SecurityGroup | None = None,
              description: str | None = None, formerly: str | None = None) -> None:
        tcp_rule(f"{self._name}-{rule}", direction, group, ports, self._child, cidr=cidr, source=source,
                 description=description or rule, formerly=f"{self._name}-{formerly}" if formerly else None)

    def _ingress(self, group: aws.ec2.SecurityGroup, rule: str, port: int, *, cidr: str | None = None,
                 source: aws.ec2.SecurityGroup | None = None, formerly: str | None = None) -> None:
        self._rule("in", group, rule, (port, port), cidr=cidr, source=source, formerly=formerly)

    def _egress(self, group: aws.ec2.SecurityGroup, rule: str, port: int, *, cidr: str | None = None,
                source: aws.ec2.SecurityGroup | None = None, to_port: int | None = None,
                formerly: str | None = None) -> None:
        self._rule("out", group, rule, (port, to_port if to_port is not None else port), cidr=cidr, source=source,
                   formerly=formerly)

    def _role(self, purpose: str, service: str, statements: pulumi.Input[list[dict[str, Any]]] | None = None, *,
              managed: Sequence[str] = (), account: pulumi.Input[str] | None = None) -> aws.iam.Role:
        return service_role(f"{self._name}-{purpose}", service, self._child, statements=statements, managed=managed,
                            account=account)
