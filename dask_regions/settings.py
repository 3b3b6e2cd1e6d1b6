"""dask_regions' settings: defaults in dask_regions.yaml, loaded into Dask's config (as Dask loads its own), read
with Dask's duration parsing; booleans are YAML's or Python's literals (Dask parses both), nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml
from dask.utils import parse_timedelta

with (Path(__file__).with_name("dask_regions.yaml")).open() as _defaults:
    dask.config.update_defaults(yaml.safe_load(_defaults))

PREFIX = "dask-regions"


def get(key: str) -> Any:
    """The setting `dask-regions.<key>` (kebab-case; Dask also accepts underscores)."""
    return dask.config.get(f"{PREFIX}.{key}")


def seconds(key: str) -> float:
    """A duration setting in seconds: `30s`, `15 minutes` or a number of seconds."""
    value = parse_timedelta(get(key), default="seconds")
    if value is None:
        raise ValueError(f"{PREFIX}.{key} is not set: give a duration such as 30s")
    return float(value)


def flag(key: str) -> bool:
    value = get(key)
    if not isinstance(value, bool):
        raise ValueError(f"{PREFIX}.{key}={value!r}: use true or false (True or False in the environment)")
    return value
