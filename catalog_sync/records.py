"""The catalog's document: one per dataset (a zarr store, a netCDF file, another file), not one per object."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from platform_facts import FACETS, FSX_MOUNT, pool_of_region
from platform_facts.document import DOCUMENT_INDEX, CatalogDocument


@dataclass(frozen=True)
class Association:
    """A region's dataset, an S3 prefix, and where its workers read it: through the FSx data repository
    association's file-system path, or (storage `s3`, no `fsx_path`) in the bucket itself."""

    region: str
    bucket: str
    prefix: str  # without leading/trailing slash; "" for the whole bucket
    fsx_path: str | None  # the association's file-system path, e.g. /us-west-2/CMIP6/ScenarioMIP/MOHC; None: S3
    mount_point: str = FSX_MOUNT

    @property
    def pool(self) -> str:
        return pool_of_region(self.region)

    @property
    def key_prefix(self) -> str:
        """The prefix to list: everything under it belongs to the association."""
        return f"{self.prefix}/" if self.prefix else ""

    def local_path(self, key: str) -> str:
        """Where a worker reads an object: the mount point, the association's path, the key's rest; or its S3 URI."""
        if self.fsx_path is None:
            return f"s3://{self.bucket}/{key}".rstrip("/")
        return f"{self.mount_point}{self.fsx_path}/{key[len(self.key_prefix):]}".rstrip("/")


@dataclass(frozen=True)
class DatasetRecord(CatalogDocument):
    """The catalog's document (platform_facts.CatalogDocument) as the sync writes it."""

    def to_document(self) -> dict[str, Any]:
        return asdict(self)


def record_id(region: str, s3_uri: str) -> str:
    """Stable across runs, so a re-run overwrites rather than duplicates."""
    return hashlib.sha256(f"{region}|{s3_uri}".encode()).hexdigest()[:40]


def opensearch_mapping() -> dict[str, Any]:
    """From the document's declaration. Strict: a document with an unknown field or facet is rejected, not silently
    indexed."""
    keyword = {"type": "keyword"}
    kinds = {"keyword": keyword, "long": {"type": "long"}, "date": {"type": "date"},
             "facets": {"dynamic": "strict", "properties": {name: keyword for name in FACETS}},
             "text": {"type": "text", "fields": {"raw": keyword}}}
    return {"dynamic": "strict", "properties": {name: kinds[index] for name, index in DOCUMENT_INDEX.items()}}
