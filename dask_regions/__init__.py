"""dask_regions: the Dask-side library of the platform. Find data in the catalog, run every task next to its
data, prove what crossed regions.

Installed into the Dask image, so that scheduler, workers and notebook import the same code.
"""

__version__ = "0.1.0"

from dask_regions.api import (
    check_versions,
    compute_near_data,
    from_array,
    open_dataset,
    open_many,
    open_mfdataset,
    package_versions,
    region_of,
    wait_for_pools,
)
from dask_regions.audit import audit, mark
from dask_regions.catalog import Catalog, CatalogQueryError, Dataset
from dask_regions.connect import ConnectError, Platform, connect
from dask_regions.errors import MissingPoolError, VersionMismatchError
from dask_regions.esm import to_dataset_dict

__all__ = [
    "Catalog",
    "CatalogQueryError",
    "ConnectError",
    "Dataset",
    "MissingPoolError",
    "Platform",
    "VersionMismatchError",
    "audit",
    "check_versions",
    "compute_near_data",
    "connect",
    "from_array",
    "mark",
    "open_dataset",
    "open_many",
    "open_mfdataset",
    "package_versions",
    "region_of",
    "to_dataset_dict",
    "wait_for_pools",
]
