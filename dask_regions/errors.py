"""Errors data scientists see, each saying what to do."""


class MissingPoolError(RuntimeError):
    """Work for a region whose pool has no live worker."""


class RegionUnreachableError(MissingPoolError):
    """Work for a region cut off from the scheduler: its pool's workers stopped answering heartbeats for Dask's
    `distributed.scheduler.worker-ttl` (the platform's grace) and were removed. Rerun once the region's link is
    back: its pool rejoins by itself."""


class VersionMismatchError(RuntimeError):
    """Client, scheduler and workers do not run the same versions."""


class UnrunnableTaskError(MissingPoolError):
    """A task whose resource restrictions no worker of the platform can meet (an unknown or mistyped pool, a
    region that is not configured, more slots than a worker offers)."""


class ConnectError(ConnectionError):
    """The platform cannot be reached, refuses us, or is not the platform (a scheduler without its plugins, or
    routing other regions than the stack's); the message says why and what to do. `down`: nothing answers at the
    scheduler's address (a stopped scheduler, which `connect()` may start)."""

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.down = down


class OverBudgetError(ValueError):
    """A computation predicted to move more bytes across regions than `dask-regions.crossing-budget` allows; it was
    refused before it was sent, and the cluster is as it was."""
