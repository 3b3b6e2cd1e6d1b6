"""The catalog's document: one per dataset (a zarr store, a netCDF file, another file), not one per object."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from platform_facts import FACETS, pool_of_region


@dataclass(frozen=True)
class Association:
    """What the FSx data repository association maps: an S3 prefix onto a file-system path, in a region."""

    region: str
    bucket: str
    prefix: str  # without leading/trailing slash; "" for the whole bucket
    fsx_path: str  # the association's file-system path, e.g. /us-west-2/CMIP6/ScenarioMIP/MOHC
    mount_point: str = "/fsx"

    @property
    def pool(self) -> str:
        return pool_of_region(self.region)

    @property
    def key_prefix(self) -> str:
        """The prefix to list: everything under it belongs to the association."""
        return f"{self.prefix}/" if self.prefix else ""

    def local_path(self, key: str) -> str:
        """Where an object appears on a worker: the mount point, the association's path, the key's rest."""
        return f"{self.mount_point}{self.fsx_path}/{key[len(self.key_prefix):]}".rstrip("/")


@dataclass
class DatasetRecord:
    id: str
    kind: str
    s3_uri: str
    path: str
    region: str
    pool: str
    size: int
    object_count: int
    last_modified: str  # ISO 8601, UTC
    facets: dict[str, str] = field(default_factory=dict)
    # The reference deployment's fields, so its notebooks' queries keep working.
    fileName: str = ""  # noqa: N815 (field names are the document's)
    bucket: str = ""
    dask_pool: str = ""
    project: str = ""
    # The kerchunk reference set of the record's collection (catalog_sync/references.py), "" when it has none.
    references: str = ""

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


def record_id(region: str, s3_uri: str) -> str:
    """Stable across runs, so a re-run overwrites rather than duplicates."""
    return hashlib.sha256(f"{region}|{s3_uri}".encode()).hexdigest()[:40]


def opensearch_mapping() -> dict[str, Any]:
    """Strict: a document with an unknown field is rejected, not silently indexed."""
    keyword = {"type": "keyword"}
    return {
        "dynamic": "strict",
        "properties": {
            "id": keyword, "kind": keyword, "s3_uri": keyword, "path": keyword, "region": keyword, "pool": keyword,
            "size": {"type": "long"}, "object_count": {"type": "long"}, "last_modified": {"type": "date"},
            "facets": {"dynamic": "strict", "properties": {name: keyword for name in FACETS}},
            "fileName": {"type": "text", "fields": {"raw": keyword}}, "bucket": keyword, "dask_pool": keyword,
            "project": keyword, "references": keyword,
        },
    }
