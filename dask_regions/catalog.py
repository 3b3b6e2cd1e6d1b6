"""Find data without knowing regions: the catalog the nightly sync publishes (OpenSearch in AWS, SQLite in
the local platform), read through one interface."""

from __future__ import annotations

import csv
import difflib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from catalog_client import opensearch_client
from platform_facts import (
    CATALOG_READ_ALIAS,
    CATALOG_S3_ENDPOINT_VARIABLE,
    CATALOG_SNAPSHOT_SUFFIX,
    ERA5_TIME_DIM,
    FACETS,
    catalog_index_prefix,
)
from platform_facts.document import DOCUMENT_INDEX, CatalogDocument

FIELDS = ("kind", "region", "pool", "bucket")  # top-level fields find() also filters on
SEARCH_LIMIT = 10_000


@dataclass(frozen=True)
class EsmCollection:
    """How one collection of the catalog becomes an intake-esm datastore."""

    kinds: tuple[str, ...]  # catalog kinds it holds
    format: str  # intake-esm's asset format: zarr or netcdf
    groupby: tuple[str, ...]  # columns whose values make one dataset (its key, joined by ".")
    variable: str  # the column naming each asset's variable
    aggregations: tuple[dict[str, Any], ...]  # how a dataset's assets combine, outermost first
    derived: dict[str, Any] | None = None  # extra columns, each computed from a Dataset


ESM_COLLECTIONS: dict[str, EsmCollection] = {
    # Pangeo's CMIP6 datastores: one dataset per DRS source/experiment/table/grid, its variables merged and its
    # members joined along a new `member_id` dimension.
    "cmip6": EsmCollection(
        kinds=("cmip6-zarr",), format="zarr",
        groupby=("activity_id", "institution_id", "source_id", "experiment_id", "table_id", "grid_label"),
        variable="variable_id",
        aggregations=({"type": "union", "attribute_name": "variable_id"},
                      {"type": "join_new", "attribute_name": "member_id",
                       "options": {"coords": "minimal", "compat": "override"}})),
    # ERA5: one dataset per variable (and bucket: intake-esm 2025.12.12 cannot look up a dataset grouped by a
    # single column under pandas 3), its monthly files joined along time.
    "era5": EsmCollection(
        kinds=("era5-netcdf",), format="netcdf", groupby=("bucket", "variable"), variable="variable",
        aggregations=({"type": "join_existing", "attribute_name": "time_range",
                       "options": {"dim": ERA5_TIME_DIM, "coords": "minimal", "compat": "override"}},),
        derived={"bucket": lambda d: d.s3_uri.removeprefix("s3://").split("/")[0],
                 "time_range": lambda d: f"{d.facets.get('year', '')}-{d.facets.get('month', '')}"}),
}


def _collection(datasets: Sequence[Dataset], wanted: str | None) -> str:
    present = sorted({name for d in datasets for name, spec in ESM_COLLECTIONS.items() if d.kind in spec.kinds})
    if wanted is not None:
        if wanted not in ESM_COLLECTIONS:
            raise CatalogQueryError(f"collection {wanted!r}: one of {', '.join(ESM_COLLECTIONS)}")
        if wanted not in present:
            raise CatalogQueryError(f"no {wanted} dataset matches; the matches hold: {', '.join(present) or 'none'}")
        return wanted
    if len(present) != 1:
        raise CatalogQueryError(f"the matches hold {' and '.join(present) or 'no'} collections: export one at a time, "
                                f"e.g. to_intake_esm(directory, collection={(present or list(ESM_COLLECTIONS))[0]!r})")
    return present[0]


class CatalogQueryError(LookupError):
    """A query the catalog cannot answer; the message lists what it does hold."""


@dataclass(frozen=True)
class Dataset(CatalogDocument):
    """A catalog document as readers get it (platform_facts.CatalogDocument)."""

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Dataset:
        """From a document as a catalog returns it: OpenSearch's source, or a SQLite row (facets as JSON text);
        numbers as numbers, a field the document lacks at its default."""
        values: dict[str, Any] = {}
        for each in fields(cls):
            if each.name not in document or document[each.name] is None:
                continue
            value = document[each.name]
            if DOCUMENT_INDEX[each.name] == "long":
                value = int(value)
            elif DOCUMENT_INDEX[each.name] == "facets":
                value = dict(json.loads(value) if isinstance(value, str) else value)
            else:
                value = str(value)
            values[each.name] = value
        return cls(**values)


class Catalog:
    """`Catalog.open("sqlite:///path")` or `Catalog.open("https://<domain>", domain_region="eu-west-2")`."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend

    @classmethod
    def open(cls, location: str, domain_region: str | None = None) -> Catalog:
        if location.startswith("sqlite:///"):
            return cls(_SQLite(Path(location.removeprefix("sqlite:///"))))
        if location.startswith(("http://", "https://")):
            return cls(_OpenSearch(location, domain_region))
        if location.startswith("s3://"):
            return cls(_S3Snapshots(location, domain_region))
        raise CatalogQueryError(f"catalog {location!r}: use sqlite:///<path>, the catalog's https:// endpoint or its "
                                "s3://bucket/prefix")

    def find(self, **criteria: str | Sequence[str]) -> list[Dataset]:
        """Datasets matching every criterion (a facet or kind/region/pool/bucket; a list means any of)."""
        unknown = [name for name in criteria if name not in FACETS + FIELDS]
        if unknown:
            hints = "; ".join(f"{name!r}: {_nearest(name, FACETS + FIELDS)}" for name in unknown)
            raise CatalogQueryError(f"unknown facet {hints} Facets: {', '.join(FACETS + FIELDS)}")
        wanted = {name: [value] if isinstance(value, str) else list(value) for name, value in criteria.items()}
        found = self.backend.find(wanted)
        if not found:
            raise CatalogQueryError(self._why_empty(wanted))
        return sorted(found, key=lambda d: (d.region, d.path))

    def locate(self, paths: Iterable[str]) -> dict[str, Dataset]:
        """Many paths (or s3:// URIs) to their datasets in one round trip; unknown paths are left out."""
        wanted = list(dict.fromkeys(paths))
        return self.backend.locate(wanted) if wanted else {}

    def to_intake_esm(self, directory: Path | str, collection: str | None = None, name: str | None = None,
                      **criteria: str) -> Path:
        """Write an intake-esm datastore (JSON description + CSV) of one collection's matching datasets, grouped
        and aggregated as Pangeo's datastores are (`ESM_COLLECTIONS`), with `region` and `pool` as columns.
        `collection` ("cmip6" or "era5") may be left out when the matches hold only one."""
        datasets = self.find(**criteria) if criteria else self.backend.find({})
        chosen = _collection(datasets, collection)
        spec = ESM_COLLECTIONS[chosen]
        rows = [d for d in datasets if d.kind in spec.kinds]
        name = name or chosen
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        facets = sorted({facet for dataset in rows for facet in dataset.facets})
        columns = ["path", "format", "region", "pool", *facets, *(spec.derived or {})]
        with (directory / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for dataset in rows:
                derived = [derive(dataset) for derive in (spec.derived or {}).values()]
                writer.writerow([dataset.path, spec.format, dataset.region, dataset.pool,
                                 *(dataset.facets.get(facet, "") for facet in facets), *derived])
        description = {
            "esmcat_version": "0.1.0", "id": name,
            "description": f"{chosen} datasets of the cross-region Dask platform (paths as the region's workers "
                           "see them; open with dask_regions.to_dataset_dict to run each in its region)",
            "catalog_file": f"{name}.csv",
            "attributes": [{"column_name": column, "vocabulary": ""} for column in columns[2:]],
            "assets": {"column_name": "path", "format_column_name": "format"},
            "aggregation_control": {"variable_column_name": spec.variable, "groupby_attrs": list(spec.groupby),
                                    "aggregations": [dict(a) for a in spec.aggregations]},
        }
        path = directory / f"{name}.json"
        path.write_text(json.dumps(description, indent=2))
        return path

    def _why_empty(self, wanted: dict[str, list[str]]) -> str:
        hints = []
        for name, values in wanted.items():
            existing = self.backend.values(name)
            for value in values:
                if value not in existing:
                    hints.append(f"{name}={value!r} is not in the catalog ({_nearest(value, sorted(existing))})")
        reason = "; ".join(hints) or "the criteria exist separately but no dataset has them all"
        return f"no dataset matches {wanted}: {reason}"


def _nearest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(repr(c) for c in list(choices)[:8])
    return f"it has {shown}{', ...' if len(choices) > 8 else ''}" if choices else "it is empty"


class _Backend:
    def find(self, wanted: dict[str, list[str]]) -> list[Dataset]:
        raise NotImplementedError

    def locate(self, paths: list[str]) -> dict[str, Dataset]:
        raise NotImplementedError

    def values(self, name: str) -> set[str]:
        raise NotImplementedError


class _SQLite(_Backend):
    def __init__(self, path: Path) -> None:
        if not path.exists():
            raise CatalogQueryError(f"no catalog at {path}: run the sync first (python -m catalog_cli ...)")
        self.path = path

    def _rows(self, query: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        connection.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in connection.execute(query, args)]
        finally:
            connection.close()

    @staticmethod
    def _column(name: str) -> str:
        return name if name in FIELDS else f"json_extract(facets, '$.{name}')"

    def find(self, wanted: dict[str, list[str]]) -> list[Dataset]:
        clauses, args = [], []
        for name, values in wanted.items():
            clauses.append(f"{self._column(name)} IN ({', '.join('?' * len(values))})")
            args += values
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        return [Dataset.from_document(row) for row in self._rows(f"SELECT * FROM datasets{where}", args)]

    def locate(self, paths: list[str]) -> dict[str, Dataset]:
        marks = ", ".join("?" * len(paths))
        rows = self._rows(f"SELECT * FROM datasets WHERE path IN ({marks}) OR s3_uri IN ({marks})", paths + paths)
        found = [Dataset.from_document(row) for row in rows]
        return {p: d for d in found for p in (d.path, d.s3_uri) if p in paths}

    def values(self, name: str) -> set[str]:
        return {str(row["v"]) for row in self._rows(f"SELECT DISTINCT {self._column(name)} AS v FROM datasets", [])
                if row["v"] is not None}


class _S3Snapshots(_Backend):
    """The S3 catalog (catalog.kind s3): each region's SQLite snapshot (catalog_sync/s3_catalog.py), read into one
    local SQLite file and queried as the local platform's catalog is. Before each query one listing of the
    snapshots (one round trip, with their ETags) says which changed: those are read again, so a swap is seen at
    once. A snapshot that cannot be read is replaced by its previous version, with a warning; a region with no
    readable version is an error naming it, never a catalog without it."""

    def __init__(self, location: str, region: str | None) -> None:
        import tempfile

        if not location.removeprefix("s3://").strip("/"):
            raise CatalogQueryError(f"catalog {location!r}: give s3://bucket[/prefix]")
        self.location = location.rstrip("/")
        self.bucket, _, prefix = self.location.removeprefix("s3://").partition("/")
        self.prefix = prefix.strip("/")
        self.s3 = _catalog_s3(region)
        self.directory = Path(tempfile.mkdtemp(prefix="dask-regions-catalog-"))
        self.held: dict[str, tuple[str, Path]] = {}  # snapshot key -> (ETag read, local copy)
        self.merged: _SQLite | None = None

    def _current(self) -> _SQLite:
        listed: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", Delimiter="/"):
            listed |= {entry["Key"]: entry["ETag"] for entry in page.get("Contents", [])
                       if entry["Key"].endswith(CATALOG_SNAPSHOT_SUFFIX)}
        if not listed:
            raise CatalogQueryError(f"the catalog at {self.location} holds no snapshot yet: the first sync of each "
                                    "region writes one")
        changed = {key for key, tag in listed.items() if self.held.get(key, ("",))[0] != tag}
        if changed or set(self.held) != set(listed) or self.merged is None:
            for key in sorted(changed):
                self.held[key] = (listed[key], self._read(key))
            for key in set(self.held) - set(listed):
                del self.held[key]
            self.merged = self._merge()
        return self.merged

    def _read(self, key: str) -> Path:
        """The newest readable version of a snapshot, as a local file."""
        import warnings

        versions = [None, *self._older_versions(key)]
        for position, version in enumerate(versions):
            local = self.directory / f"{key.replace('/', '_')}.{position}"
            try:
                extra = {"VersionId": version} if version else {}
                local.write_bytes(self.s3.get_object(Bucket=self.bucket, Key=key, **extra)["Body"].read())
                _check_snapshot(local)
            except Exception as error:
                problem = f"{type(error).__name__}: {error}"
                warnings.warn(f"the catalog snapshot s3://{self.bucket}/{key} ({version or 'newest'} version) cannot "
                              f"be read ({problem}); trying the version before it", stacklevel=4)
                continue
            return local
        raise CatalogQueryError(f"no version of the catalog snapshot s3://{self.bucket}/{key} can be read: run that "
                                "region's sync again (it writes a new one)")

    def _older_versions(self, key: str) -> list[str]:
        found = []
        for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key):
            found += [v for v in page.get("Versions", []) if v["Key"] == key]
        newest_first = sorted(found, key=lambda v: v["LastModified"], reverse=True)
        return [str(v["VersionId"]) for v in newest_first if not v.get("IsLatest")]

    def _merge(self) -> _SQLite:
        """One local SQLite file with every region's rows (replaced whole, so a reader never sees half of it)."""
        import os
        import uuid

        target = self.directory / f"merged-{uuid.uuid4().hex[:8]}.sqlite"
        connection = sqlite3.connect(target, isolation_level=None)
        try:
            for position, (_, local) in enumerate(sorted(self.held.values())):
                connection.execute(f"ATTACH DATABASE ? AS r{position}", (str(local),))
                if position == 0:
                    connection.execute("CREATE TABLE datasets AS SELECT * FROM r0.datasets WHERE 0")
                connection.execute(f"INSERT INTO datasets SELECT * FROM r{position}.datasets")
                connection.execute(f"DETACH DATABASE r{position}")
        finally:
            connection.close()
        final = self.directory / "merged.sqlite"
        os.replace(target, final)
        return _SQLite(final)

    def find(self, wanted: dict[str, list[str]]) -> list[Dataset]:
        return self._current().find(wanted)

    def locate(self, paths: list[str]) -> dict[str, Dataset]:
        return self._current().locate(paths)

    def values(self, name: str) -> set[str]:
        return self._current().values(name)


def _check_snapshot(path: Path) -> None:
    """Raises unless `path` is a SQLite file with a readable `datasets` table."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        connection.execute("SELECT count(*) FROM datasets").fetchone()
    finally:
        connection.close()


def _catalog_s3(region: str | None) -> Any:
    import os

    import boto3
    from botocore.config import Config

    return boto3.client("s3", region_name=region, endpoint_url=os.environ.get(CATALOG_S3_ENDPOINT_VARIABLE) or None,
                        config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 3,
                                                                                     "mode": "standard"}))


class _OpenSearch(_Backend):
    ALIAS = CATALOG_READ_ALIAS

    def __init__(self, endpoint: str, domain_region: str | None) -> None:
        self.client = opensearch_client(endpoint, domain_region, timeout=30)

    @staticmethod
    def _field(name: str) -> str:
        return name if name in FIELDS else f"facets.{name}"

    def _search(self, query: dict[str, Any]) -> list[Dataset]:
        hits = self.client.search(index=self.ALIAS, body={"query": query, "size": SEARCH_LIMIT})["hits"]["hits"]
        # A document speaks for a region only from that region's own load indices, which only that region's sync
        # may write (catalog_access/): no region can publish datasets in another's name.
        hits = [hit for hit in hits
                if str(hit.get("_index", "")).startswith(catalog_index_prefix(str(hit["_source"].get("region"))))]
        # While a region swaps its load, both loads are in the alias for a moment: one document per dataset id,
        # from the newest load (index names end in the load's time stamp).
        newest: dict[str, dict[str, Any]] = {}
        for hit in sorted(hits, key=lambda h: str(h.get("_index", ""))):
            newest[hit["_source"]["id"]] = hit
        return [Dataset.from_document(hit["_source"]) for hit in newest.values()]

    def find(self, wanted: dict[str, list[str]]) -> list[Dataset]:
        filters = [{"terms": {self._field(name): values}} for name, values in wanted.items()]
        return self._search({"bool": {"filter": filters}} if filters else {"match_all": {}})

    def locate(self, paths: list[str]) -> dict[str, Dataset]:
        found = self._search({"bool": {"should": [{"terms": {"path": paths}}, {"terms": {"s3_uri": paths}}],
                                       "minimum_should_match": 1}})
        return {p: d for d in found for p in (d.path, d.s3_uri) if p in paths}

    def values(self, name: str) -> set[str]:
        found = self.find({})
        return {value for d in found if (value := d.facets.get(name) if name in FACETS else getattr(d, name, None))}
