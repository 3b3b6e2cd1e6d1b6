"""The catalog's document, declared once: one per dataset (a zarr store, a netCDF file, another file), not one per
object. The nightly sync writes it (catalog_sync.records.DatasetRecord), the OpenSearch mapping and the SQLite
table are derived from it (catalog_sync), and readers get it back (dask_regions.catalog.Dataset).

Each field says how the catalog indexes it (`index`): an exact `keyword`, a `long`, a `date` (ISO 8601, UTC), the
`facets` object (a keyword per facet, strict), or `text` also searchable whole. The fields' order is the order of
the SQLite table's columns."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

INDEX = "index"  # the metadata key of each field's index type


def _field(index: str, **options: Any) -> Any:
    return field(metadata={INDEX: index}, **options)


def _facets() -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class CatalogDocument:
    id: str = _field("keyword")  # stable across runs (region and S3 URI): a re-run overwrites, never duplicates
    region: str = _field("keyword")
    kind: str = _field("keyword")  # zarr, netcdf, file
    s3_uri: str = _field("keyword")
    path: str = _field("keyword")  # where the region's workers see it (/fsx/<region>/...)
    pool: str = _field("keyword")
    size: int = _field("long")  # bytes
    object_count: int = _field("long")
    last_modified: str = _field("date")
    facets: dict[str, str] = _field("facets", default_factory=_facets)  # noqa: RUF009 (a field, not a call)
    # The reference deployment's fields, so its notebooks' queries keep working.
    fileName: str = _field("text", default="")  # noqa: N815 (field names are the document's)
    bucket: str = _field("keyword", default="")
    dask_pool: str = _field("keyword", default="")
    project: str = _field("keyword", default="")
    # The kerchunk reference set of the dataset's collection (s3://...), "" when it has none.
    references: str = _field("keyword", default="")


DOCUMENT_FIELDS = tuple(each.name for each in fields(CatalogDocument))
# The index type of each field (`keyword`, `long`, `date`, `facets`, `text`).
DOCUMENT_INDEX: dict[str, str] = {each.name: each.metadata[INDEX] for each in fields(CatalogDocument)}
