"""Opening a collection from the reference set the nightly sync wrote for it (catalog_sync/references.py): one read
of the set, in the region, instead of every file's HDF5 metadata. Runs on a worker of the data's region."""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections.abc import Sequence
from typing import Any

from fsspec import AbstractFileSystem
from fsspec.implementations.reference import ReferenceFileSystem

from dask_regions.cache import s3_ranges
from dask_regions.paths import local_path
from platform_facts import REFERENCES_LAYOUT_KEY

SETS_KEPT = 16  # reference sets each process keeps parsed
_BUILDING = threading.Lock()


@functools.lru_cache(maxsize=SETS_KEPT)
def read_set(uri: str) -> dict[str, Any]:
    """A reference set from the region's references bucket (the task role may read it), parsed once per process."""
    import boto3

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    loaded: dict[str, Any] = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    return loaded


class RegionalReferences(AbstractFileSystem):  # type: ignore[misc]
    """The set at `uri` as a read-only file system whose chunks are read from the region's Lustre paths or its
    dataset's bucket. It reads
    the set on first use, not when made: a graph carries only the URI (fsspec rebuilds a file system from its
    arguments), and unpickling it on the scheduler or the client, in another region, reads nothing. Each process
    that reads a chunk reads the set once, in the region."""

    protocol = "dask-regions-references"

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(**options)
        self.uri = uri
        self._built: ReferenceFileSystem | None = None

    def _references(self) -> ReferenceFileSystem:
        # A method, not a property: zarr's async wrapper looks up every attribute of the file system it wraps. Under
        # a lock: a worker's threads read chunks at once, and the set is read once.
        with _BUILDING:
            if self._built is None:
                held = read_set(self.uri)
                references = {name: [local_path(value[0]), *value[1:]] if isinstance(value, list) and value
                              else value for name, value in held["refs"].items()}
                # Targets are the region's Lustre paths (read as files) or, with storage `s3`, the dataset's
                # objects (read by ranged GETs through the worker's read cache: dask_regions/cache.py).
                self._built = ReferenceFileSystem(fo={"version": 1, "refs": references}, fs={"s3": s3_ranges()})
            return self._built

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **options: Any) -> bytes:
        return bytes(self._references().cat_file(path, start=start, end=end, **options))

    def info(self, path: str, **options: Any) -> dict[str, Any]:
        return dict(self._references().info(path, **options))

    def ls(self, path: str, detail: bool = True, **options: Any) -> Any:
        return self._references().ls(path, detail=detail, **options)

    def _open(self, path: str, mode: str = "rb", **options: Any) -> Any:
        return self._references()._open(path, mode=mode, **options)


def covered(uri: str, paths: Sequence[str]) -> list[tuple[int, int]] | None:
    """Where each of `paths` lies along the set's join dimension (start, stop), or None when the set does not hold
    all of them."""
    spans, start = {}, 0
    for path, steps in read_set(uri)[REFERENCES_LAYOUT_KEY]["files"]:
        spans[path] = (start, start + int(steps))
        start += int(steps)
    if not all(path in spans for path in paths):
        return None
    return [spans[path] for path in paths]


def open_spans(uri: str, spans: list[tuple[int, int]], concat_dim: str, options: dict[str, Any]) -> Any:
    """The steps `spans` (from `covered`) of the set at `uri`, in the order given, lazily."""
    import numpy as np
    import xarray as xr

    dataset = xr.open_dataset(RegionalReferences(uri).get_mapper(""), engine="zarr", chunks=None,
                              consolidated=False, **{"cache": False, **options})
    contiguous = all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    if contiguous and spans[0][0] == 0 and spans[-1][1] == dataset.sizes[concat_dim]:
        return dataset
    if contiguous:  # one run: a slice keeps the stored chunks whole
        return dataset.isel({concat_dim: slice(spans[0][0], spans[-1][1])})
    return dataset.isel({concat_dim: np.concatenate([np.arange(start, stop) for start, stop in spans])})
