"""ClientRegion: where data scientists work. The one Dask scheduler every worker region joins (Fargate,
under a private DNS name every worker VPC resolves), its dashboard behind a load balancer, the OpenSearch
catalog domain, and a SageMaker notebook with the platform's pinned client environment."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from catalog_sync.access import SECURITY_API, security_config
from components.buckets import access_log_bucket, secure_bucket
from components.dask_tls import container_secrets, read_secret_statements
from components.distribution import constraints, pin, wheel
from components.kernel import KERNEL
from components.naming import Naming, private_dns_namespace, scheduler_host
from components.network import RegionalVpc
from components.ports import DASHBOARD_PORT, HTTP_PORT, HTTPS_PORT, SCHEDULER_PORT
from components.resources import (
    RegionalComponent,
    catalog_reader_statements,
    catalog_writer_statements,
    lambda_in_vpc_statements,
    pull_and_log_statements,
)
from components.scaling import scheduler_environment
from platform_facts import METRIC_NAMESPACE, PLATFORM_HEALTH_PATH
from stackconfig import PROJECT_DIR, ClientConfig, WorkerConfig

CATALOG_ACCESS_RUNTIME = "python3.12"
OPENSEARCH_ENGINE = "OpenSearch_2.19"
OPENSEARCH_TLS_POLICY = "Policy-Min-TLS-1-2-PFS-2023-10"
ALB_TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
# Installed in SageMaker's Jupyter server environment (not the kernel's), at requirements.txt's pin: the version
# the tests run a Jupyter server with.
JUPYTER_SERVER_PROXY = pin("jupyter-server-proxy")
# The start script's step that merges a setting (argv[2], JSON) into a Jupyter config file (argv[1]).
MERGE_SETTING = """import json, pathlib, sys
path, setting = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
config = json.loads(path.read_text()) if path.exists() else {}
for section, values in setting.items():
    config.setdefault(section, {}).update(values)
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(config, indent=1))
"""
# The notebook's user's home, and the systemd drop-in that gives SageMaker's Jupyter server its environment.
NOTEBOOK_HOME = "/home/ec2-user"
SERVER_DROP_IN = "/etc/systemd/system/jupyter-server.service.d/dask-platform.conf"
# Dask formats it with the scheduler's host and dashboard port: a path on the notebook's own origin.
DASHBOARD_LINK = "/proxy/{host}:{port}/status"


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
    scheduler_tls_secret_arn: pulumi.Input[str]  # DaskTls: the scheduler's certificate, in this region
    client_tls_secret_arn: pulumi.Input[str]  # DaskTls: the notebook's client certificate, in this region
    naming: Naming
    log_retention_days: int
    workers: Sequence[WorkerConfig] = ()  # the pools the scheduler publishes demand for
    create_opensearch_service_linked_role: bool = False


class ClientRegion(RegionalComponent):
    scheduler_address: str
    dashboard_url: pulumi.Output[str]
    scheduler_service: dict[str, pulumi.Output[str]]  # its ECS cluster and service (operators: ECS Exec)
    catalog_endpoint: pulumi.Output[str]
    catalog_domain_arn: pulumi.Output[str]
    catalog_domain_name: pulumi.Output[str]
    catalog_access_function_name: pulumi.Output[str]
    catalog_admin_role_arn: pulumi.Output[str]
    notebook_name: pulumi.Output[str]
    notebook_url: pulumi.Output[str]
    notebook_role_arn: pulumi.Output[str]
    log_groups: dict[str, dict[str, str]]  # process -> {region, group}: where `dr.connect().get_logs()` reads
    dns_zone_id: pulumi.Output[str]

    def __init__(self, name: str, args: ClientRegionArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("crossregiondask:index:ClientRegion", name, args.vpc.vpc_id, opts)
        missing = sorted({vpc.region for vpc in args.worker_vpcs} - set(args.providers))
        if missing:
            raise ValueError(f"ClientRegion {name}: no provider for region(s) {', '.join(missing)}")
        self._args = args
        self._region = args.config.region
        self._identity = aws.get_caller_identity_output(opts=self._invoke)
        # Every site's clients and workers dial the scheduler and the catalog; the scheduler talks back to them.
        sites = {args.vpc.site_name: args.vpc.cidr, **args.peers}

        scheduler_sg = self._scheduler_sg = self._security_group("scheduler", "Dask scheduler")
        dashboard_sg = self._security_group("dashboard", "Dask dashboard load balancer")
        for site, cidr in sites.items():
            self._ingress(scheduler_sg, f"scheduler-from-{site}", SCHEDULER_PORT, cidr=cidr,
                          formerly=f"scheduler-from-{cidr}")
        self._ingress(scheduler_sg, "dashboard-from-alb", DASHBOARD_PORT, source=dashboard_sg)
        for site, cidr in sites.items():
            self._egress(scheduler_sg, f"scheduler-to-{site}", 0, cidr=cidr, to_port=65535,
                         formerly=f"scheduler-to-{cidr}")
        self._egress(scheduler_sg, "scheduler-to-aws-apis", HTTPS_PORT, cidr="0.0.0.0/0")  # ECR, logs via NAT
        self._egress(dashboard_sg, "alb-to-scheduler", DASHBOARD_PORT, source=scheduler_sg)

        self.dns_zone_id, discovery = self._private_dns(args)
        log_bucket = self._access_log_bucket()
        target_group, listener = self._dashboard(dashboard_sg, log_bucket)
        self._scheduler(scheduler_sg, discovery, target_group, listener)
        self._catalog(sites)
        self._notebook(log_bucket)

        self.register_outputs({
            "schedulerAddress": self.scheduler_address,
            "dashboardUrl": self.dashboard_url,
            "catalogEndpoint": self.catalog_endpoint,
            "notebookName": self.notebook_name,
            "notebookUrl": self.notebook_url,
            "dnsZoneId": self.dns_zone_id,
        })

    # -------------------------------------------------------------------------------------- helpers
    def _log_group(self, purpose: str) -> aws.cloudwatch.LogGroup:
        return aws.cloudwatch.LogGroup(
            f"{self._name}-{purpose}-log", name=self._args.naming.log_group(self._region, "client", purpose),
            retention_in_days=self._args.log_retention_days, opts=self._child)

    # ------------------------------------------------------------------------------------ private DNS
    def _private_dns(self, args: ClientRegionArgs) -> tuple[pulumi.Output[str], aws.servicediscovery.Service]:
        """A Cloud Map namespace (ECS keeps the scheduler's record current as Fargate tasks move), its
        hosted zone associated with every worker VPC, each in its own region."""
        namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{self._name}-dns", name=private_dns_namespace(args.naming), vpc=args.vpc.vpc_id,
            description="Private names of the Dask platform", opts=self._child)
        for worker_vpc in args.worker_vpcs:
            aws.route53.ZoneAssociation(
                f"{self._name}-dns-{worker_vpc.site_name}", zone_id=namespace.hosted_zone, vpc_id=worker_vpc.vpc_id,
                vpc_region=worker_vpc.region,
                opts=pulumi.ResourceOptions(parent=self, provider=args.providers[worker_vpc.region]))
        service = aws.servicediscovery.Service(
            f"{self._name}-scheduler-dns", name=scheduler_host(args.naming).split(".")[0],
            dns_config=aws.servicediscovery.ServiceDnsConfigArgs(
                namespace_id=namespace.id, routing_policy="MULTIVALUE",
                dns_records=[aws.servicediscovery.ServiceDnsConfigDnsRecordArgs(ttl=10, type="A")]),
            opts=self._child)
        self.scheduler_address = f"tls://{scheduler_host(args.naming)}:{SCHEDULER_PORT}"
        return namespace.hosted_zone, service

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
                   target_group: aws.lb.TargetGroup, listener: aws.lb.Listener) -> None:
        config = self._args.config
        log_group = self._log_group("scheduler")
        execution_role = self._role("scheduler-execution", "ecs-tasks.amazonaws.com", pulumi.Output.all(
            self._args.repository_arn, log_group.arn, self._args.scheduler_tls_secret_arn,
            self._args.key_arn).apply(lambda v: [*pull_and_log_statements(v[0], v[1]),
                                                 *read_secret_statements(v[2], v[3])]))
        # The demand plugin publishes each pool's figure to CloudWatch in the pool's region.
        task_statements: list[dict[str, Any]] = [{
            "Sid": "PutMetricDataHasNoResourceScoping", "Effect": "Allow", "Action": "cloudwatch:PutMetricData",
            "Resource": "*", "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}}}]
        if config.scheduler_exec:  # ECS Exec: the SSM agent's channels (for operators' port forwarding)
            task_statements.append({"Sid": "SsmMessagesHaveNoResourceScoping", "Effect": "Allow", "Action": [
                "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel",
                "ssmmessages:OpenDataChannel"], "Resource": "*"})
        task_role = self._role("scheduler-task", "ecs-tasks.amazonaws.com", task_statements)
        environment = scheduler_environment(self._args.naming.project, self._args.naming.stack, self._args.workers,
                                            config.scale_in_window_seconds)
        cluster = aws.ecs.Cluster(f"{self._name}-cluster", settings=[
            aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")], opts=self._child)
        containers = pulumi.Output.all(self._args.image, log_group.name, self._args.scheduler_tls_secret_arn).apply(
            lambda v: json.dumps([{
            "name": "scheduler",
            "image": v[0],
            "essential": True,
            # The entrypoint adds the TLS flags from the secrets (images/dask/entrypoint.py).
            "command": ["scheduler", "--protocol", "tls", "--port", str(SCHEDULER_PORT),
                        "--dashboard-address", f":{DASHBOARD_PORT}",
                        "--preload", "dask_regions.routing", "--preload", "dask_regions.demand"],
            "environment": environment,
            "secrets": container_secrets(v[2]),
            "portMappings": [{"containerPort": SCHEDULER_PORT, "protocol": "tcp"},
                             {"containerPort": DASHBOARD_PORT, "protocol": "tcp"}],
            "healthCheck": {"command": ["CMD", "python", "/opt/dask/healthcheck.py"], "interval": 30,
                            "timeout": 5, "retries": 3, "startPeriod": 60},
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": v[1], "awslogs-region": self._region, "awslogs-stream-prefix": "scheduler"}},
        }]))
        task = aws.ecs.TaskDefinition(
            f"{self._name}-scheduler", family=self._args.naming.resource("scheduler", max_length=255),
            cpu=str(config.scheduler_cpu), memory=str(config.scheduler_memory_mib), network_mode="awsvpc",
            requires_compatibilities=["FARGATE"], execution_role_arn=execution_role.arn, task_role_arn=task_role.arn,
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(operating_system_family="LINUX",
                                                                      cpu_architecture="X86_64"),
            container_definitions=containers, opts=self._child)
        service = aws.ecs.Service(
            f"{self._name}-scheduler", cluster=cluster.arn, task_definition=task.arn, desired_count=1,
            launch_type="FARGATE", platform_version="LATEST",
            # One scheduler at a time: two behind one name would split the workers between them.
            deployment_minimum_healthy_percent=0, deployment_maximum_percent=100,
            health_check_grace_period_seconds=120, propagate_tags="SERVICE", enable_ecs_managed_tags=True,
            enable_execute_command=config.scheduler_exec,
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=self._args.vpc.private_subnet_ids, security_groups=[scheduler_sg.id], assign_public_ip=False),
            service_registries=aws.ecs.ServiceServiceRegistriesArgs(registry_arn=discovery.arn),
            load_balancers=[aws.ecs.ServiceLoadBalancerArgs(target_group_arn=target_group.arn,
                                                            container_name="scheduler", container_port=DASHBOARD_PORT)],
            opts=self._opts(depends_on=[listener]))
        self.scheduler_service = {"cluster": cluster.name, "service": service.name}

    # ---------------------------------------------------------------------------------------- catalog
    def _catalog(self, sites: Mapping[str, str]) -> None:
        config, args = self._args.config, self._args
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
            cluster_config=aws.opensearch.DomainClusterConfigArgs(
                instance_type=config.catalog_instance_type, instance_count=config.catalog_instance_count,
                dedicated_master_enabled=True, dedicated_master_type=config.catalog_master_instance_type,
                dedicated_master_count=3, zone_awareness_enabled=True,
                zone_awareness_config=aws.opensearch.DomainClusterConfigZoneAwarenessConfigArgs(
                    availability_zone_count=2)),
            ebs_options=aws.opensearch.DomainEbsOptionsArgs(ebs_enabled=True, volume_size=config.catalog_volume_gib,
                                                            volume_type="gp3"),
            vpc_options=aws.opensearch.DomainVpcOptionsArgs(subnet_ids=args.vpc.private_subnet_ids[:2],
                                                            security_group_ids=[catalog_sg.id]),
            encrypt_at_rest=aws.opensearch.DomainEncryptAtRestArgs(enabled=True, kms_key_id=args.key_arn),
            node_to_node_encryption=aws.opensearch.DomainNodeToNodeEncryptionArgs(enabled=True),
            domain_endpoint_options=aws.opensearch.DomainDomainEndpointOptionsArgs(
                enforce_https=True, tls_security_policy=OPENSEARCH_TLS_POLICY),
            log_publishing_options=[aws.opensearch.DomainLogPublishingOptionArgs(
                log_type=kind, cloudwatch_log_group_arn=group.arn) for kind, group in logs.items()],
            # Fine-grained access control: every index a request touches is checked against the roles mapped to
            # the caller's IAM role (catalog_sync/access.py). The master user is the function that applies those
            # roles; no internal users, no anonymous access.
            advanced_security_options=aws.opensearch.DomainAdvancedSecurityOptionsArgs(
                enabled=True, internal_user_database_enabled=False, anonymous_auth_enabled=False,
                master_user_options=aws.opensearch.DomainAdvancedSecurityOptionsMasterUserOptionsArgs(
                    master_user_arn=admin.arn)),
            opts=self._opts(depends_on=waits))
        self.catalog_endpoint = pulumi.Output.concat("https://", domain.endpoint)
        self.catalog_domain_arn = domain.arn
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
            handler="catalog_sync.access.handler", role=role.arn, timeout=120, memory_size=256,
            reserved_concurrent_executions=1,
            code=pulumi.AssetArchive({path: pulumi.FileAsset(str(PROJECT_DIR / path))
                                      for path in ("catalog_sync/__init__.py", "catalog_sync/access.py",
                                                   "platform_facts/__init__.py")}),
            vpc_config=aws.lambda_.FunctionVpcConfigArgs(subnet_ids=args.vpc.private_subnet_ids,
                                                         security_group_ids=[access_sg.id]),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="JSON", log_group=logs.name),
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
            opts=self._child)
        self.catalog_access_function_name = function.name
        self.catalog_admin_role_arn = role.arn
        return role

    # --------------------------------------------------------------------------------------- notebook
    def _notebook(self, log_bucket: aws.s3.Bucket) -> None:
        config, args = self._args.config, self._args
        assets = secure_bucket(f"{self._name}-notebook-assets", self._child, kms_key_arn=args.key_arn,
                               access_log_bucket=log_bucket)
        aws.s3.BucketObjectv2(f"{self._name}-notebook-constraints", bucket=assets.id,
                              key="notebook-env/requirements.txt",
                              source=pulumi.FileAsset(str(constraints())), opts=self._child)
        # The data plane's one wheel, as the images install it; the kernel takes its `notebook` extra.
        aws.s3.BucketObjectv2(f"{self._name}-notebook-wheel", bucket=assets.id, key=f"notebook-env/{wheel().name}",
                              source=pulumi.FileAsset(str(wheel())), opts=self._child)
        for path in sorted((PROJECT_DIR / "notebooks").glob("*.ipynb")):
            aws.s3.BucketObjectv2(f"{self._name}-notebook-{path.stem}", bucket=assets.id, key=f"notebooks/{path.name}",
                                  source=pulumi.FileAsset(str(path)), opts=self._child)
        region = self._region
        # The servers' logs, which `dr.connect().get_logs()` reads: the scheduler's here, each pool's in its region.
        self.log_groups = {"scheduler": {"region": region, "group": args.naming.log_group(region, "client",
                                                                                            "scheduler")}}
        self.log_groups |= {f"workers-{w.region}": {"region": w.region,
                                                    "group": args.naming.log_group(w.region, "workers")}
                            for w in args.workers}
        role = self._role("notebook", "sagemaker.amazonaws.com", pulumi.Output.all(
            self.catalog_domain_arn, assets.arn, args.key_arn, self._identity.account_id,
            args.client_tls_secret_arn).apply(lambda v: [
                *catalog_reader_statements(v[0]),
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": v[1]},
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{v[1]}/*"},
                {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": v[2]},
                {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": f"arn:aws:logs:{region}:{v[3]}:log-group:/aws/sagemaker/NotebookInstances:*"},
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": v[4]},
                {"Effect": "Allow", "Action": "logs:FilterLogEvents", "Resource": [
                    f"arn:aws:logs:{where['region']}:{v[3]}:log-group:{where['group']}"
                    for where in self.log_groups.values()]}]))
        notebook_sg = self._security_group("notebook", "SageMaker notebook")
        # The dashboard in the notebook: the notebook server's proxy reaches the scheduler's dashboard directly.
        self._ingress(self._scheduler_sg, "dashboard-from-notebook", DASHBOARD_PORT, source=notebook_sg)
        self._egress(notebook_sg, "notebook-to-scheduler", SCHEDULER_PORT, cidr=args.vpc.cidr,
                     to_port=DASHBOARD_PORT)
        self._egress(notebook_sg, "notebook-to-https", HTTPS_PORT, cidr="0.0.0.0/0")  # catalog, S3, PyPI via NAT
        on_start = pulumi.Output.all(assets.bucket, self.catalog_endpoint, args.client_tls_secret_arn).apply(
            lambda v: base64.b64encode(_notebook_start_script(v[0], self.scheduler_address, v[1], v[2],
                                                              region, self.log_groups).encode()).decode())
        lifecycle = aws.sagemaker.NotebookInstanceLifecycleConfiguration(
            f"{self._name}-notebook", name=args.naming.resource("notebook", max_length=63), on_start=on_start,
            opts=self._child)
        notebook = aws.sagemaker.NotebookInstance(
            f"{self._name}-notebook", name=args.naming.resource("notebook", max_length=63),
            instance_type=config.notebook_instance_type, volume_size=config.notebook_volume_gib, role_arn=role.arn,
            subnet_id=args.vpc.private_subnet_ids[0], security_groups=[notebook_sg.id],
            direct_internet_access="Disabled", root_access="Disabled", kms_key_id=args.key_arn,
            lifecycle_config_name=lifecycle.name, opts=self._child)
        self.notebook_name = notebook.name
        self.notebook_url = pulumi.Output.concat("https://", notebook.url)
        self.notebook_role_arn = role.arn


def _notebook_start_script(bucket: str, scheduler_address: str, catalog_endpoint: str, tls_secret_arn: str,
                           region: str, log_groups: Mapping[str, Any] | None = None) -> str:
    """Runs at every notebook start: the example notebooks, the client certificate (fetched from Secrets
    Manager at each start into a 0700 directory, never stored in the bucket), and a kernel with the data plane's
    wheel and its `notebook` extra, pinned as the images are, whose environment points at this stack's scheduler,
    catalog and certificate. The install runs in the background because lifecycle scripts must finish within
    five minutes."""
    tls = "$HOME/.dask-platform-tls"
    environment = KERNEL.environment(scheduler_address, catalog_endpoint, tls, dashboard_link=DASHBOARD_LINK,
                                     log_groups=log_groups)
    server_environment = KERNEL.lab_environment({name: value.replace("$HOME", NOTEBOOK_HOME)
                                                 for name, value in environment.items()})
    host = scheduler_address.split("://", 1)[-1].rsplit(":", 1)[0]
    proxy = json.dumps({"ServerProxy": {"host_allowlist": [host]}})
    dist = f"{NOTEBOOK_HOME}/.dask-platform-dist/{wheel().name}"
    return f"""#!/bin/bash
set -euo pipefail
# The dashboard in the notebook: jupyter-server-proxy in the Jupyter server's own environment (not the kernel's),
# allowed to proxy the scheduler's host only; the kernel's distributed.dashboard.link points through it.
source /home/ec2-user/anaconda3/bin/activate JupyterSystemEnv
pip install --quiet {JUPYTER_SERVER_PROXY}
source /home/ec2-user/anaconda3/bin/deactivate
# Merged into jupyter_server_config.json, keeping what is there: the server reads settings from that file, while
# jupyter_server_config.d only enables extensions (a setting there is ignored: tests/test_notebook_dashboard.py).
python3 - /home/ec2-user/.jupyter/jupyter_server_config.json '{proxy}' <<'MERGE'
{MERGE_SETTING}MERGE
chown -R ec2-user:ec2-user /home/ec2-user/.jupyter
# JupyterLab's Dask sidebar (dask-labextension) lists the platform: the server gets the kernel's environment and
# the extension's cluster factory (tests/test_notebook_dashboard.py runs the extension's manager with it).
mkdir -p {SERVER_DROP_IN.rsplit("/", 1)[0]}
cat > {SERVER_DROP_IN} <<'UNIT'
[Service]
{_systemd_environment(server_environment)}
UNIT
systemctl daemon-reload
systemctl --no-block restart jupyter-server.service
sudo -u ec2-user -i <<'SCRIPT'
set -euo pipefail
aws s3 sync "s3://{bucket}/notebooks" "$HOME/SageMaker/dask-platform"
aws s3 cp "s3://{bucket}/notebook-env/requirements.txt" "$HOME/.dask-platform-constraints.txt"
aws s3 cp "s3://{bucket}/notebook-env/{wheel().name}" "$HOME/.dask-platform-dist/{wheel().name}"
umask 077
mkdir -p "{tls}"
aws secretsmanager get-secret-value --region {region} --secret-id "{tls_secret_arn}" \\
  --query SecretString --output text > "{tls}/secret.json"
for field in ca cert key; do
  python3 -c "import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "{tls}/secret.json" "$field" \\
    > "{tls}/$field.pem"
done
rm -f "{tls}/secret.json"
nohup bash -c 'python3 -m venv "$HOME/.dask-platform" \\
  && "$HOME/.dask-platform/bin/pip" install --constraint "$HOME/.dask-platform-constraints.txt" \\
       "$HOME/.dask-platform-dist/{wheel().name}[{KERNEL.extra}]" \\
  && "$HOME/.dask-platform/bin/python" -m ipykernel install --user --name {KERNEL.name} \\
       --display-name "{KERNEL.display_name}" {KERNEL.shell_environment(environment)}' \\
  > "$HOME/dask-platform-setup.log" 2>&1 &
SCRIPT
# The factory's packages in the server's environment, at the kernel's pins except SageMaker's own Jupyter packages
# (dask-labextension needs JupyterLab 4, which the server has); then the server starts again with them. In the
# background: lifecycle scripts must finish within five minutes.
nohup bash -c 'source /home/ec2-user/anaconda3/bin/activate JupyterSystemEnv \\
  && grep -iv "^jupyter" {NOTEBOOK_HOME}/.dask-platform-constraints.txt > /tmp/dask-platform-server-constraints.txt \\
  && pip install --quiet --constraint /tmp/dask-platform-server-constraints.txt "{dist}[{KERNEL.lab_extra}]" \\
  && systemctl restart jupyter-server.service' > /var/log/dask-platform-lab.log 2>&1 &
"""


def _systemd_environment(environment: Mapping[str, str]) -> str:
    """`Environment='NAME=value'` lines of a systemd unit (single quotes keep the value whole; `%` is systemd's
    specifier character, so it is doubled)."""
    lines = []
    for name, value in environment.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"{name}: a Jupyter server setting cannot hold a single quote or a line break")
        lines.append(f"Environment='{name}={value.replace('%', '%%')}'")
    return "\n".join(lines)


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
