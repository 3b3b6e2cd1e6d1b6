"""dask_regions' settings: defaults in dask_regions.yaml, loaded into Dask's config (as Dask loads its own), read
with Dask's duration parsing; booleans are YAML's or Python's literals (Dask parses both), nothing else.

The packaged defaults are also kept here: Dask's config restored from a copy taken before this module was
imported (Dask's own test utilities do it between tests, and so does user code that saves and restores the
config) has no `dask-regions` section, and a setting read then is its packaged default, never a KeyError.

`check()` reads every setting once and lists every problem, each naming the key as users write it (in YAML and
as an environment variable) and the valid form: the platform's preloads call it before they start anything
(dask_regions.preload).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dask.config
import yaml
from dask.utils import parse_bytes, parse_timedelta

from dask_regions.keys import REGION_NAME
from platform_facts import DASK_REGIONS_SECTION, is_pool, region_of_pool, regions_variable

with (Path(__file__).with_name("dask_regions.yaml")).open() as _defaults:
    PACKAGED: dict[str, Any] = yaml.safe_load(_defaults)
dask.config.update_defaults(copy.deepcopy(PACKAGED))

PREFIX = DASK_REGIONS_SECTION


def get(key: str) -> Any:
    """The setting `dask-regions.<key>` (kebab-case; Dask also accepts underscores); the packaged default when
    Dask's config has no such key (a config restored from a copy taken before dask_regions was imported)."""
    try:
        return dask.config.get(f"{PREFIX}.{key}")
    except KeyError:
        return dask.config.get(f"{PREFIX}.{key}", config=PACKAGED)


def seconds(key: str) -> float:
    """A duration setting in seconds: `30s`, `15 minutes` or a number of seconds."""
    return _duration(get(key), key)


def flag(key: str) -> bool:
    return _flag(get(key), key)


def variable(key: str) -> str:
    """The environment variable that sets `dask-regions.<key>`: DASK_DASK_REGIONS__MISSING_POOL_TIMEOUT."""
    return regions_variable(key)


def name(key: str) -> str:
    """A setting as users write it: `dask-regions.missing-pool-timeout` (DASK_DASK_REGIONS__MISSING_POOL_TIMEOUT)."""
    return f"{PREFIX}.{key} ({variable(key)})"


# ------------------------------------------------------------------------------------------- parsing
# Each parser takes the value and its key and returns the parsed value, or raises ValueError saying the valid form.

def _duration(value: Any, key: str) -> float:
    try:
        parsed = parse_timedelta(value, default="seconds")
    except (KeyError, ValueError, TypeError, AttributeError, IndexError):
        parsed = None
    if parsed is None or parsed < 0:
        raise ValueError(f"{name(key)}={value!r}: give a duration such as 30s, 15 minutes or a number of seconds")
    return float(parsed)


def size(value: Any, key: str) -> int | None:
    """A size in bytes (`10 GB`, `500 MiB` or a number of bytes), or None (no limit)."""
    if value is None:
        return None
    try:
        parsed = parse_bytes(value) if not isinstance(value, bool) else None
    except (KeyError, ValueError, TypeError, AttributeError, IndexError):
        parsed = None
    if parsed is None or parsed < 0:
        raise ValueError(f"{name(key)}={value!r}: give a size such as 10 GB, 500 MiB or a number of bytes, or null")
    return int(parsed)


def _byte_count(value: Any, key: str) -> int:
    """A size in bytes that must be given (not null)."""
    parsed = size(value, key) if value is not None else None
    if parsed is None:
        raise ValueError(f"{name(key)}={value!r}: give a size such as 20 GB, 500 MiB or a number of bytes")
    return parsed


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name(key)}={value!r}: use true or false (True or False in the environment)")
    return value


def regions(value: Any, key: str = "regions") -> list[str]:
    """The configured regions: a list of AWS region names, or text (one region, or several separated by commas)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(r, str) and REGION_NAME.fullmatch(r) for r in value):
        raise ValueError(f"{name(key)}={value!r}: give a list of AWS region names, e.g. '[\"us-east-1\", "
                         "\"us-west-2\"]' in the environment")
    return list(value)


def _pool(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_pool(value) or not REGION_NAME.fullmatch(region_of_pool(value)):
        raise ValueError(f"{name(key)}={value!r}: give a pool name pool-<region> (e.g. pool-eu-west-2), or null")
    return value


def _choice(*choices: str) -> Callable[[Any, str], str]:
    def parse(value: Any, key: str) -> str:
        if value not in choices:
            raise ValueError(f"{name(key)}={value!r}: use one of {', '.join(choices)}")
        return str(value)
    return parse


def _whole(minimum: int) -> Callable[[Any, str], int]:
    def parse(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name(key)}={value!r}: give a whole number, at least {minimum}")
        return value
    return parse


def _text(value: Any, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name(key)}={value!r}: give a text, or null")
    return value


SIZING_KEYS = {"workers-per-task": 1, "threads-per-worker": 1, "min-tasks": 0, "max-tasks": 0}  # -> minimum


def _pools(value: Any, key: str) -> dict[str, dict[str, Any]]:
    """`demand.pools`: pool -> {workers-per-task, threads-per-worker, min-tasks, max-tasks, idle-timeout}, and for
    a user's own cluster `quota`, naming the quota that sets max-tasks."""
    form = ("give a mapping of pool-<region> to {workers-per-task, threads-per-worker, min-tasks, max-tasks, "
            "idle-timeout}")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name(key)}={value!r}: {form}")
    problems = []
    for pool, sizing in value.items():
        if _safe(_pool, pool, key) is not None or not isinstance(sizing, Mapping):
            problems.append(f"{pool!r}: {form}")
            continue
        for field, amount in sizing.items():
            kebab = str(field).replace("_", "-")
            number = isinstance(amount, int | float) and not isinstance(amount, bool)
            if kebab == "idle-timeout" and not (amount is None or (number and amount >= 0)):
                problems.append(f"{pool}.{field}={amount!r} is not a number of seconds (or null)")
            elif kebab in SIZING_KEYS and not (number and amount == int(amount) and amount >= SIZING_KEYS[kebab]):
                problems.append(f"{pool}.{field}={amount!r} is not a whole number at least {SIZING_KEYS[kebab]}")
            elif kebab == "quota" and not isinstance(amount, str):
                problems.append(f"{pool}.{field}={amount!r} is not a text (the quota that sets max-tasks)")
            elif kebab not in SIZING_KEYS and kebab not in ("idle-timeout", "quota"):
                problems.append(f"{pool}.{field} is not a sizing key "
                                f"({', '.join([*SIZING_KEYS, 'idle-timeout', 'quota'])})")
    if problems:
        raise ValueError(f"{name(key)}: {'; '.join(problems)}")
    return {str(pool): dict(sizing) for pool, sizing in value.items()}


def _safe(parse: Callable[[Any, str], Any], value: Any, key: str) -> str | None:
    try:
        parse(value, key)
    except ValueError as error:
        return str(error)
    return None


# Every setting of dask_regions.yaml, with its parser. A test holds this to the YAML: a key added there is checked.
PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "regions": regions,
    "route": _flag,
    "combine-pool": _pool,
    "missing-pool-timeout": _duration,
    "warm-connections": _flag,
    "crossing-budget": size,
    "demand.interval": _duration,
    "demand.target-duration": _duration,
    "demand.scale-in-window": _duration,
    "demand.idle-timeout": _duration,
    "demand.scale-up-timeout": _duration,
    "demand.publisher": _choice("none", "cloudwatch"),
    "demand.stack": _text,
    "demand.namespace": _text,
    "demand.pools": _pools,
    "protection.interval": _duration,
    "protection.minutes": _whole(1),
    "idle-shutdown.after": lambda value, key: None if value is None else _duration(value, key),
    "idle-shutdown.interval": _duration,
    "idle-shutdown.region": _text,
    "idle-shutdown.cluster": _text,
    "idle-shutdown.service": _text,
    "start-timeout": _duration,
    "read-cache.directory": _text,
    "read-cache.size": lambda value, key: _byte_count(value, key),
    "read-cache.s3-timeout": _duration,
}


class SettingsError(ValueError):
    """Settings that are not of their valid form: every problem, one per line."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def check() -> dict[str, Any]:
    """Every setting parsed, or a SettingsError listing every setting that is not of its valid form."""
    parsed, problems = {}, []
    for key, parse in PARSERS.items():
        try:
            parsed[key] = parse(get(key), key)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise SettingsError(tuple(problems))
    return parsed
