"""Errors data scientists see, each saying what to do."""


class MissingPoolError(RuntimeError):
    """Work for a region whose pool has no live worker."""


class VersionMismatchError(RuntimeError):
    """Client, scheduler and workers do not run the same versions."""
