"""The reference analysis on the local platform: ERA5-like historical mean of 2 m temperature in its region,
the CMIP6-like 2090-2100 mean in its region, their difference in the pool holding the larger input (as in AWS,
no pool runs in the client region); the audit; a plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask_regions as dr
from components.config import StackConfig
from dask_regions.audit import Audit
from local_platform.autoscaler import SPEC_FILE, current_sizes, pool_history
from local_platform.platform import DEMAND_SETTINGS, PlatformState


@dataclass
class DemoResult:
    audit: Audit
    plot: Path
    mean_warming_kelvin: float


def run_demo(state: PlatformState, step: Any) -> DemoResult:
    """`step(message)` reports progress; returns the audit and where the plot went."""
    from distributed import Client

    with Client(state.scheduler_address, timeout=60,  # type: ignore[no-untyped-call]
                security=state.tls.security()) as client:
        step("checking versions of client, scheduler and workers")
        dr.check_versions(client)
        catalog = dr.Catalog.open(state.catalog)
        step("finding the data in the catalog")
        months = catalog.find(variable="air_temperature_at_2_metres")
        (store,) = catalog.find(variable_id="tas", experiment_id="ssp585")
        step(f"opening {len(months)} ERA5-like months in {months[0].region} and the CMIP6-like store in "
             f"{store.region}")
        era5 = dr.open_mfdataset(client, months, concat_dim="time0")
        cmip6 = dr.open_dataset(client, store)
        historical, regridded, difference = reference_analysis(era5, cmip6)
        since = dr.mark(client)
        step("computing next to the data: means in their regions, then their difference")
        futures = client.compute([historical, regridded, difference])
        from distributed import as_completed

        for done, _ in enumerate(as_completed(futures), start=1):  # type: ignore[no-untyped-call]
            step(f"computing next to the data: {done}/3 maps done")
        historical_map, future_map, difference = client.gather(futures)
        report = dr.audit(client, since)
    step("plotting")
    plot = Path(state.state_dir) / "demo.png"
    _plot(historical_map, future_map, difference, plot)
    return DemoResult(report, plot, float(difference.mean()))


def reference_analysis(era5: Any, cmip6: Any) -> tuple[Any, Any, Any]:
    """Lazily: the ERA5-like historical mean of 2 m temperature, the CMIP6-like 2090-2100 mean on the same grid,
    and their difference (the demo's and the WAN benchmark's analysis)."""
    historical = era5.air_temperature_at_2_metres.mean("time0")
    future = cmip6.tas.sel(time=slice("2090", "2100")).mean("time")
    regridded = future.sel(lat=historical.lat, lon=historical.lon, method="nearest").assign_coords(
        lat=historical.lat, lon=historical.lon)
    return historical, regridded, regridded - historical


def wait_for_idle_pools(state: PlatformState, config: StackConfig, slack: float = 20.0) -> dict[str, list[int]]:
    """Wait until every autoscaled pool is back at its minimum (idle timeout, scale-in window, retirement), then
    return each pool's sizes over the run, e.g. [0, 2, 1, 0]."""
    import time

    state_dir = Path(state.state_dir)
    minimum = {w.pool_name: w.min_tasks for w in config.workers if w.pool_name in current_sizes(state_dir)}
    idle = float(json.loads((state_dir / SPEC_FILE).read_text()).get("idle_timeout", 0))
    deadline = time.monotonic() + idle + float(DEMAND_SETTINGS["scale_in_window"]) + slack
    while time.monotonic() < deadline:
        sizes = current_sizes(state_dir)
        if all(sizes.get(pool, 0) <= low for pool, low in minimum.items()):
            break
        time.sleep(0.5)
    return pool_history(state_dir)


def _plot(historical: Any, future: Any, difference: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for axis, field, title, cmap in ((axes[0], historical, "ERA5-like historical mean (K)", "viridis"),
                                     (axes[1], future, "CMIP6-like 2090-2100 mean (K)", "viridis"),
                                     (axes[2], difference, "difference (K)", "RdBu_r")):
        field.plot(ax=axis, cmap=cmap)
        axis.set_title(title)
    figure.savefig(path, dpi=80)
    plt.close(figure)
