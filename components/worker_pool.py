"""WorkerRegion's pool: Dask workers on ECS (EC2 hosts, since Fargate cannot mount Lustre) carrying the region's
pool resource, on on-demand and Spot capacity, scaling on the scheduler's demand figure for the pool and/or CPU, down
to zero; the hosts mount the region's Lustre file system."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_aws.appautoscaling as tracking

from components.dask_tls import container_secrets, read_secret_statements
from components.iam import pull_and_log_statements
from components.image import dask_container_checks
from components.ports import HTTPS_PORT, LUSTRE_PORTS, SCHEDULER_PORT
from components.scaling import exact_capacity_steps, metric_stack
from components.worker_part import WorkerPart
from platform_facts import FSX_MOUNT, METRIC_NAME, METRIC_NAMESPACE, READ_CACHE_MOUNT, READ_CACHE_VARIABLE
from stackconfig import CLIENT_SITE, UserConfig, WorkerConfig

ECS_AMI_PARAMETER = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
ROOT_VOLUME_GIB = 100
CAPACITY_TARGET_PERCENT = 80
SCALE_COOLDOWN_SECONDS = 300
DEMAND_COOLDOWN_SECONDS = 60  # the scheduler already smooths its figure
STOP_TIMEOUT_SECONDS = 120  # a stopping worker hands its work back to its pool (Spot gives two minutes)
SPOT_ALLOCATION = "price-capacity-optimized"
TLS_DIRECTORY = "/run/dask-tls"  # tmpfs in the worker container: the key never touches a disk
# Managed policy with the ECS agent's calls (register, poll, telemetry); most take no resource scoping.
ECS_INSTANCE_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"


def worker_environment(config: WorkerConfig) -> list[dict[str, str]]:
    """The worker container's environment: its health check's address, and where the entrypoint writes the TLS
    files (the task's tmpfs)."""
    cache = [] if config.on_lustre else [{"name": READ_CACHE_VARIABLE, "value": READ_CACHE_MOUNT}]
    return [{"name": "DASK_HEALTH_TCP", "value": f"127.0.0.1:{config.worker_ports[0]}"},
            {"name": "DASK_TLS_DIR", "value": f"{TLS_DIRECTORY}/worker"}, *cache]


def data_volume(config: WorkerConfig) -> tuple[str, str]:
    """The host directory a worker task mounts at the same path: the Lustre file system, read-only, or (storage
    `s3`) the read cache."""
    return ("fsx", FSX_MOUNT) if config.on_lustre else ("read-cache", READ_CACHE_MOUNT)


def worker_command(config: WorkerConfig, scheduler_address: str) -> list[str]:
    """The `dask worker` command line of one task (the image's entrypoint adds the TLS flags and runs `dask`)."""
    (worker_first, worker_last), (nanny_first, nanny_last) = config.worker_ports, config.nanny_ports
    return [
        "worker", scheduler_address,
        "--nworkers", str(config.workers_per_task),
        "--nthreads", str(config.threads_per_worker),
        "--resources", f"{config.pool_name}={config.pool_slots}",
        "--worker-port", f"{worker_first}:{worker_last}",
        "--nanny-port", f"{nanny_first}:{nanny_last}",
        "--memory-limit", f"{config.memory_per_worker_mib}MiB",
        "--no-dashboard",
        "--name", config.region,  # prefix of each worker's name, so the dashboard shows its region
        "--preload", "dask_regions.protection",  # busy tasks are protected from scale-in
    ]


class PoolPart(WorkerPart):
    cluster_name: pulumi.Output[str]
    service_name: pulumi.Output[str] | None  # the team's pool (no client.users)
    user_service_names: dict[str, pulumi.Output[str]]  # client.users: user -> their pool's service
    pool_name: str

    # ------------------------------------------------------------------------------------- EC2 hosts
    def _capacity(self, file_system: aws.fsx.LustreFileSystem | None) -> tuple[aws.ecs.Cluster,
                                                                                list[aws.ecs.CapacityProvider]]:
        args, config, vpc = self._args, self._args.config, self._args.vpc
        cluster = aws.ecs.Cluster(f"{self._name}-cluster", settings=[
            aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")], opts=self._child)
        host_sg = self._security_group("host", "Worker hosts: Lustre client and AWS APIs" if file_system else
                                       "Worker hosts: AWS APIs")
        for first, last in LUSTRE_PORTS if file_system else ():  # Lustre servers also call back to their clients
            self._rule("in", host_sg, f"host-lustre-{first}-{last}-from-vpc", (first, last), cidr=vpc.cidr)
            self._rule("out", host_sg, f"host-lustre-{first}-{last}-to-vpc", (first, last), cidr=vpc.cidr)
        self._rule("out", host_sg, "host-to-aws-apis", (HTTPS_PORT, HTTPS_PORT), cidr="0.0.0.0/0")
        role = self._role("host", "ec2.amazonaws.com", managed=[ECS_INSTANCE_POLICY])
        profile = aws.iam.InstanceProfile(f"{self._name}-host", role=role.name, opts=self._child)
        ami = aws.ssm.get_parameter_output(name=ECS_AMI_PARAMETER, opts=self._invoke)
        user_data = (pulumi.Output.all(cluster.name, file_system.dns_name, file_system.mount_name).apply(
            lambda v: _host_user_data(v[0], _lustre_mount(v[1], v[2]))) if file_system else
            cluster.name.apply(lambda name: _host_user_data(name, _read_cache())))
        template = aws.ec2.LaunchTemplate(
            f"{self._name}-host", image_id=ami.value, instance_type=config.instance_type,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=profile.arn),
            vpc_security_group_ids=[host_sg.id], user_data=user_data,
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name="/dev/xvda", ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=ROOT_VOLUME_GIB, volume_type="gp3", encrypted="true", kms_key_id=args.key_arn,
                    delete_on_termination="true"))],
            monitoring=aws.ec2.LaunchTemplateMonitoringArgs(enabled=True),
            tag_specifications=[aws.ec2.LaunchTemplateTagSpecificationArgs(
                resource_type="instance", tags={"Name": f"{self._name}-host"})],
            opts=self._child)
        providers = [self._host_group("hosts", "capacity", template, spot_types=None)]
        if config.spot_percent > 0:
            providers.append(self._host_group("spot-hosts", "spot-capacity", template,
                                              spot_types=config.spot_instance_types or (config.instance_type,)))
        aws.ecs.ClusterCapacityProviders(
            f"{self._name}-capacity", cluster_name=cluster.name, capacity_providers=[p.name for p in providers],
            default_capacity_provider_strategies=[
                aws.ecs.ClusterCapacityProvidersDefaultCapacityProviderStrategyArgs(
                    capacity_provider=strategy.capacity_provider, weight=strategy.weight, base=strategy.base)
                for strategy in self._strategy(providers)], opts=self._child)
        self.cluster_name = cluster.name
        return cluster, providers

    def _host_group(self, group_name: str, provider_name: str, template: aws.ec2.LaunchTemplate, *,
                    spot_types: Sequence[str] | None) -> aws.ecs.CapacityProvider:
        """An auto scaling group of worker hosts (min 0: no tasks, no instances) behind a capacity provider.
        With `spot_types`: Spot only, over several instance types of one size, rebalanced before interruptions."""
        config = self._args.config
        launch = aws.autoscaling.GroupLaunchTemplateArgs(id=template.id, version="$Latest")
        mixed = None
        if spot_types is not None:
            mixed = aws.autoscaling.GroupMixedInstancesPolicyArgs(
                launch_template=aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateArgs(
                    launch_template_specification=(
                        aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateLaunchTemplateSpecificationArgs(
                            launch_template_id=template.id, version="$Latest")),
                    overrides=[aws.autoscaling.GroupMixedInstancesPolicyLaunchTemplateOverrideArgs(instance_type=t)
                               for t in spot_types]),
                instances_distribution=aws.autoscaling.GroupMixedInstancesPolicyInstancesDistributionArgs(
                    on_demand_base_capacity=0, on_demand_percentage_above_base_capacity=0,
                    spot_allocation_strategy=SPOT_ALLOCATION))
        group = aws.autoscaling.Group(
            f"{self._name}-{group_name}", min_size=config.min_instances if spot_types is None else 0,
            max_size=config.max_instances, vpc_zone_identifiers=self._data_zone_subnet_ids, protect_from_scale_in=True,
            launch_template=launch if mixed is None else None, mixed_instances_policy=mixed,
            capacity_rebalance=spot_types is not None,
            tags=[aws.autoscaling.GroupTagArgs(key="AmazonECSManaged", value="true", propagate_at_launch=True)],
            # The capacity provider owns the desired capacity.
            opts=self._opts(ignore_changes=["desiredCapacity"]))
        return aws.ecs.CapacityProvider(
            f"{self._name}-{provider_name}",
            auto_scaling_group_provider=aws.ecs.CapacityProviderAutoScalingGroupProviderArgs(
                auto_scaling_group_arn=group.arn, managed_termination_protection="ENABLED",
                managed_draining="ENABLED",
                managed_scaling=aws.ecs.CapacityProviderAutoScalingGroupProviderManagedScalingArgs(
                    status="ENABLED", target_capacity=CAPACITY_TARGET_PERCENT, minimum_scaling_step_size=1,
                    maximum_scaling_step_size=max(1, config.max_instances // 4))),
            opts=self._child)

    def _strategy(self, providers: Sequence[aws.ecs.CapacityProvider]
                  ) -> list[aws.ecs.ServiceCapacityProviderStrategyArgs]:
        """On-demand first for `onDemandBaseTasks`, then the Spot share of the tasks above it."""
        config = self._args.config
        on_demand = aws.ecs.ServiceCapacityProviderStrategyArgs(
            capacity_provider=providers[0].name, base=config.on_demand_base_tasks,
            weight=100 - config.spot_percent if len(providers) > 1 else 1)
        if len(providers) == 1:
            return [on_demand]
        spot = aws.ecs.ServiceCapacityProviderStrategyArgs(capacity_provider=providers[1].name, base=0,
                                                           weight=config.spot_percent)
        return [on_demand, spot]

    # ----------------------------------------------------------------------------------- Dask workers
    def _workers(self, cluster: aws.ecs.Cluster, providers: Sequence[aws.ecs.CapacityProvider],
                 references_arn: pulumi.Input[str]) -> None:
        """The team's pool, or with client.users each user's own (their cluster's scheduler, certificate, logs and
        roles), all on the region's hosts."""
        args = self._args
        worker_sg = self._worker_sg()
        self.service_name = None
        self.user_service_names = {}
        if args.scheduler_address is not None and args.tls_secret_arn is not None:
            self.service_name = self._pool(cluster, providers, references_arn, worker_sg, args.scheduler_address,
                                           args.tls_secret_arn, None, self._args.config.max_tasks)
        for pool in args.user_pools:
            self.user_service_names[pool.user.name] = self._pool(
                cluster, providers, references_arn, worker_sg, pool.scheduler_address, pool.tls_secret_arn,
                pool.user, pool.max_tasks)

    def _worker_sg(self) -> aws.ec2.SecurityGroup:
        args, config, vpc = self._args, self._args.config, self._args.vpc
        ports = (config.worker_ports[0], config.nanny_ports[1])
        worker_sg = self._security_group("workers", "Dask workers and nannies")
        # Clients and the scheduler dial the workers; workers exchange data directly when results combine.
        client_cidr = args.peers[CLIENT_SITE]
        sources = [(CLIENT_SITE, client_cidr, None), ("own-vpc", vpc.cidr, None),
                   *((site, cidr, f"worker-{cidr}") for site, cidr in args.peers.items() if site != CLIENT_SITE)]
        for label, cidr, formerly in sources:
            self._rule("in", worker_sg, f"workers-from-{label}", ports, cidr=cidr,
                       formerly=f"workers-from-{formerly}" if formerly else None)
        self._rule("out", worker_sg, "workers-to-scheduler", (SCHEDULER_PORT, SCHEDULER_PORT), cidr=client_cidr)
        for label, cidr, formerly in sources[1:]:
            self._rule("out", worker_sg, f"workers-to-{label}", ports, cidr=cidr,
                       formerly=f"workers-to-{formerly}" if formerly else None)
        self._rule("out", worker_sg, "workers-to-aws-apis", (HTTPS_PORT, HTTPS_PORT), cidr="0.0.0.0/0")
        return worker_sg

    def _pool(self, cluster: aws.ecs.Cluster, providers: Sequence[aws.ecs.CapacityProvider],
              references_arn: pulumi.Input[str], worker_sg: aws.ec2.SecurityGroup, scheduler_address: str,
              tls_secret_arn: pulumi.Input[str], owner: UserConfig | None, max_tasks: int) -> pulumi.Output[str]:
        """One pool's ECS service, task, roles, logs and scaling: the team's, or `owner`'s (named and tagged for
        them, scaling on their scheduler's demand, at most `max_tasks`). Returns the service's name."""
        args, config = self._args, self._args.config
        suffix, tags = (f"-{owner.name}", owner.tags) if owner else ("", None)
        ports = (config.worker_ports[0], config.nanny_ports[1])
        log_group = aws.cloudwatch.LogGroup(
            f"{self._name}-workers{suffix}-log", name=args.naming.log_group(self._region, f"workers{suffix}"),
            retention_in_days=args.log_retention_days, tags=tags, opts=self._child)
        execution_role = self._role(f"execution{suffix}", "ecs-tasks.amazonaws.com", pulumi.Output.all(
            args.repository_arn, log_group.arn, tls_secret_arn, args.key_arn).apply(
                lambda v: [*pull_and_log_statements(v[0], v[1]), *read_secret_statements(v[2], v[3])]), tags=tags)
        # Busy workers protect their task from scale-in through the ECS agent (dask_regions/protection.py).
        account = aws.get_caller_identity_output(opts=self._invoke).account_id
        # ... and read their region's reference sets (dask_regions/references.py), encrypted with the region's key.
        task_role = self._role(f"workers{suffix}-task", "ecs-tasks.amazonaws.com", pulumi.Output.all(
            account, cluster.name, references_arn, args.key_arn).apply(lambda v: [
                {"Effect": "Allow", "Action": ["ecs:UpdateTaskProtection", "ecs:GetTaskProtection"],
                 "Resource": f"arn:aws:ecs:{self._region}:{v[0]}:task/{v[1]}/*"},
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{v[2]}/*"},
                {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": v[3]},
                *([] if config.on_lustre else dataset_read_statements(config))]), tags=tags)
        volume, mount = data_volume(config)
        command = worker_command(config, scheduler_address)
        containers = pulumi.Output.all(args.image, log_group.name, tls_secret_arn).apply(lambda v: json.dumps([{
            "name": "worker",
            "image": v[0],
            "essential": True,
            "command": command,
            "stopTimeout": STOP_TIMEOUT_SECONDS,
            "memoryReservation": config.task_memory_mib,
            "portMappings": [{"containerPort": port, "protocol": "tcp"} for port in range(ports[0], ports[1] + 1)],
            "mountPoints": [{"sourceVolume": volume, "containerPath": mount, "readOnly": config.on_lustre}],
            "secrets": container_secrets(v[2]),
            "linuxParameters": {"tmpfs": [{"containerPath": TLS_DIRECTORY, "size": 1,
                                           "mountOptions": ["noexec", "nosuid", "nodev", "mode=1777"]}]},
            "environment": worker_environment(config),
            **dask_container_checks(v[1], self._region, "worker", start_period=120),
        }]))
        task = aws.ecs.TaskDefinition(
            f"{self._name}-workers{suffix}",
            family=args.naming.resource(self._region, "workers", *([owner.name] if owner else []), max_length=255),
            network_mode="awsvpc", requires_compatibilities=["EC2"], execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            memory=str(config.task_memory_mib),
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name=volume, host_path=mount)],
            container_definitions=containers, tags=tags, opts=self._child)
        service = aws.ecs.Service(
            f"{self._name}-workers{suffix}", cluster=cluster.arn, task_definition=task.arn,
            desired_count=config.min_tasks, capacity_provider_strategies=self._strategy(providers),
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=self._data_zone_subnet_ids, security_groups=[worker_sg.id], assign_public_ip=False),
            deployment_minimum_healthy_percent=50, deployment_maximum_percent=200,
            propagate_tags="SERVICE", enable_ecs_managed_tags=True, tags=tags,
            # Application auto scaling owns the desired count.
            opts=self._opts(ignore_changes=["desiredCount"]))
        target = aws.appautoscaling.Target(
            f"{self._name}-workers{suffix}", service_namespace="ecs", scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", cluster.name, "/", service.name),
            min_capacity=config.min_tasks, max_capacity=max_tasks, tags=tags,
            # A user's pool: the cluster broker shares the region among the running clusters (cluster_broker/).
            opts=self._opts(ignore_changes=["maxCapacity"]) if owner else self._child)
        if config.scale_on in ("demand", "both"):
            self._scale_on_demand(target, owner, max_tasks)
        if config.scale_on in ("cpu", "both"):
            self._scale_on_cpu(target, suffix)
        return service.name

    def _scale_on_demand(self, target: aws.appautoscaling.Target, owner: UserConfig | None, max_tasks: int) -> None:
        """The desired count follows the scheduler's `DesiredTasks` figure for this pool, exactly (step scaling
        with exact capacities; an alarm that holds while the figure is published keeps applying it). No figure
        (scheduler down): no change."""
        naming, suffix = self._args.naming, f"-{owner.name}" if owner else ""
        policy = aws.appautoscaling.Policy(
            f"{self._name}-workers{suffix}-demand", policy_type="StepScaling",
            service_namespace=target.service_namespace, resource_id=target.resource_id,
            scalable_dimension=target.scalable_dimension,
            step_scaling_policy_configuration=tracking.PolicyStepScalingPolicyConfigurationArgs(
                adjustment_type="ExactCapacity", cooldown=DEMAND_COOLDOWN_SECONDS, metric_aggregation_type="Maximum",
                step_adjustments=[tracking.PolicyStepScalingPolicyConfigurationStepAdjustmentArgs(
                    metric_interval_lower_bound=str(lower),
                    metric_interval_upper_bound=str(upper) if upper is not None else None,
                    scaling_adjustment=tasks) for lower, upper, tasks in exact_capacity_steps(max_tasks)]),
            opts=self._child)
        aws.cloudwatch.MetricAlarm(
            f"{self._name}-workers{suffix}-demand",
            alarm_description=f"Applies the scheduler's demand for {self.pool_name}"
                              + (f" of {owner.name}'s cluster" if owner else ""),
            namespace=METRIC_NAMESPACE, metric_name=METRIC_NAME,
            dimensions={"Stack": metric_stack(naming.project, naming.stack, owner.name if owner else None),
                        "Pool": self.pool_name},
            statistic="Maximum", period=60, evaluation_periods=1, threshold=0,
            comparison_operator="GreaterThanOrEqualToThreshold", treat_missing_data="missing",
            alarm_actions=[policy.arn], tags=owner.tags if owner else None, opts=self._child)

    def _scale_on_cpu(self, target: aws.appautoscaling.Target, suffix: str) -> None:
        config = self._args.config
        aws.appautoscaling.Policy(
            f"{self._name}-workers{suffix}-cpu", policy_type="TargetTrackingScaling",
            service_namespace=target.service_namespace, resource_id=target.resource_id,
            scalable_dimension=target.scalable_dimension,
            target_tracking_scaling_policy_configuration=tracking.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                target_value=config.cpu_target_percent,
                predefined_metric_specification=(
                    tracking.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                        predefined_metric_type="ECSServiceAverageCPUUtilization")),
                scale_in_cooldown=SCALE_COOLDOWN_SECONDS, scale_out_cooldown=SCALE_COOLDOWN_SECONDS),
            opts=self._child)


def dataset_read_statements(config: WorkerConfig) -> list[dict[str, Any]]:
    """Storage `s3`: the workers read the dataset's objects (and list its prefix: zarr stores are opened by
    listing) in the bucket, with their own role."""
    dataset = config.dataset
    listing: dict[str, Any] = {"Effect": "Allow", "Action": "s3:ListBucket",
                               "Resource": f"arn:aws:s3:::{dataset.bucket}"}
    if dataset.prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [dataset.prefix, f"{dataset.prefix}/*"]}}
    objects = f"arn:aws:s3:::{dataset.bucket}/{dataset.prefix + '/' if dataset.prefix else ''}*"
    return [listing, {"Effect": "Allow", "Action": "s3:GetObject", "Resource": objects}]


def _lustre_mount(lustre_dns_name: str, mount_name: str) -> str:
    """Mounts the region's Lustre file system at /fsx (again at every boot)."""
    return f"""dnf install -y lustre-client
mkdir -p {FSX_MOUNT}
LUSTRE_OPTIONS=defaults,relatime,flock,_netdev,x-systemd.automount
echo "{lustre_dns_name}@tcp:/{mount_name} {FSX_MOUNT} lustre $LUSTRE_OPTIONS 0 0" >> /etc/fstab
mount {FSX_MOUNT}
"""


def _read_cache() -> str:
    """The read cache's directory: on the host's first instance-store disk when it has one (m5d: NVMe, emptied
    when the host stops, which a cache may be), else on the root volume."""
    return f"""mkdir -p {READ_CACHE_MOUNT}
DISK=$(lsblk -dnpo NAME,MODEL | awk '/Instance Storage/ {{print $1; exit}}')
if [ -n "$DISK" ]; then mkfs.xfs -f "$DISK" && mount "$DISK" {READ_CACHE_MOUNT}; fi
chmod 1777 {READ_CACHE_MOUNT}
"""


def _host_user_data(cluster_name: str, storage: str) -> str:
    """Joins the ECS cluster, then `storage`: mounts the region's Lustre file system or prepares the read cache."""
    script = f"""#!/bin/bash
set -euo pipefail
cat >> /etc/ecs/ecs.config <<'EOF'
ECS_CLUSTER={cluster_name}
ECS_ENABLE_CONTAINER_METADATA=true
ECS_ENABLE_SPOT_INSTANCE_DRAINING=true
ECS_CONTAINER_STOP_TIMEOUT={STOP_TIMEOUT_SECONDS}s
EOF
{storage}"""
    return base64.b64encode(script.encode()).decode()
