"""Opening data where it lives: a dataset is opened by a worker of its own region's pool (the notebook cannot see
that region's Lustre file system, and metadata read across regions is slow), and comes back lazy: each of its
file-backed arrays is wrapped in a `RegionalArray` tagged with the region before Dask sees it, so the scheduler's
router keeps every task that reads them in that region, however the graph is rewritten.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dask_regions.chunking import stored_chunks
from dask_regions.internals import TaggingDaskManager
from dask_regions.keys import RegionalArray, check_region, name_prefix
from dask_regions.paths import NETCDF_SUFFIXES, is_remote, local_path
from dask_regions.pools import DEFAULT_POOL_TIMEOUT, wait_for_pools
from platform_facts import pool_of_region

REFERENCES_ATTRIBUTE = "dask_regions_references"  # the reference set a collection was opened from
# Metadata of a remote netCDF file is read in blocks of this size: small, because every block of a file opened
# from another region crosses it (the REFERENCE measured 50 MB with fsspec's defaults and 1.7 MB with 256 KiB).
REMOTE_BLOCK_SIZE = 256 * 1024


class Opened:
    """What a region's worker hands back from opening a dataset: the lazy Dataset, in a wrapper Dask does not look
    into. Dask measures every result with `sizeof`, and its measure of an xarray object asks each variable for its
    `.data`, which reads a file-backed variable whole; the read values were then shipped with the result, through
    the scheduler to the client region, and in every graph built on it."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset


def _open_in_region(path: str, engine: str | None, options: dict[str, Any]) -> Opened:
    """Runs on a worker of the data's region."""
    return Opened(_open_lazily(path, engine, options))


def _open_lazily(path: str, engine: str | None, options: dict[str, Any]) -> Any:
    """Read the metadata, return a lazy (not yet dask) Dataset. Not cached in memory: a cached variable loads
    whole on first use."""
    import xarray as xr

    location = local_path(path)
    remote = is_remote(location)
    if engine is None:
        if remote:
            engine = "h5netcdf" if location.rstrip("/").endswith(NETCDF_SUFFIXES) else "zarr"
        else:
            engine = "zarr" if location.rstrip("/").endswith(".zarr") or os.path.isdir(location) else "h5netcdf"
    if engine == "zarr":  # open_zarr takes no `cache`; zarr variables are not cached in memory
        return xr.open_zarr(location, chunks=None, **options)
    options = {"cache": False, **options}
    if remote and engine == "h5netcdf":
        return xr.open_dataset(_remote_netcdf_store(location, options.pop("storage_options", None)), chunks=None,
                               **options)
    return xr.open_dataset(location, engine=engine, chunks=None, **options)


def _remote_netcdf_store(url: str, storage_options: dict[str, Any] | None) -> Any:
    """A netCDF file in object storage, opened by URL on first use in each process. xarray's own remote opening
    pickles the open file and so re-opens it (re-reading its metadata) wherever the graph is unpickled: on the
    scheduler, in the client region. This store pickles as the URL and opens only where a chunk is read."""
    import json

    from xarray.backends import CachingFileManager, H5NetCDFStore
    from xarray.backends.locks import HDF5_LOCK

    manager = CachingFileManager(_open_remote_netcdf, url, mode="r",
                                 kwargs={"storage_options": json.dumps(storage_options or {}, sort_keys=True)})
    return H5NetCDFStore(manager, mode="r", lock=HDF5_LOCK)


def _open_remote_netcdf(url: str, mode: str, storage_options: str) -> Any:
    import json

    import fsspec
    import h5netcdf

    filesystem, path = fsspec.core.url_to_fs(url, **json.loads(storage_options))
    # readahead: a chunk read is one ranged GET (a block cache would split it into many).
    handle = filesystem.open(path, "rb", block_size=REMOTE_BLOCK_SIZE, cache_type="readahead")
    return h5netcdf.File(handle, mode)


def _target(record_or_path: Any, region: str | None) -> tuple[str, str]:
    path = getattr(record_or_path, "path", record_or_path)
    found = region or getattr(record_or_path, "region", None)
    if not isinstance(path, str) or not found:
        raise ValueError("give a catalog record (with .path and .region) or a path and region=")
    return path, check_region(found)


def _chunk_in_region(lazy: Any, chunks: Any, region: str) -> Any:
    """Chunk a lazy dataset into dask arrays whose file-backed data is tagged with its region."""
    return lazy.chunk(stored_chunks(lazy, chunks), name_prefix=name_prefix(region),
                      chunked_array_type=TaggingDaskManager(lambda array: RegionalArray(array, region)))


def open_dataset(client: Any, record_or_path: Any, *, region: str | None = None, chunks: Any = "auto",
                 engine: str | None = None, timeout: float = DEFAULT_POOL_TIMEOUT, **options: Any) -> Any:
    """An xarray Dataset bound to its region (from a catalog record, or a path and `region`)."""
    path, found = _target(record_or_path, region)
    (dataset,) = open_many(client, [path], found, chunks=chunks, engine=engine, timeout=timeout, **options)
    dataset.attrs["dask_regions_region"] = found
    return dataset


def open_mfdataset(client: Any, records: Sequence[Any], *, concat_dim: str, region: str | None = None,
                   chunks: Any = "auto", engine: str | None = None, timeout: float = DEFAULT_POOL_TIMEOUT,
                   **options: Any) -> Any:
    """Several files of one region (e.g. ERA5 months) concatenated along `concat_dim`, lazily. Catalog records of
    one collection that has a reference set (their `references`) are opened from it: one read in the region, not
    one per file. Otherwise, or if the set is gone or does not hold them all, each file is opened (all at once)."""
    import xarray as xr

    targets = [_target(record, region) for record in records]
    regions = {found for _, found in targets}
    if len(regions) != 1:
        raise ValueError(f"open_mfdataset takes files of one region, got {sorted(regions)}: open each region apart")
    (found,) = regions
    paths = [path for path, _ in targets]
    sets = {getattr(record, "references", "") for record in records}
    dataset = None
    if engine is None and len(sets) == 1 and (uri := sets.pop()):
        dataset = _open_from_references(client, uri, paths, found, concat_dim, chunks, timeout, options)
    if dataset is None:
        parts = open_many(client, paths, found, chunks=chunks, engine=engine, timeout=timeout, **options)
        dataset = xr.concat(parts, dim=concat_dim, data_vars="minimal", coords="minimal", compat="override",
                            join="override")
    else:
        dataset.attrs[REFERENCES_ATTRIBUTE] = uri  # how it was opened, for whoever wonders
    dataset.attrs["dask_regions_region"] = found
    return dataset


def _open_from_references(client: Any, uri: str, paths: list[str], region: str, concat_dim: str, chunks: Any,
                          timeout: float, options: dict[str, Any]) -> Any:
    """The files from their collection's reference set, opened by a worker of the region; None (with a warning
    saying why) when the set cannot be read or does not hold them all."""
    import warnings

    pool = pool_of_region(check_region(region))
    wait_for_pools(client, [pool], timeout)
    try:
        opened = client.submit(_open_set_in_region, uri, paths, concat_dim, options, resources={pool: 1},
                               pure=False).result()
    except Exception as error:  # e.g. a set expired with a load that no longer serves: the files are still there
        warnings.warn(f"the reference set {uri} could not be opened ({type(error).__name__}: {error}); opening "
                      "the files one by one", stacklevel=3)
        return None
    if opened is None:
        warnings.warn(f"the reference set {uri} does not hold every file asked for; opening them one by one",
                      stacklevel=3)
        return None
    dataset, steps = opened.dataset
    return _chunk_in_region(dataset, _chunks_by_file(dataset, chunks, concat_dim, steps), region)


def _chunks_by_file(dataset: Any, chunks: Any, concat_dim: str, steps: list[int]) -> Any:
    """For `chunks="auto"`: the chunks each file gets opened alone, one file after another along `concat_dim`, so
    that a collection is cut (and so reduced, to the bit) alike however it is opened, and no chunk spans files."""
    if not (isinstance(chunks, str) and chunks == "auto"):
        return chunks
    along: list[int] = []
    cuts: dict[int, Any] = {}  # a file's cut depends only on its length: months of one length are cut once
    start = 0
    for count in steps:
        if count not in cuts:
            cuts[count] = stored_chunks(dataset.isel({concat_dim: slice(start, start + count)}), "auto")
        found = cuts[count].get(concat_dim) if isinstance(cuts[count], dict) else None
        along += list(found) if isinstance(found, tuple) else [count]
        start += count
    first = cuts[steps[0]] if steps else None
    others = first if isinstance(first, dict) else dict.fromkeys(dataset.dims, "auto")
    return {**others, concat_dim: tuple(along)}


def _open_set_in_region(uri: str, paths: list[str], concat_dim: str, options: dict[str, Any]) -> Opened | None:
    """Runs on a worker of the data's region: the dataset and each file's steps along `concat_dim`."""
    from dask_regions.references import covered, open_spans

    spans = covered(uri, paths)
    if spans is None:
        return None
    return Opened((open_spans(uri, spans, concat_dim, options), [stop - start for start, stop in spans]))


def open_many(client: Any, paths: Sequence[str], region: str, *, chunks: Any = "auto", engine: str | None = None,
              timeout: float = DEFAULT_POOL_TIMEOUT, **options: Any) -> list[Any]:
    """Datasets of one region, each opened by a worker of its pool (all at once), bound to the region."""
    pool = pool_of_region(check_region(region))
    wait_for_pools(client, [pool], timeout)
    futures = [client.submit(_open_in_region, path, engine, options, resources={pool: 1}, pure=False)
               for path in paths]
    return [_chunk_in_region(opened.dataset, chunks, region) for opened in client.gather(futures)]


def open_all(openings: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Several opens at once, by name: each `open_dataset` / `open_mfdataset` waits for a round trip to its
    region's pool (two, across the WAN from the client region); run together they wait for one. Each opening is a
    call of no arguments, e.g. `functools.partial(dr.open_dataset, client, record)`. The first failure is raised,
    after every opening has finished."""
    from concurrent.futures import ThreadPoolExecutor

    if not openings:
        return {}
    with ThreadPoolExecutor(len(openings), thread_name_prefix="dask-regions-open") as threads:
        running = {name: threads.submit(opening) for name, opening in openings.items()}
    return {name: future.result() for name, future in running.items()}


def from_array(region: str, array: Any, chunks: Any, **options: Any) -> Any:
    """A dask array over `array` (read on demand) whose tasks run in `region`'s pool, in either of dask's
    array modes."""
    import dask.array as da

    return da.from_array(RegionalArray(array, check_region(region)), chunks=chunks,  # type: ignore[no-untyped-call]
                         name=f"{name_prefix(region)}{tokenize_array(array)}", **options)


def tokenize_array(array: Any) -> str:
    from dask.base import tokenize

    return tokenize(id(array), getattr(array, "shape", None), str(getattr(array, "dtype", "")))


def region_of(dataset: Any) -> str:
    region = getattr(dataset, "attrs", {}).get("dask_regions_region")
    if not region:
        raise ValueError("this object was not opened with dask_regions.open_dataset: its region is unknown")
    return str(region)
