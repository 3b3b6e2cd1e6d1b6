"""Scale-in protection for busy worker tasks: ECS never picks a task for scale-in while one of its workers is
running or about to run tasks.

Loaded on workers with `dask worker --preload dask_regions.protection`. Every `interval` seconds a worker with
work asks the ECS agent (`$ECS_AGENT_URI/task-protection/v1/state`) to protect its task for a few minutes; it
never lifts the protection itself (another worker process of the same task may still be busy): it expires a few
minutes after the last busy worker stops renewing it, and the task can then be scaled in. Outside ECS (no
`ECS_AGENT_URI`) it does nothing. Failures are logged, never raised.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import Any

from dask_regions import settings
from dask_regions.startup import start_preload

logger = logging.getLogger("dask_regions.protection")
PROTECTION_PATH = "/task-protection/v1/state"


def busy(worker: Any) -> bool:
    """Whether the worker runs, or has ready or resource-constrained, tasks."""
    state = worker.state
    return bool(state.executing_count or state.ready or getattr(state, "constrained", None))


def protect(agent_uri: str, minutes: int, timeout: float = 5.0) -> bool:
    """Ask the ECS agent to protect this task from scale-in for `minutes`; True when it agreed."""
    body = json.dumps({"ProtectionEnabled": True, "ExpiresInMinutes": minutes}).encode()
    request = urllib.request.Request(agent_uri + PROTECTION_PATH, data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except OSError as error:
        logger.warning("could not protect this task from scale-in: %s", error)
        return False


def dask_setup(worker: Any) -> None:
    """Entry point for `dask worker --preload dask_regions.protection`; stops the worker's process if it cannot
    start (dask_regions.startup)."""
    start_preload("dask_regions.protection", lambda: _setup(worker))


def _setup(worker: Any) -> None:
    agent_uri = os.environ.get("ECS_AGENT_URI")
    if not agent_uri:
        return
    from tornado.ioloop import PeriodicCallback

    interval = settings.seconds("protection.interval")
    minutes = max(1, int(settings.get("protection.minutes")))

    async def renew() -> None:
        if busy(worker):
            import asyncio

            await asyncio.to_thread(protect, agent_uri, minutes)

    callback = PeriodicCallback(renew, interval * 1000)
    callback.start()
    worker._dask_regions_protection = callback
