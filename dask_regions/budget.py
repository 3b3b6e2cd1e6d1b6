"""The crossing budget: a computation predicted to move more bytes across regions than
`dask-regions.crossing-budget` (between pools and from pools to the client) is refused before its graph is sent,
with an OverBudgetError naming its largest crossing. Nothing reaches the scheduler, so the cluster is as it was.

The prediction is `dask_regions.explain`'s, made on the graph exactly as the client is about to send it. Every
client gets the check as a client preload (`distributed.client.preload: [dask_regions.budget]`, which the notebook
kernel sets) or from `dask_regions.connect()`. With no budget (the default) a graph is sent as it would be
without the check, and nothing is asked of the scheduler.
"""

from __future__ import annotations

from typing import Any

from dask.utils import format_bytes

from dask_regions import internals, settings
from dask_regions.errors import OverBudgetError
from dask_regions.explain import explain_graph

KEY = "crossing-budget"
KEY_PATH = f"{settings.PREFIX}.{KEY}"  # as dask.config.set takes it


def dask_setup(client: Any) -> None:
    """Dask's client preload entry point."""
    guard(client)


def guard(client: Any) -> None:
    """Check every graph `client` sends against the budget (once per client, whatever the number of calls)."""
    internals.before_graph_sent(client, lambda expression, keys: check(client, expression, keys))


def check(client: Any, expression: Any, keys: list[Any]) -> None:
    """Refuse `expression` when its predicted bytes across regions exceed the budget."""
    budget = settings.size(settings.get(KEY), KEY)
    if budget is None:
        return
    if client.asynchronous:  # the prediction asks the scheduler, which an event loop's own thread cannot wait on
        raise OverBudgetError(f"{settings.name(KEY)} is set, and it is checked for synchronous clients only. Fix: "
                              "compute with a synchronous client, or unset the budget and use "
                              "dask_regions.explain() before computing")
    predicted = explain_graph(client, expression, keys)
    total = predicted.bytes_leaving_pools
    if total <= budget:
        return
    largest = predicted.largest_crossing
    where = f"{largest[0][0]} -> {largest[0][1]} {format_bytes(largest[1])}" if largest else "none"
    raise OverBudgetError(f"this computation would move {format_bytes(total)} across regions, over "
                          f"{settings.name(KEY)}={format_bytes(budget)}; its largest crossing: {where}. Nothing was "
                          "sent. Fix: reduce each region's data in its region before combining (dask_regions.explain "
                          "shows every crossing), or raise the budget")
