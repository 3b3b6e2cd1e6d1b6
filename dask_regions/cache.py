"""Reading a dataset straight from its bucket, in its region (a worker region with storage `s3`): each chunk a
reference set points at is one ranged GET, and the range read is kept on the worker's local disk (the
`read-cache` settings), so a chunk read again comes from disk, not from S3.

Our own, not fsspec's `blockcache`: a reference set's chunk is an exact (object, start, end), so one file per range
is an exact hit with no block arithmetic; the cache is shared by every worker process of a task (a range is written
to a temporary file and renamed into place, so a reader sees it whole or not at all); and it is bounded (the ranges
used longest ago go first). fsspec's block cache keeps the index of the blocks it holds in each process's memory and
has no bound.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dask_regions import settings

SWEEP_SHARE = 20  # the directory is swept for size after a twentieth of the bound has been written
KEEP_SHARE = 0.9  # a sweep leaves the cache at this share of its bound, so it does not sweep at every write


@dataclass
class Counts:
    """What one process read: ranges found on disk and ranges fetched from S3, with their bytes."""

    hits: int = 0
    misses: int = 0
    hit_bytes: int = 0
    fetched_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, hit: bool, size: int) -> None:
        with self.lock:
            if hit:
                self.hits, self.hit_bytes = self.hits + 1, self.hit_bytes + size
            else:
                self.misses, self.fetched_bytes = self.misses + 1, self.fetched_bytes + size

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "hit_bytes": self.hit_bytes,
                "fetched_bytes": self.fetched_bytes}


class RangeCache:
    """Byte ranges of objects, one file each under `directory`, at most `limit` bytes in all."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory, self.limit = directory, limit
        self.directory.mkdir(parents=True, exist_ok=True)
        self._written = limit  # sweep at the first write: another process may have filled it
        self._lock = threading.Lock()

    def _file(self, url: str, start: int | None, end: int | None) -> Path:
        name = hashlib.sha256(f"{url}\0{start}\0{end}".encode()).hexdigest()
        return self.directory / name[:2] / name

    def get(self, url: str, start: int | None, end: int | None) -> bytes | None:
        path = self._file(url, start, end)
        try:
            data = path.read_bytes()
            os.utime(path)  # used now: the sweep removes the ranges used longest ago
        except FileNotFoundError:  # never read, or swept (perhaps by another process) since
            return None
        return data

    def put(self, url: str, start: int | None, end: int | None, data: bytes) -> None:
        path = self._file(url, start, end)
        path.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        with self._lock:
            self._written += len(data)
            due = self._written >= self.limit // SWEEP_SHARE
            if due:
                self._written = 0
        if due:
            self.sweep()

    def sweep(self) -> int:
        """Remove the ranges used longest ago until the cache holds at most KEEP_SHARE of its bound, if it holds
        more than its bound; returns the bytes it holds then."""
        entries = []
        for path in self.directory.glob("*/*"):
            try:
                status = path.stat()
            except FileNotFoundError:
                continue
            entries.append((status.st_mtime, status.st_size, path))
        total = sum(size for _, size, _ in entries)
        if total <= self.limit:
            return total
        for _, size, path in sorted(entries, key=lambda entry: entry[0]):
            if total <= self.limit * KEEP_SHARE:
                break
            path.unlink(missing_ok=True)
            total -= size
        return total


class S3Ranges:
    """The `s3` side of a reference set: `cat_file(url, start, end)` by one ranged GET (the task role's, in the
    region, with bounded timeouts), through the read cache when one is configured."""

    protocol = "s3"

    def __init__(self, cache: RangeCache | None, timeout: float) -> None:
        self.cache, self.timeout, self.counts = cache, timeout, Counts()

    @functools.cached_property
    def _s3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", config=Config(connect_timeout=self.timeout, read_timeout=self.timeout,
                                                retries={"max_attempts": 3, "mode": "standard"}))

    def cat_file(self, url: str, start: int | None = None, end: int | None = None, **_: Any) -> bytes:
        if self.cache is not None and (data := self.cache.get(url, start, end)) is not None:
            self.counts.add(True, len(data))
            return data
        data = self._fetch(url, start, end)
        self.counts.add(False, len(data))
        if self.cache is not None:
            self.cache.put(url, start, end, data)
        return data

    def _fetch(self, url: str, start: int | None, end: int | None) -> bytes:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        ranged = {} if start is None and end is None else {
            "Range": f"bytes={start or 0}-{'' if end is None else end - 1}"}
        body: bytes = self._s3.get_object(Bucket=bucket, Key=key, **ranged)["Body"].read()
        return body


@functools.cache
def s3_ranges() -> S3Ranges:
    """This process's reader of dataset buckets, with the cache the settings name (one per process: its client
    and counts are shared by the worker's threads)."""
    directory = settings.get("read-cache.directory")
    limit = settings.PARSERS["read-cache.size"](settings.get("read-cache.size"), "read-cache.size")
    cache = RangeCache(Path(directory), int(limit)) if directory else None
    return S3Ranges(cache, settings.seconds("read-cache.s3-timeout"))


def read_counts() -> dict[str, Any]:
    """This process's reads of dataset buckets (for `client.run`): hits and misses of the cache, and its bytes."""
    reader = s3_ranges()
    return {**reader.counts.as_dict(), "cache": str(reader.cache.directory) if reader.cache else None}
