"""What the resource graph declares, read for running on this machine: the deployment twin's input.

`read_deployment(graph)` takes the graph the real `__main__.py` records under mocks (stackgraph.synth, the same
graph `plan` and the tests check) and returns what the local platform runs: each ECS service's container (its
command, environment, secrets, mounts and bounds), each nightly sync (schedules -> state machine -> Lambda
handler and environment), the data repository associations the Lustre stand-ins mirror, and the SSM parameters
the functions read. Every other resource is listed with the reason the twin does not run it (`UNRUN`), so that
`status` can say so and a new resource type cannot slip in unnoticed (a test holds every type to this table).

The one sizing rule (`LOCAL_SIZES`) is applied here, in one place, to both sides that must agree on it: the
worker command and the scheduler's demand settings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from catalog_sync.environment import CATALOG_ENDPOINT, DATASET
from cluster_broker import SETTINGS_VARIABLE as BROKER_SETTINGS
from components.dask_tls import ROLE_USES, SECRET_ENVIRONMENT

if TYPE_CHECKING:
    from stackgraph.synth import Graph, RecordedResource

SERVICE = "aws:ecs/service:Service"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
SCALING_TARGET = "aws:appautoscaling/target:Target"
FUNCTION = "aws:lambda/function:Function"
STATE_MACHINE = "aws:sfn/stateMachine:StateMachine"
SCHEDULE = "aws:scheduler/schedule:Schedule"
ASSOCIATION = "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation"
FILE_SYSTEM = "aws:fsx/lustreFileSystem:LustreFileSystem"
PARAMETER = "aws:ssm/parameter:Parameter"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
DOMAIN = "aws:opensearch/domain:Domain"
DISCOVERY_NAMESPACE = "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace"
DISCOVERY_SERVICE = "aws:servicediscovery/service:Service"
BUCKET = "aws:s3/bucket:Bucket"

# What the twin runs, and as what (shown by `status` beside what it does not run).
RUN = {
    SERVICE: "its tasks run as local processes through the image's entrypoint (local ECS agent)",
    TASK_DEFINITION: "command, environment, secrets and mounts of the local tasks",
    SCALING_TARGET: "the bounds the local agent scales the service between (sized by the local rule)",
    FUNCTION: "its handler runs in a local Lambda runtime with its declared environment",
    STATE_MACHINE: "run by the local Step Functions interpreter",
    SCHEDULE: "fired by the local agent: cron() on time, at() when `up` starts the platform",
    ASSOCIATION: "mirrored into the Lustre stand-in by the local FSx import",
    FILE_SYSTEM: "a stand-in directory per file system, filled from S3 by the import; mounted at /fsx",
    PARAMETER: "created in its region's AWS emulation (moto)",
    SECRET: "generated for the run (a local CA and certificates in the declared secret shape)",
    SECRET_VERSION: "generated for the run in the declared shape (JSON fields ca, cert, key)",
    DOMAIN: "the catalog stand-in (SQLite, or osmem with --catalog opensearch)",
    DISCOVERY_NAMESPACE: "the scheduler's private name resolves to its loopback address",
    DISCOVERY_SERVICE: "the scheduler's private name resolves to its loopback address",
    "aws:lambda/functionUrl:FunctionUrl": "served by the local agent, which runs the cluster broker's handler",
    BUCKET: "created in its region's AWS emulation (moto): the reference sets are written and read there; the "
            "assets and log buckets stay empty (the twin installs from this checkout and logs to files)",
}

_NETWORK = "one machine has one network: every process reaches every other over loopback"
_WAN = "no WAN between regions here: the backbone's effect is measured by bench/wan.py (namespaces, tc)"
_IAM = "no IAM here: permissions are checked offline against AWS's authorization reference (tests)"
_IMAGE = "processes run from this checkout's venv, which installs the same wheel the images install"
_OBSERVE = "no CloudWatch alarms or notifications locally; logs are files in the state directory"
# Why the twin does not run the rest (by resource type; component resources only group children).
UNRUN = {
    "aws:ec2/vpc:Vpc": _NETWORK, "aws:ec2/subnet:Subnet": _NETWORK, "aws:ec2/routeTable:RouteTable": _NETWORK,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _NETWORK, "aws:ec2/route:Route": _NETWORK,
    "aws:ec2/internetGateway:InternetGateway": _NETWORK, "aws:ec2/natGateway:NatGateway": _NETWORK,
    "aws:ec2/eip:Eip": _NETWORK, "aws:ec2/vpcEndpoint:VpcEndpoint": _NETWORK,
    "aws:ec2/flowLog:FlowLog": _NETWORK, "aws:route53/zoneAssociation:ZoneAssociation": _NETWORK,
    "aws:ec2transitgateway/transitGateway:TransitGateway": _WAN,
    "aws:ec2transitgateway/vpcAttachment:VpcAttachment": _WAN,
    "aws:ec2transitgateway/peeringAttachment:PeeringAttachment": _WAN,
    "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter": _WAN,
    "aws:ec2transitgateway/route:Route": _WAN,
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": _WAN,
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": _WAN,
    "aws:ec2/securityGroup:SecurityGroup": "processes listen on loopback only; rules are checked by `plan`",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "checked by `plan` (reachability), not enforced",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "checked by `plan` (reachability), not enforced",
    "aws:iam/role:Role": _IAM, "aws:iam/rolePolicy:RolePolicy": _IAM,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _IAM, "aws:iam/instanceProfile:InstanceProfile": _IAM,
    "aws:kms/key:Key": "no encryption at rest locally", "aws:kms/alias:Alias": "no encryption at rest locally",
    "aws:ecr/repository:Repository": _IMAGE, "aws:ecr/lifecyclePolicy:LifecyclePolicy": _IMAGE,
    "docker:index/image:Image": _IMAGE, "docker:index/registryImage:RegistryImage": _IMAGE,
    "docker:index/tag:Tag": _IMAGE, "pulumi:providers:docker": _IMAGE,
    "pulumi:providers:aws": "the region of each resource picks its AWS emulation",
    "aws:ecs/cluster:Cluster": "the local agent is the cluster",
    "aws:ecs/capacityProvider:CapacityProvider": "tasks run on this machine, not on EC2 instances",
    "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders": "tasks run on this machine, not on EC2 instances",
    "aws:autoscaling/group:Group": "tasks run on this machine, not on EC2 instances",
    "aws:ec2/launchTemplate:LaunchTemplate": "tasks run on this machine, not on EC2 instances",
    "aws:appautoscaling/policy:Policy": "the local agent scales on the scheduler's demand figure directly",
    "aws:lb/loadBalancer:LoadBalancer": "ALB: the dashboard is served directly on loopback",
    "aws:lb/listener:Listener": "ALB: the dashboard is served directly on loopback",
    "aws:lb/targetGroup:TargetGroup": "ALB: the dashboard is served directly on loopback",
    "aws:opensearch/domainPolicy:DomainPolicy": "the catalog stand-in has no access policy (one user: you)",
    "aws:lambda/invocation:Invocation": "fine-grained access roles: the catalog stand-in has no security plugin",
    "aws:cloudwatch/logGroup:LogGroup": _OBSERVE, "aws:cloudwatch/metricAlarm:MetricAlarm": _OBSERVE,
    "aws:cloudwatch/logResourcePolicy:LogResourcePolicy": _OBSERVE, "aws:sns/topic:Topic": _OBSERVE,
    "aws:sns/topicPolicy:TopicPolicy": _OBSERVE,
    "aws:sqs/queue:Queue": "a schedule that fails is reported by the agent's log, not dead-lettered",
    "aws:sqs/queuePolicy:QueuePolicy": "a schedule that fails is reported by the agent's log, not dead-lettered",
    "aws:s3/bucketObjectv2:BucketObjectv2": "assets (the wheel, zips): the twin installs from this checkout",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "the twin's buckets are emulated (moto)",
    "aws:s3/bucketLogging:BucketLogging": "the twin's buckets are emulated (moto)",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "the twin's buckets are emulated (moto)",
    "aws:s3/bucketPolicy:BucketPolicy": "the twin's buckets are emulated (moto)",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "the twin's buckets are emulated (moto)",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        "the twin's buckets are emulated (moto)",
    "aws:s3/bucketVersioning:BucketVersioning": "the twin's buckets are emulated (moto)",
    "aws:sagemaker/notebookInstance:NotebookInstance":
        "the declared kernel is built as a cached venv (local_platform/kernel.py); bring your own Jupyter",
    "aws:sagemaker/notebookInstanceLifecycleConfiguration:NotebookInstanceLifecycleConfiguration":
        "the declared kernel is built as a local venv from the same declaration (components/kernel.py)",
    "tls:index/privateKey:PrivateKey": "TLS material is generated for each run, in the declared secret shape",
    "tls:index/selfSignedCert:SelfSignedCert": "TLS material is generated for each run, in the declared shape",
    "tls:index/certRequest:CertRequest": "TLS material is generated for each run, in the declared shape",
    "tls:index/locallySignedCert:LocallySignedCert": "TLS material is generated for each run, in the declared shape",
}
COMPONENT_PREFIX = "crossregiondask:index:"
BROKER_RUN = ("the cluster broker: its handler answers the function URL the local agent serves (the caller's role "
              "named by its access key: no IAM here) and its rate() schedule, against the AWS emulations")
UNINVOKED_FUNCTION = "invoked at deploy only (catalog access roles): the catalog stand-in has no security plugin"


@dataclass(frozen=True)
class LocalSizes:
    """The one rule that fits a deployment on this machine: every ECS task keeps its declared threads per worker
    and memory limit per worker but runs one worker process, and a pool runs at most `max_tasks` tasks (its
    minimum is kept when lower). Counts only: no setting changes meaning."""

    workers_per_task: int = 1
    max_tasks: int = 2

    def tasks(self, declared_max: int) -> int:
        return min(declared_max, self.max_tasks)


LOCAL_SIZES = LocalSizes()


@dataclass(frozen=True)
class SecretRef:
    role: str  # the Dask TLS role whose material the secret holds
    field: str  # the JSON key ECS reads from it
    user: str | None = None  # whose cluster's CA issued it (client.users); None: the team's

    @property
    def material(self) -> str:
        """The key of its material in `platform.role_secrets`: the role, or `<role>-<user>` for a user's cluster."""
        return self.role if self.user is None else f"{self.role}-{self.user}"


@dataclass(frozen=True)
class Container:
    """One ECS service's (single) container, as declared, with the service's bounds."""

    service: str  # the service's resource name
    region: str
    name: str
    command: list[str]
    environment: dict[str, str]
    secrets: dict[str, SecretRef]  # variable -> secret field
    mounts: dict[str, str]  # container path -> volume host path
    tmpfs: list[str]  # container paths of the task's tmpfs mounts
    essential: bool
    min_tasks: int  # the scaling target's bounds, or the desired count for a fixed service
    max_tasks: int
    scaled: bool  # whether an Application Auto Scaling target moves its desired count
    log_group: str  # its awslogs group
    user: str | None = None  # whose cluster it belongs to (its `user` tag, client.users); None: the team's
    scaling_resource: str = ""  # its scaling target's `service/<cluster>/<service>`, when scaled

    def flag(self, name: str) -> str | None:
        """The value after a `--flag` of the command, if given."""
        if name in self.command[:-1]:
            return self.command[self.command.index(name) + 1]
        return None


@dataclass(frozen=True)
class Function:
    name: str  # the function's name in AWS
    region: str
    arn: str
    handler: str  # module.function (an image function's command, or a zip function's handler)
    environment: dict[str, str]


@dataclass(frozen=True)
class StateMachine:
    region: str
    arn: str
    definition: dict[str, Any]


@dataclass(frozen=True)
class Schedule:
    name: str  # resource name
    region: str
    expression: str  # cron(...) or at(...)
    target: str  # the state machine's ARN
    input: dict[str, Any]


@dataclass(frozen=True)
class Association:
    region: str
    file_system_id: str
    file_system_path: str
    repository: str  # s3://bucket[/prefix]


@dataclass
class Deployment:
    stack: str
    containers: list[Container] = field(default_factory=list)
    functions: dict[str, Function] = field(default_factory=dict)  # by ARN: those a state machine invokes
    machines: dict[str, StateMachine] = field(default_factory=dict)  # by ARN
    schedules: list[Schedule] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)
    parameters: list[tuple[str, str, str]] = field(default_factory=list)  # (region, name, initial value)
    buckets: list[tuple[str, str]] = field(default_factory=list)  # (region, name)
    scheduler_names: list[str] = field(default_factory=list)  # private DNS names that mean the scheduler
    catalog_endpoints: list[str] = field(default_factory=list)  # the domain's endpoints (https://...)
    log_names: dict[str, str] = field(default_factory=dict)  # log group -> the name `get_logs()` gives it
    # client.users: private DNS name of each user's scheduler -> the user (the team's scheduler's is not here)
    scheduler_users: dict[str, str] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # the `userClusters` output, by user
    broker: Function | None = None  # the cluster broker (client.users): its function URL is served locally
    broker_schedules: list[Schedule] = field(default_factory=list)  # what invokes it on a rate
    unrun: dict[str, list[str]] = field(default_factory=dict)  # reason -> resource names
    run: dict[str, list[str]] = field(default_factory=dict)  # what it runs as -> resource names

    def regions(self) -> list[str]:
        return sorted({c.region for c in self.containers} | {a.region for a in self.associations})

    def s3_catalog(self) -> tuple[str, str] | None:
        """The S3 catalog (catalog.kind s3) the syncs publish to, and its bucket's region; None for a domain."""
        locations = {f.environment[CATALOG_ENDPOINT] for f in self.functions.values()
                     if f.environment.get(CATALOG_ENDPOINT, "").startswith("s3://")}
        if not locations:
            return None
        (location,) = locations
        bucket = location.removeprefix("s3://").split("/")[0]
        (region,) = [region for region, name in self.buckets if name == bucket]
        return location, region

    def datasets(self) -> list[tuple[str, str]]:
        """Each region's dataset (region, s3://bucket[/prefix]): what a file system links, or (storage `s3`, no file
        system) what the region's sync lists (its DATASET)."""
        linked = {(a.region, a.repository) for a in self.associations}
        listed = {(f.region, f.environment[DATASET]) for f in self.functions.values() if DATASET in f.environment}
        return sorted(linked | listed)

    def scheduler(self) -> Container:
        """The team's scheduler (a stack without client.users)."""
        (scheduler,) = [c for c in self.containers if c.command[:1] == ["scheduler"]]
        return scheduler

    def schedulers(self) -> dict[str | None, Container]:
        """Every scheduler, by its user (None: the team's)."""
        return {c.user: c for c in self.containers if c.command[:1] == ["scheduler"]}

    def pools(self) -> list[Container]:
        return [c for c in self.containers if c.command[:1] == ["worker"]]


class DeclarationError(RuntimeError):
    """The graph declares something the twin cannot run; the message names the resource and what to change."""


def _plain(value: Any) -> Any:
    """A secret output as the engine records it ({<signature>: ..., "value": v}) unwrapped."""
    if isinstance(value, dict) and "value" in value and len(value) == 2:
        return value["value"]
    return value


def _json(value: Any) -> Any:
    value = _plain(value)
    return json.loads(value) if isinstance(value, str) else value


def _secret_roles(graph: Graph, users: list[str]) -> dict[str, tuple[str, str | None]]:
    """Secret ARN -> the TLS role it holds and whose CA issued it (`<component>-<role>-<region>`, or
    `<component>-<role>-<user>-<region>` for a user's cluster: components/dask_tls.py)."""
    roles = {}
    for secret in graph.of_type(SECRET):
        for role in ROLE_USES:
            for user in [None, *users]:
                if secret.name.endswith(f"-{role}-{secret.region}" if user is None
                                        else f"-{role}-{user}-{secret.region}"):
                    roles[str(secret.outputs["arn"])] = (role, user)
    return roles


def _secrets(container: Mapping[str, Any], roles: Mapping[str, tuple[str, str | None]],
             where: str) -> dict[str, SecretRef]:
    fields = {variable: name for name, variable in SECRET_ENVIRONMENT.items()}
    found = {}
    for secret in container.get("secrets", []):
        arn, _, rest = secret["valueFrom"].partition(":secret:")
        name, _, key = rest.partition(":")
        full = f"{arn}:secret:{name}"
        key = key.rstrip(":")
        if full not in roles or fields.get(secret["name"]) != key:
            raise DeclarationError(f"{where}: secret {secret['name']} from {secret['valueFrom']} is not a Dask TLS "
                                   "field the twin can generate (components/dask_tls.py)")
        role, user = roles[full]
        found[secret["name"]] = SecretRef(role, key, user)
    return found


def _container(graph: Graph, service: RecordedResource, roles: Mapping[str, tuple[str, str | None]],
               definitions: Mapping[str, RecordedResource]) -> Container:
    task = definitions[str(service.inputs["taskDefinition"])]
    containers = _json(task.inputs["containerDefinitions"])
    if len(containers) != 1:
        raise DeclarationError(f"service {service.name}: {len(containers)} containers; the twin runs one per task")
    (container,) = containers
    volumes = {v["name"]: v.get("hostPath", "") for v in task.inputs.get("volumes", [])}
    target = [t for t in graph.of_type(SCALING_TARGET)
              if str(t.inputs["resourceId"]).endswith(f"/{service.outputs['name']}")]
    desired = int(service.inputs.get("desiredCount", 1))
    low, high = ((int(target[0].inputs["minCapacity"]), int(target[0].inputs["maxCapacity"])) if target
                 else (desired, desired))
    return Container(
        service=service.name, region=str(service.region), name=container["name"], command=list(container["command"]),
        environment={e["name"]: str(e["value"]) for e in container.get("environment", [])},
        secrets=_secrets(container, roles, f"service {service.name}"),
        mounts={m["containerPath"]: volumes[m["sourceVolume"]] for m in container.get("mountPoints", [])},
        tmpfs=[t["containerPath"] for t in container.get("linuxParameters", {}).get("tmpfs", [])],
        essential=bool(container.get("essential", True)), min_tasks=low, max_tasks=high, scaled=bool(target),
        log_group=str(container.get("logConfiguration", {}).get("options", {}).get("awslogs-group", "")),
        user=(service.inputs.get("tags") or {}).get("user"),
        scaling_resource=str(target[0].inputs["resourceId"]) if target else "")


def _function(resource: RecordedResource) -> Function:
    inputs = resource.inputs
    commands = (inputs.get("imageConfig") or {}).get("commands") or []
    handler = str(commands[0] if commands else inputs.get("handler", ""))
    variables = ((inputs.get("environment") or {}).get("variables")) or {}
    return Function(str(resource.outputs["name"]), str(resource.region), str(resource.outputs["arn"]), handler,
                    {k: str(_plain(v)) for k, v in variables.items()})


def _classify(graph: Graph, deployment: Deployment) -> None:
    for resource in graph.resources:
        if resource.type.startswith(COMPONENT_PREFIX):
            continue
        if deployment.broker is not None and resource.type == FUNCTION and \
                str(resource.outputs["arn"]) == deployment.broker.arn:
            deployment.run.setdefault(BROKER_RUN, []).append(resource.name)
        elif resource.type == FUNCTION and str(resource.outputs["arn"]) not in deployment.functions:
            deployment.unrun.setdefault(UNINVOKED_FUNCTION, []).append(resource.name)
        elif resource.type in RUN:
            deployment.run.setdefault(RUN[resource.type], []).append(resource.name)
        elif resource.type in UNRUN:
            deployment.unrun.setdefault(UNRUN[resource.type], []).append(resource.name)
        else:
            raise DeclarationError(f"{resource.type} ({resource.name}): the twin neither runs it nor says why it "
                                   "does not; add it to RUN or UNRUN in local_platform/declared.py")


def read_deployment(graph: Graph) -> Deployment:
    """The runnable part of a recorded graph, with the rest listed by reason."""
    deployment = Deployment(graph.stack, users=dict(graph.outputs.get("userClusters") or {}))
    roles = _secret_roles(graph, sorted(deployment.users))
    definitions = {str(t.outputs["arn"]): t for t in graph.of_type(TASK_DEFINITION)}
    deployment.containers = [_container(graph, s, roles, definitions) for s in graph.of_type(SERVICE)]
    deployment.machines = {str(m.outputs["arn"]): StateMachine(str(m.region), str(m.outputs["arn"]),
                                                               _json(m.inputs["definition"]))
                           for m in graph.of_type(STATE_MACHINE)}
    invoked = json.dumps([m.definition for m in deployment.machines.values()])
    functions = [_function(f) for f in graph.of_type(FUNCTION)]
    deployment.functions = {f.arn: f for f in functions if f.arn in invoked}
    brokers = [f for f in functions if BROKER_SETTINGS in f.environment]
    deployment.broker = brokers[0] if brokers else None
    schedules = [Schedule(s.name, str(s.region), str(s.inputs["scheduleExpression"]),
                          str(s.inputs["target"]["arn"]), _json(s.inputs["target"].get("input") or "{}"))
                 for s in graph.of_type(SCHEDULE)]
    deployment.schedules = [s for s in schedules if s.target in deployment.machines]
    deployment.broker_schedules = [s for s in schedules if deployment.broker and s.target == deployment.broker.arn]
    if unknown := [s.name for s in schedules if s not in deployment.schedules + deployment.broker_schedules]:
        raise DeclarationError(f"schedules {', '.join(unknown)} target neither a state machine nor the cluster broker: "
                               "the twin cannot fire them; teach local_platform/declared.py what they run")
    deployment.associations = [Association(str(a.region), str(a.inputs["fileSystemId"]),
                                           str(a.inputs["fileSystemPath"]), str(a.inputs["dataRepositoryPath"]))
                               for a in graph.of_type(ASSOCIATION)]
    deployment.parameters = [(str(p.region), str(p.inputs["name"]), str(_plain(p.inputs["value"])))
                             for p in graph.of_type(PARAMETER)]
    deployment.buckets = [(str(b.region), str(b.outputs["bucket"])) for b in graph.of_type(BUCKET)]
    namespaces = {str(n.id): str(n.inputs["name"]) for n in graph.of_type(DISCOVERY_NAMESPACE)}
    for service in graph.of_type(DISCOVERY_SERVICE):
        name = f"{service.inputs['name']}.{namespaces[str(service.inputs['dnsConfig']['namespaceId'])]}"
        deployment.scheduler_names.append(name)
        if user := (service.inputs.get("tags") or {}).get("user"):
            deployment.scheduler_users[name] = str(user)
    deployment.log_names = {str(where["group"]): name
                            for name, where in (graph.outputs.get("logGroups") or {}).items()}
    for user, cluster in deployment.users.items():  # a user's logs: a directory of their own
        deployment.log_names |= {str(where["group"]): f"{user}/{name}" for name, where in cluster["logGroups"].items()}
    deployment.catalog_endpoints = [f"https://{d.outputs['endpoint']}" for d in graph.of_type(DOMAIN)]
    _classify(graph, deployment)
    return deployment


def sized_demand_pools(declared: str, sizes: LocalSizes = LOCAL_SIZES) -> str:
    """The scheduler's DASK_DASK_REGIONS__DEMAND__POOLS with the local sizes: a task is one worker, and a pool's
    maximum is capped. Nothing else in it changes."""
    pools = json.loads(declared)
    for settings in pools.values():
        settings["workers_per_task"] = sizes.workers_per_task
        settings["max_tasks"] = sizes.tasks(int(settings["max_tasks"]))
        settings["min_tasks"] = min(int(settings["min_tasks"]), settings["max_tasks"])
    return json.dumps(pools)

