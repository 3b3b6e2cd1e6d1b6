"""The S3 catalog (`catalog.kind: s3`): each region's catalog is one SQLite snapshot in a versioned bucket of the
client region, the same `datasets` table the local platform's catalog holds.

SQLite, not Parquet: Python's standard library reads and writes it (the sync's image and the notebook's kernel need
nothing more), a reader queries it in place with the same SQL as the local platform's catalog (one query answers a
batch lookup), and it holds the facets as the same JSON text.

The promises are the OpenSearch sink's: a load is staged beside the serving catalog (parts under
`<location>/loads/<region>/<load>/`, which Lambda's time-boxed steps add to one by one); the swap is one PUT of the
region's snapshot (S3 is strongly consistent: the next read gets it), after the shrink guard; a failed or dropped
sync removes its parts and leaves the serving snapshot as it was. The bucket keeps earlier versions, which readers
fall back to when the newest cannot be read (dask_regions/catalog.py).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from catalog_sync.records import DatasetRecord
from catalog_sync.sinks import SinkError, SQLiteSink, SwapReport, _guard, _stamp, reject_unknown_facets
from platform_facts import (
    CATALOG_S3_ENDPOINT_VARIABLE,
    CATALOG_SNAPSHOT_DOCUMENTS,
    catalog_load_prefix,
    catalog_snapshot_key,
)

BEGUN = "begun"  # the marker a load starts with: resume() finds the load by it


def s3_catalog_client(region: str | None) -> Any:
    """An S3 client for the catalog's bucket, in its region (the client region's, not the caller's)."""
    import boto3
    from botocore.config import Config

    endpoint = os.environ.get(CATALOG_S3_ENDPOINT_VARIABLE) or None
    return boto3.client("s3", region_name=region, endpoint_url=endpoint,
                        config=Config(connect_timeout=10, read_timeout=60, retries={"max_attempts": 5,
                                                                                     "mode": "standard"}))


def split_location(location: str) -> tuple[str, str]:
    """`s3://bucket[/prefix]` as (bucket, prefix)."""
    if not location.startswith("s3://") or not location.removeprefix("s3://").strip("/"):
        raise SinkError(f"catalog {location!r}: give s3://bucket[/prefix]")
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return bucket, prefix.strip("/")


class S3SnapshotLoad:
    def __init__(self, sink: S3SnapshotSink, region: str, load_id: str) -> None:
        self.sink, self.region, self.load_id = sink, region, load_id
        self.parts = catalog_load_prefix(sink.prefix, region, load_id)

    def add(self, records: Iterable[DatasetRecord]) -> int:
        batch = [record.to_document() for record in reject_unknown_facets(self.region, records)]
        if not batch:
            return 0
        body = "\n".join(json.dumps(document, sort_keys=True) for document in batch).encode()
        try:  # parts sort in the order they were added (a later part's record replaces an earlier one's)
            self.sink.s3.put_object(Bucket=self.sink.bucket, Key=f"{self.parts}part-{_stamp()}.jsonl", Body=body)
        except Exception as error:
            raise SinkError(f"{self.region}: loading {self.load_id} failed: {error}") from error
        return len(batch)

    def _records(self) -> Iterator[DatasetRecord]:
        for key in sorted(k for k in self.sink._keys(self.parts) if k.endswith(".jsonl")):
            body = self.sink.s3.get_object(Bucket=self.sink.bucket, Key=key)["Body"].read().decode()
            for line in body.splitlines():
                yield DatasetRecord(**json.loads(line))

    def commit(self, max_drop: float = 0.5, force: bool = False, published: int | None = None) -> SwapReport:
        previous = self.sink.serving_count(self.region)
        with tempfile.TemporaryDirectory(prefix="catalog-snapshot-") as directory:
            snapshot = Path(directory) / "snapshot.sqlite"
            local = SQLiteSink(snapshot)  # the local platform's catalog, holding this region's load only
            load = local.begin(self.region, self.load_id)
            load.add(self._records())
            documents = _count(local, load.load_id)
            _guard(self.region, documents, previous, max_drop, force, published)  # before anything is replaced
            load.commit(force=True)
            _checkpoint(snapshot)
            self.sink.s3.put_object(Bucket=self.sink.bucket, Key=self.sink.snapshot_key(self.region),
                                    Body=snapshot.read_bytes(), ContentType="application/vnd.sqlite3",
                                    Metadata={CATALOG_SNAPSHOT_DOCUMENTS: str(documents), "load": self.load_id})
        self._remove()
        return SwapReport(self.region, self.load_id, documents, previous, [])

    def abort(self) -> None:
        self._remove()

    def _remove(self) -> None:
        # One DELETE a part (a load holds a part per 500 datasets: tens, not thousands), each its own IAM action.
        for key in list(self.sink._keys(self.parts)):
            self.sink.s3.delete_object(Bucket=self.sink.bucket, Key=key)


def _count(sink: SQLiteSink, table: str) -> int:
    with sink.connect() as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _checkpoint(path: Path) -> None:
    """Fold SQLite's write-ahead log into the file, so that the one file is the whole catalog."""
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()


class S3SnapshotSink:
    """Each region's catalog as `<location>/<region>.sqlite` (platform_facts.catalog_snapshot_key)."""

    def __init__(self, s3: Any, location: str) -> None:
        self.s3 = s3
        self.bucket, self.prefix = split_location(location)

    def snapshot_key(self, region: str) -> str:
        return catalog_snapshot_key(self.prefix, region)

    def _keys(self, prefix: str) -> Iterator[str]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from (entry["Key"] for entry in page.get("Contents", []))

    def begin(self, region: str, dataset: str) -> S3SnapshotLoad:
        load = S3SnapshotLoad(self, region, f"load-{_stamp()}")
        self.s3.put_object(Bucket=self.bucket, Key=f"{load.parts}{BEGUN}", Body=dataset.encode())
        return load

    def resume(self, load_id: str, region: str) -> S3SnapshotLoad:
        load = S3SnapshotLoad(self, region, load_id)
        if f"{load.parts}{BEGUN}" not in set(self._keys(load.parts)):
            raise SinkError(f"the load {load_id} of {region} no longer exists; start the sync again")
        return load

    def serving_count(self, region: str) -> int:
        """What the region's serving snapshot holds (its metadata); 0 when it has none yet."""
        from botocore.exceptions import ClientError

        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=self.snapshot_key(region))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return 0
            raise
        return int(head.get("Metadata", {}).get(CATALOG_SNAPSHOT_DOCUMENTS, "0"))
