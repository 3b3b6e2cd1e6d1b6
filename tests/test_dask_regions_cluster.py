"""dask_regions on a real cluster: a scheduler with the router and three pools as separate processes
(client eu-west-2, region A us-east-1 with ERA5-like netCDF, region B us-west-2 with a CMIP6-like zarr store;
2 workers of 2 threads each), data found through the catalog."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import dask_regions
from dask_regions import Catalog, MissingPoolError, VersionMismatchError, audit, compute_near_data, mark
from stackconfig import PROJECT_DIR
from tests.regional_cluster import RegionalCluster
from tests.regional_data import build_catalog, region_data, write_cmip6, write_era5

CLIENT_POOL = "pool-eu-west-2"
POOLS = {CLIENT_POOL: 2, "pool-us-east-1": 2, "pool-us-west-2": 2}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("regions")
    fsx = directory / "fsx"
    write_era5(fsx)
    write_cmip6(fsx)
    build_catalog(fsx, directory / "catalog.db")
    cluster = RegionalCluster(directory, POOLS, combine_pool=CLIENT_POOL, missing_pool_timeout=4, fsx_root=fsx,
                              regions=["us-east-1", "us-west-2", "eu-north-1"])  # eu-north-1: configured, no pool
    cluster.start()
    try:
        client = cluster.client()
        yield {"cluster": cluster, "client": client, "catalog": Catalog.open(f"sqlite:///{directory}/catalog.db"),
               "fsx": fsx}
        client.close()
    finally:
        cluster.close()


def reference_analysis(platform: dict[str, Any], pinned: bool = True) -> tuple[Any, Any, Any]:
    """ERA5 historical mean, CMIP6 2090-2100 mean regridded to ERA5's grid, their difference."""
    client, catalog = platform["client"], platform["catalog"]
    months = catalog.find(variable="air_temperature_at_2_metres")
    (store,) = catalog.find(variable_id="tas", experiment_id="ssp585")
    if pinned:
        era5 = dask_regions.open_mfdataset(client, months, concat_dim="time0", chunks={"time0": 6})
        cmip6 = dask_regions.open_dataset(client, store, chunks={"time": 24})
    else:  # plain Dask: the same lazy datasets, chunked without the region in their names
        from dask_regions.opening import _open_lazily

        era5 = xr.concat([client.submit(_open_lazily, m.path, None, {}, pure=False).result().chunk({"time0": 6})
                          for m in months], dim="time0")
        cmip6 = client.submit(_open_lazily, store.path, None, {}, pure=False).result().chunk({"time": 24})
    historical = era5.air_temperature_at_2_metres.mean("time0")
    future = cmip6.tas.sel(time=slice("2090", "2100")).mean("time")
    regridded = future.sel(lat=historical.lat, lon=historical.lon, method="nearest").assign_coords(
        lat=historical.lat, lon=historical.lon)
    return historical, regridded, regridded - historical


def reduced_bytes(*arrays: Any) -> int:
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in arrays)


@pytest.mark.slow
@pytest.mark.processes
def test_plugin_places_every_region_task_in_its_pool_with_no_client_hints(platform: dict[str, Any]) -> None:
    client = platform["client"]
    historical, regridded, difference = reference_analysis(platform)
    since = mark(client)
    result = difference.compute()
    report = audit(client, since)
    assert report.misplaced == [], report.table()
    assert report.placement.get("pool-us-east-1", 0) > 0 and report.placement.get("pool-us-west-2", 0) > 0
    assert report.bytes_across_regions <= 2 * reduced_bytes(historical, regridded) + 1024 * 1024, report.table()
    expected = _expected_difference(platform["fsx"])
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-3)  # float32 sums in another order
    platform["pinned_bytes"] = report.bytes_across_regions


def _expected_difference(fsx: Path) -> Any:
    era5 = xr.open_mfdataset(sorted(fsx.glob("us-east-1/era5-pds/2000/*/data/*.nc")), engine="h5netcdf",
                             combine="nested", concat_dim="time0")
    cmip6 = xr.open_zarr(next(fsx.glob("us-west-2/CMIP6/**/v20190507")))
    historical = era5.air_temperature_at_2_metres.mean("time0")
    future = cmip6.tas.sel(time=slice("2090", "2100")).mean("time")
    return (future.sel(lat=historical.lat, lon=historical.lon, method="nearest").values - historical.values)


@pytest.mark.processes
def test_compute_near_data_gives_the_same_result_and_moves_only_the_reductions(platform: dict[str, Any]) -> None:
    client = platform["client"]
    historical, regridded, _ = reference_analysis(platform)
    since = mark(client)
    result = compute_near_data(client, {"us-east-1": historical, "us-west-2": regridded},
                               lambda **parts: parts["us-west-2"] - parts["us-east-1"], combine_pool=CLIENT_POOL)
    report = audit(client, since)
    assert report.misplaced == []
    assert report.bytes_across_regions <= 2 * reduced_bytes(historical, regridded) + 1024 * 1024
    expected = _expected_difference(platform["fsx"])
    np.testing.assert_allclose(result.values, expected, rtol=0, atol=1e-3)  # float32, other order


@pytest.mark.processes
def test_naive_moves_at_least_fifty_times_what_pinned_moves(platform: dict[str, Any]) -> None:
    client = platform["client"]
    if "pinned_bytes" not in platform:
        test_plugin_places_every_region_task_in_its_pool_with_no_client_hints(platform)
    months = platform["catalog"].find(variable="air_temperature_at_2_metres")
    (store,) = platform["catalog"].find(variable_id="tas")
    era5 = dask_regions.open_mfdataset(client, months, concat_dim="time0", chunks={"time0": 6})
    cmip6 = dask_regions.open_dataset(client, store, chunks={"time": 24})
    since = mark(client)
    # Naive: the raw arrays are read in their regions and pulled whole to the client region, then reduced.
    raw_a = client.compute(era5.air_temperature_at_2_metres)
    raw_b = client.compute(cmip6.tas.sel(time=slice("2090", "2100")))
    naive = client.submit(lambda a, b: (b.mean("time").sel(lat=a.lat, lon=a.lon, method="nearest").values
                                        - a.mean("time0").values), raw_a, raw_b, resources={CLIENT_POOL: 1},
                          pure=False).result()
    report = audit(client, since)
    np.testing.assert_allclose(naive, _expected_difference(platform["fsx"]), rtol=0, atol=1e-3)  # float32, other order
    assert report.bytes_across_regions >= 50 * max(platform["pinned_bytes"], 1), report.table()


@pytest.mark.processes
def test_unpinned_plain_dask_is_audited_too(platform: dict[str, Any]) -> None:
    client = platform["client"]
    _, _, difference = reference_analysis(platform, pinned=False)
    since = mark(client)
    difference.compute()
    report = audit(client, since)
    assert report.tasks > 0  # plain Dask carries no region: nothing to misplace, placement is whatever it was
    assert sum(report.placement.values()) == report.tasks


@pytest.mark.processes
@pytest.mark.parametrize("chunks", [{"time0": 2}, "auto"], ids=["several-chunks-per-file", "one-chunk-per-file"])
def test_mfdataset_chunk_reads_land_only_in_the_owning_pool(platform: dict[str, Any], chunks: Any) -> None:
    """With one chunk per file, fusion folds each file's array node into its reader: still routed."""
    client = platform["client"]
    months = platform["catalog"].find(variable="air_temperature_at_2_metres")
    era5 = dask_regions.open_mfdataset(client, months, concat_dim="time0", chunks=chunks)
    since = mark(client)
    era5.air_temperature_at_2_metres.max().compute()
    report = audit(client, since)
    assert report.misplaced == [] and set(report.placement) == {"pool-us-east-1"}, report.table()
    assert report.regional == report.tasks  # every task was known to be us-east-1's


@pytest.mark.processes
def test_work_for_a_region_without_workers_fails_clearly_within_the_timeout(platform: dict[str, Any]) -> None:

    client = platform["client"]
    orphan = region_data("eu-north-1", (4, 4), 2).sum()  # the router pins it to a pool nobody serves
    with pytest.raises(MissingPoolError, match=r"no live worker in region eu-north-1 .*live pools: pool-eu-west-2"):
        client.compute(orphan).result(timeout=60)
    with pytest.raises(MissingPoolError, match="region eu-north-1"):
        dask_regions.wait_for_pools(client, ["pool-eu-north-1"], timeout=1)


@pytest.mark.parametrize(("resources", "message"), [
    ({"pool-us-east-1": 5}, r"asks for pool-us-east-1=5, but each worker of pool-us-east-1 offers 2"),
    ({"pool_us-east-1": 1}, r"pool_us-east-1 is not a pool .*pool-us-east-1=2"),
    ({"pool-ap-south-1": 1}, r"region ap-south-1 is not a configured region; configured regions: eu-north-1, "),
], ids=["more-slots-than-a-worker-has", "mistyped-pool", "pool-of-no-configured-region"])
@pytest.mark.processes
def test_a_task_no_worker_can_run_fails_within_the_timeout(platform: dict[str, Any], resources: dict[str, float],
                                                           message: str) -> None:
    from dask_regions.errors import UnrunnableTaskError

    client = platform["client"]
    with pytest.raises(UnrunnableTaskError, match=message):
        client.submit(sum, [1, 2], resources=resources, pure=False).result(timeout=60)


@pytest.mark.processes
def test_data_of_a_region_that_is_not_configured_fails_naming_it(platform: dict[str, Any]) -> None:
    from dask_regions.errors import UnrunnableTaskError

    client = platform["client"]
    with pytest.raises(UnrunnableTaskError, match=r"region ca-west-1 is not a configured region"):
        client.compute(region_data("ca-west-1", (4, 4), 2).sum()).result(timeout=60)


@pytest.mark.processes
def test_versions_are_checked_at_connect(platform: dict[str, Any]) -> None:
    """Dask's own comparison over Dask's packages and the platform's: a worker whose data plane is another version
    (simulated where Dask reads versions) is named with both versions."""
    client = platform["client"]
    versions = dask_regions.check_versions(client)
    assert versions["client"]["packages"]["cross-region-dask"] == dask_regions.__version__ != "0+unknown"
    worker = next(iter(client.scheduler_info()["workers"]))

    def skew(stale: bool) -> None:
        import distributed.versions as dask_versions

        if stale:
            dask_versions._real_version_cached = dask_versions._version_cached  # type: ignore[attr-defined]
            dask_versions._version_cached = (  # type: ignore[assignment]
                lambda pkg: "0.0.0-stale" if pkg == "cross-region-dask"
                else dask_versions._real_version_cached(pkg))  # type: ignore[attr-defined]
        else:
            dask_versions._version_cached = dask_versions._real_version_cached  # type: ignore[attr-defined]

    client.run(skew, True, workers=[worker])
    try:
        with pytest.raises(VersionMismatchError) as caught:
            dask_regions.check_versions(client)
        message = str(caught.value)
        assert "cross-region-dask" in message and "0.0.0-stale" in message and dask_regions.__version__ in message
    finally:
        client.run(skew, False, workers=[worker])
    dask_regions.check_versions(client)


@pytest.mark.slow
@pytest.mark.processes
def test_a_pool_killed_mid_computation_ends_in_a_clear_error(platform: dict[str, Any]) -> None:
    import time


    client, cluster = platform["client"], platform["cluster"]

    def slow(block: Any) -> Any:
        time.sleep(1)
        return block

    work = region_data("us-west-2", (8, 4), (1, 4)).map_blocks(slow).sum()
    future = client.compute(work)
    client.wait_for_workers(6)
    cluster.stop_pool("pool-us-west-2")
    try:
        with pytest.raises(MissingPoolError, match=r"no live worker in region us-west-2 .*live pools"):
            future.result(timeout=90)
    finally:
        cluster.start_pool("pool-us-west-2", 2)
        client.wait_for_workers(6, timeout=120)


@pytest.mark.processes
def test_a_retired_workers_data_stays_in_its_region(platform: dict[str, Any]) -> None:
    client = platform["client"]
    data = client.persist(region_data("us-east-1", (40, 40), 10) + 1)
    client.wait_for_workers(6)
    from distributed import wait

    wait(data)
    pools = {address: next(iter(info["resources"])) for address, info in
             client.scheduler_info(n_workers=-1)["workers"].items()}
    holders = {w for workers in client.who_has(data).values() for w in workers}
    assert {pools[w] for w in holders} == {"pool-us-east-1"}
    leaving = sorted(holders)[0]
    client.retire_workers([leaving], close_workers=True)
    after = {w for workers in client.who_has(data).values() for w in workers}
    assert leaving not in after and after
    assert {pools[w] for w in after} == {"pool-us-east-1"}  # not copied to eu-west-2 or us-west-2
    assert float(data.sum().compute()) == 40 * 40 * 2
    platform["cluster"].stop_pool("pool-us-east-1")  # restore two workers for the tests after this one
    platform["cluster"].start_pool("pool-us-east-1", 2)
    client.wait_for_workers(6, timeout=120)


@pytest.mark.slow
@pytest.mark.processes
@pytest.mark.root
def test_the_scheduler_never_needs_the_regions_data(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The scheduler runs in its own mount namespace, where every region's data directory is empty."""
    directory = tmp_path_factory.mktemp("unreadable")
    fsx = directory / "fsx"
    write_era5(fsx, months=2)
    write_cmip6(fsx)
    build_catalog(fsx, directory / "catalog.db")
    cluster = RegionalCluster(directory, POOLS, combine_pool=CLIENT_POOL, fsx_root=fsx, hide_data_from_scheduler=True)
    cluster.start()
    try:
        client = cluster.client()
        import os

        assert client.run_on_scheduler(lambda: os.listdir(fsx)) == []  # nothing of any region is visible there
        assert sorted(os.listdir(fsx)) == ["us-east-1", "us-west-2"]  # while the workers' view has it all
        platform = {"client": client, "catalog": Catalog.open(f"sqlite:///{directory}/catalog.db"), "fsx": fsx}
        _, _, difference = reference_analysis(platform)
        since = mark(client)
        result = difference.compute()
        assert audit(client, since).misplaced == []
        np.testing.assert_allclose(result.values, _expected_difference(fsx), rtol=0, atol=1e-3)
        client.close()
    finally:
        cluster.close()


@pytest.mark.processes
@pytest.mark.parametrize("query_planning", ["False", "True"])
def test_dask_arrays_are_routed_in_both_array_modes(platform: dict[str, Any], query_planning: str) -> None:
    """dask_regions.from_array tags the array itself, so placement does not depend on key names, which dask's
    array-expression mode does not keep. (xarray itself does not run on array expressions yet.)"""
    import json
    import os
    import subprocess
    import sys

    script = (
        "import dask, json\n"
        "import numpy as np\n"
        "from distributed import Client\n"
        "import dask_regions as dr\n"
        "from tests.regional_data import LazyOnes\n"
        f"client = Client({platform['cluster'].address!r})\n"
        f"assert dask.config.get('array.query-planning') is {query_planning}\n"
        "data = dr.from_array('us-west-2', LazyOnes((64, 64)), chunks=16)\n"
        "since = dr.mark(client)\n"
        "assert float(((data + 1) * 2).mean().compute()) == 4.0\n"
        "report = dr.audit(client, since)\n"
        "print(json.dumps({'misplaced': len(report.misplaced), 'regional': report.regional,\n"
        "                  'placement': report.placement}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                            env={**os.environ, "DASK_ARRAY__QUERY_PLANNING": query_planning}, check=False,
                            cwd=PROJECT_DIR)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Every task that depends on the array (its 16 chunk reads and all downstream) is known to be us-west-2's
    # and ran there; only data-free constants (array-expression mode makes `+ 1` a node) may run elsewhere.
    assert report["misplaced"] == 0 and report["regional"] >= 16, report
    assert report["placement"]["pool-us-west-2"] >= report["regional"], report


@pytest.mark.processes
def test_opening_hands_back_metadata_not_the_data(platform: dict[str, Any]) -> None:
    import pickle

    client, catalog = platform["client"], platform["catalog"]
    (store,) = catalog.find(variable_id="tas", experiment_id="ssp585")
    cmip6 = dask_regions.open_dataset(client, store)
    assert len(pickle.dumps(cmip6)) < cmip6.tas.nbytes / 4  # Dask's sizeof used to load it all into the result


@pytest.mark.processes
def test_opening_several_datasets_at_once_gives_what_opening_each_gives(platform: dict[str, Any]) -> None:
    from functools import partial

    client, catalog = platform["client"], platform["catalog"]
    months = catalog.find(variable="air_temperature_at_2_metres")
    (store,) = catalog.find(variable_id="tas", experiment_id="ssp585")
    together = dask_regions.open_all({"era5": partial(dask_regions.open_mfdataset, client, months, concat_dim="time0"),
                                      "cmip6": partial(dask_regions.open_dataset, client, store)})
    assert list(together) == ["era5", "cmip6"]
    one_by_one = {"era5": dask_regions.open_mfdataset(client, months, concat_dim="time0"),
                  "cmip6": dask_regions.open_dataset(client, store)}
    for name, dataset in together.items():
        assert dataset.attrs["dask_regions_region"] == one_by_one[name].attrs["dask_regions_region"]
        xr.testing.assert_identical(dataset.compute(), one_by_one[name].compute())
    with pytest.raises(ValueError, match="give a catalog record"):  # a failing opening is raised, by its own error
        dask_regions.open_all({"good": partial(dask_regions.open_dataset, client, store),
                               "bad": partial(dask_regions.open_dataset, client, 42)})


@pytest.mark.processes
def test_the_scheduler_holds_a_connection_to_each_worker_before_it_first_fetches_from_it(
        platform: dict[str, Any]) -> None:
    from dask_regions.routing import WARMER_NAME

    def pooled(dask_scheduler: Any) -> dict[str, Any]:
        available = dask_scheduler.rpc.available
        return {"warmed": dask_scheduler.plugins[WARMER_NAME].warmed,
                "workers": {address: bool(available.get(address)) for address in dask_scheduler.workers}}

    found = platform["client"].run_on_scheduler(pooled)
    assert found["workers"] and all(found["workers"].values()), found
    assert found["warmed"] >= len(found["workers"])


@pytest.mark.processes
def test_each_regions_result_is_fetched_as_soon_as_it_is_done_and_named_as_given(
        platform: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import Event, Future

    from dask_regions.pools import fetch_as_completed

    client = platform["client"]
    release = Event(client=client)  # the slow one finishes only once the fast one has been fetched
    slow = client.submit(lambda: release.wait(60) and "slow", pure=False)
    fast = client.submit(lambda: "fast", pure=False)
    fetched: list[Any] = []
    result = Future.result

    def recorded(future: Future, *args: Any, **kwargs: Any) -> Any:
        fetched.append(future.key)
        value = result(future, *args, **kwargs)
        if future is fast:
            release.set()
        return value

    monkeypatch.setattr(Future, "result", recorded)
    assert fetch_as_completed({"slow": slow, "fast": fast}) == {"slow": "slow", "fast": "fast"}
    assert fetched == [fast.key, slow.key]  # the fast one crossed while the slow one was still computing


@pytest.mark.parametrize(("route", "restricted"), [(True, {"pool-us-east-1": 1}), (False, None)])
def test_the_router_only_observes_when_routing_is_off(route: bool, restricted: dict[str, int] | None) -> None:
    from types import SimpleNamespace

    from dask._task_spec import DataNode

    from dask_regions.keys import RegionalArray
    from dask_regions.routing import RegionRouter

    router = RegionRouter(regions=["us-east-1"], route=route)
    read = SimpleNamespace(key=("open-abc", 0), run_spec=DataNode(None, RegionalArray(np.ones(2), "us-east-1")),
                           dependencies=[], resource_restrictions=None)
    mean = SimpleNamespace(key=("mean-def", 0), run_spec=None, dependencies=[read], resource_restrictions=None)
    router._route(mean)
    assert mean.resource_restrictions == restricted
    assert router.regions[mean.key] == {"us-east-1"}  # known either way: the audit reports misplacement


def test_settings_come_from_the_defaults_file_and_dasks_own_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    from dask_regions import settings
    from dask_regions.demand import DemandSettings

    assert (settings.seconds("missing-pool-timeout"), settings.flag("route")) == (30.0, True)  # dask_regions.yaml
    assert DemandSettings().idle_timeout == 1800.0  # "30 minutes"
    monkeypatch.setenv("DASK_DASK_REGIONS__ROUTE", "False")  # as a task definition sets it
    monkeypatch.setenv("DASK_DASK_REGIONS__DEMAND__IDLE_TIMEOUT", "90s")
    dask.config.refresh()
    try:
        assert settings.flag("route") is False and DemandSettings().idle_timeout == 90.0
        with dask.config.set({"dask-regions.route": "sometimes"}), pytest.raises(
                ValueError, match=r"dask-regions.route \(DASK_DASK_REGIONS__ROUTE\)='sometimes': use true or false"):
            settings.flag("route")
    finally:
        monkeypatch.undo()
        dask.config.refresh()


def test_auto_chunks_are_whole_multiples_of_the_stored_chunks(tmp_path: Path) -> None:
    import dask

    from dask_regions.chunking import stored_chunks
    from dask_regions.opening import _open_lazily
    from local_platform.data import CMIP6_STORE, write_cmip6_like

    write_cmip6_like(tmp_path, years=range(2090, 2101), lat=30, lon=60, time_chunk=12)  # 86 KB stored chunks
    lazy = _open_lazily(str(tmp_path / CMIP6_STORE), None, {})
    with dask.config.set({"array.chunk-size": "200KiB"}):  # small, so that "auto" has to split this store
        plain = lazy.chunk("auto").tas.chunks
        chunked = lazy.chunk(stored_chunks(lazy, "auto")).tas.chunks
    assert plain[1:] != ((30,), (60,))  # what Dask's "auto" alone does: tiles that cut every stored chunk
    assert chunked[1:] == ((30,), (60,)) and all(size % 12 == 0 for size in chunked[0][:-1]), chunked
    assert len(chunked[0]) > 1
    assert stored_chunks(lazy, {"time": 24}) == {"time": 24}  # explicit chunks are the caller's
