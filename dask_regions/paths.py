"""Where a catalog path is on this machine, and whether it is in object storage."""

from __future__ import annotations

import os

from platform_facts import FSX_MOUNT

NETCDF_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5")


def local_path(path: str) -> str:
    """A catalog path (`/fsx/<region>/...`) on this machine: DASK_REGIONS_FSX_ROOT replaces `/fsx` where the
    file system is mounted elsewhere (the local platform's stand-in directories)."""
    root = os.environ.get("DASK_REGIONS_FSX_ROOT")
    if root and (path == FSX_MOUNT or path.startswith(f"{FSX_MOUNT}/")):
        return root.rstrip("/") + path[len(FSX_MOUNT):]
    return path


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")
