"""The platform's preloads fail closed, and the scheduler says whether they run.

Dask logs a preload that raises in `dask_setup` ("Failed to start preload") and goes on without it: a scheduler
without its router would run every task wherever plain Dask puts it, reading across regions. So each platform
preload checks every dask_regions setting first (all at once) and, if it cannot start, stops its process:
`PreloadFailed` is a SystemExit, which Dask's `except Exception` does not keep, so `dask scheduler` and a worker
process exit non-zero with one line naming the preload, each bad setting, its value and the valid form.

Both scheduler preloads also serve `PLATFORM_HEALTH_PATH` on the scheduler's HTTP server: 200 while the router
and the demand plugin both run, 503 naming the one that is missing. The container's health check and the load
balancer ask it, so a scheduler started without a platform plugin never comes up healthy (without the router
the path does not exist at all: 404).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from dask_regions import settings
from platform_facts import PLATFORM_HEALTH_PATH

logger = logging.getLogger("dask_regions.startup")
T = TypeVar("T")

ROUTER_PLUGIN = "dask-regions-router"  # dask_regions.routing's RegionRouter
DEMAND_PLUGIN = "dask-regions-demand"  # dask_regions.demand's PoolDemand
SCHEDULER_PRELOADS = {ROUTER_PLUGIN: "dask_regions.routing", DEMAND_PLUGIN: "dask_regions.demand"}
STOP_LINE = "cannot start, so this process stops"  # in the line a failing preload logs (the twin looks for it)


class PreloadFailed(SystemExit):
    """A platform preload could not start: its process stops with exit status 1 (the reason is the one line
    logged before; `str()` gives it too)."""

    def __init__(self, line: str) -> None:
        super().__init__(1)
        self.line = line

    def __str__(self) -> str:
        return self.line


def start_preload(preload: str, setup: Callable[[], T]) -> T:
    """Check every setting, then run `setup`; on any failure log one line and stop the process."""
    try:
        settings.check()
        return setup()
    except Exception as error:  # anything that keeps the plugin from running
        line = (f"{preload} {STOP_LINE} (the platform never runs without its plugins): "
                f"{' '.join(str(error).split())}")
        logger.critical(line)
        _retrieve_when_done()
        raise PreloadFailed(line) from None


def _retrieve_when_done() -> None:
    """The SystemExit leaves the event loop from inside the task running the preload; retrieve it from that task
    as it is cleaned up, so that asyncio does not print it again as a task exception never retrieved."""
    import asyncio

    try:
        task = asyncio.current_task()
    except RuntimeError:  # called outside an event loop: nothing holds the exception
        return
    if task is not None:
        task.add_done_callback(lambda done: None if done.cancelled() else done.exception())


def missing_plugins(plugins: Any) -> list[str]:
    """The preloads (modules) of the platform's scheduler plugins that `plugins` (a scheduler's) lacks."""
    return [module for plugin, module in SCHEDULER_PRELOADS.items() if plugin not in plugins]


def missing_message(address: str, missing: list[str]) -> str:
    """What a client is told of a scheduler without the platform's plugins, and the fix."""
    return (f"the scheduler at {address} runs without {' and '.join(missing)}: it would run tasks wherever plain "
            f"Dask puts them, not next to their data. Fix: start it with "
            f"{' '.join('--preload ' + m for m in SCHEDULER_PRELOADS.values())} (as the platform's image does)")


def platform_on_scheduler(dask_scheduler: Any) -> dict[str, Any]:
    """Run on the scheduler (Client.run_on_scheduler): the platform plugins it lacks and the router's settings."""
    router = dask_scheduler.plugins.get(ROUTER_PLUGIN)
    return {"missing": missing_plugins(dask_scheduler.plugins),
            "router": router.describe() if router is not None else None}


def serve_health(scheduler: Any) -> None:
    """Add PLATFORM_HEALTH_PATH to the scheduler's HTTP server (once, whichever preload comes first)."""
    from tornado import web

    application = getattr(scheduler, "http_application", None)
    if application is None or getattr(scheduler, "_dask_regions_health", False):
        return

    class PlatformHealth(web.RequestHandler):
        def get(self) -> None:
            missing = missing_plugins(scheduler.plugins)
            self.set_header("Content-Type", "text/plain")
            if missing:
                self.set_status(503)
                self.write(f"not serving: the scheduler runs without {', '.join(missing)}; start it with "
                           f"{' '.join('--preload ' + m for m in SCHEDULER_PRELOADS.values())}\n")
            else:
                self.write("ok\n")

    application.add_handlers(r".*", [(PLATFORM_HEALTH_PATH, PlatformHealth)])
    scheduler._dask_regions_health = True
