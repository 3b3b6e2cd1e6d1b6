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
from stackconfig.addressing import MAX_AZS, MIN_AZS

PROJECT_NAME = "cross-region-dask"
DEFAULT_SYNC_SCHEDULE = "cron(0 0 * * ? *)"

SCALE_ON = ("demand", "cpu", "both")
BACKBONES = ("transit-gateway", "vpc-peering")
LUSTRE_DEPLOYMENT_TYPES = ("PERSISTENT_2", "SCRATCH_2")
# Where a worker region's workers read its dataset: a Lustre file system linked to it, or the bucket itself
# (through the nightly sync's reference sets, byte ranges cached on the hosts' disks).
STORAGE_KINDS = ("lustre", "s3")
# The dataset catalog: an OpenSearch domain, or per-region SQLite snapshots in a versioned S3 bucket.
CATALOG_KINDS = ("opensearch", "s3")
# The catalog's keys that lived in `client` before the `catalog` object: refused there, naming their new place.
MOVED_CLIENT_KEYS = {"catalogInstanceType": "instanceType", "catalogInstanceCount": "instanceCount",
                     "catalogMasterInstanceType": "masterInstanceType", "catalogVolumeGiB": "volumeGiB"}
LUSTRE_KEYS = ("lustreFileSystemPath", "lustreDeploymentType", "lustreStorageGiB", "lustreThroughputPerTiB")
# AWS's default quota of active VPC peering connections per VPC (adjustable to 125): a full mesh of n VPCs puts
# each in n - 1.
MAX_PEERINGS_PER_VPC = 50

MIN_MEMORY_PER_WORKER_MIB = 1024
MAX_IDLE_MINUTES = 1440  # a day: longer is no idle stop at all, and more likely a mistaken unit
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
    minimum: int | None = None  # integers: the bounds the checks hold them to (and the JSON Schema states)
    maximum: int | None = None


TOP_LEVEL_KEYS: tuple[Key, ...] = (
    Key("client", "object",
        "The client region: where the scheduler, dashboard, catalog and notebook run.", required=True),
    Key("catalog", "object",
        "The dataset catalog (the keys below); default an OpenSearch domain of the default size.", {}),
    Key("workers", "array",
        "Worker regions, one per public dataset; at least one; a worker may share the client's region; one "
        "worker per region.", required=True),
    Key("team", "string",
        "Team that owns the stack; tagged (`team`) on every resource.", "platform"),
    Key("tags", "object",
        "Extra tags for every resource. Keys 1-128 characters, not `aws:`, not `project`/`stack`/`team` (set "
        "by the platform); values strings of at most 256.", {}),
    Key("syncSchedule", "string",
        "EventBridge Scheduler expression (UTC) for the nightly catalog sync: `cron()` with 6 fields (exactly"
        " one of day-of-month and day-of-week `?`), `rate()` or `at()`.", DEFAULT_SYNC_SCHEDULE),
    Key("availabilityZones", "integer",
        "Availability zones per VPC: 2 or 3.", 2, minimum=MIN_AZS, maximum=MAX_AZS),
    Key("logRetentionDays", "integer",
        "Retention of every CloudWatch log group the stack creates; one of the values CloudWatch Logs accepts"
        " (1, 3, 5, 7, 14, 30, 60, 90, ...).", 30),
    Key("syncMaxDropPercent", "integer",
        "The nightly sync refuses to replace a region's catalog with one more than this percent smaller (a "
        "broken listing must not empty the catalog); 0-100. `python -m catalog_cli --force` overrides once.",
        50, minimum=0, maximum=100),
    Key("daskTlsValidityDays", "integer",
        "Validity of the Dask TLS certificates (scheduler, workers, notebook client; the private CA lives 3x "
        "as long); 31-825. `pulumi up` replaces a certificate in its last 30 days and the tasks pick it up at"
        " their next start.", 365, minimum=31, maximum=825),
    Key("backbone", "string",
        "How the VPCs are joined: `transit-gateway` (a Transit Gateway per region, full-mesh peering; hourly per "
        "attachment) or `vpc-peering` (a full mesh of VPC peering connections; no hourly charge, data transfer only;"
        " at most 50 per VPC by AWS's default quota).", "transit-gateway"),
    Key("createOpenSearchServiceLinkedRole", "boolean",
        "Create the account-wide OpenSearch service-linked role. It exists once per account: only the first "
        "stack in an account sets this (creating it twice fails).", False),
)

CLIENT_KEYS: tuple[Key, ...] = (
    Key("region", "string",
        "AWS region of the client VPC; any region in botocore's partition data.", required=True),
    Key("cidr", "string",
        "Private (RFC 1918) IPv4 CIDR of the client VPC, /16 to /22, network address, overlapping no other "
        "VPC.", required=True),
    Key("dashboardAllowedCidrs", "array",
        "CIDRs allowed to reach the dashboard from outside the VPC; empty keeps the load balancer internal; "
        "never `0.0.0.0/0` or `::/0`. Non-empty makes the load balancer internet-facing, reachable from these"
        " CIDRs only.", []),
    Key("dashboardCertificateArn", "string",
        "ACM certificate ARN for HTTPS on the dashboard (HTTP then redirects); must be in `client.region`. "
        "Unset serves HTTP.", None),
    Key("schedulerExec", "boolean",
        "ECS Exec on the scheduler task, so that operators can forward its dashboard port to their machine "
        "with `aws ssm start-session` (see \"The dashboard for operators\"). Off by default: whoever may "
        "`ecs:ExecuteCommand` could also open a shell in the scheduler.", False),
    Key("schedulerCpu", "integer",
        "Fargate CPU units of the scheduler task (1024 = 1 vCPU): 256, 512, 1024, 2048, 4096, 8192 or 16384. The "
        "default is what the reference analysis needs: its scheduler peaked at 1.0 core and 218 MiB "
        "(bench/results/scheduler-usage.json); Dask's scheduler runs on one core.", 2048),
    Key("schedulerMemoryMiB", "integer",
        "Fargate memory of the scheduler task, MiB; a value Fargate pairs with `schedulerCpu` (e.g. 16384 "
        "takes 32768-122880 in steps of 8192).", 4096),
    Key("scaleInWindowSeconds", "integer",
        "Seconds the scheduler's demand figure for a pool must stay lower before it falls, so that a pool does not "
        "shrink between two bursts of work; 1-3600.", 120, minimum=1, maximum=3600),
    Key("regionGraceSeconds", "integer",
        "Seconds a worker region's pool may go without answering the scheduler's heartbeats (its link cut, a zone "
        "down) before the scheduler removes its workers and fails the work that needs that region, naming it; work "
        "that needs only other regions goes on, and a link back within this time loses nothing. Dask's "
        "`distributed.scheduler.worker-ttl` (Dask's default is 300); 10-3600.", 60, minimum=10, maximum=3600),
    Key("users", "array",
        "The platform's users, each `{name, group}`: each gets a notebook, an IAM role and a Dask client "
        "certificate of their own, the certificate in a secret only that role can read. Empty: one notebook and one "
        "client certificate for the team.", []),
    Key("groups", "array",
        "The groups of `users`, each `{name}`.", []),
    Key("notebookInstanceType", "string",
        "SageMaker notebook instance type (`ml.<family>.<size>`).", "ml.t3.2xlarge"),
    Key("notebookVolumeGiB", "integer",
        "SageMaker notebook volume, GiB; 5-16384.", 50, minimum=5, maximum=16384),
    Key("idleShutdownMinutes", "integer",
        "Minutes with no client connected after which the scheduler's service goes to zero tasks (it bills nothing"
        " then); `dask_regions.connect()` starts it again and waits for it. 0 keeps the scheduler always on; "
        "0-1440. It waits until the pools are down to `minTasks` (after their `idleTimeoutMinutes`).", 60, minimum=0,
        maximum=MAX_IDLE_MINUTES),
    Key("notebookIdleMinutes", "integer",
        "Minutes without notebook activity (no kernel busy, no terminal or kernel in use) after which the "
        "notebook instance stops itself (its volume keeps your files; start it again from the SageMaker console or "
        "`aws sagemaker start-notebook-instance`). 0 keeps it always on; 0-1440.", 60, minimum=0,
        maximum=MAX_IDLE_MINUTES),
)

# A user's or group's name is part of resource names (the notebook's, the role's, the secret's): short and plain.
MEMBER_NAME_PATTERN = r"[a-z][a-z0-9-]{0,19}"
USER_KEYS: tuple[Key, ...] = (
    Key("name", "string",
        "The user's name: 1-20 lowercase letters, digits and hyphens, starting with a letter; it names the user's "
        "notebook, role and certificate.", required=True),
    Key("group", "string", "The user's group: a name in `client.groups`.", required=True),
    Key("maxWorkersPerRegion", "integer",
        "The most worker tasks the user's own cluster may run in one worker region; at most the group's. Unset: the "
        "group's quota (or the pool's `maxTasks`); 1-10000.", None, minimum=1, maximum=10000),
)
GROUP_KEYS: tuple[Key, ...] = (
    Key("name", "string", "The group's name: 1-20 lowercase letters, digits and hyphens, starting with a letter.",
        required=True),
    Key("maxClusters", "integer",
        "The most clusters the group's users may run at once; a user's cluster asked for beyond it is refused, "
        "naming this quota. Unset: one per user of the group; 1-1000.", None, minimum=1, maximum=1000),
    Key("maxWorkersPerRegion", "integer",
        "The most worker tasks the group's running clusters may run together in one worker region (shared among "
        "them); at least every pool's `minTasks`. Unset: the pool's `maxTasks`; 1-10000.", None, minimum=1,
        maximum=10000),
    Key("maxTaskMemoryMiB", "integer",
        "The largest worker task the group's users may run, MiB: a worker region whose `taskMemoryMiB` is larger is "
        "refused at config time, naming the group and the region. Unset: no limit; 512-1000000.", None,
        minimum=512, maximum=1_000_000),
)

CATALOG_KEYS: tuple[Key, ...] = (
    Key("kind", "string",
        "`opensearch` (a domain in the client region, searched in place) or `s3` (each region's sync publishes a "
        "SQLite snapshot to a versioned bucket in the client region; `dask_regions.Catalog` reads them; no hourly "
        "charge; the `instance*`, `master*` and `volume*` keys apply to `opensearch` only).", "opensearch"),
    Key("instanceType", "string",
        "OpenSearch data node instance type (`<family>.<size>.search`).", "r6g.large.search"),
    Key("instanceCount", "integer",
        "OpenSearch data nodes: 1 (one zone, for a small team) or an even number, spread over 2 AZs.", 2),
    Key("dedicatedMasters", "boolean",
        "Three dedicated master nodes (`masterInstanceType`); false for a small domain (with `instanceCount` 1).",
        True),
    Key("masterInstanceType", "string",
        "OpenSearch dedicated master instance type (3 masters).", "m6g.large.search"),
    Key("volumeGiB", "integer",
        "gp3 volume per OpenSearch data node, GiB; 10-16384.", 20, minimum=10, maximum=16384),
)

WORKER_KEYS: tuple[Key, ...] = (
    Key("region", "string",
        "AWS region of this worker VPC (where the dataset lives).", required=True),
    Key("cidr", "string",
        "As `client.cidr`.", required=True),
    Key("dataset", "string",
        "S3 URI of the public dataset, `s3://bucket[/prefix]` (valid bucket name; no empty, `.` or `..` "
        "segments).", required=True),
    Key("storage", "string",
        "Where workers read the dataset: `lustre` (an FSx for Lustre file system linked to it, at `/fsx`) or `s3` "
        "(the bucket itself, in the region, byte ranges cached on the hosts' local disks; no file system, no "
        "`lustre*` keys; the dataset's bucket must be in `region`).", "lustre"),
    Key("lustreFileSystemPath", "string",
        "Relative path under `/fsx/<region>/` where the dataset appears: not absolute, no `..`; default the "
        "S3 prefix, or the bucket.", None),
    Key("instanceType", "string",
        "EC2 instance type of the worker hosts.", "m5d.4xlarge"),
    Key("minInstances", "integer",
        "Minimum EC2 instances in the worker auto scaling group; <= `maxInstances`.", 0, minimum=0),
    Key("maxInstances", "integer",
        "Maximum EC2 instances in the worker auto scaling group; >= 1.", 12, minimum=1),
    Key("minTasks", "integer",
        "Minimum Dask worker tasks (ECS); <= `maxTasks`. 0 lets an idle region scale to no tasks and no "
        "instances.", 0, minimum=0),
    Key("maxTasks", "integer",
        "Maximum Dask worker tasks (ECS); >= 1.", 16, minimum=1),
    Key("workersPerTask", "integer",
        "Dask worker processes per task (`--nworkers`); >= 1.", 10, minimum=1),
    Key("threadsPerWorker", "integer",
        "Threads per Dask worker process (`--nthreads`); >= 1.", 3, minimum=1),
    Key("taskMemoryMiB", "integer",
        "Memory reserved per worker task, MiB; at least 1024 per worker process.", 25000),
    Key("workerPortStart", "integer",
        "First Dask port of a task: worker processes take `workersPerTask` ports from here, nannies the next "
        "`workersPerTask`; all within 1024-65535.", 9000),
    Key("scaleOn", "string",
        "What the worker service scales on: `demand` (the scheduler's figure for this pool), `cpu` (average "
        "CPU, as the reference did), or `both`.", "demand"),
    Key("idleTimeoutMinutes", "integer",
        "Minutes a pool without work keeps one warm worker before its demand goes to `minTasks`; 0-1440 (0: no "
        "warm worker, the pool shrinks once the scale-in window has passed).",
        30, minimum=0, maximum=1440),
    Key("cpuTargetPercent", "integer",
        "Average CPU the worker service's autoscaling aims for (with `scaleOn` `cpu` or `both`); 1-100.",
        40, minimum=1, maximum=100),
    Key("spotPercent", "integer",
        "Share (percent) of the worker tasks above `onDemandBaseTasks` placed on Spot capacity; 0-100. Above "
        "0 adds a Spot-only host group.", 0, minimum=0, maximum=100),
    Key("onDemandBaseTasks", "integer",
        "Worker tasks always placed on on-demand capacity before any Spot; <= `maxTasks`.", 0, minimum=0),
    Key("spotInstanceTypes", "array",
        "Instance types the Spot group may use, all of `instanceType`'s size (more types: fewer "
        "interruptions), e.g. `m5d.4xlarge`, `m5ad.4xlarge`, `m6id.4xlarge`; empty: `instanceType` only.", []),
    Key("lustreDeploymentType", "string",
        "FSx for Lustre deployment type: `PERSISTENT_2` (replicated within its zone, `lustreThroughputPerTiB`, "
        "encrypted with the region's key) or `SCRATCH_2` (not replicated: a failed server loses its cached copy, "
        "read again from S3; 200 MB/s per TiB; encrypted with a key FSx manages; priced lower, see `plan`).",
        "PERSISTENT_2"),
    Key("lustreStorageGiB", "integer",
        "FSx for Lustre capacity: 1200 or a multiple of 2400 GiB.", 1200),
    Key("lustreThroughputPerTiB", "integer",
        "FSx for Lustre PERSISTENT_2 throughput per TiB: 125, 250, 500 or 1000 MB/s (not used by SCRATCH_2).",
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


# Tags on each user's own resources (their notebook, role, certificate): what `plan` and AWS's cost allocation
# split the bill by.
USER_TAG, GROUP_TAG = "user", "group"


@dataclass(frozen=True)
class GroupConfig:
    """A group of users and its quotas (None: no quota of the group's own)."""

    name: str
    max_clusters: int | None = None
    max_workers_per_region: int | None = None
    max_task_memory_mib: int | None = None


@dataclass(frozen=True)
class UserConfig:
    name: str
    group: str
    max_workers_per_region: int | None = None  # None: the group's

    @property
    def tags(self) -> dict[str, str]:
        return {USER_TAG: self.name, GROUP_TAG: self.group}


@dataclass(frozen=True)
class ClientConfig:
    region: str
    cidr: str
    dashboard_allowed_cidrs: tuple[str, ...] = ()
    dashboard_certificate_arn: str | None = None
    scheduler_exec: bool = False
    scheduler_cpu: int = 2048
    scheduler_memory_mib: int = 4096
    scale_in_window_seconds: int = 120
    region_grace_seconds: int = 60
    notebook_instance_type: str = "ml.t3.2xlarge"
    notebook_volume_gib: int = 50
    idle_shutdown_minutes: int = 60
    notebook_idle_minutes: int = 60
    users: tuple[UserConfig, ...] = ()  # empty: one notebook and client certificate for the team
    groups: tuple[GroupConfig, ...] = ()

    def group(self, name: str) -> GroupConfig:
        return next(g for g in self.groups if g.name == name)

    def user_max_tasks(self, user: UserConfig, max_tasks: int) -> int:
        """The most tasks `user`'s own pool may run where the pool's `maxTasks` is `max_tasks`: their quota, else
        their group's, within the pool's bound."""
        return self.user_pool_bound(user, max_tasks)[0]

    def user_pool_bound(self, user: UserConfig, max_tasks: int) -> tuple[int, str | None]:
        """`user_max_tasks`, and the quota that sets it, named as the stack config names it (None: the pool's own
        `maxTasks`)."""
        quota: int | None
        if user.max_workers_per_region is not None:
            quota, named = user.max_workers_per_region, f"maxWorkersPerRegion quota of user {user.name}"
        else:
            quota = self.group(user.group).max_workers_per_region
            named = f"maxWorkersPerRegion quota of {user.name}'s group {user.group}"
        return (quota, named) if quota is not None and quota < max_tasks else (max_tasks, None)

    @property
    def dashboard_public(self) -> bool:
        """Internet-facing only when an allow-list is configured."""
        return bool(self.dashboard_allowed_cidrs)


@dataclass(frozen=True)
class CatalogConfig:
    kind: str = "opensearch"
    instance_type: str = "r6g.large.search"
    instance_count: int = 2
    dedicated_masters: bool = True
    master_instance_type: str = "m6g.large.search"
    volume_gib: int = 20

    @property
    def on_opensearch(self) -> bool:
        return self.kind == "opensearch"


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
    lustre_deployment_type: str = "PERSISTENT_2"
    lustre_storage_gib: int = 1200
    lustre_throughput_per_tib: int = 1000
    storage: str = "lustre"

    @property
    def on_lustre(self) -> bool:
        """Whether the region has a Lustre file system (else its workers read the dataset's bucket)."""
        return self.storage == "lustre"

    @property
    def site_name(self) -> str:
        """Its VPC's name among the platform's sites (`worker-<region>`), in logical and physical names."""
        return worker_site(self.region)

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


CLIENT_SITE = "client"


def worker_site(region: str) -> str:
    return f"worker-{region}"


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
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    team: str = "platform"
    tags: Mapping[str, str] = field(default_factory=dict)
    sync_schedule: str = DEFAULT_SYNC_SCHEDULE
    availability_zones: int = 2
    log_retention_days: int = 30
    create_opensearch_service_linked_role: bool = False
    sync_max_drop_percent: int = 50
    dask_tls_validity_days: int = 365
    backbone: str = "transit-gateway"
    warnings: tuple[Problem, ...] = ()  # fine by every check, but worth a look (shown by `plan` and `pulumi up`)

    @property
    def sites(self) -> tuple[Site, ...]:
        client = Site(CLIENT_SITE, self.client.region, self.client.cidr)
        return (client, *(Site(w.site_name, w.region, w.cidr) for w in self.workers))

    def peers(self, site: str) -> dict[str, str]:
        """Every other site's name and CIDR, in site order: what `site`'s security rules admit."""
        return {other.name: other.cidr for other in self.sites if other.name != site}

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
            + [(f"catalog.{k.name}", k) for k in CATALOG_KEYS]
            + [(f"client.users[].{k.name}", k) for k in USER_KEYS]
            + [(f"client.groups[].{k.name}", k) for k in GROUP_KEYS]
            + [(f"workers[].{k.name}", k) for k in WORKER_KEYS])

