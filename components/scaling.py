"""Demand-driven scaling, shared by the scheduler (what it publishes) and the worker regions (what they scale
on): the dask config the scheduler's demand plugin gets (dask_regions/demand.py), and the step adjustments that
turn the published `DesiredTasks` into an ECS desired count."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from platform_facts import METRIC_NAMESPACE, SCHEDULER_IDLE_SHUTDOWN_VARIABLE, WORKER_TTL_VARIABLE, regions_variable
from stackconfig import WorkerConfig

MAX_STEPS = 20  # step adjustments per scaling policy (Application Auto Scaling limit)
SCALE_UP_TIMEOUT_SECONDS = 900  # an empty pool: EC2 instance start, ECS placement, image pull


def metric_stack(project: str, stack: str, user: str | None = None) -> str:
    """The `Stack` dimension of the metric: two stacks in one account never share a metric, nor two users' clusters
    in one stack (a user's pools scale on their own scheduler's demand)."""
    return f"{project}-{stack}" + (f"/{user}" if user else "")


def demand_pools(workers: Sequence[WorkerConfig],
                 quotas: Mapping[str, tuple[int, str | None]] | None = None) -> dict[str, dict[str, Any]]:
    """Each worker region's pool sizing, as the demand plugin reads it (`dask_regions.demand.pools`). `quotas`: a
    user's own cluster's bound in each region and the quota that sets it (ClientConfig.user_pool_bound), so that
    their `scale()` or `adapt()` beyond it is refused naming the quota."""
    pools: dict[str, dict[str, Any]] = {}
    for w in workers:
        if w.scale_on not in ("demand", "both"):
            continue
        max_tasks, quota = (quotas or {}).get(w.region, (w.max_tasks, None))
        pools[w.pool_name] = {"workers_per_task": w.workers_per_task, "threads_per_worker": w.threads_per_worker,
                              "min_tasks": w.min_tasks, "max_tasks": max_tasks,
                              "idle_timeout": w.idle_timeout_minutes * 60, **({"quota": quota} if quota else {})}
    return pools


def scheduler_environment(project: str, stack: str, workers: Sequence[WorkerConfig],
                          scale_in_window_seconds: int, region_grace_seconds: int,
                          idle: tuple[int, str, str, str] = (0, "", "", ""), user: str | None = None,
                          quotas: Mapping[str, tuple[int, str | None]] | None = None) -> list[dict[str, str]]:
    """Environment of the scheduler container: the router's regions and the demand plugin's settings (dask config
    via DASK_ variables). No combining pool: AWS runs no workers in the client region, so a task that combines
    regions runs in the pool holding most of its inputs (dask_regions.routing). `idle`: (minutes, region, cluster,
    service): the scheduler stops its own service after that many minutes unused (dask_regions.idle); 0: always on.
    `user`: the user whose own cluster this scheduler is (its demand is published for their pools only), `quotas`
    their bound in each worker region (demand_pools)."""
    pools = demand_pools(workers, quotas)
    values = {
        regions_variable("demand.publisher"): "cloudwatch" if pools else "none",
        regions_variable("demand.stack"): metric_stack(project, stack, user),
        regions_variable("demand.namespace"): METRIC_NAMESPACE,
        regions_variable("demand.scale-up-timeout"): str(SCALE_UP_TIMEOUT_SECONDS),
        regions_variable("demand.scale-in-window"): str(scale_in_window_seconds),
        regions_variable("demand.pools"): json.dumps(pools),  # a dict literal to dask's config parser
        # The router's configured regions: data tagged with any other region fails, naming it.
        regions_variable("regions"): json.dumps(sorted({w.region for w in workers})),
        # Connections to workers across the WAN opened as they join, not at the first fetch (dask_regions.routing).
        regions_variable("warm-connections"): "True",
        # A region silent this long is cut off: its workers are removed and the work that needs it fails, naming it.
        WORKER_TTL_VARIABLE: f"{region_grace_seconds}s",
    }
    minutes, region, cluster, service = idle  # the scheduler stops its own service after `minutes` unused
    if minutes:
        values |= {SCHEDULER_IDLE_SHUTDOWN_VARIABLE: f"{minutes} minutes", regions_variable("idle-shutdown.region"):
                   region, regions_variable("idle-shutdown.cluster"): cluster,
                   regions_variable("idle-shutdown.service"): service}
    return [{"name": name, "value": value} for name, value in sorted(values.items())]


def exact_capacity_steps(max_tasks: int) -> list[tuple[float, float | None, int]]:
    """(lower, upper, tasks) intervals of the published figure, relative to an alarm threshold of 0: the
    service gets exactly the tasks asked for, rounded up to the next step when there are more possible counts
    than a policy allows steps."""
    count = min(max_tasks, MAX_STEPS - 1)
    values = sorted({math.ceil(i * max_tasks / count) for i in range(count + 1)}) if count else [0]
    steps: list[tuple[float, float | None, int]] = [(0.0, 1.0, 0)]
    for previous, value in itertools.pairwise(values):
        steps.append((float(previous + 1), float(value + 1) if value < max_tasks else None, value))
    return steps
