"""The reference analysis's climate idioms (dask_regions/climate.py) on fields with known answers."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from dask_regions.climate import area_weights, global_mean, is_synthetic, monthly_climatology, regrid


def field(lat: np.ndarray, lon: np.ndarray, values: np.ndarray) -> xr.DataArray:
    return xr.DataArray(values, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})


def test_the_global_mean_weights_cells_by_area() -> None:
    lat, lon = np.linspace(-90, 90, 181), np.arange(0, 360, 1.0)
    polar = field(lat, lon, np.abs(np.sin(np.deg2rad(lat)))[:, None] + np.zeros((181, 360)))
    # The area-weighted mean of |sin(lat)| over the sphere is 1/2; the unweighted one is 2/pi (0.64).
    assert float(global_mean(polar)) == pytest.approx(0.5, abs=1e-3)
    assert float(polar.mean()) == pytest.approx(2 / np.pi, abs=1e-2)
    assert float(area_weights(polar).sel(lat=60)) == pytest.approx(0.5)


def test_a_monthly_climatology_averages_each_calendar_month_over_the_years() -> None:
    times = pd.date_range("2000-01-01", periods=36, freq="MS")
    series = xr.DataArray(np.tile(np.arange(12.0), 3) + np.repeat([0.0, 1.0, 2.0], 12), dims="time",
                          coords={"time": times})
    climatology = monthly_climatology(series)
    assert list(climatology.month.values) == list(range(1, 13))
    np.testing.assert_allclose(climatology.values, np.arange(12.0) + 1.0)


def smooth(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    return 280 + 0.2 * lat[:, None] + 3 * np.cos(np.deg2rad(lon))[None, :]


@pytest.mark.parametrize("backed", ["numpy", "dask"])
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_regridding_interpolates_linearly_across_the_dateline_and_to_the_poles(backed: str, precision: str) -> None:
    source_lat, source_lon = np.linspace(-89, 89, 60), np.arange(0, 360, 3.0)  # a CMIP6-like grid
    target_lat, target_lon = np.linspace(90, -90, 73), np.arange(0, 360, 2.5)  # an ERA5-like grid, poles included
    source = field(source_lat, source_lon, smooth(source_lat, source_lon).astype(precision))
    if backed == "dask":
        source = source.chunk({"lat": 30})
    target = field(target_lat, target_lon, np.zeros((73, 144)))
    with dask.config.set(scheduler="sync"):
        regridded = regrid(source, target).compute()
    assert regridded.dims == ("lat", "lon") and np.array_equal(regridded.lon, target_lon)
    assert regridded.dtype == np.dtype(precision)  # the data's precision, not interpolation's float64
    assert not np.isnan(regridded.values).any()  # beyond 357 E and at the poles too
    expected = smooth(target_lat, target_lon)
    assert np.abs(regridded.values - expected).max() < 0.01  # linear error of a cosine sampled every 3 degrees
    nearest = regrid(source, target, method="nearest")
    assert np.abs(nearest.values - expected).max() > 0.1  # what a nearest-neighbour "regrid" gets wrong


def test_synthetic_data_is_recognised_by_its_source_attribute() -> None:
    from local_platform.data import SAMPLE_SOURCE

    assert is_synthetic(xr.Dataset(attrs={"source": SAMPLE_SOURCE}))
    assert not is_synthetic(xr.Dataset(attrs={"source": "ECMWF ERA5"}), xr.Dataset())


@pytest.mark.parametrize("synthetic", [True, False])
def test_the_maps_say_when_the_data_is_synthetic(synthetic: bool, tmp_path: object) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dask_regions.climate import plot_maps

    lat, lon = np.linspace(-90, 90, 5), np.arange(0, 360, 90.0)
    maps = [field(lat, lon, np.full((5, 4), value)).expand_dims(month=[1, 2]) for value in (280.0, 284.0, 4.0)]
    figure = plot_maps(*maps, synthetic=synthetic)
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    plt.close(figure)
    assert len(titles) == 3
    assert all(("SYNTHETIC" in title) is synthetic for title in titles)
    assert "linear interpolation" in titles[1]
