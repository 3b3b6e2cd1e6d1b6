"""Helpers the tests use to look at a running platform and its settings (not part of any package: nothing else
needs them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local_platform.nightly import SYNC_HISTORY_FILE
from local_platform.platform import runs_from
from platform_facts import regions_variable


def settings_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """Demand settings as the environment of a scheduler process (dask reads DASK_ variables as its config)."""
    return {regions_variable(f"demand.{key}"): json.dumps(value) for key, value in settings.items()}


def processes_of(state_dir: Path, *words: bytes) -> list[int]:
    """The live processes the platform of `state_dir` started whose command line has every one of `words` (as a
    part of an argument)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if all(any(word in a for a in arguments) for word in words) and runs_from(pid, state_dir.resolve()):
            found.append(pid)
    return found


def sync_history(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / SYNC_HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
