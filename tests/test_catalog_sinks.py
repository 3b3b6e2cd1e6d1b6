"""The catalog sinks' contract, run against SQLite and against an OpenSearch-compatible server (osmem,
started by its pytest plugin on loopback); plus SigV4 signing, bulk request sizes and 429 retries checked
on the wire with an in-process HTTP capture."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opensearchpy import OpenSearch

from catalog_sync.records import DatasetRecord, record_id
from catalog_sync.sinks import (
    _TABLE,
    READ_ALIAS,
    OpenSearchSink,
    SinkError,
    SQLiteSink,
    SwapRefused,
    _serving,
    opensearch_client,
)
from tests.json_stub import JsonHandler, serving


def record(region: str, n: int, **changes: Any) -> DatasetRecord:
    uri = f"s3://bucket-{region}/store-{n:05d}/"
    base = DatasetRecord(id=record_id(region, uri), kind="zarr", s3_uri=uri, path=f"/fsx/{region}/store-{n:05d}",
                         region=region, pool=f"pool-{region}", size=n, object_count=1,
                         last_modified="2026-11-26T00:00:00Z", facets={"variable_id": "tas" if n % 2 else "pr"},
                         fileName=f"/fsx/{region}/store-{n:05d}", bucket=f"bucket-{region}",
                         dask_pool=f"pool-{region}", project=f"bucket-{region}")
    return replace(base, **changes)


class Catalog:
    """A sink plus the reader's view of it (what a notebook would query)."""

    def __init__(self, sink: Any, ids: Any) -> None:
        self.sink, self.serving_ids = sink, ids


@pytest.fixture(params=["sqlite", pytest.param("opensearch", marks=pytest.mark.processes),  # osmem: a process
                        "s3"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Catalog:
    if request.param == "sqlite":
        sink = SQLiteSink(tmp_path / "catalog.db")

        def sqlite_ids(region: str | None = None) -> set[str]:
            with sink.connect() as db:
                query, args = ("SELECT id FROM datasets WHERE region = ?", (region,)) if region else (
                    "SELECT id FROM datasets", ())
                return {row[0] for row in db.execute(query, args)}
        return Catalog(sink, sqlite_ids)
    if request.param == "s3":
        return s3_catalog(request.getfixturevalue("moto_endpoint"), request.getfixturevalue("monkeypatch"))
    client = OpenSearch(hosts=[request.getfixturevalue("osmem_url")])

    def opensearch_ids(region: str | None = None) -> set[str]:
        if not client.indices.exists_alias(name=READ_ALIAS):
            return set()
        hits = client.search(index=READ_ALIAS, body={"query": {"match_all": {}}, "size": 10000})["hits"]["hits"]
        return {hit["_id"] for hit in hits if not region or hit["_index"].startswith(f"{READ_ALIAS}-{region}-")}
    return Catalog(OpenSearchSink(client), opensearch_ids)


def s3_catalog(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    """The S3 catalog (catalog.kind s3): snapshots in a versioned bucket, read through dask_regions' reader, one
    reader kept across loads (as a notebook keeps its catalog open)."""
    import uuid

    from catalog_sync.s3_catalog import S3SnapshotSink
    from dask_regions.catalog import Catalog as Reader
    from dask_regions.catalog import CatalogQueryError
    from platform_facts import CATALOG_S3_ENDPOINT_VARIABLE
    from tests.catalog_fixtures import s3_client

    s3 = s3_client(moto_endpoint)
    bucket = f"catalog-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    monkeypatch.setenv(CATALOG_S3_ENDPOINT_VARIABLE, moto_endpoint)
    reader = Reader.open(f"s3://{bucket}/catalog", "us-east-1")

    def s3_ids(region: str | None = None) -> set[str]:
        try:
            return {d.id for d in reader.find(**({"region": region} if region else {}))}
        except CatalogQueryError:  # no snapshot yet
            return set()
    return Catalog(S3SnapshotSink(s3, f"s3://{bucket}/catalog"), s3_ids)


def load(catalog: Catalog, region: str, records: list[DatasetRecord], **commit: Any) -> Any:
    new = catalog.sink.begin(region, "dataset")
    new.add(records)
    return new.commit(**commit)


def test_first_load_then_replace(catalog: Catalog) -> None:
    first = [record("us-east-1", n) for n in range(10)]
    report = load(catalog, "us-east-1", first)
    assert (report.documents, report.previous) == (10, 0)
    assert catalog.serving_ids("us-east-1") == {r.id for r in first}
    second = [record("us-east-1", n) for n in range(5, 15)]
    new = catalog.sink.begin("us-east-1", "dataset")
    new.add(second)
    assert catalog.serving_ids("us-east-1") == {r.id for r in first}  # readers see the old one while loading
    report = new.commit()
    assert catalog.serving_ids("us-east-1") == {r.id for r in second}
    assert (report.documents, report.previous) == (10, 10)
    assert catalog.sink.serving_count("us-east-1") == 10


def test_abort_leaves_the_serving_catalog(catalog: Catalog) -> None:
    first = [record("us-east-1", n) for n in range(4)]
    load(catalog, "us-east-1", first)
    new = catalog.sink.begin("us-east-1", "dataset")
    new.add([record("us-east-1", 99)])
    new.abort()
    assert catalog.serving_ids("us-east-1") == {r.id for r in first}
    with pytest.raises(SinkError, match="no longer exists"):
        catalog.sink.resume(new.load_id, "us-east-1")


def test_guard_refuses_a_collapsing_catalog_unless_forced(catalog: Catalog) -> None:
    first = [record("us-east-1", n) for n in range(10)]
    load(catalog, "us-east-1", first)
    small = catalog.sink.begin("us-east-1", "dataset")
    small.add([record("us-east-1", n) for n in range(4)])
    with pytest.raises(SwapRefused, match="4 datasets, the serving one 10"):
        small.commit(max_drop=0.5)
    small.abort()
    assert catalog.serving_ids("us-east-1") == {r.id for r in first}
    assert load(catalog, "us-east-1", [record("us-east-1", 0)], force=True).documents == 1
    assert catalog.serving_ids("us-east-1") == {record("us-east-1", 0).id}


def test_empty_listing_is_refused(catalog: Catalog) -> None:
    load(catalog, "us-east-1", [record("us-east-1", n) for n in range(3)])
    with pytest.raises(SwapRefused):
        load(catalog, "us-east-1", [])
    assert len(catalog.serving_ids("us-east-1")) == 3


def test_regions_are_independent_and_the_read_view_spans_them(catalog: Catalog) -> None:
    east = [record("us-east-1", n) for n in range(3)]
    west = [record("us-west-2", n) for n in range(4)]
    load(catalog, "us-east-1", east)
    load(catalog, "us-west-2", west)
    assert catalog.serving_ids() == {r.id for r in east + west}
    load(catalog, "us-east-1", east[:2], force=True)
    assert catalog.serving_ids("us-west-2") == {r.id for r in west}


def test_rejected_documents_fail_the_load(catalog: Catalog) -> None:
    load(catalog, "us-east-1", [record("us-east-1", 1)])
    new = catalog.sink.begin("us-east-1", "dataset")
    with pytest.raises(SinkError, match="rejected"):
        new.add([record("us-east-1", 2), record("us-east-1", 3, facets={"colour": "blue"})])
    new.abort()
    assert catalog.serving_ids("us-east-1") == {record("us-east-1", 1).id}


def test_resume_continues_the_same_load(catalog: Catalog) -> None:
    new = catalog.sink.begin("eu-west-1", "dataset")
    new.add([record("eu-west-1", 1)])
    again = catalog.sink.resume(new.load_id, "eu-west-1")
    again.add([record("eu-west-1", 2)])
    assert again.commit().documents == 2
    with pytest.raises(SinkError):
        catalog.sink.resume(new.load_id, "us-east-1")


def test_opensearch_swap_names_only_its_regions_indices_and_removes_the_old_one(osmem_url: str) -> None:
    client = OpenSearch(hosts=[osmem_url])
    sink = OpenSearchSink(client)
    first = load(Catalog(sink, None), "us-east-1", [record("us-east-1", 1)])
    second = load(Catalog(sink, None), "us-east-1", [record("us-east-1", 2)])
    assert second.replaced == [first.loaded]
    assert not client.indices.exists(index=first.loaded)
    assert sorted(client.indices.get_alias(name=READ_ALIAS)) == [second.loaded]
    assert _serving(client, "us-east-1") == [second.loaded]
    mapping = client.indices.get_mapping(index=second.loaded)[second.loaded]["mappings"]
    assert mapping["dynamic"] == "strict" and mapping["properties"]["facets"]["properties"]["variable_id"] == {
        "type": "keyword"}


# ------------------------------------------------------------------------------- on the wire (capture)
class Capture(JsonHandler):
    """Answers like an OpenSearch domain would for what the sink sends, and records every request."""

    requests: ClassVar[list[dict[str, Any]]] = []
    throttle_bulks: ClassVar[int] = 0

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Capture.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                 "body": body})
        if self.path.split("?")[0].endswith("/_bulk"):
            if Capture.throttle_bulks:
                Capture.throttle_bulks -= 1
                return self._reply(429, {"error": {"type": "es_rejected_execution_exception"}, "status": 429})
            lines = body.decode().strip().split("\n")[::2]
            items = [{"index": {"_id": json.loads(line)["index"]["_id"], "status": 201}} for line in lines]
            return self._reply(200, {"took": 1, "errors": False, "items": items})
        return self._reply(200, {"acknowledged": True})

    do_PUT = do_POST = do_GET = do_DELETE = do_HEAD = _handle  # noqa: N815


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    Capture.requests, Capture.throttle_bulks = [], 0
    with serving(Capture, monkeypatch) as url:
        yield url


def test_requests_are_signed_for_es_in_the_domains_region_over_the_bytes_sent(capture: str) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    sink = OpenSearchSink(opensearch_client(capture, region="eu-west-2"))
    sink.begin("us-east-1", "dataset").add([record("us-east-1", n) for n in range(3)])
    bulk = next(r for r in Capture.requests if r["path"].split("?")[0].endswith("/_bulk"))
    authorization = bulk["headers"]["Authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-2/es/aws4_request" in authorization  # the DOMAIN's region, not the worker's
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    headers = {k: v for k, v in bulk["headers"].items() if k.lower() in signed}
    request = AWSRequest(method="POST", url=capture + bulk["path"], data=bulk["body"], headers=headers)
    request.context["timestamp"] = bulk["headers"]["X-Amz-Date"]
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", "secret", "token"), "es", "eu-west-2")
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    assert authorization.endswith(f"Signature={expected}")
    # The signature covers the payload hash header, which must be the hash of the bytes that arrived.
    assert "x-amz-content-sha256" in signed
    payload_hash = {k.lower(): v for k, v in bulk["headers"].items()}["x-amz-content-sha256"]
    assert payload_hash == hashlib.sha256(bulk["body"]).hexdigest()


def test_bulk_requests_stay_under_the_domains_10_mib_limit(capture: str) -> None:
    sink = OpenSearchSink(opensearch_client(capture))
    big = [record("us-east-1", n, fileName="x" * 20_000) for n in range(800)]  # ~16 MB of documents
    sink.begin("us-east-1", "dataset").add(big)
    bulks = [r for r in Capture.requests if r["path"].split("?")[0].endswith("/_bulk")]
    assert len(bulks) >= 3
    assert max(len(r["body"]) for r in bulks) < 10 * 1024 * 1024
    assert sum(len(r["body"].decode().strip().split("\n")) // 2 for r in bulks) == 800


def test_throttled_bulk_requests_are_retried(capture: str) -> None:
    Capture.throttle_bulks = 2
    sink = OpenSearchSink(opensearch_client(capture))
    assert sink.begin("us-east-1", "dataset").add([record("us-east-1", n) for n in range(5)]) == 5
    assert len([r for r in Capture.requests if r["path"].split("?")[0].endswith("/_bulk")]) == 3


def test_the_document_is_declared_once_and_every_form_of_it_follows() -> None:
    """platform_facts.CatalogDocument drives the sync's record, the reader's dataset, the OpenSearch mapping and the
    SQLite table: none of them names a field of its own."""
    import sqlite3
    from dataclasses import fields

    from catalog_sync.records import DatasetRecord, opensearch_mapping
    from dask_regions.catalog import Dataset
    from platform_facts.document import DOCUMENT_FIELDS, CatalogDocument

    for form in (DatasetRecord, Dataset):
        assert issubclass(form, CatalogDocument) and tuple(f.name for f in fields(form)) == DOCUMENT_FIELDS
        assert not {name for name in vars(form).get("__annotations__", {})}, f"{form.__name__} declares fields"
    assert tuple(opensearch_mapping()["properties"]) == DOCUMENT_FIELDS
    with sqlite3.connect(":memory:") as db:
        db.execute(_TABLE.format(name="t"))
        assert tuple(row[1] for row in db.execute("PRAGMA table_info(t)")) == DOCUMENT_FIELDS
