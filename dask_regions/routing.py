"""RegionRouter: a scheduler plugin that runs every task next to its data, whatever the client sent.

Client-side annotations do not survive (low-level fusion drops them, and graph optimisation runs on the
scheduler), so the scheduler decides: a task that reads a region's data, or depends only on tasks of one
region, is restricted to that region's pool (`pool-<region>`, asking for one of the slots each worker offers
per thread); a task that combines regions goes to the combining pool when one is configured, or anywhere.
Restrictions a client set explicitly are kept.

Tasks restricted to a pool with no live worker would wait forever: the router fails them after a timeout
with an error naming the region and the pools that are alive.

Load it in the scheduler: `dask scheduler --preload dask_regions.routing`. Configuration (dask config or
environment): `dask_regions.combine_pool` (DASK_DASK_REGIONS__COMBINE_POOL), `dask_regions.missing_pool_timeout`
(seconds, default 30), `dask_regions.route` (default true; false only observes: tasks go wherever plain Dask puts
them and the audit reports where that was, which is how the WAN benchmark measures plain Dask).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import dask
from dask._task_spec import Task  # fused tasks carry their subgraph here
from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.scheduler import Scheduler, TaskState

from dask_regions.demand import PLUGIN_NAME as DEMAND_PLUGIN
from dask_regions.demand import PoolDemand
from dask_regions.errors import MissingPoolError
from dask_regions.keys import POOL_PREFIX, pool_of_region, region_of_key, region_of_pool, region_of_value

logger = logging.getLogger("dask_regions.routing")
PLUGIN_NAME = "dask-regions-router"
CHECK_INTERVAL_SECONDS = 1.0
PLACEMENT_LOG = 200_000  # the newest finished tasks the audit can see


def own_regions(ts: TaskState) -> set[str]:
    """Regions a task itself names: its key, the array its graph node holds, or, for a fused task, the keys and
    arrays of the subgraph fused into it (a region's array node with a single reader is fused away)."""
    spec = ts.run_spec
    nodes: list[tuple[object, object]] = [(ts.key, spec)]
    if isinstance(spec, Task) and spec.has_subgraph() and spec.args and isinstance(spec.args[0], dict):
        nodes += list(spec.args[0].items())
    found = set()
    for key, node in nodes:
        region = region_of_key(key) or region_of_value(getattr(node, "value", None))
        if region:
            found.add(region)
    return found


def live_pools(scheduler: Scheduler) -> set[str]:
    return {name for worker in scheduler.workers.values() for name in worker.resources
            if name.startswith(POOL_PREFIX)}


class RegionRouter(SchedulerPlugin):
    name = PLUGIN_NAME

    def __init__(self, combine_pool: str | None = None, missing_pool_timeout: float = 30.0,
                 route: bool = True) -> None:
        self.combine_pool = combine_pool
        self.route = route
        self.missing_pool_timeout = missing_pool_timeout
        self.regions: dict[Any, frozenset[str]] = {}  # task key -> regions whose data it depends on
        self.placements: deque[tuple[float, str, tuple[str, ...], str | None, str | None]] = deque(
            maxlen=PLACEMENT_LOG)
        self.scheduler: Scheduler | None = None
        self._callback: Any = None

    async def start(self, scheduler: Scheduler) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self._callback = PeriodicCallback(self.fail_tasks_of_missing_pools, CHECK_INTERVAL_SECONDS * 1000)
        self._callback.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

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
                found = own_regions(node)
                for dependency in node.dependencies:
                    found |= self.regions[dependency.key]
                self.regions[node.key] = frozenset(found)
            else:
                stack.append((node, True))
                stack.extend((d, False) for d in node.dependencies if d.key not in self.regions)
        return self.regions[ts.key]

    def _route(self, ts: TaskState) -> None:
        regions = self._regions(ts)  # also when only observing: the audit needs them
        if not self.route or ts.resource_restrictions or not regions:
            return  # the client's explicit choice, or no regional data involved
        if len(regions) == 1:
            ts.resource_restrictions = {pool_of_region(next(iter(regions))): 1}
        elif self.combine_pool:
            ts.resource_restrictions = {self.combine_pool: 1}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and start == "processing" and self.scheduler is not None:
            worker = kwargs.get("worker")
            state = self.scheduler.workers.get(worker) if worker else None
            pools = sorted(p for p in (state.resources if state else {}) if p.startswith(POOL_PREFIX))
            self.placements.append((time.time(), str(key), tuple(sorted(self.regions.get(key, ()))),
                                    pools[0] if pools else None, worker))
        elif finish == "forgotten":
            self.regions.pop(key, None)

    def placements_since(self, since: float) -> list[tuple[float, str, tuple[str, ...], str | None, str | None]]:
        """(time, key, regions of its data, pool of the worker that ran it, worker) for tasks finished since."""
        return [p for p in self.placements if p[0] >= since]

    # ---------------------------------------------------------------------------------- missing pools
    def fail_tasks_of_missing_pools(self) -> None:
        scheduler = self.scheduler
        if scheduler is None or not scheduler.unrunnable:
            return
        alive, now = live_pools(scheduler), time.monotonic()
        demand = scheduler.plugins.get(DEMAND_PLUGIN)  # configured pools scale up from zero: wait longer for them
        waited = getattr(scheduler, "_dask_regions_waiting", {})
        scheduler._dask_regions_waiting = waited  # type: ignore[attr-defined]
        failed: dict[Any, str] = {}
        for ts in list(scheduler.unrunnable):
            missing = [pool for pool in (ts.resource_restrictions or {}) if pool.startswith(POOL_PREFIX)
                       and pool not in alive]
            if not missing:
                waited.pop(ts.key, None)
                continue
            since = waited.setdefault(ts.key, now)
            timeout = self.missing_pool_timeout
            if isinstance(demand, PoolDemand) and all(demand.scalable(pool) for pool in missing):
                timeout = max(timeout, demand.settings.scale_up_timeout)
            if now - since >= timeout:
                failed[ts.key] = (
                    f"no live worker in region {region_of_pool(missing[0])} ({missing[0]}) for "
                    f"{timeout:.0f} s; live pools: {', '.join(sorted(alive)) or 'none'}")
        if failed:
            self._fail(scheduler, failed)
            for key in failed:
                waited.pop(key, None)

    @staticmethod
    def _fail(scheduler: Scheduler, failed: dict[Any, str]) -> None:
        from distributed.core import error_message

        stimulus = f"dask-regions-missing-pool-{time.time()}"
        for key, message in failed.items():
            ts = scheduler.tasks.get(key)
            if ts is None or ts.state != "no-worker":
                continue
            logger.warning("failing %s: %s", key, message)
            error = error_message(MissingPoolError(message))
            # As the scheduler's own stimulus_task_erred does: the public transitions() carries no exception.
            recommendations, client_msgs, worker_msgs = scheduler._transition(
                key, "erred", stimulus, cause=key, exception=error["exception"], traceback=error["traceback"],
                exception_text=error["exception_text"], traceback_text=error["traceback_text"])
            scheduler._transitions(recommendations, client_msgs, worker_msgs, stimulus)
            scheduler.send_all(client_msgs, worker_msgs)


def keep_retired_data_in_its_pool() -> None:
    """Graceful retirement (scale-in) copies a worker's unique data to any worker. Make it copy only to live
    workers of the retiring worker's own pool; with none left, the retirement is refused (the data stays in
    its region, and Dask recomputes it there if the worker is then lost)."""
    from distributed.active_memory_manager import RetireWorker, Suggestion

    if getattr(RetireWorker.run, "_dask_regions", False):
        return
    original = RetireWorker.run

    def run(self: Any) -> Any:
        scheduler = self.manager.scheduler
        retiring = scheduler.workers.get(self.address)
        pools = {name for name in (retiring.resources if retiring else {}) if name.startswith(POOL_PREFIX)}
        suggestions = original(self)
        try:
            suggestion = next(suggestions)
            while True:
                if pools and suggestion.op == "replicate" and suggestion.candidates is None:
                    peers = {ws for ws in scheduler.running if ws is not retiring and pools & set(ws.resources)}
                    suggestion = Suggestion("replicate", suggestion.ts, peers)
                answer = yield suggestion
                suggestion = suggestions.send(answer)
        except StopIteration:
            return

    run._dask_regions = True  # type: ignore[attr-defined]
    RetireWorker.run = run  # type: ignore[method-assign]


def _flag(value: object, name: str) -> bool:
    """A boolean setting, also when it comes from the environment as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"{name}={value!r}: use true or false")


def dask_setup(scheduler: Scheduler) -> None:
    """Entry point for `dask scheduler --preload dask_regions.routing`."""
    keep_retired_data_in_its_pool()
    router = RegionRouter(combine_pool=dask.config.get("dask_regions.combine_pool", None),
                          missing_pool_timeout=float(dask.config.get("dask_regions.missing_pool_timeout", 30)),
                          route=_flag(dask.config.get("dask_regions.route", True), "dask_regions.route"))
    scheduler.add_plugin(router)
