"""Which catalog a location names: the local platform's SQLite file, an OpenSearch domain, or the S3 catalog's
snapshots (catalog.kind s3)."""

from __future__ import annotations

from catalog_sync.s3_catalog import S3SnapshotSink, s3_catalog_client
from catalog_sync.sinks import CatalogSink, OpenSearchSink, SinkError, SQLiteSink, opensearch_client


def open_sink(catalog: str, domain_region: str | None = None) -> CatalogSink:
    """`sqlite:///path/catalog.db`, an OpenSearch endpoint URL (signed when `domain_region` is given), or
    `s3://bucket[/prefix]` (the S3 catalog, its bucket in `domain_region`)."""
    if catalog.startswith("sqlite:///"):
        return SQLiteSink(catalog.removeprefix("sqlite:///"))
    if catalog.startswith(("http://", "https://")):
        return OpenSearchSink(opensearch_client(catalog, domain_region))
    if catalog.startswith("s3://"):
        return S3SnapshotSink(s3_catalog_client(domain_region), catalog)
    raise SinkError(f"catalog {catalog!r}: use sqlite:///<path>, an http(s):// OpenSearch endpoint or "
                    "s3://bucket[/prefix]")
