"""RegionalKeys: one customer-managed KMS key per region, shared by that region's encrypted resources."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.naming import Naming


@dataclass
class RegionalKeysArgs:
    providers: Mapping[str, aws.Provider]  # region -> provider
    naming: Naming


def key_policy(account: str) -> str:
    """The account's IAM policies grant use of the key (as the default policy does); CloudWatch may also use
    it, so that alarms can publish to the encrypted alarm topics."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountIamPolicies", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
         "Action": "kms:*", "Resource": "*"},
        {"Sid": "AlarmsToEncryptedTopics", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
         "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*",
         "Condition": {"StringEquals": {"aws:SourceAccount": account}}},
    ]})


class RegionalKeys(pulumi.ComponentResource):
    """Keys with yearly rotation."""

    key_arns: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: RegionalKeysArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("crossregiondask:index:RegionalKeys", name, None, opts)
        self.key_arns = {}
        for region, provider in args.providers.items():
            account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
            key = aws.kms.Key(f"{name}-{region}", description=f"{args.naming.resource(region)} data at rest",
                              enable_key_rotation=True, deletion_window_in_days=30,
                              policy=account.account_id.apply(key_policy),
                              opts=pulumi.ResourceOptions(parent=self, provider=provider))
            aws.kms.Alias(f"{name}-{region}-alias", name=f"alias/{args.naming.resource(region, max_length=200)}",
                          target_key_id=key.key_id, opts=pulumi.ResourceOptions(parent=self, provider=provider))
            self.key_arns[region] = key.arn
        self.register_outputs({"keyArns": self.key_arns})
