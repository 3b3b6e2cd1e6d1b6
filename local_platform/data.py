"""Sample data in the shapes of the real datasets, generated deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

ERA5_VARIABLE = "air_temperature_at_2_metres"
CMIP6_STORE = "UKESM1-0-LL/ssp585/r1i1p1f2/Amon/tas/gn/v20190507"


def sample_kind(prefix: str) -> str:
    """Which sample data a dataset's S3 prefix stands for: "cmip6" (a CMIP6 store) or "era5" (monthly files)."""
    return "cmip6" if prefix.startswith("CMIP6") else "era5"


def write_era5_like(root: Path, *, years: tuple[int, ...] = (2000,), months: int = 12, steps: int = 24,
                    lat: int = 73, lon: int = 144, time_chunk: int | None = None) -> list[str]:
    """ERA5-like monthly files `YYYY/MM/data/air_temperature_at_2_metres.nc` (time0, lat, lon) under `root`,
    stored in chunks of `time_chunk` steps (a quarter of the month by default); returns their keys relative to
    `root`."""
    chunk = time_chunk or max(1, steps // 4)
    rng = np.random.default_rng(1)
    latitudes, longitudes = np.linspace(90, -90, lat), np.linspace(0, 360, lon, endpoint=False)
    climate = 288 - 30 * np.abs(np.sin(np.radians(latitudes)))[:, None] + np.zeros((lat, lon))
    keys = []
    for year in years:
        for month in range(1, months + 1):
            start = np.datetime64(f"{year}-{month:02d}-01T00", "ns")
            times = start + np.arange(steps) * np.timedelta64(1, "h")
            data = (climate + rng.standard_normal((steps, lat, lon))).astype("float32")
            dataset = xr.Dataset({ERA5_VARIABLE: (("time0", "lat", "lon"), data, {"units": "K"})},
                                 coords={"time0": times, "lat": latitudes, "lon": longitudes})
            key = f"{year}/{month:02d}/data/{ERA5_VARIABLE}.nc"
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            dataset.to_netcdf(root / key, engine="h5netcdf",
                              encoding={ERA5_VARIABLE: {"chunksizes": (min(chunk, steps), lat, lon)}})
            keys.append(key)
    return keys


def write_cmip6_like(root: Path, *, years: range = range(2085, 2101), lat: int = 60, lon: int = 120,
                     warming: float = 4.0, steps_per_month: int = 1, time_chunk: int = 24) -> str:
    """A CMIP6-like zarr store (v2, consolidated) with tas(time, lat, lon), monthly (or `steps_per_month` steps
    a month, days apart, for larger benchmark data), under `root`/<DRS path>; returns its key relative to `root`."""
    rng = np.random.default_rng(2)
    latitudes, longitudes = np.linspace(-89, 89, lat), np.linspace(0, 360, lon, endpoint=False)
    climate = 288 + warming - 30 * np.abs(np.sin(np.radians(latitudes)))[:, None] + np.zeros((lat, lon))
    times = np.array([np.datetime64(f"{y}-{m:02d}-{1 + 27 * step // steps_per_month:02d}", "ns")
                      for y in years for m in range(1, 13) for step in range(steps_per_month)])
    if steps_per_month == 1:
        times = times + np.timedelta64(14, "D")  # mid-month, as monthly CMIP6 data
    data = (climate + rng.standard_normal((len(times), lat, lon))).astype("float32")
    dataset = xr.Dataset({"tas": (("time", "lat", "lon"), data, {"units": "K"})},
                         coords={"time": times, "lat": latitudes, "lon": longitudes})
    dataset.chunk({"time": time_chunk}).to_zarr(root / CMIP6_STORE, mode="w", consolidated=True, zarr_format=2)
    return CMIP6_STORE


def publish(s3: Any, staging: Path, bucket: str, prefix: str, region: str) -> int:
    """Create the dataset's bucket in `region` and upload everything under `staging` below `prefix`; returns the
    number of bytes uploaded. Files go up in one request each (the S3 emulation assembles multipart uploads
    slowly, and the sample files are small enough)."""
    from boto3.s3.transfer import TransferConfig

    s3.create_bucket(Bucket=bucket, **({} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}))
    whole = TransferConfig(multipart_threshold=1 << 30)
    start = f"{prefix}/" if prefix else ""
    uploaded = 0
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, start + str(path.relative_to(staging)), Config=whole)
        uploaded += path.stat().st_size
    return uploaded
