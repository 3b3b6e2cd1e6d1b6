"""The reference analysis on the local platform: ERA5-like historical mean of 2 m temperature in its region,
the CMIP6-like 2090-2100 mean in its region, their difference in the pool holding the larger input (as in AWS,
no pool runs in the client region); the audit; a plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask_regions as dr
from dask_regions.audit import Audit
from dask_regions.climate import global_mean, is_synthetic, monthly_climatology, plot_maps, regrid
from local_platform.agent import current_sizes, pool_history
from local_platform.platform import DEMAND_POOLS
from local_platform.state import PlatformState, read_twin
from platform_facts import regions_variable

SCALE_IN_WINDOW = regions_variable("demand.scale-in-window")


@dataclass
class DemoResult:
    audit: Audit
    plot: Path
    mean_warming_kelvin: float


def run_demo(state: PlatformState, step: Any, progress: Any = lambda done, total: None) -> DemoResult:
    """`step(message)` reports each step, `progress(done, total)` the results computed; returns the audit, where
    the plot went and the headline number."""
    from distributed import Client

    with Client(state.scheduler_address, timeout=60,  # type: ignore[no-untyped-call]
                security=state.tls.security()) as client:
        step("checking versions of client, scheduler and workers")
        dr.check_versions(client)
        catalog = state.open_catalog()
        step("finding the data in the catalog")
        months = catalog.find(variable="air_temperature_at_2_metres")
        (store,) = catalog.find(variable_id="tas", experiment_id="ssp585")
        step(f"opening {len(months)} ERA5-like months in {months[0].region} and the CMIP6-like store in "
             f"{store.region}")
        era5 = dr.open_mfdataset(client, months, concat_dim="time0")
        cmip6 = dr.open_dataset(client, store)
        historical, regridded, difference = reference_analysis(era5, cmip6)
        since = dr.mark(client)
        step("computing next to the data: climatologies in their regions, then their difference")
        # One result per month of the difference, so that progress shows as the months finish.
        parts = [historical, regridded] + [difference.isel(month=i) for i in range(difference.sizes["month"])]
        futures = client.compute(parts)
        from distributed import as_completed

        for done, _ in enumerate(as_completed(futures), start=1):  # type: ignore[no-untyped-call]
            progress(done, len(futures))
        historical_map, future_map, *months = client.gather(futures)
        report = dr.audit(client, since)
    import xarray as xr

    difference_map = xr.concat(months, dim="month")
    step("plotting")
    plot = Path(state.state_dir) / "demo.png"
    figure = plot_maps(historical_map, future_map, difference_map, synthetic=is_synthetic(era5, cmip6), path=plot)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return DemoResult(report, plot, warming(difference_map))


def reference_analysis(era5: Any, cmip6: Any) -> tuple[Any, Any, Any]:
    """Lazily: the ERA5-like monthly climatology of 2 m temperature, the CMIP6-like 2090-2100 monthly climatology
    regridded onto ERA5's grid by bilinear interpolation (`dask_regions.climate.regrid`), and their difference
    (the demo's and the notebook's analysis)."""
    historical = monthly_climatology(era5.air_temperature_at_2_metres, "time0")
    future = monthly_climatology(cmip6.tas.sel(time=slice("2090", "2100")), "time")
    regridded = regrid(future, historical)
    return historical, regridded, regridded - historical


def warming(difference: Any) -> float:
    """The headline number: the area-weighted global mean of the difference, over the year."""
    return float(global_mean(difference).mean())


def wait_for_idle_pools(state: PlatformState, slack: float = 30.0,
                        check: Callable[[], None] = lambda: None) -> dict[str, list[int]]:
    """Wait until every scaled pool is back at its minimum (the declared idle timeout and scale-in window, then
    draining), then return each pool's sizes over the run, e.g. [0, 2, 1, 0]. `check` runs at every look (it may
    raise to stop waiting)."""
    import time

    from dask.utils import parse_timedelta

    state_dir = Path(state.state_dir)
    twin = read_twin(state_dir)
    minimum = {s["pool"]: s["minimum"] for s in twin["services"] if s["pool"]}
    scheduler = next(s["environment"] for s in twin["services"] if s["arguments"][:1] == ["scheduler"])
    idle = max((float(p["idle_timeout"]) for p in json.loads(scheduler.get(DEMAND_POOLS, "{}")).values()),
               default=0.0)
    window = float(parse_timedelta(scheduler.get(SCALE_IN_WINDOW, "120s"), default="s"))
    deadline = time.monotonic() + idle + window + slack
    while time.monotonic() < deadline:
        check()
        sizes = current_sizes(state_dir)
        if all(sizes.get(pool, 0) <= low for pool, low in minimum.items()):
            break
        time.sleep(0.5)
    return pool_history(state_dir)
