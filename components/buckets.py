"""An S3 bucket with the settings every bucket of ours needs: owner-enforced, public access blocked,
versioned, encrypted, TLS-only, optionally logging to another bucket."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_aws as aws


def secure_bucket(
    name: str,
    opts: pulumi.ResourceOptions,
    *,
    kms_key_arn: pulumi.Input[str] | None = None,
    access_log_bucket: aws.s3.Bucket | None = None,
    extra_statements: Callable[[str, Any], list[dict[str, Any]]] | None = None,
    extra_input: pulumi.Input[Any] = None,
    expire_after_days: int | None = None,
) -> aws.s3.Bucket:
    """`extra_statements(bucket_arn, resolved extra_input)` adds statements (e.g. log delivery) to the
    TLS-only policy. Without a KMS key the bucket uses SSE-S3 (what ALB access logs require)."""
    bucket = aws.s3.Bucket(name, force_destroy=False, opts=opts)
    aws.s3.BucketOwnershipControls(f"{name}-ownership", bucket=bucket.id,
                                   rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
                                   opts=opts)
    block = aws.s3.BucketPublicAccessBlock(f"{name}-no-public", bucket=bucket.id, block_public_acls=True,
                                           block_public_policy=True, ignore_public_acls=True,
                                           restrict_public_buckets=True, opts=opts)
    aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.id,
                            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(
                                status="Enabled"), opts=opts)
    default = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
        sse_algorithm="aws:kms" if kms_key_arn is not None else "AES256", kms_master_key_id=kms_key_arn)
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-encryption", bucket=bucket.id,
        rules=[aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
            apply_server_side_encryption_by_default=default, bucket_key_enabled=kms_key_arn is not None)],
        opts=opts)
    if access_log_bucket is not None:
        aws.s3.BucketLogging(f"{name}-logging", bucket=bucket.id, target_bucket=access_log_bucket.id,
                             target_prefix=f"s3/{name}/", opts=opts)
    if expire_after_days is not None:
        aws.s3.BucketLifecycleConfiguration(f"{name}-expiry", bucket=bucket.id, rules=[
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="expire", status="Enabled", filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=expire_after_days),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=expire_after_days))], opts=opts)

    def policy(arn: str, extra_value: Any) -> str:
        tls_only = {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "s3:*",
                    "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
        extra = extra_statements(arn, extra_value) if extra_statements else []
        return json.dumps({"Version": "2012-10-17", "Statement": [tls_only, *extra]})

    document = pulumi.Output.all(bucket.arn, extra_input).apply(lambda values: policy(values[0], values[1]))
    aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id, policy=document,
                        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[block])))
    return bucket


def server_access_log_delivery(arn: str, account: str) -> dict[str, Any]:
    """What lets S3 deliver our buckets' server access logs into a log bucket: with ownership enforced (no ACLs),
    only a bucket policy can, and only for our own account's buckets."""
    return {"Sid": "S3ServerAccessLogDelivery", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject", "Resource": f"{arn}/s3/*", "Condition": {"StringEquals": {
                "aws:SourceAccount": account}}}


def access_log_bucket(name: str, opts: pulumi.ResourceOptions, account: pulumi.Input[str], expire_after_days: int,
                      more: Callable[[str, Any], list[dict[str, Any]]] | None = None,
                      more_input: pulumi.Input[Any] = None) -> aws.s3.Bucket:
    """A region's access-log bucket: SSE-S3 (the only encryption S3 server access logs and ALB logs accept),
    receiving its region's buckets' server access logs (and whatever `more` allows); it does not log into itself."""
    def statements(arn: str, values: Any) -> list[dict[str, Any]]:
        owner, extra = values
        return [server_access_log_delivery(arn, owner), *(more(arn, extra) if more else [])]

    return secure_bucket(name, opts, extra_statements=statements, extra_input=pulumi.Output.all(account, more_input),
                         expire_after_days=expire_after_days)
