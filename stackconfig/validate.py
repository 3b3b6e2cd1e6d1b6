"""Checking a raw stack config: every problem collected with its key and fix, then the typed model."""

from __future__ import annotations

import contextlib
import difflib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from stackconfig import offered
from stackconfig.addressing import LARGEST_VPC_PREFIX, MAX_AZS, SMALLEST_VPC_PREFIX
from stackconfig.aws import (
    _ACM_ARN,
    _BUCKET,
    _INSTANCE_TYPE,
    _OPENSEARCH_TYPE,
    _SAGEMAKER_TYPE,
    _TAG_TEXT,
    FARGATE_SIZES,
    LOG_RETENTION_DAYS,
    LUSTRE_MIN_STORAGE_GIB,
    LUSTRE_STORAGE_STEP_GIB,
    LUSTRE_THROUGHPUTS_PER_TIB,
    MAX_TAG_KEY,
    PARTITION,
    PRIVATE_RANGES,
    PUBLIC_DATASET_REGIONS,
    RESERVED_TAG_KEYS,
    fargate_problem,
    known_regions,
    partition_regions,
    schedule_problem,
    tag_value_problem,
)
from stackconfig.schema import (
    BACKBONES,
    CATALOG_KEYS,
    CATALOG_KINDS,
    CLIENT_KEYS,
    DEFAULT_SYNC_SCHEDULE,
    GROUP_KEYS,
    LUSTRE_DEPLOYMENT_TYPES,
    LUSTRE_KEYS,
    MAX_PEERINGS_PER_VPC,
    MAX_WORKER_REGIONS,
    MEMBER_NAME_PATTERN,
    MIN_MEMORY_PER_WORKER_MIB,
    MOVED_CLIENT_KEYS,
    PROJECT_NAME,
    SCALE_ON,
    STORAGE_KINDS,
    TOP_LEVEL_KEYS,
    USER_KEYS,
    WORKER_KEYS,
    CatalogConfig,
    ClientConfig,
    ConfigError,
    GroupConfig,
    Key,
    Problem,
    S3Location,
    StackConfig,
    UserConfig,
    WorkerConfig,
    _did_you_mean,
    _fmt,
)


# ------------------------------------------------------------------------------------------ validation
class _Checker:
    """Accumulates problems while reading a raw (JSON-like) config."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []  # what may be right but cannot be checked here (StackConfig.warnings)

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




def _members(c: _Checker, raw: Any, keys: Sequence[Key], path: str, what: str) -> list[tuple[int, dict[str, Any]]]:
    """A list of `{name, ...}` objects (users, groups): each checked against its keys, its name's form, and once.
    Returns (index, values) of those that passed."""
    if not isinstance(raw, list):
        return []  # the type's problem is already reported
    members: list[tuple[int, dict[str, Any]]] = []
    first: dict[str, int] = {}
    for i, item in enumerate(raw):
        values = c.section(item, keys, f"{path}[{i}]")
        if values is None or values["name"] is None:
            continue
        name = values["name"]
        if not re.fullmatch(MEMBER_NAME_PATTERN, name):
            c.add(f"{path}[{i}].name", f"{name!r} is not a valid {what} name: it names resources.",
                  "use 1-20 lowercase letters, digits and hyphens, starting with a letter.")
        elif name in first:
            c.add(f"{path}[{i}].name", f"{what} {name!r} is given twice (also {path}[{first[name]}]).",
                  f"give each {what} once.")
        else:
            first[name] = i
            members.append((i, values))
    return members


def _check_users(c: _Checker, values: Mapping[str, Any]) -> tuple[tuple[UserConfig, ...], tuple[GroupConfig, ...]]:
    groups = {}
    for i, group in _members(c, values["groups"], GROUP_KEYS, "client.groups", "group"):
        _check_bounds(c, GROUP_KEYS, group, f"client.groups[{i}].")
        groups[group["name"]] = GroupConfig(group["name"], group["maxClusters"], group["maxWorkersPerRegion"],
                                            group["maxTaskMemoryMiB"])
    users = []
    for i, user in _members(c, values["users"], USER_KEYS, "client.users", "user"):
        _check_bounds(c, USER_KEYS, user, f"client.users[{i}].")
        if user["group"] is None:
            continue
        if user["group"] not in groups:
            c.add(f"client.users[{i}].group", f"{user['group']!r} (user {user['name']!r}) is not a group in "
                                              f"client.groups ({', '.join(groups) or 'none declared'}).",
                  "declare it in client.groups, or give the user one of the groups there.")
            continue
        own, shared = user["maxWorkersPerRegion"], groups[user["group"]].max_workers_per_region
        if isinstance(own, int) and isinstance(shared, int) and own > shared:
            c.add(f"client.users[{i}].maxWorkersPerRegion",
                  f"is {own} (user {user['name']!r}), above its group {user['group']!r}'s {shared}.",
                  f"set it to at most {shared}, or raise client.groups' maxWorkersPerRegion for the group.")
        users.append(UserConfig(user["name"], user["group"], own))
    return tuple(users), tuple(groups.values())


def _check_quotas(c: _Checker, client: ClientConfig, workers: Sequence[WorkerConfig]) -> None:
    """Quotas a worker region's pool could not live within: fewer workers than the pool keeps running, or tasks
    smaller than the region's worker task."""

    def below_minimum(path: str, who: str, quota: int | None, j: int, worker: WorkerConfig) -> None:
        if quota is not None and quota < worker.min_tasks:
            c.add(path, f"is {quota} ({who}), below workers[{j}].minTasks {worker.min_tasks} ({worker.region}): each "
                        "cluster's pool keeps that many running.",
                  f"set it to at least {worker.min_tasks}, or lower workers[{j}].minTasks.")

    for i, group in enumerate(client.groups):
        for j, worker in enumerate(workers):
            below_minimum(f"client.groups[{i}].maxWorkersPerRegion", f"group {group.name!r}",
                          group.max_workers_per_region, j, worker)
            if group.max_task_memory_mib is not None and worker.task_memory_mib > group.max_task_memory_mib:
                c.add(f"client.groups[{i}].maxTaskMemoryMiB",
                      f"is {group.max_task_memory_mib} (group {group.name!r}), but {worker.region}'s worker task "
                      f"is {worker.task_memory_mib} MiB (workers[{j}].taskMemoryMiB): the group could not run there.",
                      f"set it to at least {worker.task_memory_mib}, or lower workers[{j}].taskMemoryMiB.")
    for i, user in enumerate(client.users):
        for j, worker in enumerate(workers):
            below_minimum(f"client.users[{i}].maxWorkersPerRegion", f"user {user.name!r}", user.max_workers_per_region,
                          j, worker)


def _check_bounds(c: _Checker, keys: Sequence[Key], values: Mapping[str, Any], prefix: str) -> None:
    """Every integer key's declared bounds (schema.py), with the checker's own message."""
    for key in keys:
        if key.minimum is not None:
            c.whole(values[key.name], f"{prefix}{key.name}", key.minimum, key.maximum)


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
    _check_bounds(c, CLIENT_KEYS, values, "client.")
    if values["notebookInstanceType"] is not None and not _SAGEMAKER_TYPE.fullmatch(values["notebookInstanceType"]):
        c.add("client.notebookInstanceType", f"{values['notebookInstanceType']!r} is not a SageMaker instance type.",
              "use a type starting with 'ml.', such as 'ml.t3.2xlarge'.")
    users, groups = _check_users(c, values)
    if len(c.problems) > before:
        return None
    return ClientConfig(
        users=users, groups=groups,
        region=values["region"], cidr=values["cidr"], dashboard_allowed_cidrs=allowed,
        dashboard_certificate_arn=certificate, scheduler_exec=values["schedulerExec"], scheduler_cpu=cpu,
        scheduler_memory_mib=memory, scale_in_window_seconds=values["scaleInWindowSeconds"],
        region_grace_seconds=values["regionGraceSeconds"],
        notebook_instance_type=values["notebookInstanceType"],
        notebook_volume_gib=values["notebookVolumeGiB"], idle_shutdown_minutes=values["idleShutdownMinutes"],
        notebook_idle_minutes=values["notebookIdleMinutes"],
    )




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
    _check_bounds(c, WORKER_KEYS, values, f"{path}.")
    if values["scaleOn"] is not None and values["scaleOn"] not in SCALE_ON:
        c.add(f"{path}.scaleOn", f"{values['scaleOn']!r} is not a scaling mode.",
              f"use one of {', '.join(repr(mode) for mode in SCALE_ON)}.")
    if values["scaleOn"] == "cpu" and values["minTasks"] == 0:
        c.add(f"{path}.minTasks", f"is 0 with {path}.scaleOn 'cpu': CPU tracking never grows a pool from zero "
                                  "tasks (no task, no CPU figure), so the region could never start.",
              f"set {path}.minTasks to 1 or more, or {path}.scaleOn to 'demand' or 'both'.")
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
        c.add(f"{path}.lustreStorageGiB", f"{storage} GiB is not a size FSx accepts for Lustre.",
              f"use {LUSTRE_MIN_STORAGE_GIB} or a multiple of {LUSTRE_STORAGE_STEP_GIB} (2400, 4800, ...).")
    kind = values["lustreDeploymentType"]
    if kind is not None and kind not in LUSTRE_DEPLOYMENT_TYPES:
        c.add(f"{path}.lustreDeploymentType", f"{kind!r} is not a deployment type the platform deploys.",
              f"use one of {', '.join(map(repr, LUSTRE_DEPLOYMENT_TYPES))}.")
    throughput = values["lustreThroughputPerTiB"]
    if throughput is not None and throughput not in LUSTRE_THROUGHPUTS_PER_TIB:
        c.add(f"{path}.lustreThroughputPerTiB", f"{throughput} MB/s/TiB is not a PERSISTENT_2 throughput.",
              f"use one of {', '.join(map(str, LUSTRE_THROUGHPUTS_PER_TIB))}.")
    _check_storage(c, values["storage"], raw, dataset, values["region"], path)
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
        lustre_throughput_per_tib=throughput, lustre_deployment_type=kind, storage=values["storage"],
    )


def _check_storage(c: _Checker, storage: Any, raw: Mapping[str, Any], dataset: S3Location | None, region: Any,
                   path: str) -> None:
    """The storage kind; with `s3`, no Lustre key (it would do nothing) and a bucket in the worker's region."""
    if storage is None:
        return
    if storage not in STORAGE_KINDS:
        c.add(f"{path}.storage", f"{storage!r} is not a storage kind.",
              f"use one of {', '.join(map(repr, STORAGE_KINDS))}.")
        return
    if storage != "s3":
        return
    for key in LUSTRE_KEYS:
        if key in raw:
            c.add(f"{path}.{key}", "applies only with storage 'lustre': with 's3' the region has no file system.",
                  f"remove {key}, or set {path}.storage to 'lustre'.")
    home = PUBLIC_DATASET_REGIONS.get(dataset.bucket) if dataset else None
    if dataset and home is None:
        c.warnings.append(Problem(f"{path}.dataset", f"{dataset.bucket!r} is not a public dataset the platform "
                                  "knows: with storage 's3' its workers read it with their own role, so its bucket "
                                  f"must be in {region} and its policy must let any AWS principal read it.",
                                  "check both (e.g. `aws s3api get-bucket-location`), or use storage 'lustre'."))
    if dataset and isinstance(region, str) and home and home != region:
        c.add(f"{path}.dataset", f"{dataset.bucket!r} is in {home}, not {region}: with storage 's3' every read "
                                 "would cross regions (and be billed as such).",
              f"set {path}.region to {home!r}, or use storage 'lustre' there.")


def parse_stack_config(raw: Mapping[str, Any], *, stack: str, project: str = PROJECT_NAME) -> StackConfig:
    """Validate a raw config (keys without namespace, JSON-like values) and build the model.

    Raises ConfigError listing every problem found.
    """
    c = _Checker()
    top = c.section(raw, TOP_LEVEL_KEYS, "")
    if top is None:
        raise ConfigError(c.problems, f"stack {stack!r}")

    client_values = (c.section(_moved_out(c, top["client"]), CLIENT_KEYS, "client") if top["client"] is not None
                     else None)
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
    catalog = _check_catalog(c, top["catalog"])

    if top["syncSchedule"] is not None and (reason := schedule_problem(top["syncSchedule"])):
        c.add("syncSchedule", f"{top['syncSchedule']!r} is not a valid EventBridge Scheduler expression: {reason}.",
              f"use e.g. {DEFAULT_SYNC_SCHEDULE!r} (every day at 00:00 UTC).")
    _check_bounds(c, TOP_LEVEL_KEYS, top, "")  # daskTlsValidityDays: more than the 30-day renewal window
    if top["logRetentionDays"] is not None and top["logRetentionDays"] not in LOG_RETENTION_DAYS:
        close = min(LOG_RETENTION_DAYS, key=lambda d: abs(d - top["logRetentionDays"]))
        c.add("logRetentionDays", f"{top['logRetentionDays']} is not a retention CloudWatch Logs accepts.",
              f"use one of {', '.join(map(str, LOG_RETENTION_DAYS))} (nearest: {close}).")
    _check_backbone(c, top["backbone"], 1 + len(raw_workers or []))
    tags = _check_tags(c, top["tags"], "tags")
    if isinstance(top["team"], str) and (reason := tag_value_problem(top["team"])):
        c.add("team", f"becomes the 'team' tag on every resource and {reason}.", "shorten it to a tag value.")

    if not c.problems and client is not None:  # only a config valid in itself: the paths below index its workers
        _check_quotas(c, client, workers)
        _check_offered(c, client, catalog or CatalogConfig(), workers)
    if c.problems or client is None:
        raise ConfigError(c.problems, f"stack {stack!r}")
    return StackConfig(
        project=project, stack=stack, client=client, workers=tuple(workers), team=top["team"], tags=tags,
        sync_schedule=top["syncSchedule"], availability_zones=top["availabilityZones"],
        log_retention_days=top["logRetentionDays"],
        create_opensearch_service_linked_role=top["createOpenSearchServiceLinkedRole"],
        sync_max_drop_percent=top["syncMaxDropPercent"], dask_tls_validity_days=top["daskTlsValidityDays"],
        backbone=top["backbone"], warnings=tuple(c.warnings), catalog=catalog or CatalogConfig(),
    )


def _check_offered(c: _Checker, client: ClientConfig, catalog: CatalogConfig, workers: Sequence[WorkerConfig]) -> None:
    """What each region must offer for what the stack creates there (stackconfig/offered.py: CloudFormation's
    registry per region), each lack named with regions or types that would work."""
    regions = known_regions()

    def need(path: str, region: str, resource_type: str) -> None:
        types = offered.resource_types(region)
        if types is not None and resource_type not in types:
            elsewhere = ", ".join(offered.regions_offering(resource_type, region, regions)) or "none known"
            c.add(path, f"{region} has no {offered.WHAT[resource_type]} ({resource_type} is not in CloudFormation's "
                        f"registry there).", f"choose a region that has them, e.g. {elsewhere}.")

    def instance(path: str, region: str, wanted: str, types: frozenset[str] | None, other: str,
                 x86: bool = False) -> None:
        if types is not None and wanted not in types:
            alike = ", ".join(offered.alike(wanted, types, x86=x86)) or "none of its size"
            c.add(path, f"{wanted!r} is not offered in {region} (CloudFormation's registry).",
                  f"use one offered there, e.g. {alike}{other}.")

    need("client.region", client.region, offered.NOTEBOOK)
    if catalog.on_opensearch:
        need("client.region", client.region, offered.OPENSEARCH)
        types = offered.opensearch_types(client.region)
        instance("catalog.instanceType", client.region, catalog.instance_type, types, "; or catalog.kind 's3'")
        if catalog.dedicated_masters:
            instance("catalog.masterInstanceType", client.region, catalog.master_instance_type, types,
                     "; or catalog.dedicatedMasters false")
    for i, worker in enumerate(workers):
        if worker.on_lustre:
            need(f"workers[{i}].region", worker.region, offered.LUSTRE)
        types = offered.ec2_types(worker.region)
        instance(f"workers[{i}].instanceType", worker.region, worker.instance_type, types, "", x86=True)
        for j, spot in enumerate(worker.spot_instance_types):
            instance(f"workers[{i}].spotInstanceTypes[{j}]", worker.region, spot, types, "", x86=True)


def _moved_out(c: _Checker, client: Any) -> Any:
    """The client section without the catalog keys that moved to `catalog`, each refused naming its new place."""
    if not isinstance(client, Mapping):
        return client
    for old, new in MOVED_CLIENT_KEYS.items():
        if old in client:
            c.add(f"client.{old}", f"has moved to catalog.{new}.",
                  f"write it as `catalog: {{{new}: {json.dumps(client[old])}}}` at the top level of the config.")
    return {key: value for key, value in client.items() if key not in MOVED_CLIENT_KEYS}


def _check_catalog(c: _Checker, raw: Any) -> CatalogConfig | None:
    before = len(c.problems)
    values = c.section(raw if raw is not None else {}, CATALOG_KEYS, "catalog")
    if values is None:
        return None
    kind = values["kind"]
    if kind not in CATALOG_KINDS:
        c.add("catalog.kind", f"{kind!r} is not a catalog kind.", f"use one of {', '.join(map(repr, CATALOG_KINDS))}.")
    elif kind == "s3":
        for key in (k.name for k in CATALOG_KEYS if k.name != "kind"):
            if isinstance(raw, Mapping) and key in raw:
                c.add(f"catalog.{key}", "applies only with catalog.kind 'opensearch': the 's3' catalog has no "
                                        "domain.", f"remove catalog.{key}, or set catalog.kind to 'opensearch'.")
    for key in ("instanceType", "masterInstanceType"):
        if values[key] is not None and not _OPENSEARCH_TYPE.fullmatch(values[key]):
            c.add(f"catalog.{key}", f"{values[key]!r} is not an OpenSearch instance type.",
                  "use a type ending in '.search', such as 'r6g.large.search'.")
    count = values["instanceCount"]
    if count is not None and count != 1 and (count < 2 or count % 2):
        c.add("catalog.instanceCount", f"{count} data nodes cannot be spread evenly over 2 AZs.",
              "use 1 (one zone, a small team) or an even number, at least 2.")
    _check_bounds(c, CATALOG_KEYS, values, "catalog.")
    if len(c.problems) > before:
        return None
    return CatalogConfig(kind=kind, instance_type=values["instanceType"], instance_count=count,
                         dedicated_masters=values["dedicatedMasters"],
                         master_instance_type=values["masterInstanceType"], volume_gib=values["volumeGiB"])


def _check_backbone(c: _Checker, backbone: Any, sites: int) -> None:
    if backbone is None:
        return
    if backbone not in BACKBONES:
        c.add("backbone", f"{backbone!r} is not a backbone.", f"use one of {', '.join(map(repr, BACKBONES))}.")
    elif backbone == "vpc-peering" and sites - 1 > MAX_PEERINGS_PER_VPC:
        c.add("backbone", f"'vpc-peering' joins {sites} VPCs in a full mesh, {sites - 1} peering connections per "
                          f"VPC, over AWS's default quota of {MAX_PEERINGS_PER_VPC} (peering is not transitive).",
              "use 'transit-gateway', or raise the quota (up to 125) and split the stack.")


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


