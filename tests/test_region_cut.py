"""A worker region cut off from the scheduler (issue 34), on a real cluster of processes: a pool whose processes are
stopped (SIGSTOP: they neither answer nor close their connections, as behind a cut link) is silent. Within the grace
(`distributed.scheduler.worker-ttl`, the stack's `client.regionGraceSeconds`) the work waits and finishes; past it,
the work that needs the region fails at once with an error naming it, work for other regions goes on, and the
region's pool rejoins when it answers again (ECS replaces a task whose worker closed)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dask_regions import MissingPoolError, RegionUnreachableError
from tests.regional_cluster import RegionalCluster
from tests.regional_data import region_data

# Dask waits at least ten heartbeats (5 s for a small cluster) whatever the setting. Not less than 10 s: on a loaded
# 2-core CI machine a newly started worker can miss 5 s of heartbeats and be removed as silent (seen once in CI).
GRACE_SECONDS = 10
POOLS = {"pool-us-east-1": 1, "pool-us-west-2": 1}
ONES = 16.0  # the sum of a region's 4 x 4 sample (ones)
SCALE_UP_SECONDS = 15  # how long work waits for an empty scalable pool to grow (900 s in AWS); above the grace


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RegionalCluster]:
    cluster = RegionalCluster(tmp_path, POOLS, regions=["us-east-1", "us-west-2"], missing_pool_timeout=2,
                              demand={"scale_up_timeout": SCALE_UP_SECONDS,
                                      "pools": {pool: {"workers_per_task": 1, "threads_per_worker": 2,
                                                       "min_tasks": 0, "max_tasks": 4} for pool in POOLS}})
    cluster.env["DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL"] = f"{GRACE_SECONDS}s"
    cluster.worker_args = ["--no-nanny"]  # the cut stops every process of the pool; a nanny would only add its wait
    cluster.start()
    try:
        yield cluster
    finally:
        for pool in POOLS:  # SIGKILL ends a stopped group too; a worker without a nanny is slow to end on SIGTERM
            if pool in cluster.processes:
                cluster.stop_pool(pool)
        cluster.close()


def cut(cluster: RegionalCluster, pool: str, cut_signal: signal.Signals) -> None:
    os.killpg(cluster.processes[pool].pid, cut_signal)


def slow_sum(region: str, seconds: float) -> Any:
    def slow(block: Any) -> Any:
        time.sleep(seconds)
        return block

    return region_data(region, (4, 4), (1, 4)).map_blocks(slow).sum()


@pytest.mark.processes
def test_a_region_cut_past_the_grace_fails_its_work_naming_it_and_the_other_region_goes_on(
        cluster: RegionalCluster) -> None:
    client = cluster.client()
    try:
        cut_off = client.compute(slow_sum("us-west-2", 1.0))
        time.sleep(1.0)  # mid-computation
        cut(cluster, "pool-us-west-2", signal.SIGSTOP)
        started = time.monotonic()
        other = client.compute(slow_sum("us-east-1", 0.1))
        assert float(other.result(timeout=60)) == ONES
        silenced = rf"region us-west-2 is unreachable: the workers of pool-us-west-2 stopped answering .* for over " \
                   rf"{GRACE_SECONDS} s"
        with pytest.raises(RegionUnreachableError, match=silenced):
            cut_off.result(timeout=60)
        # Bounded: the grace (Dask: at least ten heartbeats), one Dask check period, one router check; not the
        # 15 minutes a scalable pool's work waits to scale up from zero.
        assert time.monotonic() - started < 5 + GRACE_SECONDS + 5
        assert isinstance(RegionUnreachableError("x"), MissingPoolError)  # code catching the missing pool catches it
        # Work submitted well after the loss waits as for any empty pool: a pool scaled to zero after a cut must
        # be able to grow again, so the mark does not fail it at once.
        time.sleep(5 + GRACE_SECONDS)
        late = client.compute(slow_sum("us-west-2", 0.0))
        with pytest.raises(MissingPoolError, match=f"after waiting {SCALE_UP_SECONDS} s for it to scale up") as error:
            late.result(timeout=60)
        assert not isinstance(error.value, RegionUnreachableError)

        cut(cluster, "pool-us-west-2", signal.SIGCONT)  # the link is back: told it was removed, the worker closes
        cluster.processes.pop("pool-us-west-2").wait(timeout=60)
        cluster.start_pool("pool-us-west-2", 1)  # ... and ECS starts a new task in its place
        client.wait_for_workers(2, timeout=60)
        again = client.compute(slow_sum("us-west-2", 0.0))
        assert float(again.result(timeout=60)) == ONES
    finally:
        client.close()


@pytest.mark.processes
def test_a_region_whose_connections_broke_fails_its_work_after_the_grace_not_after_a_scale_up(
        cluster: RegionalCluster) -> None:
    # A link cut longer than Dask's TCP timeout breaks the connections before the heartbeat limit is reached; a
    # killed task does it at once. Either way the scalable pool's work fails after the grace, not after the 15
    # minutes it would wait for a pool to grow from zero.
    client = cluster.client()
    try:
        cut_off = client.compute(slow_sum("us-west-2", 1.0))
        time.sleep(1.0)
        cluster.stop_pool("pool-us-west-2")
        started = time.monotonic()
        with pytest.raises(RegionUnreachableError, match=r"region us-west-2 is unreachable: the connections of "
                                                         r"pool-us-west-2's workers to the scheduler broke at .* no "
                                                         rf"worker of it has joined for {GRACE_SECONDS} s"):
            cut_off.result(timeout=60)
        assert GRACE_SECONDS <= time.monotonic() - started < GRACE_SECONDS + 5
    finally:
        client.close()


@pytest.mark.processes
def test_a_region_back_within_the_grace_loses_nothing(cluster: RegionalCluster) -> None:
    client = cluster.client()
    try:
        work = client.compute(slow_sum("us-west-2", 0.5))
        time.sleep(0.5)
        cut(cluster, "pool-us-west-2", signal.SIGSTOP)
        time.sleep(2.0)  # shorter than the grace
        cut(cluster, "pool-us-west-2", signal.SIGCONT)
        assert float(work.result(timeout=60)) == ONES
        assert len(client.scheduler_info()["workers"]) == 2  # nobody was removed
    finally:
        client.close()


def test_the_deployed_scheduler_removes_a_silent_region_after_the_stacks_grace() -> None:
    import json

    from platform_facts import WORKER_TTL_VARIABLE
    from tests.test_cost import overridden

    def declared(graph: Any) -> str:
        (task,) = [t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition") if t.name == "client-scheduler"]
        (container,) = json.loads(task.inputs["containerDefinitions"])
        return str({e["name"]: e["value"] for e in container["environment"]}[WORKER_TTL_VARIABLE])

    assert declared(overridden()[0]) == "60s"  # the default: a minute, not Dask's five
    assert declared(overridden(regionGraceSeconds=20)[0]) == "20s"


def test_a_grace_out_of_bounds_names_the_key_and_its_range() -> None:
    from stackgraph.synth import SynthesisError
    from tests.test_cost import overridden

    with pytest.raises(SynthesisError, match=r"client.regionGraceSeconds: is 5, must be between 10 and 3600"):
        overridden(regionGraceSeconds=5)
