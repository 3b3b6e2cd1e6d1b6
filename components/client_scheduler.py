"""ClientRegion's scheduler: its private DNS name (resolved by every worker VPC), the dashboard behind a load
balancer, and the scheduler's ECS service (Fargate) with its roles."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from components.buckets import access_log_bucket
from components.client_part import ClientPart, ClientRegionArgs
from components.dask_tls import container_secrets, read_secret_statements
from components.iam import pull_and_log_statements
from components.image import dask_container_checks
from components.naming import private_dns_namespace, scheduler_host
from components.ports import DASHBOARD_PORT, HTTP_PORT, HTTPS_PORT, SCHEDULER_PORT
from components.scaling import scheduler_environment
from platform_facts import METRIC_NAMESPACE, PLATFORM_HEALTH_PATH
from stackconfig import UserConfig

ALB_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# A user's own cluster always stops when unused (the stack's idleShutdownMinutes, or this when that is 0): a
# scheduler per user must not bill around the clock.
USER_CLUSTER_IDLE_MINUTES = 60


class SchedulerPart(ClientPart):
    dashboard_url: pulumi.Output[str] | None

    # ------------------------------------------------------------------------------------ private DNS
    def _private_dns(self, args: ClientRegionArgs
                     ) -> tuple[pulumi.Output[str], aws.servicediscovery.PrivateDnsNamespace]:
        """A Cloud Map namespace (ECS keeps each scheduler's record current as Fargate tasks move), its
        hosted zone associated with every worker VPC, each in its own region."""
        namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{self._name}-dns", name=private_dns_namespace(args.naming), vpc=args.vpc.vpc_id,
            description="Private names of the Dask platform", opts=self._child)
        for worker_vpc in args.worker_vpcs:
            aws.route53.ZoneAssociation(
                f"{self._name}-dns-{worker_vpc.site_name}", zone_id=namespace.hosted_zone, vpc_id=worker_vpc.vpc_id,
                vpc_region=worker_vpc.region,
                opts=pulumi.ResourceOptions(parent=self, provider=args.providers[worker_vpc.region]))
        return namespace.hosted_zone, namespace

    def _discovery(self, namespace: aws.servicediscovery.PrivateDnsNamespace,
                   owner: UserConfig | None) -> aws.servicediscovery.Service:
        """The scheduler's name in the namespace: the team's `scheduler`, a user's `scheduler-<user>`."""
        host = scheduler_host(self._args.naming, owner.name if owner else None)
        return aws.servicediscovery.Service(
            f"{self._name}-scheduler-dns" + (f"-{owner.name}" if owner else ""), name=host.split(".")[0],
            dns_config=aws.servicediscovery.ServiceDnsConfigArgs(
                namespace_id=namespace.id, routing_policy="MULTIVALUE",
                dns_records=[aws.servicediscovery.ServiceDnsConfigDnsRecordArgs(ttl=10, type="A")]),
            tags=owner.tags if owner else None, opts=self._child)

    # -------------------------------------------------------------------------------------- dashboard
    def _access_log_bucket(self) -> aws.s3.Bucket:
        elb_account = aws.elb.get_service_account_output(opts=pulumi.InvokeOutputOptions(
            parent=self, provider=self._child.provider))

        def delivery(arn: str, elb_account_arn: str) -> list[dict[str, Any]]:
            # Regions before 2022 deliver from the regional ELB account, newer ones from the service principal.
            return [{"Sid": "LoadBalancerLogDelivery", "Effect": "Allow", "Action": "s3:PutObject",
                     "Principal": {"AWS": elb_account_arn, "Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                     "Resource": f"{arn}/alb/*"}]

        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(
            parent=self, provider=self._child.provider)).account_id
        return access_log_bucket(f"{self._name}-access-logs", self._child, account, self._args.log_retention_days,
                                 more=delivery, more_input=elb_account.arn)

    def _dashboard(self, dashboard_sg: aws.ec2.SecurityGroup,
                   log_bucket: aws.s3.Bucket) -> tuple[aws.lb.TargetGroup, aws.lb.Listener]:
        config, vpc = self._args.config, self._args.vpc
        https = config.dashboard_certificate_arn is not None
        # Internal, the client VPC (a site, named so); allow-listed, the listed networks (named by their CIDRs).
        sources = ([(cidr, cidr) for cidr in config.dashboard_allowed_cidrs] if config.dashboard_public
                   else [(vpc.site_name, vpc.cidr)])
        for label, cidr in sources:
            self._ingress(dashboard_sg, f"dashboard-http-from-{label}", HTTP_PORT, cidr=cidr,
                          formerly=f"dashboard-http-from-{cidr}" if label != cidr else None)
            if https:
                self._ingress(dashboard_sg, f"dashboard-https-from-{label}", HTTPS_PORT, cidr=cidr,
                              formerly=f"dashboard-https-from-{cidr}" if label != cidr else None)
        balancer = aws.lb.LoadBalancer(
            f"{self._name}-dashboard", load_balancer_type="application", internal=not config.dashboard_public,
            security_groups=[dashboard_sg.id],
            subnets=vpc.public_subnet_ids if config.dashboard_public else vpc.private_subnet_ids,
            drop_invalid_header_fields=True, idle_timeout=300,  # the dashboard keeps websockets open
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(bucket=log_bucket.id, prefix="alb", enabled=True),
            opts=self._child)
        target_group = aws.lb.TargetGroup(
            f"{self._name}-dashboard", port=DASHBOARD_PORT, protocol="HTTP", target_type="ip", vpc_id=vpc.vpc_id,
            health_check=aws.lb.TargetGroupHealthCheckArgs(path=PLATFORM_HEALTH_PATH, matcher="200",
                                                           interval=30, healthy_threshold=2),
            opts=self._child)
        forward = [aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=target_group.arn)]
        if https:
            listener = aws.lb.Listener(f"{self._name}-dashboard-https", load_balancer_arn=balancer.arn,
                                       port=HTTPS_PORT, protocol="HTTPS", ssl_policy=ALB_TLS_POLICY,
                                       certificate_arn=config.dashboard_certificate_arn, default_actions=forward,
                                       opts=self._child)
            aws.lb.Listener(f"{self._name}-dashboard-redirect", load_balancer_arn=balancer.arn, port=HTTP_PORT,
                            protocol="HTTP", default_actions=[aws.lb.ListenerDefaultActionArgs(
                                type="redirect", redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                                    port=str(HTTPS_PORT), protocol="HTTPS", status_code="HTTP_301"))],
                            opts=self._child)
        else:
            listener = aws.lb.Listener(f"{self._name}-dashboard-http", load_balancer_arn=balancer.arn, port=HTTP_PORT,
                                       protocol="HTTP", default_actions=forward, opts=self._child)
        self.dashboard_url = pulumi.Output.concat("https://" if https else "http://", balancer.dns_name)
        return target_group, listener

    # -------------------------------------------------------------------------------------- scheduler
    def _scheduler(self, scheduler_sg: aws.ec2.SecurityGroup, discovery: aws.servicediscovery.Service,
                   tls_secret_arn: pulumi.Input[str], owner: UserConfig | None = None,
                   dashboard: tuple[aws.lb.TargetGroup, aws.lb.Listener] | None = None) -> dict[str, Any]:
        """One scheduler's ECS service, its roles, logs and task: the team's (with the dashboard's load balancer), or
        `owner`'s own cluster's, named and tagged for them, on demand (connect() starts it: zero tasks at first).
        Returns its address, service, service ARN and log group name."""
        config = self._args.config
        suffix, tags = (f"-{owner.name}", owner.tags) if owner else ("", None)
        log_group = self._log_group(f"scheduler{suffix}", tags)
        execution_role = self._role(f"scheduler{suffix}-execution", "ecs-tasks.amazonaws.com", pulumi.Output.all(
            self._args.repository_arn, log_group.arn, tls_secret_arn,
            self._args.key_arn).apply(lambda v: [*pull_and_log_statements(v[0], v[1]),
                                                 *read_secret_statements(v[2], v[3])]), tags=tags)
        # The demand plugin publishes each pool's figure to CloudWatch in the pool's region.
        task_statements: list[dict[str, Any]] = [{
            "Sid": "PutMetricDataHasNoResourceScoping", "Effect": "Allow", "Action": "cloudwatch:PutMetricData",
            "Resource": "*", "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}}}]
        if config.scheduler_exec:  # ECS Exec: the SSM agent's channels (for operators' port forwarding)
            task_statements.append({"Sid": "SsmMessagesHaveNoResourceScoping", "Effect": "Allow", "Action": [
                "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel"], "Resource": "*"})
        cluster = self.scheduler_cluster
        # The service's name is fixed here, not generated: the scheduler's task may stop this service when idle
        # (dask_regions/idle.py), and the notebook may start it, each allowed to update it and nothing else.
        service_name = self._args.naming.resource("scheduler", *([owner.name] if owner else []), max_length=255)
        service_arn = pulumi.Output.all(self._identity.account_id, cluster.name).apply(
            lambda v: f"arn:aws:ecs:{self._region}:{v[0]}:service/{v[1]}/{service_name}")
        on_demand = bool(config.idle_shutdown_minutes) or owner is not None  # a user's: stops when idle, always
        idle_minutes = config.idle_shutdown_minutes or USER_CLUSTER_IDLE_MINUTES
        task_role = self._role(f"scheduler{suffix}-task", "ecs-tasks.amazonaws.com", service_arn.apply(lambda arn: [
            *task_statements,
            *([{"Sid": "StopItsOwnServiceWhenIdle", "Effect": "Allow", "Action": "ecs:UpdateService",
                "Resource": arn}] if on_demand else [])]), tags=tags)
        environment = pulumi.Output.from_input(cluster.name).apply(lambda cluster_name: scheduler_environment(
            self._args.naming.project, self._args.naming.stack, self._args.workers, config.scale_in_window_seconds,
            config.region_grace_seconds, idle=(idle_minutes if on_demand else 0, self._region, cluster_name,
                                               service_name), user=owner.name if owner else None,
            quotas={w.region: config.user_pool_bound(owner, w.max_tasks) for w in self._args.workers} if owner
            else None))
        containers = pulumi.Output.all(self._args.image, log_group.name, tls_secret_arn,
                                       environment).apply(lambda v: json.dumps([{
            "name": "scheduler",
            "image": v[0],
            "essential": True,
            # The entrypoint adds the TLS flags from the secrets (images/dask/entrypoint.py).
            "command": ["scheduler", "--protocol", "tls", "--port", str(SCHEDULER_PORT),
                        "--dashboard-address", f":{DASHBOARD_PORT}",
                        "--preload", "dask_regions.routing", "--preload", "dask_regions.demand",
                        "--preload", "dask_regions.idle"],
            "environment": v[3],
            "secrets": container_secrets(v[2]),
            "portMappings": [{"containerPort": SCHEDULER_PORT, "protocol": "tcp"},
                             {"containerPort": DASHBOARD_PORT, "protocol": "tcp"}],
            **dask_container_checks(v[1], self._region, "scheduler", start_period=60),
        }]))
        task = aws.ecs.TaskDefinition(
            f"{self._name}-scheduler{suffix}",
            family=self._args.naming.resource("scheduler", *([owner.name] if owner else []), max_length=255),
            cpu=str(config.scheduler_cpu), memory=str(config.scheduler_memory_mib), network_mode="awsvpc",
            requires_compatibilities=["FARGATE"], execution_role_arn=execution_role.arn, task_role_arn=task_role.arn,
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(operating_system_family="LINUX",
                                                                      cpu_architecture="X86_64"),
            container_definitions=containers, tags=tags, opts=self._child)
        aws.ecs.Service(
            f"{self._name}-scheduler{suffix}", name=service_name, cluster=cluster.arn, task_definition=task.arn,
            desired_count=0 if owner else 1,  # a user's cluster starts when they connect
            launch_type="FARGATE", platform_version="LATEST",
            # One scheduler at a time: two behind one name would split the workers between them.
            deployment_minimum_healthy_percent=0, deployment_maximum_percent=100,
            health_check_grace_period_seconds=120 if dashboard else None, propagate_tags="SERVICE",
            enable_ecs_managed_tags=True, enable_execute_command=config.scheduler_exec,
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=self._args.vpc.private_subnet_ids, security_groups=[scheduler_sg.id], assign_public_ip=False),
            service_registries=aws.ecs.ServiceServiceRegistriesArgs(registry_arn=discovery.arn),
            load_balancers=[aws.ecs.ServiceLoadBalancerArgs(target_group_arn=dashboard[0].arn,
                                                            container_name="scheduler", container_port=DASHBOARD_PORT)]
            if dashboard else None, tags=tags,
            # Stopped when idle and started by connect(): the desired count is the platform's to set.
            opts=self._opts(depends_on=[dashboard[1]] if dashboard else None,
                            ignore_changes=["desiredCount"] if on_demand else None))
        address = f"tls://{scheduler_host(self._args.naming, owner.name if owner else None)}:{SCHEDULER_PORT}"
        return {"address": address, "service": {"region": self._region, "cluster": cluster.name,
                                                "service": service_name},
                "serviceArn": service_arn, "logGroup": log_group.name}

    def _ecs_cluster(self) -> aws.ecs.Cluster:
        """The client region's ECS cluster (every scheduler's)."""
        return aws.ecs.Cluster(f"{self._name}-cluster", settings=[
            aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")], opts=self._child)
