"""Virtual references for netCDF collections: opening years of monthly files becomes one read in the region.

Opening a collection file by file reads every file's HDF5 metadata: 480 monthly files took 10.3 s, against 0.012 s
from one kerchunk reference set (bench/results/open-refs.json). So the nightly sync writes, in the region's
references bucket, one set per collection of its load:

- While indexing, each file of a collection (`REFERENCED_KINDS`) gets its own references: its HDF5 metadata read
  once, by ranged GETs in the region, stored as a piece `<prefix>/<region>/<load>/pieces/<collection>/<key>.json`.
  The record names its collection's set (the `references` field of the catalog).
- After indexing, each collection's pieces are combined into the set `<prefix>/<region>/<load>/<collection>.json`,
  which also lists the files it covers, in order, and how many steps each holds
  (platform_facts.REFERENCES_LAYOUT_KEY).

The references' targets are the files' catalog paths (/fsx/...), where the region's workers read them. A load's
sets live under the load's id, so a set always describes exactly its own load's records; the bucket's lifecycle
expires the sets of replaced loads. A file whose references cannot be built (not HDF5, say) and a collection whose
files cannot be combined (chunks that do not line up) keep no set, and are opened file by file, as before.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from catalog_sync.environment import REFERENCES as LOCATION_VARIABLE
from catalog_sync.records import DatasetRecord
from platform_facts import ERA5_TIME_DIM, REFERENCES_LAYOUT_KEY

# Which records belong to a collection, by kind: the facets that name the collection (the rest vary within it,
# e.g. year and month) and the dimension its files are joined along.
REFERENCED_KINDS: dict[str, tuple[tuple[str, ...], str]] = {"era5-netcdf": (("variable",), ERA5_TIME_DIM)}
INLINE_BYTES = 16 * 1024  # coordinates up to this size are held in the set, so opening reads no file at all
READ_BLOCK_BYTES = 256 * 1024  # HDF5 metadata is read in ranged GETs of this size
PIECE_READERS = 16  # pieces read at once when combining

log = logging.getLogger(__name__)


class S3Object(io.RawIOBase):
    """A read-only, seekable view of one S3 object through ranged GETs (what h5py needs to read its metadata)."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self.s3, self.bucket, self.key, self.size, self.position = s3, bucket, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        end = min(self.position + len(buffer), self.size)
        if end <= self.position:
            return 0
        body = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end - 1}")["Body"]
        data = body.read()
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def collection_of(record: DatasetRecord) -> str | None:
    """The collection a record belongs to (e.g. `era5-netcdf.air_temperature_at_2_metres`), or None."""
    if record.kind not in REFERENCED_KINDS:
        return None
    names, _ = REFERENCED_KINDS[record.kind]
    if not all(record.facets.get(name) for name in names):
        return None
    return ".".join([record.kind, *(record.facets[name] for name in names)])


def file_references(s3: Any, bucket: str, key: str, size: int, path: str) -> dict[str, Any]:
    """One netCDF4/HDF5 file's kerchunk references, read from S3, pointing at `path` (where workers see it)."""
    from kerchunk.hdf import SingleHdf5ToZarr

    with io.BufferedReader(S3Object(s3, bucket, key, size), buffer_size=READ_BLOCK_BYTES) as handle:
        references: dict[str, Any] = SingleHdf5ToZarr(handle, url=path, inline_threshold=INLINE_BYTES,
                                                      error="raise").translate()
    return references


def steps_along(references: dict[str, Any], dimension: str) -> int:
    """How many steps along `dimension` a file's references hold (its coordinate's length)."""
    return int(json.loads(references["refs"][f"{dimension}/.zarray"])["shape"][0])


def combine(pieces: list[dict[str, Any]], dimension: str) -> dict[str, Any]:
    """One set from a collection's pieces (in file order): joined along `dimension`, other coordinates taken once,
    times decoded from each file's own units (a month's file counts from its own start)."""
    from kerchunk.combine import MultiZarrToZarr

    others = sorted({name.split("/")[0] for piece in pieces[:1] for name in piece["refs"]
                     if name.endswith("/.zarray") and name.split("/")[0] != dimension
                     and _is_dimension(piece, name.split("/")[0])})
    combiner = MultiZarrToZarr(pieces, concat_dims=[dimension], identical_dims=others,
                               coo_map={dimension: f"cf:{dimension}"}, inline_threshold=INLINE_BYTES)
    # In a thread of its own: kerchunk calls asyncio.run(), which fails under a running event loop and leaves the
    # calling thread with no event loop at all.
    with ThreadPoolExecutor(1, thread_name_prefix="kerchunk-combine") as thread:
        combined: dict[str, Any] = thread.submit(combiner.translate).result()
    return combined


def _is_dimension(piece: dict[str, Any], name: str) -> bool:
    attributes = json.loads(piece["refs"].get(f"{name}/.zattrs", "{}"))
    return bool(attributes.get("_ARRAY_DIMENSIONS") == [name])


@dataclass
class CombineProgress:
    done: bool
    after: str  # the last collection combined (or given up on): the next step goes on after it
    sets: int
    failed: int


@dataclass(frozen=True)
class References:
    """Where a region's sync writes its reference sets: `location` (s3://bucket[/prefix]) through `s3`."""

    s3: Any
    location: str

    def writer(self, region: str, load_id: str) -> ReferenceWriter:
        return ReferenceWriter(self.s3, self.location, region, load_id)


class ReferenceWriter:
    """Writes one load's pieces and sets under `s3://<bucket>/<prefix>/<region>/<load>/`."""

    def __init__(self, s3: Any, location: str, region: str, load_id: str) -> None:
        if not location.startswith("s3://") or not location.removeprefix("s3://").strip("/"):
            raise ValueError(f"{LOCATION_VARIABLE}={location!r}: give s3://bucket[/prefix]")
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        self.s3, self.bucket = s3, bucket
        self.root = "/".join(part for part in (prefix.strip("/"), region, load_id) if part)
        self.failed = 0

    def set_uri(self, collection: str) -> str:
        return f"s3://{self.bucket}/{self.root}/{collection}.json"

    def _pieces(self, collection: str = "") -> str:
        return f"{self.root}/pieces/{collection + '/' if collection else ''}"

    def describe(self, s3: Any, records: list[DatasetRecord]) -> list[DatasetRecord]:
        """Write each referenced record's piece (its file read through `s3`: the dataset's client) and name its
        collection's set on it (the records returned, in order). A file that cannot be described is left without
        (and counted); never raised."""
        described = []
        for record in records:
            described.append(record)
            collection = collection_of(record)
            if collection is None:
                continue
            bucket, _, key = record.s3_uri.removeprefix("s3://").partition("/")
            _, dimension = REFERENCED_KINDS[record.kind]
            try:
                piece = file_references(s3, bucket, key, record.size, record.path)
                piece[REFERENCES_LAYOUT_KEY] = {"path": record.path, "steps": steps_along(piece, dimension)}
            except ImportError:  # the image lacks a package: not the file's fault, and not to be hidden
                raise
            except Exception as error:  # a broken or non-HDF5 file: it is opened file by file
                self.failed += 1
                log.warning("no references for %s: %s", record.s3_uri, error)
                continue
            self.s3.put_object(Bucket=self.bucket, Key=f"{self._pieces(collection)}{key}.json",
                               Body=json.dumps(piece).encode(), ContentType="application/json")
            described[-1] = replace(record, references=self.set_uri(collection))
        return described

    def collections(self) -> list[str]:
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._pieces(),
                                                                      Delimiter="/"):
            found += [entry["Prefix"][len(self._pieces()):].rstrip("/") for entry in page.get("CommonPrefixes", [])]
        return sorted(found)

    def _piece_keys(self, collection: str) -> Iterator[str]:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=self._pieces(collection)):
            yield from (entry["Key"] for entry in page.get("Contents", []))

    def combine_collection(self, collection: str) -> bool:
        """Write the collection's set; False (logged) when its pieces cannot be combined."""
        kind = collection.split(".", 1)[0]
        _, dimension = REFERENCED_KINDS[kind]
        keys = sorted(self._piece_keys(collection))  # S3 keys of monthly files sort in time order

        def read(key: str) -> dict[str, Any]:
            loaded: dict[str, Any] = json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            return loaded

        with ThreadPoolExecutor(PIECE_READERS) as readers:
            pieces = list(readers.map(read, keys))
        layouts = [piece.pop(REFERENCES_LAYOUT_KEY) for piece in pieces]
        files = [[layout["path"], layout["steps"]] for layout in layouts]
        try:
            combined = combine(pieces, dimension)
        except ImportError:  # the image lacks a package (s3fs, say): the sync fails, naming it
            raise
        except Exception as error:  # e.g. files chunked differently: that collection is opened file by file
            log.warning("no reference set for %s: %s", collection, error)
            return False
        combined[REFERENCES_LAYOUT_KEY] = {"concat_dim": dimension, "files": files}
        self.s3.put_object(Bucket=self.bucket, Key=self.set_uri(collection).removeprefix(f"s3://{self.bucket}/"),
                           Body=json.dumps(combined).encode(), ContentType="application/json")
        return True

    def combine_step(self, after: str = "", *, deadline: float | None = None,
                     clock: Callable[[], float] = time.monotonic) -> CombineProgress:
        """Combine the collections after `after`, in order, until done or `deadline` passes (always at least
        one, so steps make progress)."""
        sets = failed = 0
        remaining = [c for c in self.collections() if c > after]
        for collection in remaining:
            if self.combine_collection(collection):
                sets += 1
            else:
                failed += 1
            after = collection
            if deadline is not None and clock() >= deadline and collection != remaining[-1]:
                return CombineProgress(False, after, sets, failed)
        return CombineProgress(True, after, sets, failed)

