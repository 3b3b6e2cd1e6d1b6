"""PoolDemand: how many workers each regional pool needs now, computed on the scheduler and published per
region, so that every region scales on its own work (CPU averages cannot see queued work, nor idle regions).

Every `interval` seconds, for each pool (`pool-<region>`): the tasks restricted to it that are processing on
its workers, queued, or waiting for a worker (`no-worker`: the pool is empty or full), and their expected
duration (Dask's measured average per task prefix, or its default for unknown tasks). The raw need is enough
workers to finish that work within `target_duration` seconds, never more than one per `threads` tasks, and at
least one while there is any. Smoothing, so that it does not flap: the figure is the highest raw need of the
last `scale_in_window` seconds (it rises at once and falls only after the window); once a pool has had no work
for a window, one warm worker is kept until `idle_timeout`, then the figure is 0. A pool whose workers hold
results a client still wants never drops below one (results stay in their region).

Configured pools (dask config `dask_regions.demand.pools`, set by the platform) carry their sizing: workers per
ECS task, task bounds and idle timeout; the published figure is then in tasks, within those bounds. Publishers:
`cloudwatch` (metric `DesiredTasks` in the pool's region, dimensions Stack and Pool) or none. A failed publish
is logged and retried on the next round; it never raises into the scheduler.

Load it in the scheduler: `dask scheduler --preload dask_regions.demand`; read it from a client with
`pool_demand(client)`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.scheduler import Scheduler, TaskState, WorkerState

from dask_regions import settings
from dask_regions.internals import prefix_duration
from dask_regions.startup import DEMAND_PLUGIN, serve_health, start_preload
from platform_facts import METRIC_NAME, METRIC_NAMESPACE, is_pool, region_of_pool

logger = logging.getLogger("dask_regions.demand")
PLUGIN_NAME = DEMAND_PLUGIN
HANDLER = "dask_regions_demand"
BOUNDS_HANDLER = "dask_regions_bounds"


@dataclass(frozen=True)
class PoolSizing:
    """How a pool's workers are packaged (an ECS task runs `workers_per_task` worker processes)."""

    workers_per_task: int = 1
    threads_per_worker: int = 1
    min_tasks: int = 0
    max_tasks: int = 1_000_000
    idle_timeout: float | None = None  # seconds; None: the plugin's default
    quota: str = ""  # a user's own cluster (client.users): the quota that sets max_tasks, as the stack config names it


@dataclass(frozen=True)
class DemandSettings:
    """The plugin's timings (seconds) and the configured pools; by default, `dask-regions.demand` in Dask's config
    (its defaults: dask_regions/dask_regions.yaml)."""

    interval: float = field(default_factory=lambda: settings.seconds("demand.interval"))
    # seconds the queued work of a pool may take with the workers asked for
    target_duration: float = field(default_factory=lambda: settings.seconds("demand.target-duration"))
    scale_in_window: float = field(default_factory=lambda: settings.seconds("demand.scale-in-window"))
    idle_timeout: float = field(default_factory=lambda: settings.seconds("demand.idle-timeout"))
    # how long the router lets tasks wait for an empty configured pool
    scale_up_timeout: float = field(default_factory=lambda: settings.seconds("demand.scale-up-timeout"))
    pools: Mapping[str, PoolSizing] = field(default_factory=dict)

    @classmethod
    def from_config(cls) -> DemandSettings:
        pools = {name: PoolSizing(**{k.replace("-", "_"): v for k, v in sizing.items()})
                 for name, sizing in (settings.get("demand.pools") or {}).items()}
        return cls(pools=pools)


@dataclass
class PoolFigure:
    """One pool's state and the figure published for it."""

    pool: str
    region: str
    tasks: int  # tasks restricted to the pool: processing, queued or waiting for a worker
    expected_seconds: float
    workers: int
    threads: int
    raw_workers: int  # need now, before smoothing
    workers_needed: int  # after smoothing and the idle timeout
    desired_tasks: int  # in ECS tasks, within the pool's bounds
    min_tasks: int  # the bounds in force: the deployed ones, or narrower ones a client asked for (scale, adapt)
    max_tasks: int
    idle_seconds: float
    holds_results: bool
    scalable: bool  # configured: grows from zero on demand


class Publisher(Protocol):
    def publish(self, figures: list[PoolFigure]) -> None: ...


class CloudWatchPublisher:
    """Puts `DesiredTasks` per pool into CloudWatch in the pool's own region (where its scaling policy is)."""

    def __init__(self, stack: str, namespace: str = METRIC_NAMESPACE, attempts: int = 3, backoff: float = 0.5,
                 client_factory: Callable[[str], Any] | None = None) -> None:
        self.stack, self.namespace, self.attempts, self.backoff = stack, namespace, attempts, backoff
        self._factory = client_factory or _cloudwatch_client
        self._clients: dict[str, Any] = {}
        self.failures = 0

    def publish(self, figures: list[PoolFigure]) -> None:
        for figure in figures:
            data = [{"MetricName": METRIC_NAME, "Value": float(figure.desired_tasks), "Unit": "Count",
                     "Dimensions": [{"Name": "Stack", "Value": self.stack}, {"Name": "Pool", "Value": figure.pool}]}]
            for attempt in range(1, self.attempts + 1):
                try:
                    client = self._clients.get(figure.region) or self._factory(figure.region)
                    self._clients[figure.region] = client
                    client.put_metric_data(Namespace=self.namespace, MetricData=data)
                    break
                except Exception as error:  # any failure: log, back off, try again; never raise
                    self._clients.pop(figure.region, None)
                    self.failures += 1
                    logger.warning("publishing the demand of %s to CloudWatch in %s failed (attempt %d of %d): %s",
                                   figure.pool, figure.region, attempt, self.attempts, error)
                    if attempt < self.attempts:
                        time.sleep(self.backoff * 2 ** (attempt - 1))


def _cloudwatch_client(region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("cloudwatch", region_name=region,
                        config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5,
                                      read_timeout=10))


class PoolDemand(SchedulerPlugin):
    name = PLUGIN_NAME

    def __init__(self, settings: DemandSettings | None = None, publisher: Publisher | None = None) -> None:
        self.settings = settings or DemandSettings()
        self.publisher = publisher
        self.scheduler: Scheduler | None = None
        self.figures: dict[str, PoolFigure] = {}
        self.publish_errors = 0
        self._history: dict[str, deque[tuple[float, int]]] = {}
        self._last_busy: dict[str, float] = {}
        self.requested: dict[str, tuple[int, int]] = {}  # pool -> (min, max) tasks a client asked for
        self._callback: Any = None
        self._publishing: asyncio.Task[None] | None = None

    async def start(self, scheduler: Scheduler) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        scheduler.handlers[HANDLER] = self.snapshot
        scheduler.handlers[BOUNDS_HANDLER] = self.set_bounds
        self._callback = PeriodicCallback(self.tick, self.settings.interval * 1000)
        self._callback.start()

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    # --------------------------------------------------------------------------------------- figures
    def scalable(self, pool: str) -> bool:
        """A configured pool that can grow from zero: the router waits for it instead of failing its tasks."""
        sizing = self.settings.pools.get(pool)
        return sizing is not None and sizing.max_tasks > 0

    def slots_per_worker(self, pool: str, workers: list[WorkerState] | None = None) -> float:
        """What one worker of `pool` offers: the most a live one does, or, with none, what the configured sizing
        starts (workers offer one slot per thread)."""
        if workers is None:
            assert self.scheduler is not None
            workers = [ws for ws in self.scheduler.workers.values() if pool in ws.resources]
        if workers:
            return max(ws.resources.get(pool, 0.0) for ws in workers)
        sizing = self.settings.pools.get(pool)
        return float(sizing.threads_per_worker) if sizing else 0.0

    def tick(self) -> None:
        self._compute()
        if self.publisher is not None and (self._publishing is None or self._publishing.done()):
            figures = list(self.figures.values())
            self._publishing = asyncio.ensure_future(self._publish(figures))

    async def _publish(self, figures: list[PoolFigure]) -> None:
        assert self.publisher is not None
        try:  # boto3 blocks: off the event loop, so a slow region never stalls the scheduler
            await asyncio.to_thread(self.publisher.publish, figures)
        except Exception as error:
            self.publish_errors += 1
            logger.warning("publishing pool demand failed: %s", error)

    def _compute(self) -> None:
        """All pools' figures in one pass over the workers and the tasks waiting for one."""
        scheduler = self.scheduler
        assert scheduler is not None
        workers: dict[str, list[WorkerState]] = defaultdict(list)
        for ws in scheduler.workers.values():
            for name in ws.resources:
                if is_pool(name):
                    workers[name].append(ws)
        slots = {pool: self.slots_per_worker(pool, workers[pool]) for pool in set(workers) | set(self.settings.pools)}
        waiting: dict[str, list[TaskState]] = defaultdict(list)
        for ts in itertools.chain(scheduler.unrunnable, scheduler.queued):
            for name, amount in (ts.resource_restrictions or {}).items():
                if amount <= slots.get(name, 0.0):  # a task no worker of the pool can run holds no capacity up
                    waiting[name].append(ts)
        now = time.monotonic()
        self.figures = {pool: self._figure(pool, now, workers[pool], waiting[pool])
                        for pool in sorted(set(workers) | set(self.settings.pools))}

    def _figure(self, pool: str, now: float, workers: list[WorkerState], waiting: list[TaskState]) -> PoolFigure:
        scheduler = self.scheduler
        assert scheduler is not None
        sizing = self.settings.pools.get(pool, PoolSizing())
        pending: list[TaskState] = [ts for ws in workers for ts in ws.processing] + waiting
        # Measured average per task prefix (Dask's own estimate, also used for its occupancy figures).
        seconds = sum(prefix_duration(scheduler, ts.prefix) for ts in pending if ts.prefix is not None)
        threads = round(sum(ws.nthreads for ws in workers) / len(workers)) if workers else sizing.threads_per_worker
        threads = max(threads, 1)
        raw = 0
        if pending:
            raw = min(max(math.ceil(seconds / (self.settings.target_duration * threads)), 1),
                      math.ceil(len(pending) / threads))
            self._last_busy[pool] = now
        history = self._history.setdefault(pool, deque())
        history.append((now, raw))
        while history and history[0][0] < now - self.settings.scale_in_window:
            history.popleft()
        needed = max(value for _, value in history)
        idle = now - self._last_busy.get(pool, now - 10 ** 9)
        idle_timeout = sizing.idle_timeout if sizing.idle_timeout is not None else self.settings.idle_timeout
        # Only an otherwise idle pool needs the (longer) look at the results its workers hold.
        holds = needed == 0 and any(ts.who_wants for ws in workers for ts in ws.has_what)
        recently_busy = pool in self._last_busy and idle < idle_timeout
        if needed == 0 and (holds or (recently_busy and workers)):
            needed = 1  # one warm worker until the idle timeout, or as long as it holds wanted results
        low, high = self.requested.get(pool, (sizing.min_tasks, sizing.max_tasks))
        desired = min(max(math.ceil(needed / sizing.workers_per_task), low), high)
        return PoolFigure(pool=pool, region=region_of_pool(pool), tasks=len(pending), expected_seconds=seconds,
                          workers=len(workers), threads=sum(ws.nthreads for ws in workers), raw_workers=raw,
                          workers_needed=needed, desired_tasks=desired, min_tasks=low, max_tasks=high,
                          idle_seconds=min(idle, 10.0 ** 9),
                          holds_results=holds, scalable=self.scalable(pool))

    def set_bounds(self, comm: Any = None, pool: str = "", minimum: int | None = None,
                   maximum: int | None = None) -> dict[str, Any]:
        """Narrow a configured pool's size to `minimum`..`maximum` workers (the scheduler handler
        `dask_regions_bounds`, behind `Platform.scale` and `Platform.adapt`); both None: the deployed bounds
        again. Within the deployed bounds only: in AWS those are the Auto Scaling group's, which only the stack
        changes. Answers {"error": ...} for a request it refuses, so that the client can say why."""
        sizing = self.settings.pools.get(pool)
        if sizing is None:
            return {"error": f"{pool!r} is no configured pool (configured: {', '.join(sorted(self.settings.pools))})"}
        if minimum is None and maximum is None:
            self.requested.pop(pool, None)
        else:
            per_task = sizing.workers_per_task
            low = sizing.min_tasks if minimum is None else math.ceil(minimum / per_task)
            high = sizing.max_tasks if maximum is None else math.ceil(maximum / per_task)
            if not sizing.min_tasks <= low <= high <= sizing.max_tasks:
                bound = (f"your cluster's {sizing.min_tasks}..{sizing.max_tasks} (workers[].minTasks, and the "
                         f"{sizing.quota}" if sizing.quota else
                         f"the stack's {sizing.min_tasks}..{sizing.max_tasks} (workers[].minTasks and maxTasks")
                return {"error": f"{pool}: {minimum}..{maximum} workers is {low}..{high} tasks of "
                                 f"{per_task} worker(s), outside {bound} in the stack config)"}
            self.requested[pool] = (low, high)
        self._compute()
        return asdict(self.figures[pool])

    def snapshot(self, comm: Any = None) -> dict[str, dict[str, Any]]:
        """The latest figures (the scheduler handler `dask_regions_demand`)."""
        if not self.figures and self.scheduler is not None:  # asked before the first round
            self._compute()
        return {pool: asdict(figure) for pool, figure in self.figures.items()}


def pool_demand(client: Any) -> dict[str, dict[str, Any]]:
    """The scheduler's latest per-pool figures, or {} when the plugin is not loaded."""
    try:
        figures = client.sync(client.scheduler.dask_regions_demand)
    except (KeyError, ValueError, AttributeError):
        return {}
    return dict(figures) if isinstance(figures, dict) else {}  # an unknown handler answers with nothing


def dask_setup(scheduler: Scheduler) -> None:
    """Entry point for `dask scheduler --preload dask_regions.demand`; stops the scheduler if it cannot start
    (dask_regions.startup): without it, pools would not scale to their work."""
    start_preload("dask_regions.demand", lambda: _setup(scheduler))
    serve_health(scheduler)


def _setup(scheduler: Scheduler) -> None:
    configured = DemandSettings.from_config()
    publisher: Publisher | None = None
    if settings.get("demand.publisher") == "cloudwatch":
        publisher = CloudWatchPublisher(stack=str(settings.get("demand.stack")),
                                        namespace=str(settings.get("demand.namespace") or METRIC_NAMESPACE))
    scheduler.add_plugin(PoolDemand(configured, publisher))
