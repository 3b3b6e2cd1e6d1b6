"""What ClientRegion's parts share: its arguments, and the base each part (client_scheduler.py, client_catalog.py,
client_notebook.py) builds on: the region's provider, its names, and its log groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from components.naming import Naming
from components.network import RegionalVpc
from components.regional import RegionalComponent
from stackconfig import CatalogConfig, ClientConfig, WorkerConfig


@dataclass
class ClientRegionArgs:
    config: ClientConfig
    vpc: RegionalVpc
    worker_vpcs: Sequence[RegionalVpc]  # each resolves the scheduler's name and may reach it
    providers: Mapping[str, aws.Provider]  # region -> its provider (each worker VPC's zone association)
    peers: Mapping[str, str]  # every worker site -> its CIDR (StackConfig.peers)
    image: pulumi.Input[str]  # the Dask image by digest, in this region
    repository_arn: pulumi.Input[str]  # the ECR repository it is pulled from
    key_arn: pulumi.Input[str]  # this region's KMS key
    scheduler_tls_secret_arn: pulumi.Input[str] | None  # DaskTls: the team scheduler's certificate, in this region
    client_tls_secret_arn: pulumi.Input[str] | None  # DaskTls: the team notebook's client certificate, here
    naming: Naming
    log_retention_days: int
    workers: Sequence[WorkerConfig] = ()  # the pools the scheduler publishes demand for
    create_opensearch_service_linked_role: bool = False
    catalog: CatalogConfig = field(default_factory=CatalogConfig)  # the domain's size, or the S3 catalog
    user_tls_secret_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # user -> their certificate
    user_scheduler_tls_secret_arns: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # user -> their
    # cluster's scheduler's certificate


class ClientPart(RegionalComponent):
    """ClientRegion's state as every part reads it (set by ClientRegion.__init__)."""

    _args: ClientRegionArgs
    _region: str
    _identity: aws.GetCallerIdentityResult | pulumi.Output[aws.GetCallerIdentityResult]
    _scheduler_sg: aws.ec2.SecurityGroup
    # What one part makes and another reads (the notebook reads the scheduler's address and service, and the
    # catalog's domain).
    scheduler_address: str
    scheduler_service: dict[str, Any]  # its region, ECS cluster and service (connect() starts it; ECS Exec)
    scheduler_service_arn: pulumi.Output[str]
    user_schedulers: dict[str, dict[str, Any]]  # client.users: user -> their scheduler's address, service, ARN, logs
    scheduler_cluster: aws.ecs.Cluster  # every scheduler's ECS cluster
    broker_function_name: str  # client.users: the cluster broker's (fixed) name, which the notebooks call
    catalog_endpoint: pulumi.Output[str]
    catalog_arn: pulumi.Output[str]  # the domain's, or (catalog.kind s3) the bucket's

    def _log_group(self, purpose: str, tags: dict[str, str] | None = None) -> aws.cloudwatch.LogGroup:
        return aws.cloudwatch.LogGroup(
            f"{self._name}-{purpose}-log", name=self._args.naming.log_group(self._region, "client", purpose),
            retention_in_days=self._args.log_retention_days, tags=tags, opts=self._child)
