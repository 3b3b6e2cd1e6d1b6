"""What a fault must not lose from the catalog, checked the same way on the twin (bench/faults.py) and inside the
WAN's namespaces (bench/wan_agent.py): its documents, and the reference sets they name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any


def documents(catalog: Any) -> list[dict[str, Any]]:
    """Every document of a catalog (`dask_regions.Catalog`), sorted, without its reference set's address: a new sync
    writes its sets under its own load, so that address moves (`missing_sets` checks that it resolves)."""
    found = (dataclasses.asdict(d) for d in catalog.find())
    return sorted(({k: v for k, v in d.items() if k != "references"} for d in found), key=lambda d: str(d["id"]))


def missing_sets(datasets: Iterable[Any], s3: Callable[[str], Any], region: str | None = None) -> list[str]:
    """The reference sets `datasets` name (those of `region`, or all) that their region's storage does not hold;
    `s3(region)` is an S3 client there. Absent or unreadable: either way lost to its readers."""
    missing = []
    for dataset in datasets:
        if not dataset.references or (region and dataset.region != region):
            continue
        bucket, _, key = dataset.references.removeprefix("s3://").partition("/")
        try:
            s3(dataset.region).head_object(Bucket=bucket, Key=key)
        except Exception:  # absent, or unreadable
            missing.append(dataset.references)
    return sorted(set(missing))
