"""Prove where a computation ran and what crossed regions.

Placement comes from the scheduler's router (every finished task, the pool it had to run in and the pool of the
worker that ran it: a task that reads a region's data, depends on one region only, or combines regions by the
combining rule, is checked; one whose placement cannot be proven is counted as ambiguous, never as placed);
bytes between pools from the workers' transfer logs and, for P2P's shards (sent outside the task graph), from what
each worker's P2P sends recorded (dask_regions.shards). Those only count worker-to-worker traffic: a
misplaced task reading another region's storage directly shows up as a misplaced task here, and on network
interface counters (see the WAN benchmark), not as transferred bytes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from dask_regions.errors import ConnectError
from dask_regions.routing import PLUGIN_NAME, Placement
from dask_regions.shards import sent_since
from dask_regions.startup import missing_message, missing_plugins
from platform_facts import is_pool, region_of_pool

# Inter-region data transfer, USD per GB: approximate list prices of the Amazon EC2 on-demand pricing page
# ("Data Transfer OUT From Amazon EC2 To ... another AWS Region"), 0.02 for most pairs in the US and Europe and
# more from other continents, as commonly listed in 2024-2025. Not checked against the live page (this project
# is built offline): a planning estimate, not a bill. Pass your own table (or a negotiated rate) to audit().
EGRESS_USD_PER_GB_SOURCE = ("approximate EC2 inter-region list prices (2024-2025, unverified offline); "
                            "override with audit(prices=...)")
DEFAULT_EGRESS_USD_PER_GB = 0.02
CLIENT = "client"  # where the results a client gathers go (cost_usd's destination for them)
EGRESS_USD_PER_GB_FROM = {"ap-": 0.09, "sa-": 0.138, "af-": 0.147, "me-": 0.11}


def egress_price(source_region: str, table: dict[tuple[str, str], float] | None = None,
                 destination_region: str = "") -> float:
    if table and (source_region, destination_region) in table:
        return table[(source_region, destination_region)]
    return next((price for prefix, price in EGRESS_USD_PER_GB_FROM.items() if source_region.startswith(prefix)),
                DEFAULT_EGRESS_USD_PER_GB)


@dataclass
class Audit:
    tasks: int
    placement: dict[str, int]  # pool -> tasks that ran there
    misplaced: list[tuple[str, str, str | None]]  # (key, expected pool, pool it ran in)
    regional: int  # tasks that had to run in one pool: they read a region's data, depend on it, or combine regions
    bytes_between_pools: dict[tuple[str, str], int]  # (from pool, to pool) -> bytes
    cost_usd: dict[tuple[str, str], float] = field(default_factory=dict)
    # Tasks whose placement cannot be proven: their own spec holds several regions' data, or a region that is not
    # configured. (key, the regions it holds or names, pool it ran in)
    ambiguous: list[tuple[str, tuple[str, ...], str | None]] = field(default_factory=list)
    combining: int = 0  # of `regional`: tasks that combine regions (placed by the combining rule)
    # P2P shards sent between workers, (from pool, to pool) -> bytes, within a pool too; those between pools are
    # also in bytes_between_pools (P2P sends them outside the task graph: the transfer log does not see them)
    shuffled: dict[tuple[str, str], int] = field(default_factory=dict)
    # Results a client wanted, pool -> bytes: what a client gathers leaves the pool for the client (the notebook,
    # in the client region), priced as leaving the pool's region (cost_usd[(pool, CLIENT)])
    to_client: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_across_regions(self) -> int:
        return sum(self.bytes_between_pools.values())

    @property
    def proven(self) -> bool:
        """Every task that had to run in a pool ran there, and none was ambiguous."""
        return not self.misplaced and not self.ambiguous

    def table(self) -> str:
        verdict = f"misplaced: {len(self.misplaced)}"
        if self.ambiguous:  # "misplaced: 0" would claim what was not checked
            verdict += f" of those checked, ambiguous (unchecked): {len(self.ambiguous)}"
        lines = [f"tasks: {self.tasks}   placed by region: {self.regional} (combining: {self.combining})   {verdict}"]
        lines += [f"  misplaced {key}: expected {expected}, ran in {pool}"
                  for key, expected, pool in self.misplaced[:5]]
        lines += [f"  ambiguous {key}: regions {', '.join(regions)}, ran in {pool}"
                  for key, regions, pool in self.ambiguous[:5]]
        lines.append("pool                      tasks")
        lines += [f"{pool:<25} {count:>6}" for pool, count in sorted(self.placement.items())]
        lines.append("from -> to                                     bytes   est. USD")
        for (source, destination), size in sorted(self.bytes_between_pools.items()):
            lines.append(f"{source + ' -> ' + destination:<44} {size:>9,} {self.cost_usd[(source, destination)]:>9.6f}")
        for pool, size in sorted(self.to_client.items()):
            lines.append(f"{pool + ' -> ' + CLIENT:<44} {size:>9,} {self.cost_usd[(pool, CLIENT)]:>9.6f}")
        if not self.bytes_between_pools:
            lines.append("(nothing crossed between pools)")
        across = sum(size for (source, destination), size in self.shuffled.items() if source != destination)
        if self.shuffled:
            lines.append(f"of which P2P shards: {across:,} bytes (within pools: "
                         f"{sum(self.shuffled.values()) - across:,})")
        lines.append(f"prices: {EGRESS_USD_PER_GB_SOURCE}")
        return "\n".join(lines)


def mark(client: Any) -> float:
    """A point in time to audit from: call before a computation."""
    del client
    return time.time()


def _pool_of(resources: dict[str, float]) -> str | None:
    pools = sorted(name for name in resources if is_pool(name))
    return pools[0] if pools else None


def _between_pools(logs: dict[str, list[tuple[str, int]]], pool_of_worker: dict[str, str | None], *,
                   logged_by: str) -> dict[tuple[str, str], int]:
    """(from pool, to pool) -> bytes, from each worker's log of (its peer, bytes); `logged_by` says whether the
    logging worker is the one that received or the one that sent."""
    found: dict[tuple[str, str], int] = defaultdict(int)
    for worker, entries in logs.items():
        for peer, size in entries:
            source, destination = (peer, worker) if logged_by == "receiver" else (worker, peer)
            pools = pool_of_worker.get(source), pool_of_worker.get(destination)
            if pools[0] and pools[1]:
                found[(pools[0], pools[1])] += size
    return dict(found)


def audit(client: Any, since: float, prices: dict[tuple[str, str], float] | None = None) -> Audit:
    """Placement and cross-pool transfers of everything that finished since `since` (see `mark`)."""
    def placements(dask_scheduler: Any, since: float = since) -> list[Any] | list[str]:
        router = dask_scheduler.plugins.get(PLUGIN_NAME)
        if router is None:  # nothing recorded placements: say so, as connect() does
            return missing_plugins(dask_scheduler.plugins)
        return [tuple(p) for p in router.placements_since(since)]

    def transfers(dask_worker: Any, since: float = since) -> list[tuple[str, int]]:
        return [(entry["who"], int(entry["total"])) for entry in dask_worker.transfer_incoming_log
                if entry.get("start", 0) >= since]

    def shards(dask_worker: Any, since: float = since) -> list[tuple[str, int]]:
        return sent_since(dask_worker.address, since)

    answer = client.run_on_scheduler(placements)
    if answer and isinstance(answer[0], str):
        raise ConnectError(missing_message(client.scheduler.address, answer))
    finished = [Placement(*p) for p in answer]
    workers = client.scheduler_info(n_workers=-1)["workers"]
    pool_of_worker = {address: _pool_of(info.get("resources", {})) for address, info in workers.items()}
    placement: dict[str, int] = defaultdict(int)
    to_client: dict[str, int] = defaultdict(int)
    misplaced, ambiguous, regional, combining = [], [], 0, 0
    for task in finished:
        placement[task.pool or "(no pool)"] += 1
        if task.wanted and task.pool:
            to_client[task.pool] += task.nbytes
        if task.ambiguous:
            ambiguous.append((task.key, tuple(sorted(set(task.reads) | set(task.regions))), task.pool))
        elif task.expected is not None:
            regional += 1
            combining += task.combining
            if task.pool != task.expected:
                misplaced.append((task.key, task.expected, task.pool))
    # Transfers are logged by the worker that received them, P2P's shards by the one that sent them.
    received = _between_pools(client.run(transfers), pool_of_worker, logged_by="receiver")
    shuffled = _between_pools(client.run(shards), pool_of_worker, logged_by="sender")
    moved: dict[tuple[str, str], int] = defaultdict(int)
    for pairs in (received, shuffled):
        for (source, destination), size in pairs.items():
            if source != destination:
                moved[(source, destination)] += size
    cost = {pair: size / 1e9 * egress_price(region_of_pool(pair[0]), prices, region_of_pool(pair[1]))
            for pair, size in moved.items()}
    cost |= {(pool, CLIENT): size / 1e9 * egress_price(region_of_pool(pool), prices)
             for pool, size in to_client.items()}
    return Audit(len(finished), dict(placement), misplaced, regional, dict(moved), cost, ambiguous, combining,
                 shuffled, dict(to_client))
