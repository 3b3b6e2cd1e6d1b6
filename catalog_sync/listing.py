"""Stream an S3 prefix's objects page by page (constant memory), resumable after any key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from catalog_sync.grouping import ObjectInfo


def list_objects(s3: Any, bucket: str, prefix: str, start_after: str = "", page_size: int = 1000
                 ) -> Iterator[ObjectInfo]:
    """Objects under `prefix` in S3's (sorted) order, from just after `start_after`."""
    paginator = s3.get_paginator("list_objects_v2")
    arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "PaginationConfig": {"PageSize": page_size}}
    if start_after:
        arguments["StartAfter"] = start_after
    for page in paginator.paginate(**arguments):
        for entry in page.get("Contents", ()):
            yield ObjectInfo(entry["Key"], int(entry.get("Size", 0)), entry["LastModified"])
