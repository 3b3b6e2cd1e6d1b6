"""The catalog as intake-esm datastores, round-tripped through intake-esm itself, and opened region-pinned by
`dask_regions.to_dataset_dict` with the same keys and values as intake-esm's own `to_dataset_dict`. The cluster's
pools are isolated (each sees only its own region's files), so a misplaced open or read fails."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import intake
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import dask_regions
from dask_regions import Catalog, CatalogQueryError, audit, mark
from tests.regional_cluster import RegionalCluster
from tests.regional_data import CMIP6_PREFIX, build_catalog, write_era5

pytestmark = [pytest.mark.processes, pytest.mark.root]

MEMBERS, VARIABLES = ("r1i1p1f2", "r2i1p1f2"), ("pr", "tas")
CMIP6_DATASET = "ScenarioMIP.MOHC.UKESM1-0-LL.ssp585.Amon.gn"
ERA5_DATASET = "era5-pds.air_temperature_at_2_metres"


def write_cmip6_members(fsx: Path) -> None:
    """Two members x two variables of one CMIP6 source/experiment, one consolidated zarr store each."""
    rng = np.random.default_rng(3)
    times = pd.date_range("2090-01-16", periods=24, freq="MS")
    lat, lon = np.linspace(-87.5, 87.5, 8), np.arange(0, 360, 30.0)
    for member in MEMBERS:
        for variable in VARIABLES:
            values = rng.standard_normal((24, 8, 12)).astype("float32")
            store = fsx / "us-west-2" / CMIP6_PREFIX / f"UKESM1-0-LL/ssp585/{member}/Amon/{variable}/gn/v20190507"
            xr.Dataset({variable: (("time", "lat", "lon"), values)},
                       coords={"time": times, "lat": lat, "lon": lon}).to_zarr(store, consolidated=True,
                                                                              zarr_format=2, mode="w")


@pytest.fixture(scope="module")
def esm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("esm")
    fsx = directory / "fsx"
    write_era5(fsx, months=3)
    write_cmip6_members(fsx)
    build_catalog(fsx, directory / "catalog.db")
    cluster = RegionalCluster(directory, {"pool-us-east-1": 1, "pool-us-west-2": 1}, fsx_root=fsx,
                              isolate_regions=True, regions=["us-east-1", "us-west-2"]).start()
    try:
        client = cluster.client()
        yield {"client": client, "catalog": Catalog.open(f"sqlite:///{directory}/catalog.db"), "fsx": fsx,
               "directory": directory}
        client.close()
    finally:
        cluster.close()


def theirs(description: Path, fsx: Path, **options: Any) -> dict[str, xr.Dataset]:
    """intake-esm's own to_dataset_dict, loaded here, in this process (Dask's default client is the isolated
    cluster, where this process's paths are other regions' data)."""
    with dask.config.set(scheduler="sync"):
        datasets = intake.open_esm_datastore(str(on_this_machine(description, fsx))).to_dataset_dict(
            progressbar=False, threaded=False, **options)
        return {key: dataset.load() for key, dataset in datasets.items()}


def on_this_machine(description: Path, fsx: Path) -> Path:
    """A copy of a datastore whose paths point at this machine's Lustre stand-in (where /fsx is mounted here), so
    that intake-esm itself can open the assets."""
    rows = list(csv.DictReader(description.with_suffix(".csv").open()))
    local = description.parent / "local"
    local.mkdir(exist_ok=True)
    with (local / description.with_suffix(".csv").name).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{**row, "path": "file://" + str(fsx) + row["path"].removeprefix("/fsx")} for row in rows])
    (local / description.name).write_text(description.read_text())
    return local / description.name


def test_the_cmip6_datastore_is_grouped_by_drs_facets_and_aggregated_over_members_and_variables(
        esm: dict[str, Any], tmp_path: Path) -> None:
    description = esm["catalog"].to_intake_esm(tmp_path, collection="cmip6")
    datastore = intake.open_esm_datastore(str(description))  # validated by intake-esm
    assert {"region", "pool"} <= set(datastore.df.columns)
    assert set(datastore.df["format"]) == {"zarr"}
    assert list(datastore.keys()) == [CMIP6_DATASET]
    expected = theirs(description, esm["fsx"])[CMIP6_DATASET]
    assert dict(expected.sizes)["member_id"] == 2 and set(expected.data_vars) == set(VARIABLES)

    client = esm["client"]
    since = mark(client)
    ours = dask_regions.to_dataset_dict(client, datastore.search(experiment_id="ssp585"))  # the one-line change
    assert list(ours) == [CMIP6_DATASET]
    dataset = ours[CMIP6_DATASET]
    assert dict(dataset.sizes) == dict(expected.sizes) and list(dataset.member_id.values) == list(MEMBERS)
    for variable in VARIABLES:
        np.testing.assert_array_equal(dataset[variable].mean("time").values, expected[variable].mean("time").values)
    report = audit(client, since)
    assert report.proven and report.placement.get("pool-us-west-2", 0) > 0, report.table()


def test_the_era5_datastore_joins_each_variables_months_along_time(esm: dict[str, Any], tmp_path: Path) -> None:
    description = esm["catalog"].to_intake_esm(tmp_path, collection="era5")
    datastore = intake.open_esm_datastore(str(description))
    assert set(datastore.df["format"]) == {"netcdf"} and list(datastore.keys()) == [ERA5_DATASET]
    expected = theirs(description, esm["fsx"], xarray_open_kwargs={"engine": "h5netcdf"})[ERA5_DATASET]
    client = esm["client"]
    since = mark(client)
    ours = dask_regions.to_dataset_dict(client, datastore)[ERA5_DATASET]
    assert ours.sizes["time0"] == expected.sizes["time0"] == 3 * 24
    np.testing.assert_array_equal(ours.time0.values, expected.time0.values)
    np.testing.assert_allclose(ours.air_temperature_at_2_metres.mean("time0").values,
                               expected.air_temperature_at_2_metres.mean("time0").values, rtol=1e-6)
    assert audit(client, since).proven


def test_a_mixed_export_says_how_to_choose(esm: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(CatalogQueryError, match=r"export one at a time, e.g. to_intake_esm\(directory, collection="):
        esm["catalog"].to_intake_esm(tmp_path)
    with pytest.raises(KeyError, match="no dataset nope; the datastore has"):
        dask_regions.to_dataset_dict(esm["client"], intake.open_esm_datastore(
            str(esm["catalog"].to_intake_esm(tmp_path, collection="era5"))), keys=["nope"])


def test_a_search_results_dataframe_or_keys_open_the_same(esm: dict[str, Any], tmp_path: Path) -> None:
    import json

    description = esm["catalog"].to_intake_esm(tmp_path, collection="cmip6")
    datastore = intake.open_esm_datastore(str(description))
    control = json.loads(description.read_text())["aggregation_control"]
    by_frame = dask_regions.to_dataset_dict(esm["client"], datastore.df, aggregation_control=control)
    by_keys = dask_regions.to_dataset_dict(esm["client"], datastore, keys=list(datastore.keys()))
    assert list(by_frame) == list(by_keys) == [CMIP6_DATASET]
    assert dict(by_frame[CMIP6_DATASET].sizes) == dict(by_keys[CMIP6_DATASET].sizes)
    with pytest.raises(TypeError, match="give an intake-esm datastore"):
        dask_regions.to_dataset_dict(esm["client"], datastore.df)
