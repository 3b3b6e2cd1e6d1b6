"""Climate idioms for the reference analysis, in plain xarray (they run wherever their data is: the router places
every task, so these helpers need no client).

- `area_weights` / `global_mean`: means over the sphere weight each cell by cos(latitude) (its area on a regular
  latitude-longitude grid); an unweighted mean counts a polar cell as much as an equatorial one.
- `monthly_climatology`: the mean of each calendar month over the years.
- `regrid`: interpolation from one grid onto another (xarray's `interp`, SciPy underneath), linear in latitude and
  longitude by default (bilinear), periodic in longitude, and extrapolated linearly where the target reaches
  beyond the source's outermost latitudes (ERA5 has the poles, most CMIP6 grids stop short of them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

REGRID_METHOD = "linear"  # bilinear on a latitude-longitude grid
FULL_CIRCLE = 360.0


def area_weights(data: Any, lat: str = "lat") -> Any:
    """cos(latitude) weights, the relative area of each cell of a regular latitude-longitude grid."""
    weights = np.cos(np.deg2rad(data[lat]))
    weights.name = "area_weights"
    return weights


def global_mean(data: Any, lat: str = "lat", lon: str = "lon") -> Any:
    """The area-weighted mean over latitude and longitude."""
    return data.weighted(area_weights(data, lat)).mean((lat, lon))


def monthly_climatology(data: Any, time: str = "time") -> Any:
    """The mean of each calendar month over all years (dimension `month`, 1-12)."""
    return data.groupby(f"{time}.month").mean(time)


def regrid(source: Any, target: Any, method: str = REGRID_METHOD, lat: str = "lat", lon: str = "lon") -> Any:
    """`source` interpolated onto `target`'s latitudes and longitudes (a Dataset or DataArray with those
    coordinates), by `method` ("linear", "nearest", "cubic", ...), treating longitude as periodic, in the source's
    precision. A dask-backed `source` is regridded one whole map per task: xarray's own dask path makes a chain
    of about ten small tasks (slices, concatenation, rechunk, transposes), and each link of a chain costs a
    round trip to the scheduler, across the WAN from a worker region."""
    if getattr(source, "chunks", None):
        return _regrid_by_map(source.chunk({lat: -1, lon: -1}), target, method, lat, lon)
    step = float(np.diff(source[lon].values).mean()) if source.sizes[lon] > 1 else FULL_CIRCLE
    periodic = abs(source.sizes[lon] * step - FULL_CIRCLE) < step / 2  # the source covers the whole circle
    if periodic:  # wrap one column on each side so that targets between the last and first longitude interpolate
        west = source.isel({lon: [-1]}).assign_coords({lon: source[lon].values[-1:] - FULL_CIRCLE})
        east = source.isel({lon: [0]}).assign_coords({lon: source[lon].values[:1] + FULL_CIRCLE})
        import xarray as xr

        source = xr.concat([west, source, east], dim=lon)
    target_lon = target[lon] % FULL_CIRCLE if periodic else target[lon]
    regridded = source.interp({lat: target[lat], lon: target_lon}, method=method,
                              kwargs={"fill_value": "extrapolate"})  # beyond the outermost latitudes (1-D steps)
    if np.issubdtype(source.dtype, np.floating):  # interpolation computes in float64: keep the data's precision
        regridded = regridded.astype(source.dtype)
    return regridded.assign_coords({lon: target[lon]})


def _regrid_by_map(source: Any, target: Any, method: str, lat: str, lon: str) -> Any:
    """Each block of `source` (whole in latitude and longitude) regridded in memory by one task."""
    import xarray as xr

    grid = {lat: target[lat].values, lon: target[lon].values}
    regridded = xr.apply_ufunc(
        _regrid_block, source, input_core_dims=[[lat, lon]], output_core_dims=[[lat, lon]], exclude_dims={lat, lon},
        kwargs={"source_grid": {lat: source[lat].values, lon: source[lon].values}, "grid": grid, "method": method},
        dask="parallelized", output_dtypes=[source.dtype],
        dask_gufunc_kwargs={"output_sizes": {name: len(values) for name, values in grid.items()}})
    return regridded.assign_coords({name: target[name] for name in grid})


def _regrid_block(values: Any, *, source_grid: dict[str, Any], grid: dict[str, Any], method: str) -> Any:
    """One block's numbers (..., lat, lon) regridded with the in-memory path."""
    import xarray as xr

    (lat, source_lat), (lon, source_lon) = source_grid.items()
    leading = [f"dim_{i}" for i in range(values.ndim - 2)]
    block = xr.DataArray(values, dims=[*leading, lat, lon], coords={lat: source_lat, lon: source_lon})
    target = xr.Dataset(coords=grid)
    return regrid(block, target, method, lat, lon).values


SYNTHETIC = "synthetic"  # the `source` attribute of generated sample data starts with this


def is_synthetic(*datasets: Any) -> bool:
    return any(str(getattr(d, "attrs", {}).get("source", "")).startswith(SYNTHETIC) for d in datasets)


def plot_maps(historical: Any, future: Any, difference: Any, *, synthetic: bool, path: Any = None) -> Any:
    """The three annual-mean maps side by side (titles say when the data is synthetic); saved to `path` if given.
    Returns the figure."""
    import matplotlib.pyplot as plt

    label = " - SYNTHETIC sample data" if synthetic else ""
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
    panels = ((historical, "historical mean (K)", "viridis"),
              (future, f"2090-2100 mean, regridded ({REGRID_METHOD} interpolation) (K)", "viridis"),
              (difference, "difference (K)", "RdBu_r"))
    for axis, (field, title, cmap) in zip(axes, panels, strict=True):
        annual = field.mean("month") if "month" in field.dims else field
        annual.plot(ax=axis, cmap=cmap, center=0 if cmap == "RdBu_r" else None)
        axis.set_title(title + label, fontsize=9)
    if path is not None:
        figure.savefig(path, dpi=80)
    return figure
