"""RegionRouter: a scheduler plugin that runs every task next to its data, whatever the client sent.

Client-side annotations do not survive (low-level fusion drops them, and graph optimisation runs on the
scheduler), so the scheduler decides, from the region tags that travel with the data (dask_regions.keys):
- a task that holds a region's data (a `RegionalArray` in its spec: it reads that region's storage) runs in that
  region's pool (`pool-<region>`, asking for one of the slots each worker offers per thread);
- a task that depends only on tasks of one region runs in that region's pool too;
- a task that combines regions (it reads no storage) runs in the combining pool when one is configured (a
  client-region pool); without one, as AWS deploys, it runs in the pool that holds the most bytes of its inputs,
  decided when its inputs are ready, so only the smaller side crosses, once;
- a task whose own spec holds data of several regions cannot be placed right (every placement reads across):
  the audit reports it as ambiguous. A tag naming a region that is not configured fails the task.
Restrictions a client set explicitly are kept.

Tasks no live or scalable worker can run (a pool with no live worker, more slots than its workers offer, a
mistyped or unknown pool) would wait forever: the router fails them after a timeout with an error naming the
resource and what the pools offer.

Load it in the scheduler: `dask scheduler --preload dask_regions.routing`. Its settings (Dask config or
environment; defaults in dask_regions.yaml): `dask-regions.regions` (the configured regions,
DASK_DASK_REGIONS__REGIONS='["us-east-1", ...]'), `dask-regions.combine-pool`, `dask-regions.missing-pool-timeout`
and `dask-regions.route` (false only observes: tasks go wherever plain Dask puts them and the audit reports where
that was, which is how the WAN benchmark measures plain Dask).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any, NamedTuple

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.scheduler import Scheduler, TaskState, WorkerState

from dask_regions import settings
from dask_regions.demand import PoolDemand
from dask_regions.errors import MissingPoolError, RegionUnreachableError, UnrunnableTaskError
from dask_regions.internals import before_shuffle_created, fail_task, narrow_retirement, spec_values
from dask_regions.keys import region_of_value
from dask_regions.shards import P2PSends
from dask_regions.startup import DEMAND_PLUGIN, ROUTER_PLUGIN, serve_health, start_preload
from platform_facts import is_pool, pool_of_region, region_of_pool

logger = logging.getLogger("dask_regions.routing")
PLUGIN_NAME = ROUTER_PLUGIN
WARMER_NAME = "dask-regions-connection-warmer"
CHECK_INTERVAL_SECONDS = 1.0
# The stimulus of Dask's removal of a worker silent past `distributed.scheduler.worker-ttl` (Scheduler.check_worker_ttl
# restarts or removes it under this stimulus): how a region cut off from the scheduler shows.
SILENT_STIMULUS = "check-worker-ttl"
# ... and of its removal of a worker whose connection broke without a goodbye (a crash, or a cut link: Dask's TCP
# timeout, distributed.comm.timeouts.tcp, breaks a connection whose data goes unacknowledged that long).
BROKEN_STIMULUS = "handle-worker-cleanup"
PLACEMENT_LOG = 200_000  # the newest finished tasks the audit can see


class Placement(NamedTuple):
    """A finished task, as the audit sees it."""

    time: float
    key: str
    regions: tuple[str, ...]  # regions whose data it depends on
    reads: tuple[str, ...]  # regions whose data its own spec holds (it reads their storage)
    expected: str | None  # the pool it had to run in (None: anywhere)
    ambiguous: bool  # it cannot be placed right, or names a region that is not configured
    combining: bool  # it combines regions (placed by the combining rule)
    pool: str | None  # the pool of the worker that ran it
    worker: str | None
    nbytes: int = 0  # the size of its result
    wanted: bool = False  # a client wants its result (a client gathers it: it leaves the pool for the client)


def own_regions(ts: TaskState) -> frozenset[str]:
    """Regions whose data a task's own spec holds: its array node, or, for a fused task, the array nodes of the
    subgraph fused into it (a region's array node with a single reader is fused away)."""
    return frozenset(region for value in spec_values(ts.run_spec) if (region := region_of_value(value)))


def pools_of(worker: WorkerState | None) -> list[str]:
    return sorted(name for name in (worker.resources if worker else {}) if is_pool(name))


def live_pools(scheduler: Scheduler) -> set[str]:
    return {name for worker in scheduler.workers.values() for name in pools_of(worker)}


class RegionRouter(SchedulerPlugin):
    name = PLUGIN_NAME

    def __init__(self, regions: Iterable[str] = (), combine_pool: str | None = None,
                 missing_pool_timeout: float | None = None, route: bool = True) -> None:
        self.configured = frozenset(regions)
        self.combine_pool = combine_pool
        self.route = route
        self.missing_pool_timeout = (settings.seconds("missing-pool-timeout") if missing_pool_timeout is None
                                     else missing_pool_timeout)
        self.regions: dict[Any, frozenset[str]] = {}  # task key -> regions whose data it depends on
        self.reads: dict[Any, frozenset[str]] = {}  # task key -> regions whose data its own spec holds
        self.combiners: dict[Any, str | None] = {}  # combining task -> the pool chosen for it (None: not yet)
        self.placements: deque[Placement] = deque(maxlen=PLACEMENT_LOG)
        self.seen_pools: set[str] = set()
        self.waiting_since: dict[Any, float] = {}
        self.worker_pools: dict[str, list[str]] = {}  # live worker -> its pools (a removed worker is gone already)
        # Times on the monotonic clock (as `waiting_since`), shown as wall-clock time in messages.
        self.silenced: dict[str, tuple[float, float]] = {}  # pool -> (when, ttl): its workers removed for silence
        self.broken: dict[str, float] = {}  # pool -> when a worker's connection broke (cleared when one joins)
        self.scheduler: Scheduler | None = None
        self._callback: Any = None

    async def start(self, scheduler: Scheduler) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self._callback = PeriodicCallback(self.fail_unrunnable_tasks, CHECK_INTERVAL_SECONDS * 1000)
        self._callback.start()
        if self.route:
            before_shuffle_created(scheduler, self._keep_shuffle_in_its_pool)
        from distributed.protocol.pickle import dumps

        await scheduler.register_worker_plugin(None, dumps(P2PSends()),  # type: ignore[no-untyped-call]
                                               name=P2PSends.name, idempotent=True)  # for the audit

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    def known_regions(self) -> frozenset[str]:
        """The configured regions; unset, those of every pool this scheduler has seen or may scale."""
        if self.configured:
            return self.configured
        demand = self.scheduler.plugins.get(DEMAND_PLUGIN) if self.scheduler else None
        configured_pools = set(demand.settings.pools) if isinstance(demand, PoolDemand) else set()
        return frozenset(region_of_pool(pool) for pool in self.seen_pools | configured_pools)

    def describe(self) -> dict[str, Any]:
        """What the router routes by (for connect() and the audit)."""
        return {"regions": sorted(self.configured), "route": self.route, "combine_pool": self.combine_pool,
                "missing_pool_timeout": self.missing_pool_timeout}

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        pools = pools_of(scheduler.workers.get(worker))
        self.seen_pools.update(pools)
        self.worker_pools[worker] = pools
        for pool in pools:  # its region answers again
            self.broken.pop(pool, None)
            if self.silenced.pop(pool, None) is not None:
                logger.warning("region %s is back: a worker of %s joined (%s)", region_of_pool(pool), pool, worker)

    def remove_worker(self, scheduler: Scheduler, worker: str, *, stimulus_id: str, **kwargs: Any) -> None:
        """A worker removed because it stopped heartbeating (Dask's worker-ttl) marks its pools as silenced: once
        none of a silenced pool's workers is left, its region is unreachable and the work that needs it fails at
        once, naming it, instead of waiting for a scale-up that cannot reach the scheduler either. A worker whose
        connection broke marks its pools as broken: their work fails after the grace. A worker that said goodbye
        (retired, scaled in) clears both: the scheduler heard from its region."""
        pools = self.worker_pools.pop(worker, [])
        if stimulus_id.startswith(BROKEN_STIMULUS):
            self.broken.update((pool, time.monotonic()) for pool in pools)
        if not stimulus_id.startswith(SILENT_STIMULUS):
            if not stimulus_id.startswith(BROKEN_STIMULUS):
                for pool in pools:
                    self.broken.pop(pool, None)
                    self.silenced.pop(pool, None)
            return
        from distributed.scheduler import heartbeat_interval

        # What Dask waited: its setting, but at least ten heartbeats of a cluster this size (check_worker_ttl).
        ttl = max(float(scheduler.worker_ttl or 0), 10 * heartbeat_interval(len(scheduler.workers) + 1))
        for pool in pools:
            self.silenced[pool] = (time.monotonic(), ttl)
            logger.warning("%s of %s stopped answering heartbeats for %.0f s and was removed", worker, pool, ttl)

    # ------------------------------------------------------------------------------------- routing
    def update_graph(self, scheduler: Scheduler, *, keys: set[Any], tasks: list[Any], **kwargs: Any) -> None:
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is not None:
                self._route(ts)

    def _regions(self, ts: TaskState) -> frozenset[str]:
        """The regions whose data `ts` depends on, memoised. An explicit post-order walk: a task's regions
        are computed only after all of its dependencies' (graphs are deeper than Python's recursion limit)."""
        stack: list[tuple[TaskState, bool]] = [(ts, False)]
        while stack:
            node, dependencies_done = stack.pop()
            if node.key in self.regions:
                continue
            if dependencies_done:
                reads = own_regions(node)
                found = set(reads)
                for dependency in node.dependencies:
                    found |= self.regions[dependency.key]
                self.reads[node.key] = reads
                self.regions[node.key] = frozenset(found)
            else:
                stack.append((node, True))
                stack.extend((d, False) for d in node.dependencies if d.key not in self.regions)
        return self.regions[ts.key]

    def _route(self, ts: TaskState) -> None:
        regions = self._regions(ts)  # also when only observing: the audit needs them
        reads = self.reads[ts.key]
        if len(regions) > 1 and len(reads) != 1:
            self.combiners[ts.key] = self.combine_pool
        if not self.route or ts.resource_restrictions or not regions:
            return  # the client's explicit choice, or no regional data involved
        unknown = sorted((reads or regions) - self.known_regions())
        if unknown:  # no worker offers such a pool: fail_unrunnable_tasks fails it, naming the region
            ts.resource_restrictions = {pool_of_region(unknown[0]): 1}
        elif len(reads) == 1 or len(regions) == 1:
            ts.resource_restrictions = {pool_of_region(next(iter(reads or regions))): 1}
        elif len(reads) > 1:
            logger.warning("task %s holds data of several regions (%s): it cannot run next to all of it",
                           ts.key, ", ".join(sorted(reads)))
        elif self.combine_pool:
            ts.resource_restrictions = {self.combine_pool: 1}
        elif all(dependency.state == "memory" for dependency in ts.dependencies):
            self._place_combining(ts)

    def _place_combining(self, ts: TaskState) -> None:
        """Run a combining task (inputs ready) in the pool that holds the most bytes of its inputs."""
        held: dict[str, int] = defaultdict(int)
        for dependency in ts.dependencies:
            holders = sorted(dependency.who_has or (), key=lambda ws: ws.address)
            pools = pools_of(holders[0]) if holders else []
            if pools:
                held[pools[0]] += dependency.get_nbytes()
        if held:
            pool = max(sorted(held), key=held.__getitem__)
            ts.resource_restrictions = {pool: 1}
            self.combiners[ts.key] = pool

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        if finish == "memory":
            if start == "processing":
                self._record(key, kwargs.get("worker"))
            ts = scheduler.tasks.get(key)
            if ts is not None and self.route and not self.combine_pool:
                for dependent in ts.dependents:  # a combining task whose inputs are now all ready
                    if (dependent.key in self.combiners and self.combiners[dependent.key] is None
                            and not dependent.waiting_on and not dependent.resource_restrictions):
                        self._place_combining(dependent)
        elif finish == "forgotten":
            for memo in (self.regions, self.reads, self.combiners, self.waiting_since):
                memo.pop(key, None)

    def _keep_shuffle_in_its_pool(self, barrier: TaskState) -> None:
        """P2P (rechunk, shuffle, merge) pins every output task to a worker it picks among the barrier's worker
        restrictions, or among all workers; restricting the barrier to its pool's live workers keeps them all in
        the pool. Called each time a worker asks for the shuffle, before the first ask creates it. A shuffle
        combining regions without a combining pool goes to the pool of most of its inputs (counted in tasks
        restricted to a pool: their bytes are not known yet), so that only the other regions' data crosses."""
        assert self.scheduler is not None
        pools = [name for name in barrier.resource_restrictions or {} if is_pool(name)]
        if not pools and barrier.key in self.combiners and self.combiners[barrier.key] is None:
            inputs = _input_pools(barrier)
            if inputs:
                pool = max(sorted(set(inputs)), key=inputs.count)
                barrier.resource_restrictions = {pool: 1}
                self.combiners[barrier.key] = pool
                pools = [pool]
        if not pools:
            return
        workers = {ws.address for ws in self.scheduler.running if pools[0] in ws.resources}
        if workers:
            barrier.worker_restrictions = workers

    def _record(self, key: Any, worker: str | None) -> None:
        assert self.scheduler is not None
        pools = pools_of(self.scheduler.workers.get(worker) if worker else None)
        regions, reads = self.regions.get(key, frozenset()), self.reads.get(key, frozenset())
        unknown = bool((regions | reads) - self.known_regions())
        combining = key in self.combiners  # set by _route for a task that combines regions
        expected: str | None = None
        if len(reads) == 1:
            expected = pool_of_region(next(iter(reads)))
        elif len(regions) == 1:
            expected = pool_of_region(next(iter(regions)))
        elif combining:
            expected = self.combiners[key]
        ts = self.scheduler.tasks.get(key)
        nbytes, wanted = (max(ts.nbytes, 0), bool(ts.who_wants)) if ts is not None else (0, False)
        self.placements.append(Placement(time.time(), str(key), tuple(sorted(regions)), tuple(sorted(reads)),
                                         expected, unknown or len(reads) > 1, combining,
                                         pools[0] if pools else None, worker, nbytes, wanted))

    def placements_since(self, since: float) -> list[Placement]:
        """Every task finished since `since`, with where it had to run and where it ran."""
        return [p for p in self.placements if p.time >= since]

    # ---------------------------------------------------------------------------------- unrunnable tasks
    def fail_unrunnable_tasks(self) -> None:
        """Fail tasks in `no-worker` whose restrictions no live worker meets, and no scalable pool will, once they
        have waited their timeout."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        self.seen_pools |= live_pools(scheduler)
        if not scheduler.unrunnable:
            self.waiting_since.clear()
            return
        offers = self._offers(scheduler)
        now, failed = time.monotonic(), {}
        for ts in list(scheduler.unrunnable):
            verdict = self._why_unrunnable(ts, offers)
            if verdict is None:
                self.waiting_since.pop(ts.key, None)
                continue
            timeout, error = verdict
            if now - self.waiting_since.setdefault(ts.key, now) >= timeout:
                failed[ts.key] = error
        for key, error in failed.items():
            self.waiting_since.pop(key, None)
            state = scheduler.tasks.get(key)
            if state is not None and state.state == "no-worker":
                logger.warning("failing %s: %s", key, error)
                fail_task(scheduler, key, error, f"dask-regions-unrunnable-{time.time()}")

    @staticmethod
    def _offers(scheduler: Scheduler) -> dict[str, float]:
        """Resource -> the most any one live worker offers."""
        offers: dict[str, float] = {}
        for worker in scheduler.workers.values():
            for name, amount in worker.resources.items():
                offers[name] = max(offers.get(name, 0.0), amount)
        return offers

    def _why_unrunnable(self, ts: TaskState, offers: dict[str, float]) -> tuple[float, Exception] | None:
        """(how long it may wait, the error to fail it with), or None while it may run or wait."""
        scheduler = self.scheduler
        demand = scheduler.plugins.get(DEMAND_PLUGIN) if scheduler is not None else None
        alive = ", ".join(sorted(live_pools(scheduler))) if scheduler is not None else ""
        alive = alive or "none"
        for resource, amount in (ts.resource_restrictions or {}).items():
            if offers.get(resource, 0) >= amount:
                continue
            offered = ", ".join(f"{name}={value:g}" for name, value in sorted(offers.items())) or "nothing"
            asked = f"{resource}={amount:g}"
            region = region_of_pool(resource)
            known = self.known_regions()
            if not is_pool(resource) or region not in known:
                what = (f"region {region} is not a configured region" if is_pool(resource)
                        else f"{resource} is not a pool (pools are named pool-<region>)")
                return self.missing_pool_timeout, UnrunnableTaskError(
                    f"task {ts.key!r} asks for {asked}, but {what}; configured regions: "
                    f"{', '.join(sorted(known)) or 'none'}; each worker offers at most: {offered}")
            if offers.get(resource):  # its workers are alive but each offers fewer slots than asked
                return self.missing_pool_timeout, UnrunnableTaskError(
                    f"task {ts.key!r} asks for {asked}, but each worker of {resource} offers "
                    f"{offers[resource]:g}; ask for at most that many")
            if resource in self.silenced and self._lost_with(ts, self.silenced[resource][0]):
                return 0.0, self._unreachable(region, resource)
            if isinstance(demand, PoolDemand) and demand.scalable(resource):
                if (resource in self.broken and self._lost_with(ts, self.broken[resource])
                        and self._grace() < demand.settings.scale_up_timeout):
                    return self._grace(), self._broken_off(region, resource)  # not a pool scaling up from zero
                if amount <= demand.slots_per_worker(resource):
                    return max(self.missing_pool_timeout, demand.settings.scale_up_timeout), MissingPoolError(
                        f"no live worker in region {region} ({resource}) after waiting "
                        f"{demand.settings.scale_up_timeout:.0f} s for it to scale up; live pools: {alive}")
                return self.missing_pool_timeout, UnrunnableTaskError(
                    f"task {ts.key!r} asks for {asked}, but a worker of {resource} offers "
                    f"{demand.slots_per_worker(resource):g}; ask for at most that many")
            return self.missing_pool_timeout, MissingPoolError(
                f"no live worker in region {region} ({resource}) for {self.missing_pool_timeout:.0f} s; "
                f"live pools: {alive}")
        return self._why_pinned_unrunnable(ts)

    def _unreachable(self, region: str, pool: str) -> RegionUnreachableError:
        when, ttl = self.silenced[pool]
        return RegionUnreachableError(
            f"region {region} is unreachable: the workers of {pool} stopped answering the scheduler's heartbeats for "
            f"over {ttl:.0f} s (distributed.scheduler.worker-ttl, the platform's grace) and were removed at "
            f"{_utc(when)}. Work that needs {region} fails; work that needs only "
            f"other regions goes on. Its pool rejoins by itself when its link is back: rerun then")

    def _lost_with(self, ts: TaskState, lost: float) -> bool:
        """Whether `ts` was waiting when its region was lost, or came within the grace after: work submitted later
        waits as for any empty pool (a pool scaled to zero after a cut must be able to grow again)."""
        return self.waiting_since.get(ts.key, time.monotonic()) <= lost + self._grace()

    def _grace(self) -> float:
        """The platform's grace for a silent region: Dask's worker-ttl (the stack's client.regionGraceSeconds)."""
        return float(self.scheduler.worker_ttl or 0) if self.scheduler is not None else 0.0

    def _broken_off(self, region: str, pool: str) -> RegionUnreachableError:
        return RegionUnreachableError(
            f"region {region} is unreachable: the connections of {pool}'s workers to the scheduler broke at "
            f"{_utc(self.broken[pool])} and no worker of it has joined for "
            f"{self._grace():.0f} s (distributed.scheduler.worker-ttl, the platform's grace). Work that needs "
            f"{region} fails; work that needs only other regions goes on. Its pool rejoins by itself when its link "
            "is back: rerun then")

    def _why_pinned_unrunnable(self, ts: TaskState) -> tuple[float, Exception] | None:
        """A task pinned to workers (by P2P, or a client's `workers=`) none of which offers its resources."""
        assert self.scheduler is not None
        if not ts.worker_restrictions or ts.loose_restrictions:
            return None
        pinned = [ws for ws in self.scheduler.workers.values()
                  if ws.address in ts.worker_restrictions or ws.host in ts.worker_restrictions]
        needs = ts.resource_restrictions or {}
        if any(all(ws.resources.get(name, 0) >= amount for name, amount in needs.items()) for ws in pinned):
            return None
        offer = "; ".join(f"{ws.address} offers {_amounts(ws.resources)}" for ws in pinned) or "none of them is alive"
        asked = _amounts(needs)
        return self.missing_pool_timeout, UnrunnableTaskError(
            f"task {ts.key!r} is pinned to workers {', '.join(sorted(ts.worker_restrictions))} and asks for {asked}, "
            f"but no live worker meets both ({offer}); a task pinned to workers by an extension (P2P) or the client "
            "must be pinned within its region's pool")


def _utc(monotonic: float) -> str:
    """A time on the monotonic clock as the wall-clock time of day, for messages."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(time.time() - (time.monotonic() - monotonic)))


def _input_pools(ts: TaskState, limit: int = 100_000) -> list[str]:
    """The pool of each task below `ts` that is restricted to one, not looking below those (at most `limit`
    tasks): which regions a combining task's inputs come from, and how many tasks of each."""
    found, seen, stack = [], {ts}, list(ts.dependencies)
    while stack and len(seen) < limit:
        task = stack.pop()
        if task in seen:
            continue
        seen.add(task)
        pools = [name for name in task.resource_restrictions or {} if is_pool(name)]
        if pools:
            found.append(pools[0])
        else:
            stack.extend(task.dependencies)
    return found


def _amounts(resources: dict[str, float]) -> str:
    return ", ".join(f"{name}={amount:g}" for name, amount in sorted(resources.items())) or "nothing"


def keep_retired_data_in_its_pool() -> None:
    """Graceful retirement (scale-in) copies a worker's unique data to any worker. Make it copy only to live
    workers of the retiring worker's own pool; with none left, the retirement is refused (the data stays in
    its region, and Dask recomputes it there if the worker is then lost)."""

    def peers(scheduler: Scheduler, retiring: WorkerState | None) -> set[WorkerState] | None:
        pools = set(pools_of(retiring))
        if not pools:
            return None
        return {ws for ws in scheduler.running if ws is not retiring and pools & set(ws.resources)}

    narrow_retirement(peers)


class ConnectionWarmer(SchedulerPlugin):
    """Opens the scheduler's connection to each worker as it joins, and leaves it in the scheduler's pool. The
    first time the scheduler fetches a result from a worker (for the client: an opened dataset, a map) it would
    otherwise open that connection then: TCP, TLS and Dask's handshake, three round trips across the WAN from a
    worker region before the one that carries the data."""

    name = WARMER_NAME

    def __init__(self) -> None:
        self.warming: set[asyncio.Task[None]] = set()  # held until done (the event loop keeps weak references)
        self.warmed = 0

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        task = asyncio.ensure_future(self._warm(scheduler, worker))
        self.warming.add(task)
        task.add_done_callback(self.warming.discard)

    async def _warm(self, scheduler: Scheduler, worker: str) -> None:
        try:
            comm = await scheduler.rpc.connect(worker)
        except (OSError, RuntimeError) as error:  # the worker left, or the scheduler is closing: nothing to warm
            logger.debug("could not open a connection to %s ahead of use: %s", worker, error)
            return
        scheduler.rpc.reuse(worker, comm)
        self.warmed += 1


def dask_setup(scheduler: Scheduler) -> None:
    """Entry point for `dask scheduler --preload dask_regions.routing`; stops the scheduler if it cannot start
    (dask_regions.startup): a scheduler without its router would run tasks unpinned."""
    start_preload("dask_regions.routing", lambda: _setup(scheduler))


def _setup(scheduler: Scheduler) -> None:
    keep_retired_data_in_its_pool()
    router = RegionRouter(regions=settings.regions(settings.get("regions")),
                          combine_pool=settings.get("combine-pool"),
                          missing_pool_timeout=settings.seconds("missing-pool-timeout"), route=settings.flag("route"))
    scheduler.add_plugin(router)
    if settings.flag("warm-connections"):
        scheduler.add_plugin(ConnectionWarmer())
    serve_health(scheduler)
