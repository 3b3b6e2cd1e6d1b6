"""RegionalKeys: one customer-managed KMS key per region, shared by that region's encrypted resources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.naming import Naming


@dataclass
class RegionalKeysArgs:
    providers: Mapping[str, aws.Provider]  # region -> provider
    naming: Naming


class RegionalKeys(pulumi.ComponentResource):
    """Keys with yearly rotation; the default key policy (account root) lets IAM policies grant use."""

    key_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: RegionalKeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("crossregiondask:index:RegionalKeys", name, None, opts)
        self.key_arns = {}
        for region, provider in args.providers.items():
            key = aws.kms.Key(f"{name}-{region}", description=f"{args.naming.resource(region)} data at rest",
                              enable_key_rotation=True, deletion_window_in_days=30,
                              opts=pulumi.ResourceOptions(parent=self, provider=provider))
            aws.kms.Alias(f"{name}-{region}-alias", name=f"alias/{args.naming.resource(region, max_length=200)}",
                          target_key_id=key.key_id, opts=pulumi.ResourceOptions(parent=self, provider=provider))
            self.key_arns[region] = key.arn
        self.register_outputs({"keyArns": self.key_arns})
