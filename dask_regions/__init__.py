"""dask_regions: the Dask-side library of the platform (catalog client, region routing, transfer audit).

Installed into the Dask image, so that scheduler, workers and notebook import the same code.
"""

__version__ = "0.1.0"
