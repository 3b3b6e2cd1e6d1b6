"""dask_regions: the Dask-side library of the platform. Find data in the catalog, run every task next to its
data, prove what crossed regions.

The public API: what notebooks call. Installed from the platform's one wheel in the Dask image and the notebook
kernel, so that scheduler, workers and notebook import the same code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cross-region-dask")  # pyproject.toml: said once
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

from dask_regions.audit import audit, mark
from dask_regions.catalog import Catalog, CatalogQueryError, Dataset
from dask_regions.connect import Platform, connect
from dask_regions.errors import (
    ConnectError,
    MissingPoolError,
    OverBudgetError,
    RegionUnreachableError,
    VersionMismatchError,
)
from dask_regions.esm import to_dataset_dict
from dask_regions.explain import Explanation, explain
from dask_regions.opening import from_array, open_all, open_dataset, open_many, open_mfdataset, region_of
from dask_regions.pools import compute_near_data, wait_for_pools
from dask_regions.versions import check_versions

__all__ = [
    "Catalog",
    "CatalogQueryError",
    "ConnectError",
    "Dataset",
    "Explanation",
    "MissingPoolError",
    "OverBudgetError",
    "Platform",
    "RegionUnreachableError",
    "VersionMismatchError",
    "audit",
    "check_versions",
    "compute_near_data",
    "connect",
    "explain",
    "from_array",
    "mark",
    "open_all",
    "open_dataset",
    "open_many",
    "open_mfdataset",
    "region_of",
    "to_dataset_dict",
    "wait_for_pools",
]
