"""What WorkerRegion's parts share: its arguments, and the base each part (worker_lustre.py, worker_pool.py) builds
on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi

from components.naming import Naming
from components.network import RegionalVpc
from components.regional import RegionalComponent
from stackconfig import UserConfig, WorkerConfig


@dataclass
class CatalogTarget:
    """Where a worker region publishes its datasets, and the sync's image and schedule."""

    endpoint: pulumi.Input[str]  # https://<domain>, or s3://<bucket>/<prefix> (catalog.kind s3)
    arn: pulumi.Input[str]  # the domain's, or the bucket's
    domain_region: str  # the client region (where the domain or the bucket is)
    sync_image: pulumi.Input[str]  # the catalog-sync Lambda image by digest, in this region
    schedule: str
    max_drop_percent: int
    kind: str = "opensearch"
    key_arn: pulumi.Input[str] | None = None  # the client region's key, which encrypts the S3 catalog


@dataclass
class UserPool:
    """A user's own pool in this region, part of their own cluster."""

    user: UserConfig
    scheduler_address: str  # their cluster's scheduler
    tls_secret_arn: pulumi.Input[str]  # DaskTls: their cluster's worker certificate, in this region
    max_tasks: int  # the pool's maxTasks within the user's and group's quota


@dataclass
class WorkerRegionArgs:
    config: WorkerConfig
    vpc: RegionalVpc
    peers: Mapping[str, str]  # every other site -> its CIDR (StackConfig.peers): the client and the other workers
    scheduler_address: str | None  # the team's scheduler (None with client.users: each user's pool has its own)
    image: pulumi.Input[str]  # the Dask image by digest, in this region
    repository_arn: pulumi.Input[str]
    key_arn: pulumi.Input[str]
    tls_secret_arn: pulumi.Input[str] | None  # DaskTls: the team workers' certificate, in this region
    naming: Naming
    log_retention_days: int
    catalog: CatalogTarget
    user_pools: Sequence[UserPool] = ()  # client.users: a pool each, on the region's hosts


class WorkerPart(RegionalComponent):
    """WorkerRegion's state as every part reads it (set by WorkerRegion.__init__)."""

    _args: WorkerRegionArgs
    _region: str

    @property
    def _data_zone_subnet_ids(self) -> list[pulumi.Output[str]]:
        """The one private subnet (so one Availability Zone) that holds the region's Lustre file system and every
        worker host and task: a Lustre file system lives in one zone, and a read from another zone is billed per
        GB each way and slower. One zone trades zonal redundancy of the hosts for that; the pools scale to zero
        and start again in the same zone."""
        return self._args.vpc.private_subnet_ids[:1]
