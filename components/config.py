"""The stack config: a typed, validated model of one `Pulumi.<stack>.yaml`.

Pure Python (no Pulumi import at module level) so that the local platform, the tests and the Pulumi
program share one model and one set of error messages. Every problem in a config is collected and
reported at once, each naming the key, the bad value and the fix.
"""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from components.addressing import LARGEST_VPC_PREFIX, MAX_AZS, MIN_AZS, SMALLEST_VPC_PREFIX

PROJECT_NAME = "cross-region-dask"
DEFAULT_SYNC_SCHEDULE = "cron(0 0 * * ? *)"
# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)
SCALE_ON = ("demand", "cpu", "both")
LUSTRE_THROUGHPUTS_PER_TIB = (125, 250, 500, 1000)  # PERSISTENT_2 SSD, MB/s/TiB
LUSTRE_MIN_STORAGE_GIB = 1200
LUSTRE_STORAGE_STEP_GIB = 2400  # PERSISTENT_2 SSD: 1200 GiB, then multiples of 2400 GiB
MIN_MEMORY_PER_WORKER_MIB = 1024
MAX_WORKER_REGIONS = 10  # README: `plan` takes under 2 minutes at this size on 2 cores
RESERVED_TAG_KEYS = ("project", "stack", "team")
PRIVATE_RANGES = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


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
        return f"pool-{self.region}"

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


PARTITION = "aws"  # the platform deploys to the commercial partition only (one account, peered across regions)
_REGION_CODE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")  # pseudo-regions such as aws-global are no region codes


@cache
def partition_regions() -> dict[str, str]:
    """Every region code botocore knows (its bundled partition and endpoint data), with its partition."""
    import botocore.session

    session = botocore.session.get_session()
    regions: dict[str, str] = {}
    for partition in session.get_available_partitions():
        for region in session.get_available_regions("ec2", partition_name=partition):
            regions.setdefault(region, partition)
    for partition_data in session.get_component("data_loader").load_data("partitions").get("partitions", []):
        for region in partition_data.get("regions", {}):
            regions.setdefault(region, partition_data.get("id", ""))
    return {region: partition for region, partition in regions.items() if _REGION_CODE.fullmatch(region)}


def known_regions() -> frozenset[str]:
    """The regions of the `aws` partition."""
    return frozenset(r for r, partition in partition_regions().items() if partition == PARTITION)


# ------------------------------------------------------------------------------------------ validation
class _Checker:
    """Accumulates problems while reading a raw (JSON-like) config."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, fix: str) -> None:
        self.problems.append(Problem(path, message, fix))

    def section(self, raw: Any, keys: Sequence[Key], path: str) -> dict[str, Any] | None:
        """Check a mapping against its keys: unknown keys, required keys and JSON types. Returns the
        values with defaults filled in (None for a key whose value was rejected)."""
        if not isinstance(raw, Mapping):
            self.add(path, f"must be a mapping of keys to values, got {_fmt(raw)}.",
                     f"write it as an object with keys {', '.join(k.name for k in keys)}.")
            return None
        names = [k.name for k in keys]
        for given in raw:
            if given not in names:
                self.add(f"{path}.{given}" if path else str(given), "is not a known key.",
                         f"{_did_you_mean(str(given), names)} Remove or rename it.")
        values: dict[str, Any] = {}
        for key in keys:
            key_path = f"{path}.{key.name}" if path else key.name
            if key.name not in raw or raw[key.name] is None:
                if key.required:
                    self.add(key_path, "is required but missing.", f"set {key_path} ({key.description})")
                values[key.name] = None if key.required else key.default
                continue
            values[key.name] = self.typed(raw[key.name], key, key_path)
        return values

    def typed(self, value: Any, key: Key, path: str) -> Any:
        ok = {
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "array": isinstance(value, list),
            "object": isinstance(value, Mapping),
        }[key.kind]
        if not ok:
            article = "an" if key.kind[0] in "aeiou" else "a"
            self.add(path, f"must be {article} {key.kind}, got {_fmt(value)} ({type(value).__name__}).",
                     f"give {path} {article} {key.kind} value.")
            return None
        if key.kind == "string" and not value.strip():
            self.add(path, "is empty.", f"set {path} ({key.description})")
            return None
        return value

    def whole(self, value: int | None, path: str, low: int, high: int | None = None) -> None:
        if value is None:
            return
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.add(path, f"is {value}, must be {bounds}.", f"set {path} to a value {bounds}.")


def _check_region(c: _Checker, region: str | None, path: str) -> None:
    if region is None or region in known_regions():
        return
    other = partition_regions().get(region)
    if other:
        c.add(path, f"{region!r} is a region of the {other} partition; the platform deploys to the {PARTITION} "
                    "partition's regions only.", "choose a region of the aws partition, such as 'eu-west-2'.")
        return
    close = difflib.get_close_matches(region, sorted(known_regions()), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "use a region code such as 'eu-west-2'."
    c.add(path, f"{region!r} is not an AWS region botocore knows.", hint)


def _check_vpc_cidr(c: _Checker, cidr: str | None, path: str) -> ipaddress.IPv4Network | None:
    if cidr is None:
        return None
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            c.add(path, f"{cidr!r} is not a CIDR block.", "write it as an IPv4 network such as '10.1.0.0/16'.")
            return None
        c.add(path, f"{cidr!r} has host bits set.", f"use the network address: {str(loose)!r}.")
        return None
    if not isinstance(network, ipaddress.IPv4Network):
        c.add(path, f"{cidr!r} is IPv6; VPCs need a primary IPv4 block.", "use a private IPv4 range.")
        return None
    if not any(network.subnet_of(private) for private in PRIVATE_RANGES):
        c.add(path, f"{cidr!r} is not a private (RFC 1918) range.",
              "use a block inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16.")
        return None
    if network.prefixlen < LARGEST_VPC_PREFIX:
        c.add(path, f"{cidr!r} is larger than AWS allows for a VPC (/{LARGEST_VPC_PREFIX}).",
              f"use a /{LARGEST_VPC_PREFIX} or smaller block.")
        return None
    if network.prefixlen > SMALLEST_VPC_PREFIX:
        c.add(path, f"{cidr!r} is too small to hold the subnets (private, public and Transit Gateway "
                    f"attachment subnets in up to {MAX_AZS} AZs).",
              f"use a /{SMALLEST_VPC_PREFIX} or larger block, e.g. /16.")
        return None
    return network


MAX_ALLOWLIST_PREFIX = 8  # the allow-list may open the dashboard to at most a /8's worth of addresses


def _check_allowlist(c: _Checker, cidrs: list[Any] | None, path: str) -> tuple[str, ...]:
    accepted: list[str] = []
    networks: list[ipaddress.IPv4Network] = []
    for i, cidr in enumerate(cidrs or []):
        item = f"{path}[{i}]"
        if not isinstance(cidr, str):
            c.add(item, f"must be a CIDR string, got {_fmt(cidr)}.", "write it as '203.0.113.0/24'.")
            continue
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            c.add(item, f"{cidr!r} is not a CIDR block (or has host bits set).", "write it as '203.0.113.0/24'.")
            continue
        if network.prefixlen == 0:
            c.add(item, f"{cidr!r} opens it to the whole internet.",
                  "list only your office or VPN ranges; leave the list empty to keep it internal.")
            continue
        if not isinstance(network, ipaddress.IPv4Network):
            c.add(item, f"{cidr!r} is IPv6; the dashboard's load balancer listens on IPv4 only.",
                  "list the IPv4 ranges of your office or VPN.")
            continue
        accepted.append(cidr)
        networks.append(network)
    opened = sum(n.num_addresses for n in ipaddress.collapse_addresses(networks))
    if opened > 2 ** (32 - MAX_ALLOWLIST_PREFIX):
        c.add(path, f"together the entries open the dashboard to {opened:,} addresses, more than a "
                    f"/{MAX_ALLOWLIST_PREFIX} ({2 ** (32 - MAX_ALLOWLIST_PREFIX):,}): a plain-HTTP dashboard "
                    "with no login would face the internet.",
              "list only your office or VPN ranges, or use SSM port forwarding instead (README).")
    return tuple(accepted)


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def _check_dataset(c: _Checker, uri: str | None, path: str) -> S3Location | None:
    if uri is None:
        return None
    fix = "write it as 's3://bucket' or 's3://bucket/prefix', e.g. 's3://era5-pds'."
    if not uri.startswith("s3://"):
        c.add(path, f"{uri!r} is not an s3:// URI.", fix)
        return None
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        c.add(path, f"{bucket!r} in {uri!r} is not a valid S3 bucket name.", fix)
        return None
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        c.add(path, f"the prefix of {uri!r} has empty, '.' or '..' segments.", fix)
        return None
    return S3Location(bucket, prefix)


def _check_lustre_path(c: _Checker, value: str | None, path: str) -> str | None:
    if value is None:
        return None
    fix = "give a relative path such as 'era5-pds' or 'CMIP6/ScenarioMIP/MOHC'."
    if value.startswith("/"):
        c.add(path, f"{value!r} is absolute; it is placed under /fsx/<region>/.", fix)
        return None
    parts = value.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in value or any(ch.isspace() for ch in value):
        c.add(path, f"{value!r} has empty, '.' or '..' segments, backslashes or spaces.", fix)
        return None
    return value.rstrip("/")


_CRON_FIELDS = (  # name, low, high, extra characters allowed besides digits , - * /
    ("minutes", 0, 59, ""), ("hours", 0, 23, ""), ("day-of-month", 1, 31, "?LW"),
    ("month", 1, 12, ""), ("day-of-week", 1, 7, "?L#"), ("year", 1970, 2199, ""),
)
_NAMES = {"month": ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
          "day-of-week": ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]}


def _cron_field_problem(text: str, name: str, low: int, high: int, extra: str) -> str | None:
    """Why one cron field is invalid, or None. Items are comma-separated `base[/step]`."""
    for alias_index, alias in enumerate(_NAMES.get(name, []), start=1):
        text = text.replace(alias, str(alias_index))
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and (not step.isdigit() or int(step) < 1):
            return f"the {name} field has an invalid increment in {item!r}"
        if base in ("*", "?") and (base == "*" or "?" in extra):
            continue
        core = base.split("#")[0].rstrip("LW") if extra else base
        if "#" in base and "#" not in extra:
            return f"the {name} field does not accept '#'"
        if core == "" and base in ("L", "LW") and "L" in extra:
            continue
        bounds = core.split("-")
        if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
            return f"the {name} field value {item!r} is not a number, range, '*' or '?' it accepts"
        if any(not low <= int(b) <= high for b in bounds):
            return f"the {name} field value {item!r} is outside {low}-{high}"
    return None


def schedule_problem(expression: str) -> str | None:
    """Why an EventBridge Scheduler expression is invalid, or None. Accepts cron(6 fields), rate(), at()."""
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if rate:
        count, unit = int(rate.group(1)), rate.group(2)
        if count < 1:
            return "a rate must be at least 1"
        if (count == 1) != (not unit.endswith("s")):
            singular = unit.rstrip("s")
            return f"use the singular unit for 1 and the plural above, e.g. 'rate(1 {singular})', 'rate(2 {singular}s)'"
        return None
    at = re.fullmatch(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)", expression)
    if at:
        try:
            datetime.strptime(at.group(1), "%Y-%m-%dT%H:%M:%S")
        except ValueError:
            return f"{at.group(1)} is not a date and time (yyyy-mm-ddThh:mm:ss)"
        return None
    cron = re.fullmatch(r"cron\((.*)\)", expression)
    if not cron:
        return "must be cron(...), rate(...) or at(...)"
    fields = cron.group(1).split()
    if len(fields) != 6:
        return f"cron needs 6 fields (minutes hours day-of-month month day-of-week year), got {len(fields)}"
    for text, spec in zip(fields, _CRON_FIELDS, strict=True):
        if reason := _cron_field_problem(text, *spec):
            return reason
    day_of_month, day_of_week = fields[2], fields[4]
    if (day_of_month == "?") == (day_of_week == "?"):
        return "exactly one of day-of-month and day-of-week must be '?'"
    return None


# AWS tag keys and values: letters, digits, spaces and _ . : / = + - @ (Resource Groups Tagging API rules).
_TAG_TEXT = re.compile(r"[\w\s.:/=+\-@]*")
MAX_TAG_KEY, MAX_TAG_VALUE = 128, 256


def tag_value_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"tag values must be strings, got {_fmt(value)}"
    if len(value) > MAX_TAG_VALUE:
        return f"is {len(value)} characters; tag values take at most {MAX_TAG_VALUE}"
    if not _TAG_TEXT.fullmatch(value):
        return f"{_fmt(value)} has characters tags do not allow (letters, digits, spaces and _ . : / = + - @ only)"
    return None


def _check_tags(c: _Checker, tags: Mapping[Any, Any] | None, path: str) -> dict[str, str]:
    accepted: dict[str, str] = {}
    for key, value in (tags or {}).items():
        item = f"{path}.{key}"
        if not isinstance(key, str):
            c.add(item, f"the tag key {_fmt(key)} is not text.", "quote the key, e.g. '\"2024\": value'.")
        elif key in RESERVED_TAG_KEYS:
            c.add(item, f"{key!r} is set by the platform on every resource.",
                  "remove it (use the top-level 'team' key to set the team).")
        elif key.lower().startswith("aws:") or not 1 <= len(key) <= MAX_TAG_KEY or not _TAG_TEXT.fullmatch(key):
            c.add(item, f"is not an allowed tag key (1-{MAX_TAG_KEY} letters, digits, spaces and _ . : / = + - @, "
                        "not starting with 'aws:').", "rename the tag.")
        elif reason := tag_value_problem(value):
            c.add(item, f"{reason}.", "quote the value and shorten it to allowed characters.")
        else:
            accepted[key] = value
    return accepted


FARGATE_SIZES = {256: (512, 2048, None), 512: (1024, 4096, 1024), 1024: (2048, 8192, 1024),
                 2048: (4096, 16384, 1024), 4096: (8192, 30720, 1024), 8192: (16384, 61440, 4096),
                 16384: (32768, 122880, 8192)}


def fargate_problem(cpu: int, memory: int) -> str | None:
    """Why a Fargate CPU/memory pair is not one Fargate accepts, or None."""
    if cpu not in FARGATE_SIZES:
        return f"CPU {cpu} is not a Fargate size; use one of {', '.join(map(str, FARGATE_SIZES))}"
    low, high, step = FARGATE_SIZES[cpu]
    allowed = (512, 1024, 2048) if step is None else range(low, high + 1, step)
    if memory not in allowed:
        shown = ", ".join(map(str, allowed)) if step is None else f"{low} to {high} in steps of {step}"
        return f"CPU {cpu} takes memory {shown} MiB, not {memory}"
    return None


_OPENSEARCH_TYPE = re.compile(r"[a-z][a-z0-9]*\.(?:nano|micro|small|medium|large|\d*xlarge)\.search")
_SAGEMAKER_TYPE = re.compile(r"ml\.[a-z][a-z0-9-]*\.(?:nano|micro|small|medium|large|\d*xlarge)")
_ACM_ARN = re.compile(r"arn:aws[a-z-]*:acm:([a-z0-9-]+):\d{12}:certificate/[0-9a-f-]{36}")


def _check_client(c: _Checker, values: Mapping[str, Any]) -> ClientConfig | None:
    before = len(c.problems)
    _check_region(c, values["region"], "client.region")
    _check_vpc_cidr(c, values["cidr"], "client.cidr")
    allowed = _check_allowlist(c, values["dashboardAllowedCidrs"], "client.dashboardAllowedCidrs")
    certificate = values["dashboardCertificateArn"]
    if certificate is not None:
        match = _ACM_ARN.fullmatch(certificate)
        if match is None:
            c.add("client.dashboardCertificateArn", f"{certificate!r} is not an ACM certificate ARN.",
                  "copy the ARN from ACM: arn:aws:acm:<region>:<account>:certificate/<id>.")
        elif values["region"] is not None and match.group(1) != values["region"]:
            c.add("client.dashboardCertificateArn",
                  f"the certificate is in {match.group(1)}, but a load balancer can only use one from its own "
                  f"region {values['region']}.", f"request or import the certificate in {values['region']}.")
    cpu, memory = values["schedulerCpu"], values["schedulerMemoryMiB"]
    if cpu is not None and memory is not None and (reason := fargate_problem(cpu, memory)):
        c.add("client.schedulerMemoryMiB" if cpu in FARGATE_SIZES else "client.schedulerCpu",
              f"{reason}.", "pick a CPU/memory pair Fargate supports (e.g. 4096 with 16384).")
    for key in ("catalogInstanceType", "catalogMasterInstanceType"):
        if values[key] is not None and not _OPENSEARCH_TYPE.fullmatch(values[key]):
            c.add(f"client.{key}", f"{values[key]!r} is not an OpenSearch instance type.",
                  "use a type ending in '.search', such as 'r6g.large.search'.")
    count = values["catalogInstanceCount"]
    if count is not None and (count < 2 or count % 2):
        c.add("client.catalogInstanceCount", f"{count} data nodes cannot be spread evenly over 2 AZs.",
              "use an even number, at least 2.")
    c.whole(values["catalogVolumeGiB"], "client.catalogVolumeGiB", 10, 16384)
    if values["notebookInstanceType"] is not None and not _SAGEMAKER_TYPE.fullmatch(values["notebookInstanceType"]):
        c.add("client.notebookInstanceType", f"{values['notebookInstanceType']!r} is not a SageMaker instance type.",
              "use a type starting with 'ml.', such as 'ml.t3.2xlarge'.")
    c.whole(values["notebookVolumeGiB"], "client.notebookVolumeGiB", 5, 16384)
    if len(c.problems) > before:
        return None
    return ClientConfig(
        region=values["region"], cidr=values["cidr"], dashboard_allowed_cidrs=allowed,
        dashboard_certificate_arn=certificate, scheduler_exec=values["schedulerExec"], scheduler_cpu=cpu,
        scheduler_memory_mib=memory,
        catalog_instance_type=values["catalogInstanceType"], catalog_instance_count=count,
        catalog_master_instance_type=values["catalogMasterInstanceType"],
        catalog_volume_gib=values["catalogVolumeGiB"], notebook_instance_type=values["notebookInstanceType"],
        notebook_volume_gib=values["notebookVolumeGiB"],
    )


_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")


def _check_spot_types(c: _Checker, types: list[Any] | None, instance_type: str | None, path: str) -> tuple[str, ...]:
    """Spot instance types: valid names, all of the worker instance type's size (tasks fit any of them)."""
    accepted: list[str] = []
    size = instance_type.split(".", 1)[1] if instance_type and "." in instance_type else None
    for i, name in enumerate(types or []):
        item = f"{path}[{i}]"
        if not isinstance(name, str) or not _INSTANCE_TYPE.fullmatch(name):
            c.add(item, f"{_fmt(name)} is not an EC2 instance type name.", "use a name such as 'm5ad.4xlarge'.")
        elif size is not None and name.split(".", 1)[1] != size:
            c.add(item, f"{name!r} is not of instanceType's size ({size}): a worker task sized for one would not "
                        "fit, or would waste, the other.", f"use types ending in '.{size}', e.g. 'm5ad.{size}'.")
        else:
            accepted.append(name)
    return tuple(dict.fromkeys(accepted))


def _check_worker(c: _Checker, raw: Any, path: str) -> WorkerConfig | None:
    before = len(c.problems)
    values = c.section(raw, WORKER_KEYS, path)
    if values is None:
        return None
    _check_region(c, values["region"], f"{path}.region")
    _check_vpc_cidr(c, values["cidr"], f"{path}.cidr")
    dataset = _check_dataset(c, values["dataset"], f"{path}.dataset")
    lustre_path = _check_lustre_path(c, values["lustreFileSystemPath"], f"{path}.lustreFileSystemPath")
    if values["lustreFileSystemPath"] is None and dataset is not None:
        lustre_path = dataset.prefix or dataset.bucket
    instance_type = values["instanceType"]
    if instance_type is not None and not _INSTANCE_TYPE.fullmatch(instance_type):
        c.add(f"{path}.instanceType", f"{instance_type!r} is not an EC2 instance type name.",
              "use a name such as 'm5d.4xlarge'.")
    for key in ("minInstances", "minTasks"):
        c.whole(values[key], f"{path}.{key}", 0)
    for key in ("maxInstances", "maxTasks", "workersPerTask", "threadsPerWorker"):
        c.whole(values[key], f"{path}.{key}", 1)
    c.whole(values["cpuTargetPercent"], f"{path}.cpuTargetPercent", 1, 100)
    if values["scaleOn"] is not None and values["scaleOn"] not in SCALE_ON:
        c.add(f"{path}.scaleOn", f"{values['scaleOn']!r} is not a scaling mode.",
              f"use one of {', '.join(repr(mode) for mode in SCALE_ON)}.")
    if values["scaleOn"] == "cpu" and values["minTasks"] == 0:
        c.add(f"{path}.minTasks", f"is 0 with {path}.scaleOn 'cpu': CPU tracking never grows a pool from zero "
                                  "tasks (no task, no CPU figure), so the region could never start.",
              f"set {path}.minTasks to 1 or more, or {path}.scaleOn to 'demand' or 'both'.")
    c.whole(values["idleTimeoutMinutes"], f"{path}.idleTimeoutMinutes", 1, 1440)
    c.whole(values["spotPercent"], f"{path}.spotPercent", 0, 100)
    c.whole(values["onDemandBaseTasks"], f"{path}.onDemandBaseTasks", 0)
    base, most = values["onDemandBaseTasks"], values["maxTasks"]
    if base is not None and most is not None and base > most:
        c.add(f"{path}.onDemandBaseTasks", f"{base} is greater than {path}.maxTasks ({most}).",
              "make onDemandBaseTasks <= maxTasks.")
    spot_types = _check_spot_types(c, values["spotInstanceTypes"], instance_type, f"{path}.spotInstanceTypes")
    for low, high in (("minInstances", "maxInstances"), ("minTasks", "maxTasks")):
        if values[low] is not None and values[high] is not None and values[low] > values[high]:
            c.add(f"{path}.{low}", f"{values[low]} is greater than {path}.{high} ({values[high]}).",
                  f"make {low} <= {high}.")
    memory, workers = values["taskMemoryMiB"], values["workersPerTask"]
    if memory is not None and workers is not None and memory < workers * MIN_MEMORY_PER_WORKER_MIB:
        c.add(f"{path}.taskMemoryMiB",
              f"{memory} MiB gives each of the {workers} workers less than {MIN_MEMORY_PER_WORKER_MIB} MiB.",
              f"raise taskMemoryMiB to at least {workers * MIN_MEMORY_PER_WORKER_MIB} or lower workersPerTask.")
    port_start = values["workerPortStart"]
    if port_start is not None and workers is not None and workers >= 1:
        last = port_start + 2 * workers - 1
        if port_start < 1024 or last > 65535:
            c.add(f"{path}.workerPortStart",
                  f"ports {port_start}-{last} (a worker and a nanny port per process) leave 1024-65535.",
                  f"start between 1024 and {65536 - 2 * workers}, or lower workersPerTask.")
    storage = values["lustreStorageGiB"]
    if storage is not None and storage != LUSTRE_MIN_STORAGE_GIB and (
        storage < LUSTRE_STORAGE_STEP_GIB or storage % LUSTRE_STORAGE_STEP_GIB
    ):
        c.add(f"{path}.lustreStorageGiB", f"{storage} GiB is not a PERSISTENT_2 size FSx accepts.",
              f"use {LUSTRE_MIN_STORAGE_GIB} or a multiple of {LUSTRE_STORAGE_STEP_GIB} (2400, 4800, ...).")
    throughput = values["lustreThroughputPerTiB"]
    if throughput is not None and throughput not in LUSTRE_THROUGHPUTS_PER_TIB:
        c.add(f"{path}.lustreThroughputPerTiB", f"{throughput} MB/s/TiB is not a PERSISTENT_2 throughput.",
              f"use one of {', '.join(map(str, LUSTRE_THROUGHPUTS_PER_TIB))}.")
    if len(c.problems) > before or dataset is None or lustre_path is None:
        return None
    return WorkerConfig(
        region=values["region"], cidr=values["cidr"], dataset=dataset, lustre_file_system_path=lustre_path,
        instance_type=instance_type, min_instances=values["minInstances"], max_instances=values["maxInstances"],
        min_tasks=values["minTasks"], max_tasks=values["maxTasks"], workers_per_task=workers,
        threads_per_worker=values["threadsPerWorker"], task_memory_mib=memory, worker_port_start=port_start,
        cpu_target_percent=values["cpuTargetPercent"], scale_on=values["scaleOn"],
        idle_timeout_minutes=values["idleTimeoutMinutes"], spot_percent=values["spotPercent"],
        on_demand_base_tasks=base, spot_instance_types=spot_types, lustre_storage_gib=storage,
        lustre_throughput_per_tib=throughput,
    )


def parse_stack_config(raw: Mapping[str, Any], *, stack: str, project: str = PROJECT_NAME) -> StackConfig:
    """Validate a raw config (keys without namespace, JSON-like values) and build the model.

    Raises ConfigError listing every problem found.
    """
    c = _Checker()
    top = c.section(raw, TOP_LEVEL_KEYS, "")
    if top is None:
        raise ConfigError(c.problems, f"stack {stack!r}")

    client_values = c.section(top["client"], CLIENT_KEYS, "client") if top["client"] is not None else None
    client = _check_client(c, client_values) if client_values is not None else None

    workers: list[WorkerConfig] = []
    raw_workers = top["workers"]
    if raw_workers is not None and not raw_workers:
        c.add("workers", "is empty.", "list at least one worker region with region, cidr and dataset.")
    if raw_workers and len(raw_workers) > MAX_WORKER_REGIONS:
        c.add("workers", f"lists {len(raw_workers)} worker regions; the platform supports at most "
                         f"{MAX_WORKER_REGIONS} (a full mesh of Transit Gateway peerings; `plan` is measured up to "
                         "it).",
              f"split the regions over stacks of at most {MAX_WORKER_REGIONS}.")
        raw_workers = raw_workers[:MAX_WORKER_REGIONS]  # the rest are not checked one by one
    for i, raw_worker in enumerate(raw_workers or []):
        worker = _check_worker(c, raw_worker, f"workers[{i}]")
        if worker is not None:
            workers.append(worker)

    _check_relations(c, top, client_values, raw_workers or [])

    if top["syncSchedule"] is not None and (reason := schedule_problem(top["syncSchedule"])):
        c.add("syncSchedule", f"{top['syncSchedule']!r} is not a valid EventBridge Scheduler expression: {reason}.",
              f"use e.g. {DEFAULT_SYNC_SCHEDULE!r} (every day at 00:00 UTC).")
    c.whole(top["availabilityZones"], "availabilityZones", MIN_AZS, MAX_AZS)
    c.whole(top["syncMaxDropPercent"], "syncMaxDropPercent", 0, 100)
    c.whole(top["daskTlsValidityDays"], "daskTlsValidityDays", 31, 825)  # more than the 30-day renewal window
    if top["logRetentionDays"] is not None and top["logRetentionDays"] not in LOG_RETENTION_DAYS:
        close = min(LOG_RETENTION_DAYS, key=lambda d: abs(d - top["logRetentionDays"]))
        c.add("logRetentionDays", f"{top['logRetentionDays']} is not a retention CloudWatch Logs accepts.",
              f"use one of {', '.join(map(str, LOG_RETENTION_DAYS))} (nearest: {close}).")
    tags = _check_tags(c, top["tags"], "tags")
    if isinstance(top["team"], str) and (reason := tag_value_problem(top["team"])):
        c.add("team", f"becomes the 'team' tag on every resource and {reason}.", "shorten it to a tag value.")

    if c.problems or client is None:
        raise ConfigError(c.problems, f"stack {stack!r}")
    return StackConfig(
        project=project, stack=stack, client=client, workers=tuple(workers), team=top["team"], tags=tags,
        sync_schedule=top["syncSchedule"], availability_zones=top["availabilityZones"],
        log_retention_days=top["logRetentionDays"],
        create_opensearch_service_linked_role=top["createOpenSearchServiceLinkedRole"],
        sync_max_drop_percent=top["syncMaxDropPercent"], dask_tls_validity_days=top["daskTlsValidityDays"],
    )


def _check_relations(c: _Checker, top: Mapping[str, Any], client: Mapping[str, Any] | None,
                     raw_workers: Sequence[Any]) -> None:
    """Cross-field rules: overlapping CIDRs and duplicate worker regions."""
    networks: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
    entries = [("client", client)] + [(f"workers[{i}]", w) for i, w in enumerate(raw_workers)]
    for path, entry in entries:
        if isinstance(entry, Mapping) and isinstance(entry.get("cidr"), str):
            with contextlib.suppress(ValueError):  # a malformed CIDR is already reported
                networks.append((f"{path}.cidr", ipaddress.ip_network(entry["cidr"], strict=True)))
    for i, (path_a, net_a) in enumerate(networks):
        for path_b, net_b in networks[i + 1:]:
            if net_a.version == net_b.version and net_a.overlaps(net_b):
                c.add(path_b, f"{str(net_b)!r} overlaps {path_a} {str(net_a)!r}; routed VPCs need distinct ranges.",
                      "give every VPC its own block, e.g. 10.0.0.0/16, 10.1.0.0/16, 10.2.0.0/16.")
    seen: dict[str, int] = {}
    for i, worker in enumerate(raw_workers):
        region = worker.get("region") if isinstance(worker, Mapping) else None
        if not isinstance(region, str):
            continue
        if region in seen:
            c.add(f"workers[{i}].region", f"{region!r} is already workers[{seen[region]}].region.",
                  "one worker region per AWS region: merge them or pick another region.")
        else:
            seen[region] = i


# --------------------------------------------------------------------------------------------- loaders
def project_defaults(project_dir: Path) -> tuple[str, dict[str, Any]]:
    """The project name and the config defaults declared in Pulumi.yaml."""
    document = _read_yaml(project_dir / "Pulumi.yaml")
    name = str(document.get("name", PROJECT_NAME))
    defaults = {key: spec["default"] for key, spec in (document.get("config") or {}).items()
                if isinstance(spec, Mapping) and "default" in spec}
    return name, defaults


def stack_file_values(project_dir: Path, stack: str, project: str) -> dict[str, Any]:
    """The project-namespace values of `Pulumi.<stack>.yaml`, without their namespace."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise ConfigError([Problem(path.name, "does not exist.",
                                   f"create it (see Pulumi.dev.yaml) or choose another stack than {stack!r}.")],
                          f"stack {stack!r}")
    document = _read_yaml(path)
    values: dict[str, Any] = {}
    for key, value in (document.get("config") or {}).items():
        namespace, _, name = str(key).rpartition(":")
        if namespace in ("", project):
            values[name] = value
    return values


def raw_stack_config(project_dir: Path, stack: str, overrides: Mapping[str, Any] | None = None
                     ) -> tuple[str, dict[str, Any]]:
    """Pulumi.yaml defaults, then the stack file, then overrides: what `pulumi up` would see."""
    project, defaults = project_defaults(project_dir)
    return project, {**defaults, **stack_file_values(project_dir, stack, project), **(overrides or {})}


def load_stack_file(project_dir: Path, stack: str, overrides: Mapping[str, Any] | None = None) -> StackConfig:
    """Load and validate `Pulumi.<stack>.yaml` the way the Pulumi program reads its config."""
    project, raw = raw_stack_config(project_dir, stack, overrides)
    return parse_stack_config(raw, stack=stack, project=project)


def load_from_pulumi() -> StackConfig:
    """Load and validate the running Pulumi stack's config (every key of the project namespace)."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    project, stack = pulumi.get_project(), pulumi.get_stack()
    prefix = f"{project}:"
    all_keys = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    kinds = {key.name: key.kind for key in TOP_LEVEL_KEYS}
    raw: dict[str, Any] = {}
    problems: list[Problem] = []
    for full_key, text in all_keys.items():
        if full_key.startswith(prefix):
            name = full_key[len(prefix):]
            raw[name] = _decode(name, text, kinds.get(name), problems)
    try:
        config = parse_stack_config(raw, stack=stack, project=project)
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        raise ConfigError(problems, f"stack {stack!r}")
    return config


def _decode(name: str, text: Any, kind: str | None, problems: list[Problem]) -> Any:
    """Pulumi hands config values over as strings; structured keys hold JSON. An unknown key keeps its text
    when it is not JSON (validation reports it as unknown)."""
    if kind == "string" or not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if kind is not None:
            problems.append(Problem(name, f"is not valid JSON ({error.msg} at character {error.pos}).",
                                    "write it as YAML in the stack file or use `pulumi config set --path`."))
        return text


MAX_YAML_VALUES = 100_000


def _expands_beyond(document: Any, limit: int) -> bool:
    """Whether a loaded document holds more than `limit` values, counting what aliases repeat (an alias bomb of
    a kilobyte is billions of values); stops counting at the limit."""
    count, stack = 0, [document]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([Problem(path.name, f"is not valid YAML{where}.", "fix the YAML syntax.")],
                          path.name) from None
    if document is None:
        return {}
    if _expands_beyond(document, MAX_YAML_VALUES):
        raise ConfigError([Problem(path.name, f"expands to more than {MAX_YAML_VALUES:,} values (YAML aliases that "
                                              "repeat themselves?).", "write the values out; a stack file is small.")],
                          path.name)
    if not isinstance(document, dict):
        raise ConfigError([Problem(path.name, "must be a YAML mapping.", "start it with 'config:'.")], path.name)
    return document


def describe_keys() -> list[tuple[str, Key]]:
    """Every key with its dotted path, for docs and schema consistency tests."""
    return ([(k.name, k) for k in TOP_LEVEL_KEYS] + [(f"client.{k.name}", k) for k in CLIENT_KEYS]
            + [(f"workers[].{k.name}", k) for k in WORKER_KEYS])

