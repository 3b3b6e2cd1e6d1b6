"""What notebooks call: open data bound to its region, compute next to it, combine small results.

A dataset is opened by a worker of its own region's pool (the notebook cannot see that region's Lustre
file system, and metadata read across regions is slow), and comes back lazy: each of its file-backed arrays is
wrapped in a `RegionalArray` tagged with the region before Dask sees it, so the scheduler's router keeps every
task that reads them in that region, however the graph is rewritten.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dask_regions.errors import MissingPoolError, VersionMismatchError
from dask_regions.keys import RegionalArray, check_region, is_pool, name_prefix, pool_of_region, region_of_pool

DEFAULT_POOL_TIMEOUT = 30.0
FSX_MOUNT = "/fsx"


def local_path(path: str) -> str:
    """A catalog path (`/fsx/<region>/...`) on this machine: DASK_REGIONS_FSX_ROOT replaces `/fsx` where the
    file system is mounted elsewhere (the local platform's stand-in directories)."""
    root = os.environ.get("DASK_REGIONS_FSX_ROOT")
    if root and (path == FSX_MOUNT or path.startswith(f"{FSX_MOUNT}/")):
        return root.rstrip("/") + path[len(FSX_MOUNT):]
    return path


NETCDF_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5")
# Metadata of a remote netCDF file is read in blocks of this size: small, because every block of a file opened
# from another region crosses it (the REFERENCE measured 50 MB with fsspec's defaults and 1.7 MB with 256 KiB).
REMOTE_BLOCK_SIZE = 256 * 1024


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


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


def stored_chunks(dataset: Any, chunks: Any) -> Any:
    """For `chunks="auto"`: sizes Dask's auto-chunking picks in whole multiples of how each variable is stored.
    Chunking an opened dataset with "auto" ignores the stored layout: a store of whole-grid time slices came out
    as spatial tiles, and every task then read every stored chunk whole for its tile (10x the reads)."""
    if not (isinstance(chunks, str) and chunks == "auto"):
        return chunks
    from dask.array.core import normalize_chunks

    sizes: dict[str, Any] = {}
    for variable in sorted(dataset.data_vars.values(), key=lambda v: -int(v.size)):  # the largest decide
        preferred = variable.encoding.get("preferred_chunks") or {}
        if not variable.dims or not all(dim in preferred for dim in variable.dims):
            continue
        normalized = normalize_chunks("auto", variable.shape, dtype=variable.dtype,  # type: ignore[no-untyped-call]
                                      previous_chunks=tuple(preferred[dim] for dim in variable.dims))
        for dim, sizes_along in zip(variable.dims, normalized, strict=True):
            sizes.setdefault(dim, sizes_along)
    return {**dict.fromkeys(dataset.dims, "auto"), **sizes} if sizes else "auto"


def live_pools(client: Any) -> set[str]:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return {name for worker in workers for name in worker.get("resources", {}) if is_pool(name)}


def scalable_pools(client: Any) -> set[str]:
    """Pools the scheduler's demand plugin may grow from zero (they need no live worker yet)."""
    from dask_regions.demand import pool_demand

    return {pool for pool, figure in pool_demand(client).items() if figure.get("scalable")}


def wait_for_pools(client: Any, pools: Sequence[str], timeout: float = DEFAULT_POOL_TIMEOUT) -> None:
    """Return once every pool has a live worker, or is one the scheduler scales up on demand; after `timeout`
    seconds raise, naming the regions."""
    deadline = time.monotonic() + timeout
    scalable = scalable_pools(client)
    while True:
        alive = live_pools(client) | scalable
        missing = [pool for pool in pools if pool not in alive]
        if not missing:
            return
        if time.monotonic() >= deadline:
            regions = ", ".join(region_of_pool(pool) for pool in missing)
            raise MissingPoolError(f"no live worker in region {regions} ({', '.join(missing)}) after {timeout:.0f} s; "
                                   f"live pools: {', '.join(sorted(alive)) or 'none'}")
        time.sleep(0.2)


def _target(record_or_path: Any, region: str | None) -> tuple[str, str]:
    path = getattr(record_or_path, "path", record_or_path)
    found = region or getattr(record_or_path, "region", None)
    if not isinstance(path, str) or not found:
        raise ValueError("give a catalog record (with .path and .region) or a path and region=")
    return path, check_region(found)


def _chunk_in_region(lazy: Any, chunks: Any, region: str) -> Any:
    """Chunk a lazy dataset into dask arrays whose file-backed data is tagged with its region."""
    from dask_regions.internals import TaggingDaskManager

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
    """Several files of one region (e.g. ERA5 months) concatenated along `concat_dim`, lazily."""
    import xarray as xr

    targets = [_target(record, region) for record in records]
    regions = {found for _, found in targets}
    if len(regions) != 1:
        raise ValueError(f"open_mfdataset takes files of one region, got {sorted(regions)}: open each region apart")
    (found,) = regions
    parts = open_many(client, [path for path, _ in targets], found, chunks=chunks, engine=engine, timeout=timeout,
                      **options)
    dataset = xr.concat(parts, dim=concat_dim, data_vars="minimal", coords="minimal", compat="override",
                        join="override")
    dataset.attrs["dask_regions_region"] = found
    return dataset


def open_many(client: Any, paths: Sequence[str], region: str, *, chunks: Any = "auto", engine: str | None = None,
              timeout: float = DEFAULT_POOL_TIMEOUT, **options: Any) -> list[Any]:
    """Datasets of one region, each opened by a worker of its pool (all at once), bound to the region."""
    pool = pool_of_region(check_region(region))
    wait_for_pools(client, [pool], timeout)
    futures = [client.submit(_open_in_region, path, engine, options, resources={pool: 1}, pure=False)
               for path in paths]
    return [_chunk_in_region(opened.dataset, chunks, region) for opened in client.gather(futures)]


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


def compute_near_data(client: Any, parts: Mapping[str, Any], combine: Callable[..., Any] | None = None, *,
                      combine_pool: str | None = None, timeout: float = DEFAULT_POOL_TIMEOUT) -> Any:
    """Compute each region's part (a lazy xarray or dask object, keyed by region) entirely in that region's
    pool, then `combine(**results)` in `combine_pool` (the client region's pool) or locally. Only the parts'
    (small) results cross regions."""
    pools = [pool_of_region(region) for region in parts]
    wait_for_pools(client, pools + ([combine_pool] if combine_pool else []), timeout)
    futures = {region: client.compute(part, resources={pool_of_region(region): 1})  # the whole graph, pinned
               for region, part in parts.items()}
    if combine is None:
        return {region: future.result() for region, future in futures.items()}
    if combine_pool is None:
        return combine(**{region: future.result() for region, future in futures.items()})
    return client.submit(_combine, combine, list(futures), *futures.values(), resources={combine_pool: 1},
                         pure=False).result()


def _combine(combine: Callable[..., Any], regions: list[str], *results: Any) -> Any:
    return combine(**dict(zip(regions, results, strict=True)))


TRACKED_PACKAGES = ("dask", "distributed", "dask_regions", "xarray", "numpy", "zarr", "h5netcdf", "cloudpickle",
                    "msgpack")


def package_versions() -> dict[str, str | None]:
    """The versions of the packages whose skew breaks a cluster (pickled code and data cross processes)."""
    import importlib.metadata
    import sys

    versions: dict[str, str | None] = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in TRACKED_PACKAGES:
        if package == "dask_regions":
            import dask_regions

            versions[package] = dask_regions.__version__
            continue
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def check_versions(client: Any) -> dict[str, dict[str, str | None]]:
    """Compare the client's versions with the scheduler's and every worker's; raise listing differences."""
    mine = package_versions()
    seen = {"scheduler": client.run_on_scheduler(package_versions), **client.run(package_versions)}
    differences = []
    for where, versions in seen.items():
        for package, version in mine.items():
            if versions.get(package) != version:
                differences.append(f"{package}: client {version}, {where} {versions.get(package)}")
    if differences:
        raise VersionMismatchError("client, scheduler and workers must run the same versions (use the platform's "
                                   "image or requirements.txt):\n  " + "\n  ".join(differences))
    return {"client": mine, **seen}
