"""Draining: a worker task that is being stopped (scale-in, or a Spot interruption's two-minute notice) hands its
work back to its own pool before it goes.

`drain(...)` asks the scheduler to retire the task's workers gracefully: their queued and running tasks go back
to the scheduler, which places them again within the same pool (their restrictions name it), and the results
they hold move only to live workers of the same pool (routing.keep_retired_data_in_its_pool); with none left, the
results stay where they are and Dask recomputes them in the region if needed. Nothing moves to another region.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("dask_regions.drain")


def workers_named(client: Any, name: str) -> list[str]:
    """Addresses of the workers `dask worker --name <name>` started (`<name>`, or `<name>-<i>` with --nworkers)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(address for address, info in workers.items()
                  if str(info.get("name", "")) == name or str(info.get("name", "")).startswith(f"{name}-"))


def drain(scheduler_address: str, name: str, *, security: Any = None, timeout: float = 100.0) -> list[str]:
    """Retire the workers of `dask worker --name <name>` gracefully; returns the addresses retired. Never raises:
    a task that cannot reach its scheduler still stops (its work is rescheduled when the scheduler notices)."""
    from distributed import Client

    try:
        with Client(scheduler_address, security=security,  # type: ignore[no-untyped-call]
                    timeout=min(timeout, 20)) as client:
            addresses = workers_named(client, name)
            if addresses:
                # ECS stops the container at its stop timeout anyway: no timeout of our own is needed here.
                client.retire_workers(workers=addresses, close_workers=True, remove=True)
            logger.info("drained %d workers named %s", len(addresses), name)
            return addresses
    except Exception as error:
        logger.warning("draining workers named %s failed: %s", name, error)
        return []
