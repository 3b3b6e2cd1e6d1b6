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


class RegionalArray:
    """An array-like (a file-backed array, typically) tagged with the region that holds its data. Dask keeps
    it in its own graph node that every chunk read depends on; the router reads the tag from that node, so
    placement survives renaming (dask's array-expression mode ignores `from_array(name=...)`)."""

    def __init__(self, array: object, region: str) -> None:
        self.array, self.dask_regions_region = array, region
        self.shape, self.dtype = array.shape, array.dtype  # type: ignore[attr-defined]
        self.ndim = len(self.shape)

    def __getitem__(self, index: object) -> object:
        return self.array[index]  # type: ignore[index]


def region_of_value(value: object) -> str | None:
    """The region a graph node's value is tagged with, or None."""
    region = getattr(value, "dask_regions_region", None)
    return region if isinstance(region, str) else None


def pool_of_region(region: str) -> str:
    return f"{POOL_PREFIX}{region}"


def region_of_pool(pool: str) -> str:
    return pool.removeprefix(POOL_PREFIX)
