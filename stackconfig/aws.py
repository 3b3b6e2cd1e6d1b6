"""AWS reference data the stack config is checked against: regions of the partition, the schedule grammar,
Fargate sizes, tag rules, instance-type shapes, Lustre and log-retention values."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from functools import cache
from typing import Any

from platform_facts import REGION_PATTERN
from stackconfig.schema import _fmt

LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)

LUSTRE_THROUGHPUTS_PER_TIB = (125, 250, 500, 1000)  # PERSISTENT_2 SSD, MB/s/TiB
LUSTRE_MIN_STORAGE_GIB = 1200
LUSTRE_STORAGE_STEP_GIB = 2400  # PERSISTENT_2 SSD: 1200 GiB, then multiples of 2400 GiB

# Public datasets the platform knows, by bucket, with the region AWS's Registry of Open Data lists for each
# (registry.opendata.aws/ecmwf-era5 and /cmip6, as of 2026-12): with `storage: s3` a worker region must be the
# bucket's own, or every read would cross regions.
PUBLIC_DATASET_REGIONS = {"era5-pds": "us-east-1", "cmip6-pds": "us-west-2"}

RESERVED_TAG_KEYS = ("project", "stack", "team", "user", "group")  # the last two: on each user's resources
PRIVATE_RANGES = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))

PARTITION = "aws"  # the platform deploys to the commercial partition only (one account, peered across regions)
_REGION_CODE = re.compile(REGION_PATTERN)  # pseudo-regions such as aws-global are no region codes


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



_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

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

_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")
