"""Catalog sinks: load a region's new catalog beside the serving one, then swap atomically or drop it.

Both sinks keep the same promises: readers see the old catalog or the new one, never a partial or empty
one; any failure leaves the previous catalog serving; a swap that would shrink a region's catalog by more
than `max_drop` is refused unless forced.
"""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from catalog_client import opensearch_client as signed_client
from catalog_sync.records import DatasetRecord, opensearch_mapping
from platform_facts import CATALOG_READ_ALIAS as READ_ALIAS
from platform_facts import FACETS
from platform_facts.document import DOCUMENT_FIELDS, DOCUMENT_INDEX

BULK_CHUNK_BYTES = 5 * 1024 * 1024  # well under the domain's 10 MiB request limit
BULK_CHUNK_DOCS = 500
BULK_RETRIES = 5  # 429 Too Many Requests: back off and retry


class SinkError(Exception):
    """Loading failed; the previous catalog is still serving."""


class SwapRefused(SinkError):  # noqa: N818 (a refusal, not a crash)
    """The guard refused to replace the catalog with a much smaller one."""


@dataclass
class SwapReport:
    region: str
    loaded: str  # the new index or staging table
    documents: int
    previous: int
    replaced: list[str]


class Load(Protocol):
    load_id: str
    region: str

    def add(self, records: Iterable[DatasetRecord]) -> int: ...

    def commit(self, max_drop: float = 0.5, force: bool = False, published: int | None = None) -> SwapReport: ...

    def abort(self) -> None: ...


class CatalogSink(Protocol):
    def begin(self, region: str, dataset: str) -> Load: ...

    def resume(self, load_id: str, region: str) -> Load: ...

    def serving_count(self, region: str) -> int: ...


def _guard(region: str, documents: int, previous: int, max_drop: float, force: bool,
           published: int | None = None) -> None:
    """Refuse a load that drops more than `max_drop` against the larger of what serves now and what was last
    published (which survives a catalog that lost its indices)."""
    previous = max(previous, published or 0)
    if not force and previous and documents < previous * (1 - max_drop):
        raise SwapRefused(f"{region}: the new catalog has {documents} datasets, the serving one {previous} "
                          f"(a drop of more than {max_drop:.0%}); kept the serving one. Re-run with --force "
                          "if the dataset really shrank.")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dt%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "dataset"


# ------------------------------------------------------------------------------------------ OpenSearch
class OpenSearchLoad:
    def __init__(self, client: Any, region: str, index: str) -> None:
        self.client, self.region, self.load_id = client, region, index

    def add(self, records: Iterable[DatasetRecord]) -> int:
        from opensearchpy import helpers

        # POST /<index>/_bulk, never /_bulk: the writer's permissions are scoped to its own region's indices.
        actions = ({"_id": r.id, "_source": r.to_document()} for r in records)
        added, errors = 0, []
        try:
            for ok, item in helpers.streaming_bulk(
                    self.client, actions, index=self.load_id, chunk_size=BULK_CHUNK_DOCS,
                    max_chunk_bytes=BULK_CHUNK_BYTES,
                    max_retries=BULK_RETRIES, initial_backoff=1, max_backoff=30, raise_on_error=False,
                    raise_on_exception=False):
                if ok:
                    added += 1
                else:
                    errors.append(item)
        except Exception as error:  # connection lost mid-load, etc.
            raise SinkError(f"{self.region}: loading {self.load_id} failed: {error}") from error
        if errors:
            first = json.dumps(errors[0], default=str)[:300]
            raise SinkError(f"{self.region}: {len(errors)} documents were rejected (first: {first})")
        return added

    def commit(self, max_drop: float = 0.5, force: bool = False, published: int | None = None) -> SwapReport:
        from opensearchpy.exceptions import ConflictError, NotFoundError

        try:
            return self._swap(max_drop, force, published)
        except (NotFoundError, ConflictError):  # another sync of the region swapped between our look and our swap
            raise SinkError(f"{self.region}: another sync of this region swapped the catalog at the same time; "
                            "this one stopped, the other's load is serving. Run it again if you need its load."
                            ) from None

    def _swap(self, max_drop: float, force: bool, published: int | None) -> SwapReport:
        indices = self.client.indices
        indices.put_settings(index=self.load_id, body={"index": {"refresh_interval": "1s"}})
        indices.refresh(index=self.load_id)
        documents = int(self.client.count(index=self.load_id)["count"])
        serving = [name for name in _serving(self.client, self.region) if name != self.load_id]
        previous = sum(int(self.client.count(index=name)["count"]) for name in serving)
        _guard(self.region, documents, previous, max_drop, force, published)
        # Every request names this region's own indices only (catalog_access/: the writer may touch
        # nothing else): the read alias goes on the new index, then the old index goes, taking its alias with it.
        # Between the two, readers see both loads of this region, never a partial one; the catalog client keeps
        # one document per dataset id, the newest load's.
        indices.put_alias(index=self.load_id, name=READ_ALIAS)
        for name in serving:
            indices.delete(index=name)
        return SwapReport(self.region, self.load_id, documents, previous, serving)

    def abort(self) -> None:
        self.client.indices.delete(index=self.load_id, ignore_unavailable=True)


def _serving(client: Any, region: str) -> list[str]:
    """The region's load indices that carry the read alias: the region's serving catalog. Looked up within the
    region's own indices, so a writer never needs to read (or trust) another region's."""
    from opensearchpy.exceptions import NotFoundError

    try:
        return sorted(client.indices.get_alias(index=f"{READ_ALIAS}-{_slug(region)}-*", name=READ_ALIAS))
    except NotFoundError:
        return []


class OpenSearchSink:
    """A dated index per region and dataset (`catalog-<region>-<dataset>-<stamp>`), loaded with refresh off; the
    read alias `catalog` goes on it, then the region's previous index is deleted."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def begin(self, region: str, dataset: str) -> OpenSearchLoad:
        index = f"{READ_ALIAS}-{_slug(region)}-{_slug(dataset)}-{_stamp()}"
        self.client.indices.create(index=index, body={
            "settings": {"index": {"refresh_interval": "-1"}}, "mappings": opensearch_mapping()})
        return OpenSearchLoad(self.client, region, index)

    def resume(self, load_id: str, region: str) -> OpenSearchLoad:
        if not load_id.startswith(f"{READ_ALIAS}-{_slug(region)}-") or not self.client.indices.exists(index=load_id):
            raise SinkError(f"the load {load_id} of {region} no longer exists; start the sync again")
        return OpenSearchLoad(self.client, region, load_id)

    def serving_count(self, region: str) -> int:
        names = _serving(self.client, region)
        return sum(int(self.client.count(index=name)["count"]) for name in names)


# A catalog that does not answer fails the sync's step within about a minute (two tries of 30 s), not four (the
# client's default, four tries of 60 s, found by bench/faults.py's catalog-unreachable): the workflow then drops
# the load and alarms while the published catalog keeps serving.
SYNC_TIMEOUT_SECONDS, SYNC_RETRIES = 30, 1


def opensearch_client(endpoint: str, region: str | None = None) -> Any:
    """The platform's catalog client (catalog_client.opensearch_client: signed for `es` in the DOMAIN's region)."""
    try:
        return signed_client(endpoint, region, timeout=SYNC_TIMEOUT_SECONDS, retries=SYNC_RETRIES)
    except PermissionError as error:
        raise SinkError(str(error)) from None


# ---------------------------------------------------------------------------------------------- SQLite
COLUMNS = DOCUMENT_FIELDS
# From the document's declaration: a column per field, in its order; numbers as INTEGER, the rest (facets as JSON)
# as TEXT; the fields with a default keep it.
_TYPES = {"long": "INTEGER"}
_TABLE = "CREATE TABLE IF NOT EXISTS {name} (" + ", ".join(
    f'"{each.name}" {_TYPES.get(DOCUMENT_INDEX[each.name], "TEXT")} NOT NULL'
    + (" DEFAULT \'\'" if each.default == "" else "") for each in fields(DatasetRecord)) + ", PRIMARY KEY (region, id))"
# Columns added since the first catalog: a catalog written before them gains them (with their default) when a sink
# opens it, so that its rows and its unfinished loads are kept.
_ADDED_COLUMNS = ("references",)


def reject_unknown_facets(region: str, records: Iterable[DatasetRecord]) -> list[DatasetRecord]:
    """The records, or a SinkError if any has a facet the catalog does not declare (as OpenSearch's strict mapping
    rejects it)."""
    batch = list(records)
    rejected = [r for r in batch if set(r.facets) - set(FACETS)]
    if rejected:
        unknown = sorted(set(rejected[0].facets) - set(FACETS))
        raise SinkError(f"{region}: {len(rejected)} documents were rejected (first: {rejected[0].id} has "
                        f"unknown facets {unknown})")
    return batch


def _row(record: DatasetRecord) -> tuple[Any, ...]:
    document = record.to_document()
    document["facets"] = json.dumps(record.facets, sort_keys=True)
    return tuple(document[column] for column in COLUMNS)


class SQLiteLoad:
    def __init__(self, sink: SQLiteSink, region: str, table: str) -> None:
        self.sink, self.region, self.load_id = sink, region, table

    def add(self, records: Iterable[DatasetRecord]) -> int:
        batch = reject_unknown_facets(self.region, records)
        rows = [_row(r) for r in batch]
        try:
            with self.sink.connect() as db:
                db.execute("BEGIN")
                db.executemany(f"INSERT OR REPLACE INTO {self.load_id} VALUES ({', '.join('?' * len(COLUMNS))})",
                               rows)
                db.execute("COMMIT")
        except sqlite3.Error as error:
            raise SinkError(f"{self.region}: loading {self.load_id} failed: {error}") from error
        return len(rows)

    def commit(self, max_drop: float = 0.5, force: bool = False, published: int | None = None) -> SwapReport:
        with self.sink.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            documents = db.execute(f"SELECT count(*) FROM {self.load_id}").fetchone()[0]
            previous = db.execute("SELECT count(*) FROM datasets WHERE region = ?", (self.region,)).fetchone()[0]
            try:
                _guard(self.region, documents, previous, max_drop, force, published)
            except SwapRefused:
                db.execute("ROLLBACK")
                raise
            db.execute("DELETE FROM datasets WHERE region = ?", (self.region,))
            db.execute(f"INSERT INTO datasets SELECT * FROM {self.load_id}")
            db.execute(f"DROP TABLE {self.load_id}")
            db.execute("DELETE FROM loads WHERE load_id = ?", (self.load_id,))
            db.execute("COMMIT")  # readers saw the old rows until here, the new ones from here
        return SwapReport(self.region, self.load_id, documents, previous, [])

    def abort(self) -> None:
        with self.sink.connect() as db:
            db.execute(f"DROP TABLE IF EXISTS {self.load_id}")
            db.execute("DELETE FROM loads WHERE load_id = ?", (self.load_id,))


def _add_columns(db: sqlite3.Connection, table: str) -> None:
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for column in _ADDED_COLUMNS:
        if present and column not in present:
            db.execute(f'ALTER TABLE {table} ADD COLUMN "{column}" TEXT NOT NULL DEFAULT \'\'')


class SQLiteSink:
    """The embedded catalog of the local platform: a staging table per load, swapped in one transaction."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # readers keep reading the old rows during a swap
            db.execute(_TABLE.format(name="datasets"))
            db.execute("CREATE TABLE IF NOT EXISTS loads (load_id TEXT PRIMARY KEY, region TEXT NOT NULL)")
            for table in ["datasets", *(row[0] for row in db.execute("SELECT load_id FROM loads"))]:
                _add_columns(db, table)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """An autocommit connection (transactions are explicit), closed afterwards."""
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            yield connection
        finally:
            connection.close()

    def begin(self, region: str, dataset: str) -> SQLiteLoad:
        table = f"load_{_slug(region).replace('-', '_')}_{_stamp().replace('-', '_')}"
        with self.connect() as db:
            db.execute(_TABLE.format(name=table))
            db.execute("INSERT INTO loads VALUES (?, ?)", (table, region))
        return SQLiteLoad(self, region, table)

    def resume(self, load_id: str, region: str) -> SQLiteLoad:
        with self.connect() as db:
            row = db.execute("SELECT region FROM loads WHERE load_id = ?", (load_id,)).fetchone()
        if row is None or row[0] != region:
            raise SinkError(f"the load {load_id} of {region} no longer exists; start the sync again")
        return SQLiteLoad(self, region, load_id)

    def serving_count(self, region: str) -> int:
        with self.connect() as db:
            return int(db.execute("SELECT count(*) FROM datasets WHERE region = ?", (region,)).fetchone()[0])
