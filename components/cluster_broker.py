"""ClusterBroker: the function that starts and stops each user's own cluster within their group's quotas and shares
each worker region among the running clusters (cluster_broker/), behind a function URL that only IAM-signed calls
reach. Made after the worker regions: it is given every user's scheduler service and pools. Its name is fixed
(`ClientRegion.broker_function_name`), so that each user's notebook, made before it, may call it by name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from cluster_broker import REBALANCE, SETTINGS_VARIABLE, RegionPools, Settings, UserEntry, settings_json
from components.iam import service_role
from components.naming import Naming
from stackconfig import PROJECT_DIR, ClientConfig

BROKER_RUNTIME = "python3.12"
REBALANCE_MINUTES = 5


@dataclass
class ClusterBrokerArgs:
    config: ClientConfig  # the users, groups and quotas
    naming: Naming
    function_name: str  # fixed (ClientRegion.broker_function_name): each user's notebook, made first, calls it
    scheduler_cluster: pulumi.Input[str]  # the client region's ECS cluster (every user's scheduler)
    scheduler_services: Mapping[str, str]  # user -> their scheduler's service name
    notebook_roles: Mapping[str, pulumi.Input[str]]  # user -> their notebook role's name (who calls)
    pools: Mapping[str, tuple[pulumi.Input[str], int, int, Mapping[str, pulumi.Input[str]]]]  # region -> (ECS
    # cluster, capacity (maxTasks), minTasks, user -> their pool's service)
    log_retention_days: int


class ClusterBroker(pulumi.ComponentResource):
    function_name: str
    function_url: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterBrokerArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("crossregiondask:index:ClusterBroker", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=opts.provider)
        region = args.config.region
        self.function_name = args.function_name
        logs = aws.cloudwatch.LogGroup(f"{name}-log", name=f"/aws/lambda/{self.function_name}",
                                       retention_in_days=args.log_retention_days, opts=child)
        account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(
            parent=self, provider=opts.provider)).account_id
        settings = self._settings(args)
        services = pulumi.Output.all(account, args.scheduler_cluster).apply(lambda v: [
            f"arn:aws:ecs:{region}:{v[0]}:service/{v[1]}/{service}" for service in args.scheduler_services.values()])
        role = service_role(f"{name}", "lambda.amazonaws.com", child, statements=pulumi.Output.all(
            logs.arn, services).apply(lambda v: [
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{v[0]}:*"},
                # Start, stop and watch the users' schedulers, and no other service.
                {"Effect": "Allow", "Action": ["ecs:DescribeServices", "ecs:UpdateService"], "Resource": v[1]},
                # Each running cluster's pool maximum: a scalable target's ARN carries an id AWS makes, not ours.
                {"Sid": "ScalableTargetIdsAreAwssSoHaveNoResourceScoping", "Effect": "Allow",
                 "Action": ["application-autoscaling:RegisterScalableTarget",
                            "application-autoscaling:DescribeScalableTargets"], "Resource": "*"}]))
        # Standalone (standard library and boto3, which the runtime has): the package alone.
        function = aws.lambda_.Function(
            f"{name}", name=self.function_name, runtime=BROKER_RUNTIME, handler="cluster_broker.handler",
            role=role.arn, timeout=60, memory_size=256,
            reserved_concurrent_executions=1,  # one decision at a time: two starts cannot both pass a quota
            code=pulumi.AssetArchive({"cluster_broker/__init__.py": pulumi.FileAsset(
                str(PROJECT_DIR / "cluster_broker" / "__init__.py"))}),
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={SETTINGS_VARIABLE: settings}),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=logs.name),
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            opts=child)
        url = aws.lambda_.FunctionUrl(f"{name}", function_name=function.name, authorization_type="AWS_IAM",
                                      opts=child)
        # The shares set again every few minutes: a cluster that stopped itself when idle leaves its share.
        invoker = service_role(f"{name}-schedule", "scheduler.amazonaws.com", child, account=account,
                               statements=function.arn.apply(lambda arn: [
                                   {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn}]))
        aws.scheduler.Schedule(
            f"{name}-rebalance", schedule_expression=f"rate({REBALANCE_MINUTES} minutes)",
            description="Shares each worker region among the users' running clusters again",
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(arn=function.arn, role_arn=invoker.arn,
                                                    input=json.dumps(REBALANCE)), opts=child)
        self.function_url = url.function_url
        self.register_outputs({"functionName": self.function_name, "functionUrl": self.function_url})

    @staticmethod
    def _settings(args: ClusterBrokerArgs) -> pulumi.Output[str]:
        """The function's settings (cluster_broker.Settings as JSON), once every name in them is known."""
        config = args.config
        names = pulumi.Output.from_input({
            "cluster": args.scheduler_cluster, "roles": dict(args.notebook_roles),
            "pools": {region: {"cluster": cluster, "services": dict(services)}
                      for region, (cluster, _, _, services) in args.pools.items()}})

        def settings(known: dict[str, Any]) -> str:
            return settings_json(Settings(
                region=config.region, cluster=known["cluster"],
                users={u.name: UserEntry(group=u.group, role=known["roles"][u.name],
                                         service=args.scheduler_services[u.name],
                                         max_workers_per_region=u.max_workers_per_region) for u in config.users},
                groups={g.name: {"maxClusters": g.max_clusters, "maxWorkersPerRegion": g.max_workers_per_region}
                        for g in config.groups},
                pools={region: RegionPools(cluster=pool["cluster"], capacity=args.pools[region][1],
                                           min_tasks=args.pools[region][2], services=pool["services"])
                       for region, pool in known["pools"].items()}))

        return names.apply(settings)
