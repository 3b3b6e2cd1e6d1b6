"""Stopping processes that were started in process groups of their own (`start_new_session=True`), with
everything they started: the whole group is asked to stop, then killed if it has not within the timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable


def stop_groups(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM every process's group at once, then wait for each; SIGKILL a group still there after `timeout`."""
    chosen = list(processes)
    for process in chosen:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    for process in chosen:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
