"""How dask_regions marks the data of a region in task keys. No Dask import: shared by client and plugin.

Datasets opened by `dask_regions.open_dataset` are chunked with the name prefix `region-<region>-`, so the
scheduler sees a task `original-region-<region>-<variable>-<token>` holding the file-backed array, on which
every chunk read depends. Low-level fusion renames the reading tasks but keeps that dependency.
"""

from __future__ import annotations

import re

_REGION_KEY = re.compile(r"^(?:original-)?region-([a-z]{2}(?:-[a-z]+)+-\d+)-")
POOL_PREFIX = "pool-"


def name_prefix(region: str) -> str:
    return f"region-{region}-"


def region_of_key(key: object) -> str | None:
    """The region whose data a task key names, or None. Keys may be strings or (name, index...) tuples."""
    name = key[0] if isinstance(key, tuple) and key else key
    match = _REGION_KEY.match(str(name))
    return match.group(1) if match else None


def pool_of_region(region: str) -> str:
    return f"{POOL_PREFIX}{region}"


def region_of_pool(pool: str) -> str:
    return pool.removeprefix(POOL_PREFIX)
