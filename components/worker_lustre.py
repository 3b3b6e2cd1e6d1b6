"""WorkerRegion's FSx for Lustre: the file system, linked to the region's public dataset by a data repository
association, reachable on the Lustre ports from the worker VPC only."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.ports import LUSTRE_PORTS
from components.worker_part import WorkerPart

LUSTRE_VERSION = "2.15"


class LustrePart(WorkerPart):
    # None with storage `s3` (no file system)
    file_system_id: pulumi.Output[str] | None
    file_system_dns_name: pulumi.Output[str] | None
    mount_name: pulumi.Output[str] | None
    association_id: pulumi.Output[str] | None

    def _no_lustre(self) -> None:
        self.file_system_id = self.file_system_dns_name = self.mount_name = self.association_id = None

    def _lustre(self) -> aws.fsx.LustreFileSystem:
        args, vpc = self._args, self._args.vpc
        lustre_sg = self._security_group("lustre", "FSx for Lustre: Lustre ports from the worker VPC only")
        for first, last in LUSTRE_PORTS:
            self._rule("in", lustre_sg, f"lustre-{first}-{last}-from-vpc", (first, last), cidr=vpc.cidr)
            self._rule("out", lustre_sg, f"lustre-{first}-{last}-to-vpc", (first, last), cidr=vpc.cidr)
        log_group = aws.cloudwatch.LogGroup(
            f"{self._name}-lustre-log",  # FSx only writes to groups under /aws/fsx
            name="/aws/fsx" + args.naming.log_group(self._region, "lustre"),
            retention_in_days=args.log_retention_days, opts=self._child)
        # SCRATCH_2 takes neither a throughput tier (200 MB/s per TiB) nor a key of ours (FSx encrypts it with its
        # own): a cache of a public dataset, read again from S3 through the association when a server fails.
        persistent = args.config.lustre_deployment_type == "PERSISTENT_2"
        file_system = aws.fsx.LustreFileSystem(
            f"{self._name}-lustre", deployment_type=args.config.lustre_deployment_type,
            file_system_type_version=LUSTRE_VERSION, storage_capacity=args.config.lustre_storage_gib,
            per_unit_storage_throughput=args.config.lustre_throughput_per_tib if persistent else None,
            data_compression_type="LZ4", kms_key_id=args.key_arn if persistent else None,
            subnet_ids=self._data_zone_subnet_ids[0],
            security_group_ids=[lustre_sg.id],
            log_configuration=aws.fsx.LustreFileSystemLogConfigurationArgs(level="WARN_ERROR",
                                                                           destination=log_group.arn),
            tags={"Name": f"{self._name}-lustre"}, opts=self._child)
        # No auto-import policy: it needs S3 event notifications on the bucket, which public buckets we do
        # not own never send us. The nightly catalog sync re-imports metadata instead.
        association = aws.fsx.DataRepositoryAssociation(
            f"{self._name}-dataset", file_system_id=file_system.id, data_repository_path=args.config.dataset.uri,
            file_system_path=args.config.fsx_path, batch_import_meta_data_on_create=True, opts=self._child)
        self.file_system_id = file_system.id
        self.file_system_dns_name = file_system.dns_name
        self.mount_name = file_system.mount_name
        self.association_id = association.id
        return file_system
