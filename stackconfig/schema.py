"""The stack config's schema (every key once: type, default, description), its typed model, and the problems a
config can have (`Problem(path, message, fix)`, all reported at once)."""

from __future__ import annotations

import difflib
import json
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from platform_facts import pool_of_region

PROJECT_NAME = "cross-region-dask"
DEFAULT_SYNC_SCHEDULE = "cron(0 0 * * ? *)"

SCALE_ON = ("demand", "cpu", "both")

MIN_MEMORY_PER_WORKER_MIB = 1024
MAX_WORKER_REGIONS = 10  # README: `plan` takes under 2 minutes at this size on 2 cores

# ---------------------------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Key:
    """One config key: its JSON type, default (absent = required) and what it means."""

    name: str
    kind: str  # string | integer | boolean | array | object
    description: str
    default: Any = None
    required: bool = False


TOP_LEVEL_KEYS: tuple[Key, ...] = (
    Key("client", "object", "The client region: where the scheduler, dashboard, catalog and notebook run.",
        required=True),
    Key("workers", "array", "Worker regions, one per public dataset; a worker may share the client's region.",
        required=True),
    Key("team", "string", "Team that owns the stack; tagged on every resource.", "platform"),
    Key("tags", "object", "Extra tags for every resource (besides project, stack and team).", {}),
    Key("syncSchedule", "string", "EventBridge Scheduler expression (UTC) for the nightly catalog sync.",
        DEFAULT_SYNC_SCHEDULE),
    Key("availabilityZones", "integer", "Availability zones per VPC (2 or 3).", 2),
    Key("logRetentionDays", "integer", "Retention of every CloudWatch log group we create.", 30),
    Key("syncMaxDropPercent", "integer",
        "The nightly sync refuses to replace a region's catalog with one this much smaller (percent).", 50),
    Key("daskTlsValidityDays", "integer",
        "Validity of the Dask TLS certificates (the CA: 3x); `pulumi up` renews them in their last 30 days.", 365),
    Key("createOpenSearchServiceLinkedRole", "boolean",
        "Create the account-wide OpenSearch service-linked role (only the first stack in an account needs it).",
        False),
)

CLIENT_KEYS: tuple[Key, ...] = (
    Key("region", "string", "AWS region of the client VPC.", required=True),
    Key("cidr", "string", "Private IPv4 CIDR of the client VPC (/16 to /22).", required=True),
    Key("dashboardAllowedCidrs", "array",
        "CIDRs allowed to reach the dashboard from outside the VPC; empty keeps the load balancer internal.",
        []),
    Key("dashboardCertificateArn", "string",
        "ACM certificate (in the client region) for HTTPS on the dashboard; unset serves HTTP.", None),
    Key("schedulerExec", "boolean",
        "ECS Exec on the scheduler task, for operators' port forwarding to its dashboard (`aws ssm start-session`).",
        False),
    Key("schedulerCpu", "integer", "Fargate CPU units of the scheduler task (1024 = 1 vCPU).", 16384),
    Key("schedulerMemoryMiB", "integer", "Fargate memory of the scheduler task, MiB.", 32768),
    Key("catalogInstanceType", "string", "OpenSearch data node instance type.", "r6g.large.search"),
    Key("catalogInstanceCount", "integer", "OpenSearch data nodes (even: spread over 2 AZs).", 2),
    Key("catalogMasterInstanceType", "string", "OpenSearch dedicated master instance type (3 masters).",
        "m6g.large.search"),
    Key("catalogVolumeGiB", "integer", "EBS volume per OpenSearch data node, GiB.", 20),
    Key("notebookInstanceType", "string", "SageMaker notebook instance type.", "ml.t3.2xlarge"),
    Key("notebookVolumeGiB", "integer", "SageMaker notebook volume, GiB.", 50),
)

WORKER_KEYS: tuple[Key, ...] = (
    Key("region", "string", "AWS region of this worker VPC (where the dataset lives).", required=True),
    Key("cidr", "string", "Private IPv4 CIDR of this worker VPC (/16 to /22).", required=True),
    Key("dataset", "string", "S3 URI of the public dataset, `s3://bucket[/prefix]`.", required=True),
    Key("lustreFileSystemPath", "string",
        "Relative path under `/fsx/<region>/` where the dataset appears (default: the S3 prefix, or the bucket).",
        None),
    Key("instanceType", "string", "EC2 instance type of the worker hosts.", "m5d.4xlarge"),
    Key("minInstances", "integer", "Minimum EC2 instances in the worker auto scaling group.", 0),
    Key("maxInstances", "integer", "Maximum EC2 instances in the worker auto scaling group.", 12),
    Key("minTasks", "integer", "Minimum Dask worker tasks (ECS); 0 lets an idle region scale to nothing.", 0),
    Key("maxTasks", "integer", "Maximum Dask worker tasks (ECS).", 16),
    Key("workersPerTask", "integer", "Dask worker processes per task (`--nworkers`).", 10),
    Key("threadsPerWorker", "integer", "Threads per Dask worker process (`--nthreads`).", 3),
    Key("taskMemoryMiB", "integer", "Memory reserved per worker task, MiB.", 25000),
    Key("workerPortStart", "integer",
        "First port of the task's Dask ports: workers take workersPerTask ports from here, nannies the next ones.",
        9000),
    Key("scaleOn", "string",
        "What the worker service scales on: `demand` (the scheduler's per-pool figure), `cpu`, or `both`.", "demand"),
    Key("idleTimeoutMinutes", "integer",
        "Minutes a pool without work keeps one warm worker before its demand, and then its tasks, go to 0.", 30),
    Key("cpuTargetPercent", "integer", "Average CPU the worker service's autoscaling aims for.", 40),
    Key("spotPercent", "integer", "Share of worker tasks above the on-demand base placed on Spot capacity (0-100).",
        0),
    Key("onDemandBaseTasks", "integer", "Worker tasks always placed on on-demand capacity before any Spot.", 0),
    Key("spotInstanceTypes", "array",
        "Instance types the Spot group may use, all of instanceType's size (more types: fewer interruptions); "
        "empty: instanceType only.", []),
    Key("lustreStorageGiB", "integer", "FSx for Lustre capacity: 1200 or a multiple of 2400 GiB.", 1200),
    Key("lustreThroughputPerTiB", "integer", "FSx for Lustre throughput per TiB: 125, 250, 500 or 1000 MB/s.",
        1000),
)


# -------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading or trailing slash; "" for the whole bucket

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class ClientConfig:
    region: str
    cidr: str
    dashboard_allowed_cidrs: tuple[str, ...] = ()
    dashboard_certificate_arn: str | None = None
    scheduler_exec: bool = False
    scheduler_cpu: int = 16384
    scheduler_memory_mib: int = 32768
    catalog_instance_type: str = "r6g.large.search"
    catalog_instance_count: int = 2
    catalog_master_instance_type: str = "m6g.large.search"
    catalog_volume_gib: int = 20
    notebook_instance_type: str = "ml.t3.2xlarge"
    notebook_volume_gib: int = 50

    @property
    def dashboard_public(self) -> bool:
        """Internet-facing only when an allow-list is configured."""
        return bool(self.dashboard_allowed_cidrs)


@dataclass(frozen=True)
class WorkerConfig:
    region: str
    cidr: str
    dataset: S3Location
    lustre_file_system_path: str
    instance_type: str = "m5d.4xlarge"
    min_instances: int = 0
    max_instances: int = 12
    min_tasks: int = 0
    max_tasks: int = 16
    workers_per_task: int = 10
    threads_per_worker: int = 3
    task_memory_mib: int = 25000
    worker_port_start: int = 9000
    cpu_target_percent: int = 40
    scale_on: str = "demand"
    idle_timeout_minutes: int = 30
    spot_percent: int = 0
    on_demand_base_tasks: int = 0
    spot_instance_types: tuple[str, ...] = ()
    lustre_storage_gib: int = 1200
    lustre_throughput_per_tib: int = 1000

    @property
    def pool_name(self) -> str:
        """The Dask resource every worker of this region carries (`--resources pool-<region>=...`)."""
        return pool_of_region(self.region)

    @property
    def pool_slots(self) -> int:
        """How much of the pool resource each worker process offers. Pinned tasks ask for 1 slot, so a
        worker must offer one per thread: with fewer, Dask would run fewer pinned tasks than it has threads."""
        return self.threads_per_worker

    @property
    def worker_ports(self) -> tuple[int, int]:
        """Inclusive range of the Dask worker processes' ports (one each)."""
        return self.worker_port_start, self.worker_port_start + self.workers_per_task - 1

    @property
    def nanny_ports(self) -> tuple[int, int]:
        """Inclusive range of the nannies' ports (one per worker process), right after the workers'."""
        first = self.worker_port_start + self.workers_per_task
        return first, first + self.workers_per_task - 1

    @property
    def memory_per_worker_mib(self) -> int:
        return self.task_memory_mib // self.workers_per_task

    @property
    def fsx_path(self) -> str:
        """Where the dataset appears on the file system (the data repository association's path)."""
        return f"/{self.region}/{self.lustre_file_system_path}"


@dataclass(frozen=True)
class Site:
    """One VPC of the platform: the client's or a worker region's."""

    name: str  # "client" or "worker-<region>"; stable, used in logical and physical names
    region: str
    cidr: str


@dataclass(frozen=True)
class StackConfig:
    project: str
    stack: str
    client: ClientConfig
    workers: tuple[WorkerConfig, ...]
    team: str = "platform"
    tags: Mapping[str, str] = field(default_factory=dict)
    sync_schedule: str = DEFAULT_SYNC_SCHEDULE
    availability_zones: int = 2
    log_retention_days: int = 30
    create_opensearch_service_linked_role: bool = False
    sync_max_drop_percent: int = 50
    dask_tls_validity_days: int = 365

    @property
    def sites(self) -> tuple[Site, ...]:
        client = Site("client", self.client.region, self.client.cidr)
        return (client, *(Site(f"worker-{w.region}", w.region, w.cidr) for w in self.workers))

    @property
    def regions(self) -> tuple[str, ...]:
        """Distinct regions, client first, then workers in config order."""
        return tuple(dict.fromkeys(site.region for site in self.sites))

    @property
    def default_tags(self) -> dict[str, str]:
        return {**self.tags, "project": self.project, "stack": self.stack, "team": self.team}


# ------------------------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} Fix: {self.fix}"


class ConfigError(Exception):
    """A stack config with problems. `str()` lists them all, one per line."""

    def __init__(self, problems: Sequence[Problem], source: str = "stack config") -> None:
        self.problems = tuple(problems)
        self.source = source
        count = len(self.problems)
        lines = [f"{source} has {count} problem{'s' if count != 1 else ''}; nothing was deployed:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


MAX_SHOWN = 80  # characters of a bad value a message repeats


_SHORT = reprlib.Repr()  # Python 3.11's takes no keyword arguments
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxlong = 3, 4, 4, 40
_SHORT.maxstring = _SHORT.maxother = MAX_SHOWN


def _fmt(value: Any) -> str:
    """A bad value as a message shows it: JSON-like, and short whatever its size."""
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    text = _SHORT.repr(value)
    return text if len(text) <= 2 * MAX_SHOWN else text[:2 * MAX_SHOWN] + "..."


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    by_lower = {choice.lower(): choice for choice in choices}
    close = [by_lower[m] for m in difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.5)]
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(choices)}."



def describe_keys() -> list[tuple[str, Key]]:
    """Every key with its dotted path, for docs and schema consistency tests."""
    return ([(k.name, k) for k in TOP_LEVEL_KEYS] + [(f"client.{k.name}", k) for k in CLIENT_KEYS]
            + [(f"workers[].{k.name}", k) for k in WORKER_KEYS])

