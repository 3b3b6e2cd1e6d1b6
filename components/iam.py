"""IAM the components share: trust policies, service roles with their inline policy, and the statements several
roles need (pulling the image and logging, reading and writing the catalog, running a Lambda function in a VPC)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from platform_facts import CATALOG_READ_ALIAS, CATALOG_SNAPSHOT_SUFFIX, catalog_load_prefix, catalog_snapshot_key


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
    (catalog_access/); both must allow."""
    own = f"{domain_arn}/{CATALOG_READ_ALIAS}-{region}"
    return [{"Effect": "Allow", "Action": ["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPut", "es:ESHttpPost",
                                           "es:ESHttpDelete"], "Resource": f"{own}-*"}]


S3_CATALOG_PREFIX = "catalog"  # the S3 catalog's snapshots: s3://<bucket>/catalog/<region>.sqlite


def s3_catalog_reader_statements(bucket_arn: str, key_arn: str) -> list[dict[str, Any]]:
    """Readers of the S3 catalog (catalog.kind s3) list its snapshots and their versions and read them, nothing
    else of the bucket; the key decrypts them."""
    return [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketVersions"], "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{S3_CATALOG_PREFIX}/", f"{S3_CATALOG_PREFIX}/*"]}}},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
             "Resource": f"{bucket_arn}/{S3_CATALOG_PREFIX}/*{CATALOG_SNAPSHOT_SUFFIX}"},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn}]


def s3_catalog_writer_statements(bucket_arn: str, key_arn: str, region: str) -> list[dict[str, Any]]:
    """A region's sync writes its own snapshot and its own loads' parts, nothing of another region's."""
    loads = catalog_load_prefix(S3_CATALOG_PREFIX, region)
    return [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": f"{bucket_arn}/{catalog_snapshot_key(S3_CATALOG_PREFIX, region)}"},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": f"{bucket_arn}/{loads}*"},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn,
             "Condition": {"StringLike": {"s3:prefix": [f"{loads}*"]}}},
            {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": key_arn}]


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
                 account: pulumi.Input[str] | None = None, tags: dict[str, str] | None = None) -> aws.iam.Role:
    """`<name>-role` trusted by `service`, with the inline policy `<name>-policy` and managed policies."""
    trust: pulumi.Input[str] = (pulumi.Output.from_input(account).apply(lambda a: assume_role_policy(service, a))
                                if account is not None else assume_role_policy(service))
    role = aws.iam.Role(f"{name}-role", assume_role_policy=trust, tags=tags, opts=opts)
    if statements is not None:
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=pulumi.Output.from_input(statements).apply(
            lambda s: json.dumps({"Version": "2012-10-17", "Statement": s})), opts=opts)
    for index, policy_arn in enumerate(managed):
        aws.iam.RolePolicyAttachment(f"{name}-managed-{index}", role=role.name, policy_arn=policy_arn, opts=opts)
    return role
