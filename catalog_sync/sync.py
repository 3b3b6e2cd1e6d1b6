"""One region's nightly sync: import the file system's metadata, list and group the dataset, load the
catalog beside the serving one, swap. Time-boxed steps carry a checkpoint, so Lambda can run it in pieces."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from catalog_sync import fsx_import
from catalog_sync.grouping import DatasetGrouper
from catalog_sync.listing import list_objects
from catalog_sync.published import PublishedCounts
from catalog_sync.records import Association, DatasetRecord
from catalog_sync.references import References, ReferenceWriter
from catalog_sync.sinks import CatalogSink, Load, SwapReport

RECORD_BATCH = 500


@dataclass
class Checkpoint:
    """Where an interrupted load goes on: the load to add to and the key to list after."""

    region: str
    load_id: str
    start_after: str
    documents: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unreferenced: int = 0  # files of a collection whose references could not be built (opened file by file)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(**data)


@dataclass
class Progress:
    done: bool
    checkpoint: Checkpoint


def index_step(s3: Any, association: Association, load: Load, checkpoint: Checkpoint, *,
               deadline: float | None = None, clock: Callable[[], float] = time.monotonic, page_size: int = 1000,
               on_record: Callable[[int], None] | None = None, references: ReferenceWriter | None = None) -> Progress:
    """List from the checkpoint and load complete datasets until the listing ends or `deadline` passes; with
    `references`, write each collection file's references as its record completes.

    A step always gets past at least one dataset before it honours the deadline, so steps make progress."""
    grouper = DatasetGrouper(association, start_after=checkpoint.start_after)
    batch, documents = [], checkpoint.documents

    def described(records: list[DatasetRecord]) -> list[DatasetRecord]:
        return references.describe(s3, records) if references else records

    def unreferenced() -> int:  # a writer serves one step (its count starts at 0), the checkpoint the ones before
        return checkpoint.unreferenced + (references.failed if references else 0)

    for item in list_objects(s3, association.bucket, association.key_prefix, checkpoint.start_after, page_size):
        batch += described(grouper.add(item))
        if len(batch) >= RECORD_BATCH:
            documents += load.add(batch)
            batch = []
            if on_record:
                on_record(documents)
        if deadline is not None and clock() >= deadline and grouper.resume_point() > checkpoint.start_after:
            documents += load.add(batch)
            skipped = _merge(checkpoint.skipped, grouper.skipped)
            return Progress(False, Checkpoint(association.region, load.load_id, grouper.resume_point(), documents,
                                              skipped, unreferenced()))
    documents += load.add(batch + described(grouper.finish()))
    if on_record:
        on_record(documents)
    return Progress(True, Checkpoint(association.region, load.load_id, "", documents,
                                     _merge(checkpoint.skipped, grouper.skipped), unreferenced()))


def _merge(before: dict[str, int], now: Any) -> dict[str, int]:
    merged = dict(before)
    for reason, count in now.items():
        merged[reason] = merged.get(reason, 0) + count
    return merged


def rebuild_catalog(s3: Any, association: Association, sink: CatalogSink, *, max_drop: float = 0.5,
                    force: bool = False, page_size: int = 1000, on_record: Callable[[int], None] | None = None,
                    counts: PublishedCounts | None = None,
                    references: References | None = None) -> tuple[SwapReport, Checkpoint]:
    """List, group, load (with each collection's reference set, when `references` says where) and swap in one
    go. Any failure drops the new load and re-raises: the serving catalog is untouched."""
    load = sink.begin(association.region, association.bucket + "/" + association.prefix)
    try:
        writer = references.writer(association.region, load.load_id) if references else None
        progress = index_step(s3, association, load, Checkpoint(association.region, load.load_id, ""),
                              page_size=page_size, on_record=on_record, references=writer)
        if writer is not None:
            writer.combine_step()
        report = publish(load, max_drop=max_drop, force=force, counts=counts)
        return report, progress.checkpoint
    except BaseException as error:
        try:
            load.abort()
        except Exception as cleanup:  # e.g. the sink is unreachable: the new load stays, unaliased and unread
            error.add_note(f"the new load {load.load_id} could not be dropped ({cleanup}); it serves no reader")
        raise


def publish(load: Load, *, max_drop: float, force: bool, counts: PublishedCounts | None) -> SwapReport:
    """Swap a finished load in, guarded against the last published count too; record the new count."""
    report = load.commit(max_drop=max_drop, force=force,
                         published=counts.get(load.region) if counts is not None else None)
    if counts is not None:
        counts.put(load.region, report.documents)
    return report


def sync_region(s3: Any, association: Association, sink: CatalogSink, *, fsx: Any = None,
                file_system_id: str | None = None, sleep: Callable[[float], None] = time.sleep,
                max_drop: float = 0.5, force: bool = False, page_size: int = 1000,
                on_record: Callable[[int], None] | None = None, counts: PublishedCounts | None = None,
                references: References | None = None) -> tuple[SwapReport, Checkpoint]:
    """The whole nightly sync for one region: the metadata import first (when a file system is given), then
    the catalog rebuild. A failed import raises before the catalog is touched."""
    if file_system_id:
        status = fsx_import.start_or_adopt(fsx, file_system_id, datetime.now(UTC).date())
        fsx_import.wait(fsx, status, sleep)
    return rebuild_catalog(s3, association, sink, max_drop=max_drop, force=force, page_size=page_size,
                           on_record=on_record, counts=counts, references=references)
