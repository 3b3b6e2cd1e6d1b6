"""Each region's pool of workers: which are live, waiting for them, and computing in them."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dask_regions.demand import pool_demand
from dask_regions.errors import MissingPoolError
from platform_facts import is_pool, pool_of_region, region_of_pool

DEFAULT_POOL_TIMEOUT = 30.0


def live_pools(client: Any) -> set[str]:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return {name for worker in workers for name in worker.get("resources", {}) if is_pool(name)}


def scalable_pools(client: Any) -> set[str]:
    """Pools the scheduler's demand plugin may grow from zero (they need no live worker yet)."""
    return {pool for pool, figure in pool_demand(client).items() if figure.get("scalable")}


def wait_for_pools(client: Any, pools: Sequence[str], timeout: float = DEFAULT_POOL_TIMEOUT) -> None:
    """Return once every pool has a live worker, or is one the scheduler scales up on demand; after `timeout`
    seconds raise, naming the regions."""
    deadline = time.monotonic() + timeout
    scalable = scalable_pools(client)
    while True:
        alive = live_pools(client) | scalable
        missing = [pool for pool in pools if pool not in alive]
        if not missing:
            return
        if time.monotonic() >= deadline:
            regions = ", ".join(region_of_pool(pool) for pool in missing)
            raise MissingPoolError(f"no live worker in region {regions} ({', '.join(missing)}) after {timeout:.0f} s; "
                                   f"live pools: {', '.join(sorted(alive)) or 'none'}")
        time.sleep(0.2)


def compute_near_data(client: Any, parts: Mapping[str, Any], combine: Callable[..., Any] | None = None, *,
                      combine_pool: str | None = None, timeout: float = DEFAULT_POOL_TIMEOUT) -> Any:
    """Compute each region's part (a lazy xarray or dask object, keyed by region) entirely in that region's
    pool, then `combine(**results)` in `combine_pool` (the client region's pool) or locally. Only the parts'
    (small) results cross regions."""
    pools = [pool_of_region(region) for region in parts]
    wait_for_pools(client, pools + ([combine_pool] if combine_pool else []), timeout)
    futures = {region: client.compute(part, resources={pool_of_region(region): 1})  # the whole graph, pinned
               for region, part in parts.items()}
    if combine_pool is None:
        results = fetch_as_completed(futures)
        return results if combine is None else combine(**results)
    return client.submit(_combine, combine, list(futures), *futures.values(), resources={combine_pool: 1},
                         pure=False).result()


def fetch_as_completed(futures: Mapping[str, Any]) -> dict[str, Any]:
    """Each future's result, fetched as soon as it is computed (in the caller's order): a region's result
    crosses the WAN while the others are still computing, not after them."""
    from distributed import as_completed

    names = {id(future): name for name, future in futures.items()}
    results = {names[id(future)]: future.result()
               for future in as_completed(list(futures.values()))}  # type: ignore[no-untyped-call]
    return {name: results[name] for name in futures}


def _combine(combine: Callable[..., Any], regions: list[str], *results: Any) -> Any:
    return combine(**dict(zip(regions, results, strict=True)))
