"""Data in the shapes of the real datasets, written by the tests into each region's Lustre stand-in, and the
catalog built from it the way the nightly sync builds it."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from catalog_sync.grouping import DatasetGrouper, ObjectInfo
from catalog_sync.records import Association
from catalog_sync.sinks import SQLiteSink
from local_platform.data import write_cmip6_like, write_era5_like

ERA5 = Association("us-east-1", "era5-pds", "", "/us-east-1/era5-pds")
CMIP6_PREFIX = "CMIP6/ScenarioMIP/MOHC"
CMIP6 = Association("us-west-2", "cmip6-pds", CMIP6_PREFIX, f"/us-west-2/{CMIP6_PREFIX}")
CMIP6_STORE = f"{CMIP6_PREFIX}/UKESM1-0-LL/ssp585/r1i1p1f2/Amon/tas/gn/v20190507"


def write_era5(fsx_root: Path, months: int = 3, lat: int = 45, lon: int = 90, steps: int = 24) -> list[str]:
    """ERA5-like monthly netCDF files in us-east-1's Lustre stand-in (the local platform's generator)."""
    return write_era5_like(fsx_root / ERA5.fsx_path.lstrip("/"), months=months, lat=lat, lon=lon, steps=steps)


def write_cmip6(fsx_root: Path, years: range = range(2088, 2101), lat: int = 30, lon: int = 60) -> str:
    """A CMIP6-like zarr store in us-west-2's Lustre stand-in (the local platform's generator)."""
    return write_cmip6_like(fsx_root / CMIP6.fsx_path.lstrip("/"), years=years, lat=lat, lon=lon)


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
    """A dask array holding `region`'s data, tagged the way dask_regions tags it."""
    from dask_regions import from_array

    return from_array(region, LazyOnes(shape), chunks=chunks)
