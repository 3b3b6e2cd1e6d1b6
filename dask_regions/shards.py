"""What P2P sends between workers, for the audit. P2P (rechunk, shuffle, merge) moves its shards worker to worker
outside the task graph, so Dask's transfer log does not see them. The router registers `P2PSends` on every worker
(present and future); each records the bytes of every batch of shards its worker sends, and to which worker."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from dask_regions.internals import import_dataframe_first, on_p2p_send

PLUGIN_NAME = "dask-regions-p2p-sends"
LOG_LENGTH = 200_000  # the newest sends the audit can see, per worker
_ON_WORKER: dict[str, P2PSends] = {}  # worker address -> its plugin (P2P's sender knows only its own address)


class P2PSends(WorkerPlugin):
    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.sent: deque[tuple[float, str, int]] = deque(maxlen=LOG_LENGTH)  # (time, to worker, bytes)

    def setup(self, worker: Any) -> None:
        _ON_WORKER[worker.address] = self
        on_p2p_send(_record)
        import_dataframe_first()

    def teardown(self, worker: Any) -> None:
        _ON_WORKER.pop(worker.address, None)


def _record(sender: str, receiver: str, size: int) -> None:
    plugin = _ON_WORKER.get(sender)
    if plugin is not None:
        plugin.sent.append((time.time(), receiver, size))


def sent_since(worker: str, since: float) -> list[tuple[str, int]]:
    """(to worker, bytes) of every batch of shards `worker` (in this process) sent since `since`."""
    plugin = _ON_WORKER.get(worker)
    return [(receiver, size) for when, receiver, size in (plugin.sent if plugin else ()) if when >= since]
