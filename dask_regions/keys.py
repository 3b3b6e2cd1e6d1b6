"""How dask_regions marks the data of a region. No Dask import: shared by client and plugins.

A region's identity travels with its data, never in task names: every file-backed array is wrapped in a
`RegionalArray` tagged with its region, and Dask keeps that object inside every task that reads it (its array
node, or, once low-level fusion has folded that node into its reader, inside the fused task). Graph rewrites
(fusion, blockwise optimisation, array-expression renaming, persist, rechunk, map_blocks) rename keys freely but
carry the objects along. Keys keep a readable `region-<region>-` prefix for people (the dashboard), which nothing
reads back.
"""

from __future__ import annotations

import re

from platform_facts import REGION_PATTERN

# AWS region names: two letters, one or more words, a number (us-east-1, ap-southeast-2, il-central-1).
REGION_NAME = re.compile(REGION_PATTERN)
MAX_WRAPPING = 8  # xarray wraps a backend array in a few layers (adapters, copy-on-write, lazy indexing)


def check_region(region: object) -> str:
    """`region` if it is shaped like an AWS region name; otherwise a ValueError naming it."""
    if not isinstance(region, str) or not REGION_NAME.fullmatch(region):
        raise ValueError(f"region {region!r} is not an AWS region name (like us-east-1): check the catalog record "
                         "or the region= argument")
    return region


def name_prefix(region: str) -> str:
    return f"region-{region}-"


class RegionalArray:
    """An array-like (a file-backed array, typically) tagged with the region that holds its data."""

    def __init__(self, array: object, region: str) -> None:
        self.array, self.dask_regions_region = array, check_region(region)
        self.shape, self.dtype = array.shape, array.dtype  # type: ignore[attr-defined]
        self.ndim = len(self.shape)

    def __getitem__(self, index: object) -> object:
        return self.array[index]  # type: ignore[index]


def region_of_value(value: object) -> str | None:
    """The region a value is tagged with (it, or an array it wraps), or None."""
    for _ in range(MAX_WRAPPING):
        region = getattr(value, "dask_regions_region", None)
        if isinstance(region, str):
            return region
        value = getattr(value, "array", None)
        if value is None:
            return None
    return None


