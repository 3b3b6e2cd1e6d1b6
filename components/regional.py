"""RegionalComponent: the base of every component that lives in one region: its children go through that region's
provider, are named after the component, and get its security groups, rules and roles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from components.iam import service_role
from components.security_groups import security_group, tcp_rule


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
              managed: Sequence[str] = (), account: pulumi.Input[str] | None = None,
              tags: dict[str, str] | None = None) -> aws.iam.Role:
        return service_role(f"{self._name}-{purpose}", service, self._child, statements=statements, managed=managed,
                            account=account, tags=tags)
