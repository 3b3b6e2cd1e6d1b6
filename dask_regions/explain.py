"""`dask_regions.explain(client, obj)`: where a computation would run and what would cross regions, before it runs.

The router's own decision: a RegionRouter set up as the scheduler's (its configured regions, its combining pool,
the pools it knows) routes stand-ins of the graph's tasks in dependency order, as the scheduler routes the real
ones, the combining rule included (as AWS deploys: the pool holding the most bytes of a combining task's inputs).
A task without a region runs, as Dask would put it, where the most bytes of its inputs are.

Bytes are estimated from the graph itself: every array layer records its chunks and dtype, so each block's size is
known without computing; a task of a layer that records none is taken as large as its largest input. What crosses:
each input computed in another pool than its task's, once per pair of tasks, and every result the client gathers,
from the pool that computed it. Prices as the audit's (dask_regions.audit).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dask._expr import FinalizeCompute
from dask._task_spec import convert_legacy_graph
from dask.base import collections_to_expr
from dask.core import flatten

from dask_regions.audit import CLIENT, EGRESS_USD_PER_GB_SOURCE, egress_price
from dask_regions.demand import pool_demand
from dask_regions.errors import ConnectError
from dask_regions.routing import RegionRouter
from dask_regions.startup import missing_message, platform_on_scheduler
from platform_facts import is_pool, region_of_pool


@dataclass
class Explanation:
    pools: dict[Any, str | None]  # task key -> the pool it would run in (None: anywhere, it reads no region)
    crossing: dict[tuple[str, str], int]  # (from pool, to pool) -> estimated bytes, between pools
    to_client: dict[str, int]  # pool -> estimated bytes of the results the client gathers from it
    cost_usd: dict[tuple[str, str], float] = field(default_factory=dict)  # (from pool, to pool or "client") -> USD

    @property
    def bytes_across_regions(self) -> int:
        return sum(self.crossing.values())

    @property
    def bytes_leaving_pools(self) -> int:
        """Between pools and from pools to the client: what the crossing budget limits."""
        return self.bytes_across_regions + sum(self.to_client.values())

    @property
    def largest_crossing(self) -> tuple[tuple[str, str], int] | None:
        pairs = {**self.crossing, **{(pool, CLIENT): size for pool, size in self.to_client.items()}}
        return max(pairs.items(), key=lambda item: (item[1], item[0])) if pairs else None

    def table(self) -> str:
        placed: dict[str, int] = defaultdict(int)
        for pool in self.pools.values():
            placed[pool or "(anywhere)"] += 1
        lines = [f"tasks: {len(self.pools)} (estimated before running)", "pool                      tasks"]
        lines += [f"{pool:<25} {count:>6}" for pool, count in sorted(placed.items())]
        lines.append("from -> to                                     bytes   est. USD")
        rows = {**self.crossing, **{(pool, CLIENT): size for pool, size in self.to_client.items()}}
        for (source, destination), size in sorted(rows.items()):
            lines.append(f"{source + ' -> ' + destination:<44} {size:>9,} {self.cost_usd[(source, destination)]:>9.6f}")
        if not rows:
            lines.append("(nothing would cross)")
        lines.append(f"prices: {EGRESS_USD_PER_GB_SOURCE}; to the client: priced as leaving the pool's region")
        return "\n".join(lines)


class _Worker:
    """A stand-in for the worker that holds a planned task's result: its pool is all the router reads."""

    def __init__(self, pool: str) -> None:
        self.address, self.resources = pool, {pool: 1.0}


class _Planned:
    """What of a TaskState the router reads, for a task that was not submitted."""

    def __init__(self, key: Any, run_spec: Any, nbytes: int | None) -> None:
        self.key, self.run_spec, self.nbytes = key, run_spec, nbytes
        self.dependencies: set[_Planned] = set()
        self.resource_restrictions: dict[str, float] | None = None
        self.state, self.who_has = "released", set[_Worker]()
        self.waiting_on: set[_Planned] = set()

    def get_nbytes(self) -> int:
        return self.nbytes or 0


def explain(client: Any, obj: Any) -> Explanation:
    """Predict, without computing `obj` (a Dask or xarray collection): the pool of every task, the bytes that
    would cross between pools and to the client, and their estimated egress cost."""
    expression, outputs = _as_the_scheduler_gets_it(obj)
    return explain_graph(client, expression, outputs, _result_nbytes(obj))


def explain_graph(client: Any, expression: Any, outputs: list[Any], result_nbytes: int | None = None) -> Explanation:
    """The same prediction for a graph as a client sends it (an optimised expression and its output keys);
    `result_nbytes`: the result's exact size when known, else the outputs' estimated sizes are used."""
    found = client.run_on_scheduler(platform_on_scheduler)
    if found["router"] is None:  # nothing routes on this scheduler: there is no decision to predict
        raise ConnectError(missing_message(client.scheduler.address, ["dask_regions.routing"]))
    router = _router_like_the_schedulers(client, found["router"])
    planned = _stand_ins(dict(expression.__dask_graph__()), _block_sizes_of(expression))
    for node in _in_dependency_order(planned):
        router._route(node)
        pool = _pool_of(node)
        if pool is None and node.dependencies:  # no region: where the most bytes of its inputs are
            held = [(d.get_nbytes(), _pool_of(d)) for d in node.dependencies if _pool_of(d)]
            pool = max(held)[1] if held else None
        if node.nbytes is None:  # a layer that records no chunks, or a fused task (fusion renames it)
            node.nbytes = max((d.get_nbytes() for d in node.dependencies), default=0)
        node.state, node.who_has = "memory", {_Worker(pool)} if pool else set()
        node.pool = pool  # type: ignore[attr-defined]
    return _explanation(planned, [key for key in outputs if key in planned], result_nbytes)


def _result_nbytes(obj: Any) -> int | None:
    """What the client gathers, exactly: the result's size (an xarray Dataset's data variables; its coordinates
    are in the client already)."""
    if hasattr(obj, "data_vars"):
        return int(sum(variable.nbytes for variable in obj.data_vars.values()))
    size = getattr(obj, "nbytes", None)
    return int(size) if isinstance(size, int | np.integer) else None


def _as_the_scheduler_gets_it(obj: Any) -> tuple[Any, list[Any]]:
    """The expression (optimised: its graph fused as the scheduler will run it) and output keys `Client.compute`
    sends."""

    expr = FinalizeCompute(collections_to_expr([obj], optimize_graph=True)).optimize()  # type: ignore[no-untyped-call]
    return expr, list(flatten(expr.__dask_keys__()))  # type: ignore[no-untyped-call]


def _block_sizes_of(expression: Any) -> dict[Any, int]:
    """Block sizes of every array layer the expression holds (its graphs as the collections built them)."""
    sizes: dict[Any, int] = {}
    for node in expression.walk():
        graph = getattr(node, "hlg", None)
        if graph is not None:
            sizes |= _block_sizes(graph)
    return sizes


def _router_like_the_schedulers(client: Any, described: dict[str, Any]) -> Any:

    router = RegionRouter(regions=described["regions"], combine_pool=described["combine_pool"],
                          missing_pool_timeout=described["missing_pool_timeout"], route=True)
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    pools = {name for w in workers for name in w.get("resources", {})} | set(pool_demand(client))
    router.seen_pools = {pool for pool in pools if is_pool(pool)}
    return router


def _stand_ins(graph: dict[Any, Any], sizes: dict[Any, int]) -> dict[Any, _Planned]:

    tasks = convert_legacy_graph(graph)
    planned = {key: _Planned(key, task, sizes.get(key)) for key, task in tasks.items()}
    for key, task in tasks.items():
        planned[key].dependencies = {planned[d] for d in task.dependencies if d in planned}
    return planned


def _block_sizes(graph: Any) -> dict[Any, int]:
    """Key -> bytes of its block, for every layer that records its array's chunks and dtype."""
    sizes = {}
    for name, layer in getattr(graph, "layers", {}).items():
        info = getattr(layer, "collection_annotations", None) or {}
        chunks, dtype = info.get("chunks"), info.get("dtype")
        if not chunks or dtype is None:
            continue
        itemsize = np.dtype(dtype).itemsize
        for key in layer.get_output_keys():
            index = key[1:] if isinstance(key, tuple) and key[0] == name else ()
            if len(index) == len(chunks) and all(isinstance(i, int) and i < len(c)
                                                 for i, c in zip(index, chunks, strict=True)):
                sizes[key] = itemsize * math.prod(c[i] for i, c in zip(index, chunks, strict=True))
    return sizes


def _in_dependency_order(planned: dict[Any, _Planned]) -> list[_Planned]:
    """Every task after all of its inputs (an explicit walk: graphs are deeper than Python's recursion limit)."""
    order, done = [], set()
    for start in planned.values():
        stack = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node.key in done:
                continue
            if expanded:
                done.add(node.key)
                order.append(node)
            else:
                stack.append((node, True))
                stack.extend((d, False) for d in node.dependencies if d.key not in done)
    return order


def _pool_of(node: _Planned) -> str | None:
    pools = sorted(name for name in node.resource_restrictions or {} if is_pool(name))
    return pools[0] if pools else getattr(node, "pool", None)


def _explanation(planned: dict[Any, _Planned], outputs: list[Any], result_nbytes: int | None) -> Explanation:
    crossing: dict[tuple[str, str], int] = defaultdict(int)
    moved = set()  # (input, pool): a result goes to another pool once, whatever number of its tasks need it
    for node in planned.values():
        for dependency in node.dependencies:
            source, destination = _pool_of(dependency), _pool_of(node)
            if source and destination and source != destination and (dependency.key, destination) not in moved:
                moved.add((dependency.key, destination))
                crossing[(source, destination)] += dependency.get_nbytes()
    to_client: dict[str, int] = defaultdict(int)
    estimated = sum(planned[key].get_nbytes() for key in outputs) or 1
    for key in outputs:  # the result's exact size, shared among the pools of its parts by their estimated sizes
        pool = _pool_of(planned[key])
        if pool:
            share = planned[key].get_nbytes() / estimated if result_nbytes is not None else 1.0
            to_client[pool] += round(share * (result_nbytes if result_nbytes is not None
                                              else planned[key].get_nbytes()))
    cost = {pair: size / 1e9 * egress_price(region_of_pool(pair[0]), None, region_of_pool(pair[1]))
            for pair, size in crossing.items()}
    cost |= {(pool, CLIENT): size / 1e9 * egress_price(region_of_pool(pool)) for pool, size in to_client.items()}
    return Explanation({key: _pool_of(node) for key, node in planned.items()}, dict(crossing), dict(to_client), cost)
