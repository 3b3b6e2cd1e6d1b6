"""Data opened straight from object storage (s3:// URLs; moto on loopback) by dask_regions: metadata read in the
data's region, only metadata handed back, and nothing re-opened where the graph is unpickled (the scheduler and
the client sit in another region: every re-open there would cross it)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xarray as xr

import dask_regions as dr
from local_platform.data import CMIP6_STORE, ERA5_VARIABLE, publish, write_cmip6_like, write_era5_like
from tests.catalog_fixtures import s3_client
from tests.regional_cluster import RegionalCluster

pytestmark = pytest.mark.processes

POOLS = {"pool-us-east-1": 1, "pool-us-west-2": 1}


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("remote")
    era5, cmip6 = directory / "era5", directory / "cmip6"
    keys = write_era5_like(era5, months=3, steps=8, lat=19, lon=36)
    write_cmip6_like(cmip6, years=range(2090, 2101), lat=12, lon=24)
    s3 = s3_client(moto_endpoint)
    publish(s3, era5, "remote-era5", "", "us-east-1")
    publish(s3, cmip6, "remote-cmip6", "CMIP6", "us-east-1")
    options = {"storage_options": {"key": "testing", "secret": "testing",
                                   "client_kwargs": {"endpoint_url": moto_endpoint}}}
    cluster = RegionalCluster(directory, POOLS).start()
    try:
        client = cluster.client()
        yield {"client": client, "options": options, "era5": era5, "cmip6": cmip6,
               "era5_urls": [f"s3://remote-era5/{key}" for key in keys],
               "cmip6_url": f"s3://remote-cmip6/CMIP6/{CMIP6_STORE}"}
        client.close()
    finally:
        cluster.close()


def open_both(remote: dict[str, Any]) -> tuple[Any, Any]:
    client, options = remote["client"], remote["options"]
    era5 = dr.open_mfdataset(client, remote["era5_urls"], region="us-east-1", concat_dim="time0", **options)
    cmip6 = dr.open_dataset(client, remote["cmip6_url"], region="us-west-2", **options)
    return era5, cmip6


def test_remote_netcdf_and_zarr_compute_what_the_files_hold(remote: dict[str, Any]) -> None:
    era5, cmip6 = open_both(remote)
    assert dr.region_of(era5) == "us-east-1" and dr.region_of(cmip6) == "us-west-2"
    local_era5 = xr.open_mfdataset(sorted(remote["era5"].rglob("*.nc")), engine="h5netcdf", concat_dim="time0",
                                   combine="nested")
    local_cmip6 = xr.open_zarr(remote["cmip6"] / CMIP6_STORE)
    # float32 sums over other chunkings: equal to rounding
    np.testing.assert_allclose(era5[ERA5_VARIABLE].mean("time0").compute().values,
                               local_era5[ERA5_VARIABLE].mean("time0").compute().values, rtol=0, atol=1e-3)
    np.testing.assert_allclose(cmip6.tas.mean("time").compute().values, local_cmip6.tas.mean("time").values,
                               rtol=0, atol=1e-3)


def test_opening_hands_back_metadata_not_the_data(remote: dict[str, Any]) -> None:
    # Dask measures results with sizeof, which reads file-backed xarray variables whole: the opened dataset
    # used to come back (and go into every graph) with all its values.
    era5, cmip6 = open_both(remote)
    for dataset, variable in ((era5, ERA5_VARIABLE), (cmip6, "tas")):
        assert len(pickle.dumps(dataset)) < dataset[variable].nbytes / 4


def test_unpickling_a_remote_dataset_opens_nothing(remote: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    era5, cmip6 = open_both(remote)
    pickled = pickle.dumps((era5, cmip6))
    # The detector works: xarray's own remote opening re-opens the file when unpickled.
    plain = xr.open_dataset(remote["era5_urls"][0], engine="h5netcdf", **remote["options"])
    plain_pickled = pickle.dumps(plain)
    opened: list[str] = []

    def refuse(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        opened.append(path)
        raise OSError(f"opened {path} while unpickling")

    monkeypatch.setattr(s3fs.S3FileSystem, "_open", refuse)
    with pytest.raises(OSError, match="while unpickling"):
        pickle.loads(plain_pickled)
    opened.clear()
    era5_again, cmip6_again = pickle.loads(pickled)
    assert opened == []
    assert era5_again[ERA5_VARIABLE].shape == era5[ERA5_VARIABLE].shape and cmip6_again.tas.dims == cmip6.tas.dims

