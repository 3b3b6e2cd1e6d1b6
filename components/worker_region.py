"""WorkerRegion: compute next to one public dataset. FSx for Lustre linked to the dataset's S3 prefix
(worker_lustre.py), a pool of Dask workers on ECS carrying the region's pool resource and scaling on its demand
(worker_pool.py), the bucket of the region's reference sets, and the region's nightly catalog sync
(nightly_sync.py)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.buckets import access_log_bucket, secure_bucket
from components.nightly_sync import NightlySync, NightlySyncArgs
from components.worker_lustre import LustrePart
from components.worker_part import CatalogTarget, UserPool, WorkerRegionArgs
from components.worker_pool import PoolPart

__all__ = ["CatalogTarget", "UserPool", "WorkerRegion", "WorkerRegionArgs"]

# A load's reference sets (catalog_sync/references.py) are read for as long as the load serves: one night, unless
# later syncs fail (they alarm). After this long a set is gone and its collection opens file by file again.
REFERENCE_RETENTION_DAYS = 30


class WorkerRegion(LustrePart, PoolPart):
    catalog_sync_role_arn: pulumi.Output[str]
    sync_state_machine_arn: pulumi.Output[str]
    alarm_topic_arn: pulumi.Output[str]

    def __init__(self, name: str, args: WorkerRegionArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("crossregiondask:index:WorkerRegion", name, args.vpc.vpc_id, opts)
        self._args = args
        self._region = args.config.region
        self.pool_name = args.config.pool_name

        # With storage `s3` the region has no file system: its workers read the dataset's bucket.
        file_system = self._lustre() if args.config.on_lustre else None
        if file_system is None:
            self._no_lustre()
        # Where the nightly sync writes each netCDF collection's reference set, and the region's workers read it.
        # Its server access logs go to the region's own log bucket (S3 delivers them within a region only).
        account = aws.get_caller_identity_output(opts=self._invoke).account_id
        logs = access_log_bucket(f"{name}-access-logs", self._child, account, args.log_retention_days)
        references = secure_bucket(f"{name}-references", self._child, kms_key_arn=args.key_arn,
                                   access_log_bucket=logs, expire_after_days=REFERENCE_RETENTION_DAYS)
        cluster, providers = self._capacity(file_system)
        self._workers(cluster, providers, references.arn)
        sync = NightlySync(f"{name}-catalog-sync", NightlySyncArgs(
            config=args.config, vpc=args.vpc, file_system_id=file_system.id if file_system else None,
            file_system_arn=file_system.arn if file_system else None,
            image=args.catalog.sync_image, catalog_endpoint=args.catalog.endpoint,
            catalog_arn=args.catalog.arn, catalog_region=args.catalog.domain_region,
            catalog_kind=args.catalog.kind, catalog_key_arn=args.catalog.key_arn,
            schedule=args.catalog.schedule, max_drop_percent=args.catalog.max_drop_percent, key_arn=args.key_arn,
            naming=args.naming, log_retention_days=args.log_retention_days, association_id=self.association_id or "",
            references_bucket=references.bucket, references_bucket_arn=references.arn),
            opts=self._child)
        self.catalog_sync_role_arn = sync.role_arn
        self.sync_state_machine_arn = sync.state_machine_arn
        self.alarm_topic_arn = sync.alarm_topic_arn
        self.register_outputs({
            "storage": args.config.storage,
            "fileSystemId": self.file_system_id,
            "fileSystemDnsName": self.file_system_dns_name,
            "mountName": self.mount_name,
            "associationId": self.association_id,
            "clusterName": self.cluster_name,
            "serviceName": self.service_name,
            "userServiceNames": self.user_service_names,
            "poolName": self.pool_name,
            "catalogSyncRoleArn": self.catalog_sync_role_arn,
            "syncStateMachineArn": self.sync_state_machine_arn,
            "alarmTopicArn": self.alarm_topic_arn,
        })
