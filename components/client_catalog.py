"""ClientRegion's dataset catalog: the OpenSearch domain (fine-grained access control, its master user the
function that applies the catalog's roles), that catalog-access function, and CatalogAccess, which states and applies
who may use the catalog once every worker region's sync role exists."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from catalog_access import SECURITY_API, security_config
from components.buckets import secure_bucket
from components.client_part import ClientPart
from components.iam import (
    S3_CATALOG_PREFIX,
    catalog_reader_statements,
    catalog_writer_statements,
    lambda_in_vpc_statements,
)
from components.ports import HTTPS_PORT
from platform_facts import CATALOG_LOADS
from stackconfig import PROJECT_DIR, CatalogConfig

CATALOG_ACCESS_RUNTIME = "python3.12"
OPENSEARCH_ENGINE = "OpenSearch_2.19"
OPENSEARCH_TLS_POLICY = "Policy-Min-TLS-1-2-PFS-2023-10"


def _cluster(config: CatalogConfig) -> aws.opensearch.DomainClusterConfigArgs:
    """The domain's nodes: data nodes spread over two zones with three dedicated masters (the default), or as small
    as one data node in one zone with no masters (catalog.instanceCount 1, dedicatedMasters false)."""
    spread = config.instance_count > 1
    return aws.opensearch.DomainClusterConfigArgs(
        instance_type=config.instance_type, instance_count=config.instance_count,
        dedicated_master_enabled=config.dedicated_masters,
        dedicated_master_type=config.master_instance_type if config.dedicated_masters else None,
        dedicated_master_count=3 if config.dedicated_masters else None, zone_awareness_enabled=spread,
        zone_awareness_config=aws.opensearch.DomainClusterConfigZoneAwarenessConfigArgs(
            availability_zone_count=2) if spread else None)


# A snapshot replaced by a newer one stays readable this long (readers fall back to it when the newest cannot be
# read); a load's parts left behind by a sync that died without dropping them go after a week.
SNAPSHOT_VERSIONS_KEPT_DAYS = 30
STALE_LOAD_DAYS = 7


class CatalogPart(ClientPart):
    # None with catalog.kind s3 (no domain)
    catalog_domain_name: pulumi.Output[str] | None
    catalog_access_function_name: pulumi.Output[str] | None
    catalog_admin_role_arn: pulumi.Output[str] | None

    def _catalog(self, sites: Mapping[str, str], log_bucket: aws.s3.Bucket) -> None:
        """The catalog: an OpenSearch domain, or (catalog.kind s3) a versioned bucket of snapshots."""
        if self._args.catalog.on_opensearch:
            self._domain(sites)
        else:
            self._snapshots(log_bucket)

    def _snapshots(self, log_bucket: aws.s3.Bucket) -> None:
        """The S3 catalog's bucket: each region's sync writes its snapshot there (catalog_sync/s3_catalog.py)."""
        bucket = secure_bucket(f"{self._name}-catalog", self._child, kms_key_arn=self._args.key_arn,
                               access_log_bucket=log_bucket)
        aws.s3.BucketLifecycleConfiguration(f"{self._name}-catalog-versions", bucket=bucket.id, rules=[
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="earlier-snapshots", status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=f"{S3_CATALOG_PREFIX}/"),
                noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                    noncurrent_days=SNAPSHOT_VERSIONS_KEPT_DAYS)),
            aws.s3.BucketLifecycleConfigurationRuleArgs(
                id="stale-loads", status="Enabled",
                filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=f"{S3_CATALOG_PREFIX}/{CATALOG_LOADS}/"),
                expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=STALE_LOAD_DAYS))],
            opts=self._child)
        self.catalog_endpoint = pulumi.Output.concat("s3://", bucket.bucket, f"/{S3_CATALOG_PREFIX}")
        self.catalog_arn = bucket.arn
        self.catalog_domain_name = self.catalog_access_function_name = self.catalog_admin_role_arn = None

    def _domain(self, sites: Mapping[str, str]) -> None:
        config, args = self._args.catalog, self._args
        catalog_sg = self._security_group("catalog", "OpenSearch catalog")
        for site, cidr in sites.items():
            self._ingress(catalog_sg, f"catalog-from-{site}", HTTPS_PORT, cidr=cidr, formerly=f"catalog-from-{cidr}")
        logs = {kind: self._log_group(f"catalog-{purpose}") for kind, purpose in (
            ("INDEX_SLOW_LOGS", "index-slow"), ("SEARCH_SLOW_LOGS", "search-slow"), ("ES_APPLICATION_LOGS", "errors"))}
        log_policy = aws.cloudwatch.LogResourcePolicy(
            f"{self._name}-catalog-logs",
            policy_name=args.naming.resource(self._region, "catalog-logs", max_length=255),
            policy_document=pulumi.Output.all(self._identity.account_id, *(g.arn for g in logs.values())).apply(
                lambda v: json.dumps({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "es.amazonaws.com"},
                    "Action": ["logs:PutLogEvents", "logs:CreateLogStream"],
                    "Resource": [f"{arn}:*" for arn in v[1:]],
                    "Condition": {"StringEquals": {"aws:SourceAccount": v[0]}}}]})),
            opts=self._child)
        waits: list[pulumi.Resource] = [log_policy]
        if args.create_opensearch_service_linked_role:  # account-wide: opt-in, only one stack may create it
            waits.append(aws.iam.ServiceLinkedRole(f"{self._name}-opensearch-service-role",
                                                   aws_service_name="opensearchservice.amazonaws.com",
                                                   opts=self._child))
        domain_name = args.naming.short("catalog", max_length=28)
        admin = self._catalog_access_function(domain_name)
        domain = aws.opensearch.Domain(
            f"{self._name}-catalog", domain_name=domain_name,
            engine_version=OPENSEARCH_ENGINE,
            cluster_config=_cluster(config),
            ebs_options=aws.opensearch.DomainEbsOptionsArgs(ebs_enabled=True, volume_size=config.volume_gib,
                                                            volume_type="gp3"),
            # One subnet a zone the domain spans (a one-node domain lives in one zone).
            vpc_options=aws.opensearch.DomainVpcOptionsArgs(
                subnet_ids=args.vpc.private_subnet_ids[:2 if config.instance_count > 1 else 1],
                security_group_ids=[catalog_sg.id]),
            encrypt_at_rest=aws.opensearch.DomainEncryptAtRestArgs(enabled=True, kms_key_id=args.key_arn),
            node_to_node_encryption=aws.opensearch.DomainNodeToNodeEncryptionArgs(enabled=True),
            domain_endpoint_options=aws.opensearch.DomainDomainEndpointOptionsArgs(
                enforce_https=True, tls_security_policy=OPENSEARCH_TLS_POLICY),
            log_publishing_options=[aws.opensearch.DomainLogPublishingOptionArgs(
                log_type=kind, cloudwatch_log_group_arn=group.arn) for kind, group in logs.items()],
            # Fine-grained access control: every index a request touches is checked against the roles mapped to
            # the caller's IAM role (catalog_access/). The master user is the function that applies those
            # roles; no internal users, no anonymous access.
            advanced_security_options=aws.opensearch.DomainAdvancedSecurityOptionsArgs(
                enabled=True, internal_user_database_enabled=False, anonymous_auth_enabled=False,
                master_user_options=aws.opensearch.DomainAdvancedSecurityOptionsMasterUserOptionsArgs(
                    master_user_arn=admin.arn)),
            opts=self._opts(depends_on=waits))
        self.catalog_endpoint = pulumi.Output.concat("https://", domain.endpoint)
        self.catalog_arn = domain.arn
        self.catalog_domain_name = domain.domain_name

    def _catalog_access_function(self, domain_name: str) -> aws.iam.Role:
        """The function that applies the catalog's security roles at deploy (CatalogAccess invokes it), and its
        role, which is the domain's master user: the only principal that may change who may do what."""
        args, region = self._args, self._region
        function_name = args.naming.resource(region, "catalog-access", max_length=64)
        logs = aws.cloudwatch.LogGroup(f"{self._name}-catalog-access-log", name=f"/aws/lambda/{function_name}",
                                       retention_in_days=args.log_retention_days, opts=self._child)
        domain_arn = pulumi.Output.concat("arn:aws:es:", region, ":", self._identity.account_id, ":domain/",
                                          domain_name)
        role = self._role("catalog-admin", "lambda.amazonaws.com", pulumi.Output.all(domain_arn, logs.arn).apply(
            lambda v: [
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{v[1]}:*"},
                {"Effect": "Allow", "Action": ["es:ESHttpGet", "es:ESHttpPut", "es:ESHttpDelete"],
                 "Resource": f"{v[0]}/{SECURITY_API}/*"},
                *lambda_in_vpc_statements()]))
        access_sg = self._security_group("catalog-access", "Applies the catalog's access roles")
        self._egress(access_sg, "catalog-access-to-catalog", HTTPS_PORT, cidr=args.vpc.cidr)
        # Standalone (standard library, botocore, which the runtime has, and the shared facts).
        function = aws.lambda_.Function(
            f"{self._name}-catalog-access", name=function_name, runtime=CATALOG_ACCESS_RUNTIME,
            handler="catalog_access.handler", role=role.arn, timeout=120, memory_size=256,
            reserved_concurrent_executions=1,
            code=pulumi.AssetArchive({path: pulumi.FileAsset(str(PROJECT_DIR / path))
                                      for path in ("catalog_access/__init__.py",
                                                   "platform_facts/__init__.py")}),
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=args.vpc.private_subnet_ids,
                                                         security_group_ids=[access_sg.id]),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=logs.name),
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            opts=self._child)
        self.catalog_access_function_name = function.name
        self.catalog_admin_role_arn = role.arn
        return role


@dataclass
class CatalogAccessArgs:
    domain_name: pulumi.Input[str]
    domain_arn: pulumi.Input[str]
    endpoint: pulumi.Input[str]  # https://<domain endpoint>
    region: str  # the domain's
    function_name: pulumi.Input[str]  # ClientRegion's catalog-access function
    admin_role_arn: pulumi.Input[str]  # its role: the domain's master user
    reader_role_arns: Sequence[pulumi.Input[str]]
    writer_role_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # region -> its sync role


class CatalogAccess(pulumi.ComponentResource):
    """Who may use the catalog, stated twice and enforced by both: the domain's access policy names each role
    allowed in, by request path (never `Principal: *`); the security plugin's roles, applied at deploy by the
    catalog-access function, hold each writer to its own region's indices whatever the request body says.
    Separate from ClientRegion because the writers (each worker region's catalog sync) are created after it."""

    def __init__(self, name: str, args: CatalogAccessArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("crossregiondask:index:CatalogAccess", name, None, opts)
        if not args.reader_role_arns:
            raise ValueError(f"CatalogAccess {name}: at least one reader role")
        child = pulumi.ResourceOptions(parent=self, provider=opts.provider)
        regions = sorted(args.writer_role_arns)
        readers = pulumi.Output.all(*args.reader_role_arns)
        writers = pulumi.Output.all(*(args.writer_role_arns[r] for r in regions)).apply(
            lambda arns: dict(zip(regions, arns, strict=True)))

        def document(domain_arn: str, admin: str, readers: list[str], writers: dict[str, str]) -> str:
            statements = [{"Sid": f"Readers{i}", "Principal": {"AWS": readers}, **statement}
                          for i, statement in enumerate(catalog_reader_statements(domain_arn))]
            for region, writer in writers.items():
                slug = region.replace("-", "")
                statements += [{"Sid": f"Writer{slug}{i}", "Principal": {"AWS": writer}, **statement}
                               for i, statement in enumerate(catalog_writer_statements(domain_arn, region))]
            statements.append({"Sid": "SecurityAdmin", "Principal": {"AWS": admin}, "Effect": "Allow",
                               "Action": ["es:ESHttpGet", "es:ESHttpPut", "es:ESHttpDelete"],
                               "Resource": f"{domain_arn}/{SECURITY_API}/*"})
            return json.dumps({"Version": "2012-10-17", "Statement": statements})

        policy = aws.opensearch.DomainPolicy(
            f"{name}-policy", domain_name=args.domain_name,
            access_policies=pulumi.Output.all(args.domain_arn, args.admin_role_arn, readers, writers).apply(
                lambda v: document(v[0], v[1], v[2], v[3])), opts=child)
        # Runs again whenever the input changes (a region added or removed, a role replaced).
        aws.lambda_.Invocation(
            f"{name}-roles", function_name=args.function_name,
            input=pulumi.Output.all(args.endpoint, readers, writers).apply(lambda v: json.dumps({
                "endpoint": v[0], "region": args.region, "config": security_config(v[1], v[2])}, sort_keys=True)),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[policy])))
        self.register_outputs({})
