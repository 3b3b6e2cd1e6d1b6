"""Helpers the tests use to look at a running platform and its settings (not part of any package: nothing else
needs them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local_platform.nightly import SYNC_HISTORY_FILE
from local_platform.platform import processes_of
from platform_facts import regions_variable

__all__ = ["processes_of", "settings_environment", "sync_history"]


def settings_environment(settings: Mapping[str, Any]) -> dict[str, str]:
    """Demand settings as the environment of a scheduler process (dask reads DASK_ variables as its config)."""
    return {regions_variable(f"demand.{key}"): json.dumps(value) for key, value in settings.items()}


def sync_history(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / SYNC_HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
