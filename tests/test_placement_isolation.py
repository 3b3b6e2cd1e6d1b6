"""Placement proven by isolation: each pool runs in its own mount namespace in which every other region's data
directory is empty, so a task that reads a region's files anywhere but in that region's pool fails loudly
(FileNotFoundError) instead of reading across regions. The scheduler sees no region's data at all.

Common analysis shapes over one-chunk-per-file netCDF (the shape that once escaped pinning), on region names of
every shape, in both topologies: as AWS deploys (no client-region pool: a combining task runs in the pool that
holds the most of its inputs) and with a client-region combining pool. Every value is checked against plain
xarray on the same files, every audit must be proven (nothing misplaced, nothing ambiguous), and the bytes
between pools stay at or below 2x the reduced results + 1 MiB."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from distributed import wait

import dask_regions
from dask_regions import audit, budget, mark
from dask_regions.errors import OverBudgetError, UnrunnableTaskError
from local_platform.data import ERA5_VARIABLE, write_era5_like
from tests.regional_cluster import RegionalCluster

pytestmark = [pytest.mark.processes, pytest.mark.root]

REGIONS = ["us-east-1", "ap-southeast-2", "eu-central-2", "ca-west-1", "il-central-1", "me-south-1"]
PAIRS = [("us-east-1", "ap-southeast-2"), ("eu-central-2", "ca-west-1"), ("il-central-1", "me-south-1")]
CLIENT_POOL = "pool-eu-west-2"
T = ERA5_VARIABLE
MIB = 1024 * 1024


def grid(region: str) -> tuple[int, int]:
    """Regions alternate between two grids, so that every pair regrids from one onto the other."""
    return (10, 20) if REGIONS.index(region) % 2 == 0 else (13, 26)


def files(fsx: Path, region: str) -> list[Path]:
    return sorted((fsx / region / "era5").rglob("*.nc"))


@pytest.fixture(scope="module", params=["aws", "combine-pool"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp(f"isolated-{request.param}")
    fsx = directory / "fsx"
    for region in REGIONS:  # two years of monthly files, each stored as one chunk
        lat, lon = grid(region)
        write_era5_like(fsx / region / "era5", years=(2000, 2001), months=12, steps=4, lat=lat, lon=lon, time_chunk=4)
    pools = {f"pool-{region}": 1 for region in REGIONS}
    combine = CLIENT_POOL if request.param == "combine-pool" else None
    if combine:
        pools[combine] = 1
    regional = RegionalCluster(directory, pools, combine_pool=combine, fsx_root=fsx, isolate_regions=True,
                               missing_pool_timeout=10, regions=REGIONS).start()
    try:
        client = regional.client()
        yield {"client": client, "fsx": fsx, "topology": request.param, "cluster": regional, "opened": {}}
        client.close()
    finally:
        regional.close()


def open_region(cluster: dict[str, Any], region: str, chunks: Any = "auto") -> xr.Dataset:
    cache = cluster["opened"]
    if (region, str(chunks)) not in cache:
        paths = [f"/fsx/{p.relative_to(cluster['fsx'])}" for p in files(cluster["fsx"], region)]
        cache[(region, str(chunks))] = dask_regions.open_mfdataset(cluster["client"], paths, region=region,
                                                                   concat_dim="time0", chunks=chunks)
    return cache[(region, str(chunks))]


def local(cluster: dict[str, Any], region: str) -> xr.Dataset:
    """The same data read here by plain xarray, without Dask (whose default scheduler is now the isolated
    cluster, where this process's paths are other regions' data): the expected values."""
    return xr.concat([xr.load_dataset(path, engine="h5netcdf") for path in files(cluster["fsx"], region)], "time0")


def computed(cluster: dict[str, Any], lazy: Any) -> Any:
    """Compute `lazy` on the isolated cluster; the audit must be proven and the crossing bytes bounded."""
    client = cluster["client"]
    since = mark(client)
    result = lazy.compute()
    report = audit(client, since)
    cluster["report"], cluster["since"] = report, since
    assert report.proven, report.table()
    assert report.regional > 0, report.table()
    assert report.bytes_across_regions <= 2 * int(result.nbytes) + MIB, report.table()
    if cluster["topology"] == "aws":
        assert CLIENT_POOL not in report.placement
    return result


def weights(dataset: xr.Dataset) -> xr.DataArray:
    return np.cos(np.deg2rad(dataset.lat))


ONE_REGION: dict[str, Callable[[xr.Dataset], Any]] = {
    "groupby-climatology": lambda ds: ds[T].groupby("time0.month").mean(),
    "resample": lambda ds: ds[T].resample(time0="1MS").mean(),
    "rolling-mean": lambda ds: ds[T].rolling(time0=3).mean().mean(("lat", "lon")),
    "area-weighted-mean": lambda ds: ds[T].weighted(weights(ds)).mean(("lat", "lon")),
    "map-blocks": lambda ds: ds[T].map_blocks(lambda block: block * 2 - 1).mean("time0"),
}


@pytest.mark.slow
@pytest.mark.parametrize("workload", sorted(ONE_REGION))
def test_one_region_workloads_run_in_their_region_on_every_region_name(cluster: dict[str, Any], workload: str) -> None:
    for region in REGIONS:
        result = computed(cluster, ONE_REGION[workload](open_region(cluster, region)))
        expected = ONE_REGION[workload](local(cluster, region))
        np.testing.assert_allclose(result.values, expected.values, rtol=1e-5, atol=1e-3,
                                   err_msg=f"{workload} in {region}")


@pytest.mark.parametrize("chunks", ["auto", {"time0": 2}], ids=["one-chunk-per-file", "several-chunks-per-file"])
def test_open_mfdataset_reads_stay_in_the_region(cluster: dict[str, Any], chunks: Any) -> None:
    for region in REGIONS:
        data = open_region(cluster, region, chunks)
        stored = len(files(cluster["fsx"], region))
        assert data[T].data.numblocks[0] == (stored if chunks == "auto" else 2 * stored)
        result = computed(cluster, data[T].max())
        assert float(result) == pytest.approx(float(local(cluster, region)[T].max()))


def test_persist_then_compute(cluster: dict[str, Any]) -> None:
    client = cluster["client"]
    for region in REGIONS[:3]:
        since = mark(client)
        kept = open_region(cluster, region)[T].persist()
        wait(kept.data)
        assert audit(client, since).proven
        holders = {w for workers in client.who_has(kept.data).values() for w in workers}
        pools = {w: next(iter(info["resources"])) for w, info in client.scheduler_info(n_workers=-1)["workers"].items()}
        assert {pools[w] for w in holders} == {f"pool-{region}"}
        result = computed(cluster, kept.groupby("time0.month").mean())
        np.testing.assert_allclose(result.values, local(cluster, region)[T].groupby("time0.month").mean().values,
                                   rtol=1e-5, atol=1e-3)  # float32 sums in another order


def regrid_difference(a: xr.Dataset, b: xr.Dataset) -> xr.DataArray:
    """b's monthly climatology interpolated (linear) onto a's grid, minus a's."""
    target = b[T].groupby("time0.month").mean().interp(lat=a.lat, lon=a.lon, method="linear")
    return target - a[T].groupby("time0.month").mean()


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_interpolation_from_one_regions_grid_onto_anothers(cluster: dict[str, Any], pair: tuple[str, str]) -> None:
    a, b = pair
    assert grid(a) != grid(b)
    result = computed(cluster, regrid_difference(open_region(cluster, a), open_region(cluster, b)))
    expected = regrid_difference(local(cluster, a), local(cluster, b))
    np.testing.assert_allclose(result.values, expected.values, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_concatenation_of_two_regions_data(cluster: dict[str, Any], pair: tuple[str, str]) -> None:
    a, b = pair

    def both(x: xr.Dataset, y: xr.Dataset) -> xr.DataArray:
        means = [d[T].weighted(weights(d)).mean(("lat", "lon")) for d in (x, y)]  # on their own grids
        return xr.concat(means, dim="region").groupby("time0.year").mean()

    result = computed(cluster, both(open_region(cluster, a), open_region(cluster, b)))
    np.testing.assert_allclose(result.values, both(local(cluster, a), local(cluster, b)).values, rtol=1e-5, atol=1e-3)


def test_a_combining_task_runs_where_the_larger_input_is(cluster: dict[str, Any]) -> None:
    """AWS topology: the sum of a large region-A part and a small region-B part runs in A's pool (only B's side
    crosses); with a combining pool, it runs there."""
    client = cluster["client"]
    big, small = (dask_regions.from_array(region, np.ones(shape), chunks=shape)
                  for region, shape in (("ca-west-1", (400, 400)), ("me-south-1", (1, 400))))
    since = mark(client)
    total = float((big.sum(axis=0) + small.sum(axis=0)).sum().compute())
    report = audit(client, since)
    assert total == 400 * 400 + 400 and report.proven, report.table()
    expected = CLIENT_POOL if cluster["topology"] == "combine-pool" else "pool-ca-west-1"
    assert expected in report.placement
    crossed = report.bytes_between_pools
    if cluster["topology"] == "aws":
        assert set(crossed) <= {("pool-me-south-1", "pool-ca-west-1")}, report.table()


# ------------------------------------------------------------------------------------- all-to-all operations
# Dask picks P2P (the shuffle extension: output tasks pinned to workers it chooses, shards sent outside the task
# graph) for large all-to-all steps on a distributed cluster; the router keeps its outputs in the data's pool.
ALL_TO_ALL = ["p2p", "tasks", None]  # None: Dask's default, which chooses (P2P on a distributed cluster)


@pytest.mark.parametrize("method", ALL_TO_ALL, ids=["p2p", "tasks", "dask-chooses"])
def test_an_all_to_all_rechunk_runs_in_its_region(cluster: dict[str, Any], method: str) -> None:
    """The most common climate rechunk: the whole time axis in one chunk, then a median and a quantile along it."""
    def along_time(ds: xr.Dataset) -> xr.Dataset:
        whole = ds[T].chunk({"time0": -1, "lat": 5})
        return xr.Dataset({"median": whole.median("time0"), "q90": whole.quantile(0.9, "time0")})

    for region in PAIRS[0]:
        with dask.config.set({"array.rechunk.method": method}):
            result = computed(cluster, along_time(open_region(cluster, region)))
        expected = along_time(local(cluster, region))
        for name in ("median", "q90"):
            np.testing.assert_allclose(result[name].values, expected[name].values, rtol=1e-6)


@pytest.mark.parametrize("method", ["p2p", "tasks"])
def test_an_all_to_all_rechunk_of_two_regions_follows_the_combining_rule(cluster: dict[str, Any],
                                                                          method: str) -> None:
    """Two regions' data (one grid) along time, rechunked whole: as AWS deploys, the shuffle's outputs go to one
    of the two pools (P2P: the pool of most of its inputs); with a combining pool, there."""
    a, b = REGIONS[0], REGIONS[2]

    def along_time(x: xr.Dataset, y: xr.Dataset) -> xr.DataArray:
        return xr.concat([x[T], y[T]], "time0").chunk({"time0": -1, "lat": 5}).median("time0")

    with dask.config.set({"array.rechunk.method": method}):
        result = computed(cluster, along_time(open_region(cluster, a), open_region(cluster, b)))
    np.testing.assert_allclose(result.values, along_time(local(cluster, a), local(cluster, b)).values, rtol=1e-6)
    shuffled, target = cluster["report"].shuffled, pool_of(cluster, a, b)
    if method == "p2p":  # its shards are counted: here all sent within the pool the shuffle went to
        assert shuffled and set(shuffled) == {(target, target)}, cluster["report"].table()
    else:
        assert shuffled == {}, cluster["report"].table()
    assert {destination for _, destination in cluster["report"].bytes_between_pools} == {target}


def pool_of(cluster: dict[str, Any], *regions: str) -> str:
    """Where work combining these regions' equal inputs goes: the combining pool, or (AWS) the first of the
    regions' pools, as P2P breaks the tie between equal shares of its inputs."""
    return CLIENT_POOL if cluster["topology"] == "combine-pool" else sorted(f"pool-{r}" for r in regions)[0]


def test_a_p2p_shuffle_of_two_regions_counts_the_shards_that_cross(cluster: dict[str, Any]) -> None:
    """DataFrame P2P across two regions: each region's transfer tasks run in their own pool and send shards to the
    pool the shuffle went to; the audit counts those bytes between pools (the transfer log cannot see them)."""
    a, b = REGIONS[0], REGIONS[2]

    def shuffled_sum(x: Any, y: Any) -> Any:
        return (dd.concat([x, y]).shuffle("key").c1.sum() if hasattr(x, "dask")
                else pd.concat([x, y]).c1.sum())

    with dask.config.set({"dataframe.shuffle.method": "p2p"}):
        result = computed(cluster, shuffled_sum(frame_of(open_region(cluster, a)), frame_of(open_region(cluster, b))))
    expected = shuffled_sum(frame_of(local(cluster, a).load()), frame_of(local(cluster, b).load()))
    np.testing.assert_allclose(float(result), float(expected), rtol=1e-9)
    report, target = cluster["report"], pool_of(cluster, a, b)
    crossing = {pair: size for pair, size in report.shuffled.items() if pair[0] != pair[1]}
    sources = {f"pool-{region}" for region in (a, b)} - {target}
    assert set(crossing) == {(source, target) for source in sources}, report.table() + sends_recorded(cluster)
    for pair, size in crossing.items():  # the shards' bytes, counted among the bytes between pools
        assert size > 10_000 and report.bytes_between_pools[pair] >= size, report.table()
    assert "of which P2P shards" in report.table()


def sends_recorded(cluster: dict[str, Any]) -> str:
    """For a failure's message: each worker's P2P sends recorded since it started, and when the last was (a CI run
    once found none after a two-region shuffle; runs of the test alone, of its module and under load did not)."""
    def recorded(dask_worker: Any) -> tuple[int, float]:
        from dask_regions.shards import _ON_WORKER

        plugin = _ON_WORKER.get(dask_worker.address)
        sent = list(plugin.sent) if plugin is not None else []
        return len(sent), max((when for when, _, _ in sent), default=0.0)

    counts = cluster["client"].run(recorded)
    return f"\nP2P sends recorded per worker (count, last): {counts}; audited since {cluster['since']}"


def frame_of(ds: xr.Dataset) -> Any:
    """One region's data as a DataFrame (a row per time step and latitude, a column per longitude) with a key."""
    # In float64: a float32 sum's last bits depend on the order of its partitions, which a shuffle may change.
    values = ds[T].data.reshape(-1, ds.sizes["lon"]).astype("f8")
    frame = dd.from_dask_array(values, columns=[f"c{i}" for i in range(ds.sizes["lon"])]) \
        if isinstance(values, da.Array) else pd.DataFrame(values, columns=[f"c{i}" for i in range(ds.sizes["lon"])])
    return frame.assign(key=(frame.c0 * 10).round() % 7)


FRAME_OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "shuffle": lambda f: f.shuffle("key").c1.sum() if hasattr(f, "shuffle") else f.c1.sum(),
    "merge": lambda f: f.merge(f.groupby("key").c2.max().rename("top").reset_index(), on="key").top.sum(),
    "set-index": lambda f: f.set_index("key").c3.sum(),
    "groupby-apply": lambda f: f.groupby("key").apply(lambda g: g.c1.max() - g.c1.min(),
                                                      **({"meta": (None, "f8")} if hasattr(f, "dask") else {})).sum(),
}


@pytest.mark.parametrize("method", ["p2p", "tasks"])
@pytest.mark.parametrize("operation", sorted(FRAME_OPERATIONS))
def test_dataframe_all_to_all_operations_run_in_their_region(cluster: dict[str, Any], operation: str,
                                                             method: str) -> None:
    region = PAIRS[1][0]
    with dask.config.set({"dataframe.shuffle.method": method}):
        result = computed(cluster, FRAME_OPERATIONS[operation](frame_of(open_region(cluster, region))))
    expected = FRAME_OPERATIONS[operation](frame_of(local(cluster, region).load()))
    np.testing.assert_allclose(float(result), float(expected), rtol=1e-9)


@pytest.mark.slow
def test_a_task_pinned_outside_its_pool_fails_within_the_timeout(cluster: dict[str, Any]) -> None:
    """A task pinned to a worker (as P2P pins its outputs, here by the client) and restricted to another pool's
    resource can never run: it fails within the missing-pool timeout naming both, instead of waiting forever."""
    client = cluster["client"]
    workers = client.scheduler_info(n_workers=-1)["workers"]
    elsewhere = next(address for address, info in workers.items() if "pool-me-south-1" in info["resources"])
    future = client.submit(sum, [1, 2], workers=[elsewhere], resources={"pool-us-east-1": 1}, allow_other_workers=False,
                           pure=False)
    with pytest.raises(UnrunnableTaskError) as caught:
        future.result(timeout=120)
    message = str(caught.value)
    assert f"is pinned to workers {elsewhere} and asks for pool-us-east-1=1" in message, message
    assert f"{elsewhere} offers pool-me-south-1=2" in message, message
    assert "must be pinned within its region's pool" in message, message


# ------------------------------------------------------------------------------------------- explain
ANALYSES: dict[str, Callable[[xr.Dataset, xr.Dataset], Any]] = {
    "reference": lambda x, y: x[T].mean("time0") - y[T].mean("time0"),  # reduce in each region, combine results
    "naive": lambda x, y: (x[T] - y[T]).mean("time0"),  # combine the raw data, then reduce
}


@pytest.mark.parametrize("analysis", sorted(ANALYSES))
def test_explain_predicts_placement_and_what_crosses_before_running(cluster: dict[str, Any], analysis: str) -> None:
    """dask_regions.explain, before computing, against the audit after: the pools the router chose, the bytes
    between pools and to the client within 20%."""
    a, b = REGIONS[0], REGIONS[2]
    lazy = ANALYSES[analysis](open_region(cluster, a), open_region(cluster, b))
    predicted = dask_regions.explain(cluster["client"], lazy)
    computed(cluster, lazy)
    report = cluster["report"]
    for estimate, measured in ((predicted.crossing, report.bytes_between_pools),
                               (predicted.to_client, report.to_client)):
        assert estimate.keys() == measured.keys() and measured, (predicted.table(), report.table())
        for where, size in measured.items():
            assert abs(estimate[where] - size) <= 0.2 * size, (where, predicted.table(), report.table())
    if analysis == "naive":  # the raw data crossed: the prediction says so, and prices it
        assert predicted.bytes_across_regions > 50 * sum(predicted.to_client.values())

    def ran(dask_scheduler: Any, since: float = cluster["since"]) -> dict[str, str | None]:
        return {p.key: p.pool for p in dask_scheduler.plugins["dask-regions-router"].placements_since(since)}

    def named(key: Any) -> str:  # the finalizing task is named anew for each submission
        return re.sub(r"hlgfinalizecompute-[0-9a-f]+", "hlgfinalizecompute", str(key))

    actual = {named(key): pool for key, pool in cluster["client"].run_on_scheduler(ran).items()}
    expected = {named(key): pool for key, pool in predicted.pools.items()}
    assert set(actual) == set(expected), set(actual) ^ set(expected)  # the same tasks: as the scheduler got them
    assert {key: pool for key, pool in expected.items() if pool != actual[key]} == {}
    assert "est. USD" in predicted.table() and all(cost > 0 for cost in predicted.cost_usd.values())


def test_a_graph_over_the_crossing_budget_is_refused_before_it_is_sent(cluster: dict[str, Any]) -> None:
    """The budget (dask-regions.crossing-budget) between the reference analysis and the naive one: the naive one is
    refused with its largest crossing named, and nothing of it reaches the scheduler; the reference one runs."""
    client = cluster["client"]
    budget.guard(client)
    x, y = open_region(cluster, REGIONS[0]), open_region(cluster, REGIONS[2])
    naive, reference = ANALYSES["naive"](x, y), ANALYSES["reference"](x, y)
    limit = 3 * dask_regions.explain(client, reference).bytes_leaving_pools
    over = dask_regions.explain(client, naive)
    assert over.bytes_leaving_pools > limit, over.table()
    (source, destination), _ = over.largest_crossing

    def tasks(dask_scheduler: Any) -> int:
        return len(dask_scheduler.tasks)

    before, since = client.run_on_scheduler(tasks), mark(client)
    with dask.config.set({budget.KEY_PATH: limit}):
        with pytest.raises(OverBudgetError, match=rf"largest crossing: {source} -> {destination} .*Nothing was sent"):
            naive.compute()
        assert client.run_on_scheduler(tasks) == before and audit(client, since).placement == {}
        expected = ANALYSES["reference"](local(cluster, REGIONS[0]), local(cluster, REGIONS[2]))
        xr.testing.assert_allclose(computed(cluster, reference), expected)
    for value in ("lots", -1):  # not a size: the key, the value and the valid form; nothing sent
        message = f"dask-regions.crossing-budget (DASK_DASK_REGIONS__CROSSING_BUDGET)={value!r}: give a size"
        with dask.config.set({budget.KEY_PATH: value}), pytest.raises(ValueError, match=re.escape(message)):
            naive.compute()
    assert client.run_on_scheduler(tasks) == before
