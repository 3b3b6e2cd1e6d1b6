"""Data in the shapes of the real datasets, written by the tests into each region's Lustre stand-in, and the
catalog built from it the way the nightly sync builds it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import xarray as xr

from catalog_sync.grouping import DatasetGrouper, ObjectInfo
from catalog_sync.records import Association
from catalog_sync.sinks import SQLiteSink

ERA5 = Association("us-east-1", "era5-pds", "", "/us-east-1/era5-pds")
CMIP6_PREFIX = "CMIP6/ScenarioMIP/MOHC"
CMIP6 = Association("us-west-2", "cmip6-pds", CMIP6_PREFIX, f"/us-west-2/{CMIP6_PREFIX}")
CMIP6_STORE = f"{CMIP6_PREFIX}/UKESM1-0-LL/ssp585/r1i1p1f2/Amon/tas/gn/v20190507"


def write_era5(fsx_root: Path, months: int = 3, lat: int = 45, lon: int = 90, steps: int = 24) -> list[Path]:
    """ERA5-like monthly files `YYYY/MM/data/air_temperature_at_2_metres.nc` with (time0, lat, lon)."""
    rng = np.random.default_rng(1)
    paths = []
    for month in range(1, months + 1):
        times = np.arange(f"2000-{month:02d}-01", f"2000-{month:02d}-02", np.timedelta64(1, "h"),
                          dtype="datetime64[ns]")[:steps]
        data = 280 + 10 * rng.standard_normal((steps, lat, lon)).astype("float32")
        ds = xr.Dataset({"air_temperature_at_2_metres": (("time0", "lat", "lon"), data)},
                        coords={"time0": times, "lat": np.linspace(90, -90, lat), "lon": np.linspace(0, 356, lon)})
        path = fsx_root / "us-east-1" / "era5-pds" / f"2000/{month:02d}/data/air_temperature_at_2_metres.nc"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.to_netcdf(path, engine="h5netcdf", encoding={"air_temperature_at_2_metres": {"chunksizes": (6, lat, lon)}})
        paths.append(path)
    return paths


def write_cmip6(fsx_root: Path, years: range = range(2088, 2101), lat: int = 30, lon: int = 60) -> Path:
    """A CMIP6-like zarr store under the DRS path with tas(time, lat, lon), monthly."""
    rng = np.random.default_rng(2)
    times = np.array([np.datetime64(f"{y}-{m:02d}-15", "ns") for y in years for m in range(1, 13)])
    data = 285 + 10 * rng.standard_normal((len(times), lat, lon)).astype("float32")
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), data)},
                    coords={"time": times, "lat": np.linspace(-87, 87, lat), "lon": np.linspace(0, 354, lon)})
    path = fsx_root / "us-west-2" / CMIP6_STORE
    ds.chunk({"time": 24}).to_zarr(path, mode="w", consolidated=True, zarr_format=2)
    return path


def build_catalog(fsx_root: Path, database: Path) -> SQLiteSink:
    """Catalog the stand-in directories as if they were the S3 datasets (same keys, same grouping)."""
    sink = SQLiteSink(database)
    stamp = datetime(2026, 11, 26, tzinfo=UTC)
    for association in (ERA5, CMIP6):
        root = fsx_root / association.fsx_path.lstrip("/")
        keys = sorted(association.key_prefix + str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        grouper = DatasetGrouper(association)
        records = [r for key in keys for r in grouper.add(ObjectInfo(key, os.path.getsize(root / key[
            len(association.key_prefix):]), stamp))]
        load = sink.begin(association.region, association.bucket)
        load.add(records + grouper.finish())
        load.commit()
    return sink


class LazyOnes:
    """An array-like read on demand, as xarray's file-backed arrays are (NumPy arrays are sliced eagerly).
    Lives here, not in a test module, so that scheduler and workers can unpickle it."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.dtype, self.ndim = shape, np.dtype("f8"), len(shape)

    def __getitem__(self, index: object) -> np.ndarray:
        return np.ones(self.shape)[index]  # type: ignore[index]


def region_data(region: str, shape: tuple[int, ...], chunks: object) -> object:
    """A dask array holding `region`'s data, named the way dask_regions names it."""
    import dask.array as da

    return da.from_array(LazyOnes(shape), chunks=chunks, name=f"region-{region}-synthetic")
