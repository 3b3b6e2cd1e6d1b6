"""Client, scheduler and workers must run the same versions: pickled code and data cross between them."""

from __future__ import annotations

from typing import Any

from dask_regions.errors import VersionMismatchError

# Beyond Dask's own list (dask, distributed, msgpack, cloudpickle, tornado, toolz, numpy, pandas, lz4): the
# platform's data plane and the packages its tasks pickle.
PLATFORM_PACKAGES = ("cross-region-dask", "xarray", "zarr", "h5netcdf", "scipy")


def check_versions(client: Any) -> Any:
    """Dask's own comparison (`Client.get_versions` and its mismatch table) over Dask's packages and the
    platform's; any mismatch raises, naming the packages and where they differ. Returns the versions."""
    from distributed.versions import error_message

    versions = client.get_versions(packages=list(PLATFORM_PACKAGES))
    message = error_message(versions["scheduler"], versions["workers"], versions["client"])  # type: ignore[no-untyped-call]
    problems = message["error"] or message["warning"]
    if problems:
        raise VersionMismatchError("client, scheduler and workers must run the same versions (the platform's "
                                   f"images and kernel install the same wheel and pins):\n{problems}")
    return versions
