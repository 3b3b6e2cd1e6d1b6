"""The router without a cluster: region identity from the tags that travel with the data, fed the exact graphs
the scheduler receives (the client's `collections_to_expr(...).__dask_graph__()`, converted as the scheduler
converts it) for every rewrite Dask applies: low-level fusion, blockwise fusion, rechunk, map_blocks, xarray's
one-chunk-per-file reads, and keys named the way fusion names them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import dask_regions
from dask_regions.errors import MissingPoolError, UnrunnableTaskError
from dask_regions.keys import check_region
from dask_regions.routing import RegionRouter
from dask_regions.settings import regions as regions_setting
from local_platform.data import ERA5_VARIABLE, write_era5_like
from stackconfig import PROJECT_DIR
from tests.regional_data import LazyOnes

REGION = "ap-southeast-2"
OTHER = "il-central-1"


def scheduler_tasks(*collections: Any) -> dict[Any, SimpleNamespace]:
    """Task states (as far as the router reads them) for the graph the scheduler would receive."""
    from dask._task_spec import convert_legacy_graph
    from dask.base import collections_to_expr

    graph = convert_legacy_graph(collections_to_expr(list(collections), True).__dask_graph__())
    states = {key: SimpleNamespace(key=key, run_spec=spec, dependencies=[], dependents=[], resource_restrictions=None,
                                   state="released") for key, spec in graph.items()}
    for key, spec in graph.items():
        states[key].dependencies = [states[d] for d in spec.dependencies if d in states]
    return states


def routed(*collections: Any, regions: tuple[str, ...] = (REGION, OTHER)) -> tuple[RegionRouter, dict[Any, Any]]:
    router = RegionRouter(regions=regions)
    states = scheduler_tasks(*collections)
    for ts in states.values():
        router._route(ts)  # type: ignore[arg-type]
    return router, states


def netcdf_region(tmp_path: Path, region: str, months: int = 3) -> xr.Dataset:
    """One-chunk-per-file netCDF, chunked through dask_regions' tagging chunk manager, as open_mfdataset does."""
    from dask_regions.opening import _chunk_in_region, _open_lazily

    keys = write_era5_like(tmp_path / region, months=months, steps=4, lat=6, lon=8, time_chunk=4)
    parts = [_chunk_in_region(_open_lazily(str(tmp_path / region / key), None, {}), "auto", region) for key in keys]
    return xr.concat(parts, dim="time0", data_vars="minimal", coords="minimal", compat="override", join="override")


def array(region: str = REGION, chunks: int = 8) -> Any:
    return dask_regions.from_array(region, LazyOnes((16, 16)), chunks=chunks)


SHAPES: dict[str, Callable[[Path], Any]] = {
    "one-chunk-low-level-fusion": lambda _: array(chunks=16) + 1,
    "blockwise": lambda _: ((array() + 1) * 2 - array()).sum(),
    "rechunk": lambda _: array().rechunk((16, 4)).mean(axis=0),
    "map_blocks": lambda _: array().map_blocks(lambda block: block * 3).max(),
    "netcdf-groupby-one-chunk-per-file": lambda p: netcdf_region(p, REGION)[ERA5_VARIABLE].groupby("time0.month")
    .mean().data,
    "netcdf-rolling": lambda p: netcdf_region(p, REGION)[ERA5_VARIABLE].rolling(time0=2).mean().data,
}


@pytest.mark.processes
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_task_of_a_rewritten_graph_keeps_its_region(tmp_path: Path, shape: str) -> None:
    router, states = routed(SHAPES[shape](tmp_path))
    assert any(router.reads[key] == {REGION} for key in states)  # some task holds the data (tagged)
    for key, ts in states.items():
        assert router.regions[key] <= {REGION}, key
        if router.regions[key]:
            assert ts.resource_restrictions == {f"pool-{REGION}": 1}, key


def test_fused_key_names_carry_no_identity() -> None:
    """The names fusion builds (`original-region-us-east-region-us-east-1-t2m-<token>`) are only names."""
    from dask._task_spec import DataNode, Task

    from dask_regions.keys import RegionalArray

    def task(key: str, value: object) -> SimpleNamespace:
        return SimpleNamespace(key=key, run_spec=Task(key, len, DataNode(None, value)), dependencies=[],
                               dependents=[], resource_restrictions=None)

    router = RegionRouter(regions=["us-east-1"])
    for name in ("original-region-us-east-region-us-east-1-t2m-0a1b", "region-us-east-1-t2m-0a1b",
                 "original-region-us-east-1-t2m-0a1b"):
        untagged, tagged = task(name, np.ones(3)), task(name + "-tagged", RegionalArray(np.ones(3), "us-east-1"))
        router._route(untagged)  # type: ignore[arg-type]
        router._route(tagged)  # type: ignore[arg-type]
        assert router.regions[untagged.key] == frozenset() and untagged.resource_restrictions is None
        assert router.regions[tagged.key] == {"us-east-1"}
        assert tagged.resource_restrictions == {"pool-us-east-1": 1}


def test_a_task_combining_regions_is_not_pinned_to_either_and_waits_for_its_inputs() -> None:
    router, states = routed(array(REGION).sum() + array(OTHER).sum())
    combining = [key for key in states if router.regions[key] == {REGION, OTHER}]
    assert combining and all(states[key].resource_restrictions is None for key in combining)
    assert all(router.combiners[key] is None for key in combining)  # decided when the inputs are in memory


def test_a_combining_task_goes_to_the_pool_holding_the_most_input_bytes() -> None:
    router = RegionRouter(regions=[REGION, OTHER])

    def held(pool: str, size: int) -> SimpleNamespace:
        worker = SimpleNamespace(address=f"tcp://{pool}", resources={pool: 2})
        return SimpleNamespace(who_has=[worker], get_nbytes=lambda: size)

    task = SimpleNamespace(key="combine", dependencies=[held(f"pool-{REGION}", 10), held(f"pool-{OTHER}", 10_000),
                                                       held(f"pool-{REGION}", 20)], resource_restrictions=None)
    router._place_combining(task)  # type: ignore[arg-type]
    assert task.resource_restrictions == {f"pool-{OTHER}": 1} and router.combiners["combine"] == f"pool-{OTHER}"


def test_a_combining_pool_takes_combining_tasks_when_configured() -> None:
    router = RegionRouter(regions=[REGION, OTHER], combine_pool="pool-eu-west-2")
    states = scheduler_tasks(array(REGION).sum() + array(OTHER).sum())
    for ts in states.values():
        router._route(ts)  # type: ignore[arg-type]
    assert any(ts.resource_restrictions == {"pool-eu-west-2": 1} for ts in states.values())


def test_data_of_a_region_that_is_not_configured_is_sent_to_fail_naming_it() -> None:
    router, states = routed(array("me-south-1").sum(), regions=(REGION,))
    assert all(ts.resource_restrictions == {"pool-me-south-1": 1} for ts in states.values())
    ts = next(iter(states.values()))
    ts.resource_restrictions = {"pool-me-south-1": 1}
    verdict = router._why_unrunnable(ts, {f"pool-{REGION}": 2.0})  # type: ignore[arg-type]
    assert verdict is not None and isinstance(verdict[1], UnrunnableTaskError)
    assert "region me-south-1 is not a configured region; configured regions: ap-southeast-2" in str(verdict[1])


@pytest.mark.parametrize(("restrictions", "offers", "error", "message"), [
    ({"pool-ap-southeast-2": 5}, {"pool-ap-southeast-2": 2.0}, UnrunnableTaskError,
     "asks for pool-ap-southeast-2=5, but each worker of pool-ap-southeast-2 offers 2"),
    ({"pool_ap-southeast-2": 1}, {"pool-ap-southeast-2": 2.0}, UnrunnableTaskError,
     "pool_ap-southeast-2 is not a pool .*each worker offers at most: pool-ap-southeast-2=2"),
    ({"pool-il-central-1": 1}, {"pool-ap-southeast-2": 2.0}, MissingPoolError,
     "no live worker in region il-central-1"),
])
def test_why_a_task_cannot_run(restrictions: dict[str, float], offers: dict[str, float], error: type,
                               message: str) -> None:
    router = RegionRouter(regions=[REGION, OTHER], missing_pool_timeout=7)
    router.scheduler = SimpleNamespace(plugins={}, workers={})  # type: ignore[assignment]
    unpinned = {"worker_restrictions": None, "loose_restrictions": False}  # a TaskState's defaults
    verdict = router._why_unrunnable(SimpleNamespace(key="t", resource_restrictions=restrictions,  # type: ignore[arg-type]
                                                     **unpinned), offers)
    assert verdict is not None
    timeout, exception = verdict
    assert timeout == 7 and type(exception) is error
    import re

    assert re.search(message, str(exception)), str(exception)
    assert router._why_unrunnable(SimpleNamespace(key="t", resource_restrictions={f"pool-{REGION}": 2},  # type: ignore[arg-type]
                                                  **unpinned), offers) is None  # a live worker offers enough: it waits


@pytest.mark.parametrize("name", ["us-east", "pool-us-east-1", "US-EAST-1", "us-east-1-", "", "us_east_1"])
def test_region_names_are_checked(name: str) -> None:
    with pytest.raises(ValueError, match="is not an AWS region name"):
        check_region(name)
    with pytest.raises(ValueError, match="is not an AWS region name"):
        dask_regions.from_array(name, LazyOnes((2, 2)), chunks=2)


def test_the_regions_setting_takes_a_list_or_text() -> None:
    assert regions_setting(["us-east-1"]) == ["us-east-1"]
    assert regions_setting("us-east-1, me-south-1") == ["us-east-1", "me-south-1"]
    for bad in (3, "not-a-list", ["us-east-1", "pool-us-west-2"]):
        with pytest.raises(ValueError, match=r"dask-regions.regions \(DASK_DASK_REGIONS__REGIONS\)=.*: give a list of "
                                             "AWS region names"):
            regions_setting(bad)


@pytest.mark.processes
def test_array_expression_mode_keeps_the_tag(tmp_path: Path) -> None:
    """dask's array-expression mode renames every key; the tag rides on the array object."""
    import os
    import subprocess
    import sys

    script = ("import dask_regions, json\n"
              "from tests.test_routing import routed, array\n"
              "router, states = routed((array() + 1).sum())\n"
              "print(json.dumps(sorted({r for key in states for r in router.regions[key]})))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                            env={**os.environ, "DASK_ARRAY__QUERY_PLANNING": "True"},
                            cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == f'["{REGION}"]'


def test_da_from_array_without_dask_regions_carries_no_region() -> None:
    router, states = routed(da.from_array(np.ones((4, 4)), chunks=2, name=f"region-{REGION}-by-name").sum())
    assert all(not router.regions[key] for key in states)
