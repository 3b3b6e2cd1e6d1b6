"""The catalog client over both backends (SQLite; OpenSearch via osmem), loaded by the nightly sync's own
sinks: find by facets, locate many paths in one round trip, intake-esm export, clear messages."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from catalog_sync.grouping import DatasetGrouper
from catalog_sync.records import Association
from catalog_sync.sinks import OpenSearchSink, SQLiteSink
from dask_regions import Catalog, CatalogQueryError
from tests.catalog_fixtures import CMIP6_PREFIX, CMIP6_STORES, cmip6_keys, era5_keys, objects

ERA5 = Association("us-east-1", "era5-pds", "", "/us-east-1/era5-pds")
CMIP6 = Association("us-west-2", "cmip6-pds", CMIP6_PREFIX, f"/us-west-2/{CMIP6_PREFIX}")


def load(sink: Any) -> None:
    for association, keys in ((ERA5, era5_keys(years=(2021,))), (CMIP6, cmip6_keys(chunks=2))):
        grouper = DatasetGrouper(association)
        records = [r for item in objects(keys) for r in grouper.add(item)] + grouper.finish()
        new = sink.begin(association.region, association.bucket)
        new.add(records)
        new.commit()


@pytest.fixture(params=["sqlite", "opensearch"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Catalog:
    if request.param == "sqlite":
        load(SQLiteSink(tmp_path / "catalog.db"))
        return Catalog.open(f"sqlite:///{tmp_path}/catalog.db")
    url = request.getfixturevalue("osmem_url")
    load(OpenSearchSink(OpenSearch(hosts=[url])))
    return Catalog.open(url)


@pytest.mark.processes
def test_find_by_facets_across_regions(catalog: Catalog) -> None:
    tas = catalog.find(variable_id="tas")
    assert [d.facets["experiment_id"] for d in tas] == ["ssp126", "ssp585"]
    assert {(d.region, d.pool, d.kind) for d in tas} == {("us-west-2", "pool-us-west-2", "cmip6-zarr")}
    assert tas[1].path == f"/fsx/us-west-2/{CMIP6_STORES[3]}" and tas[1].s3_uri.endswith("/v20190507/")
    july = catalog.find(variable="air_temperature_at_2_metres", year="2021", month="07")
    assert [d.path for d in july] == ["/fsx/us-east-1/era5-pds/2021/07/data/air_temperature_at_2_metres.nc"]
    both = catalog.find(variable_id=["pr", "tas"], experiment_id="ssp126")
    assert sorted(d.facets["variable_id"] for d in both) == ["pr", "tas"]
    assert {d.region for d in catalog.find(kind=["cmip6-zarr", "era5-netcdf"])} == {"us-east-1", "us-west-2"}


@pytest.mark.processes
def test_unknown_facets_and_empty_results_say_what_exists(catalog: Catalog) -> None:
    with pytest.raises(CatalogQueryError, match=r"unknown facet 'variabel_id': did you mean 'variable_id'"):
        catalog.find(variabel_id="tas")
    with pytest.raises(CatalogQueryError, match=r"variable_id='tass' is not in the catalog \(did you mean 'tas'"):
        catalog.find(variable_id="tass")
    with pytest.raises(CatalogQueryError, match="no dataset has them all"):
        catalog.find(variable_id="tas", year="2021")


@pytest.mark.processes
def test_locate_resolves_many_paths(catalog: Catalog) -> None:
    paths = [f"/fsx/us-west-2/{CMIP6_STORES[0]}", "/fsx/us-east-1/era5-pds/2021/03/main.nc", "/fsx/nowhere"]
    found = catalog.locate([*paths, f"s3://cmip6-pds/{CMIP6_STORES[1]}/"])
    assert set(found) == {paths[0], paths[1], f"s3://cmip6-pds/{CMIP6_STORES[1]}/"}
    assert found[paths[1]].kind == "netcdf" and found[paths[0]].region == "us-west-2"
    assert catalog.locate([]) == {}


@pytest.mark.processes
def test_locate_is_one_round_trip_on_opensearch(osmem_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    load(OpenSearchSink(OpenSearch(hosts=[osmem_url])))
    catalog = Catalog.open(osmem_url)
    calls: list[str] = []
    original = catalog.backend.client.transport.perform_request  # type: ignore[attr-defined]

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(f"{method} {url}")
        return original(method, url, *args, **kwargs)

    monkeypatch.setattr(catalog.backend.client.transport, "perform_request", counted)  # type: ignore[attr-defined]
    months = [f"/fsx/us-east-1/era5-pds/2021/{m:02d}/data/air_temperature_at_2_metres.nc" for m in range(1, 13)]
    assert len(catalog.locate(months)) == 12
    assert calls == ["POST /catalog/_search"]


@pytest.mark.processes
def test_a_document_speaks_for_a_region_only_from_that_regions_indices(osmem_url: str) -> None:
    """A writer that puts a document claiming another region into its own index (which is in the read alias)
    publishes nothing in the other region's name; in its own region's name it is believed."""
    client = OpenSearch(hosts=[osmem_url])
    load(OpenSearchSink(client))
    hits = client.search(index="catalog", body={"query": {"term": {"region": "us-east-1"}}, "size": 1})
    document = hits["hits"]["hits"][0]["_source"]
    (west,) = client.indices.get_alias(index="catalog-us-west-2-*", name="catalog")
    client.index(index=west, id="forged", refresh=True,
                 body={**document, "id": "forged", "path": "/fsx/us-east-1/elsewhere.nc"})
    client.index(index=west, id="own", refresh=True,
                 body={**document, "id": "own", "region": "us-west-2", "path": "/fsx/us-west-2/x.nc"})
    found = Catalog.open(osmem_url).locate(["/fsx/us-east-1/elsewhere.nc", "/fsx/us-west-2/x.nc"])
    assert list(found) == ["/fsx/us-west-2/x.nc"]


@pytest.mark.processes
def test_export_to_an_intake_esm_datastore(catalog: Catalog, tmp_path: Path) -> None:
    description = catalog.to_intake_esm(tmp_path / "esm", name="cmip6", variable_id="tas")
    spec = json.loads(description.read_text())
    assert spec["catalog_file"] == "cmip6.csv" and spec["assets"]["column_name"] == "path"
    assert {a["column_name"] for a in spec["attributes"]} >= {"region", "pool", "variable_id", "experiment_id"}
    with (tmp_path / "esm" / "cmip6.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["region"], r["pool"], r["variable_id"]) for r in rows] == [("us-west-2", "pool-us-west-2", "tas")] * 2


def test_catalog_locations_are_checked() -> None:
    with pytest.raises(CatalogQueryError, match="use sqlite:///<path>"):
        Catalog.open("mysql://catalog")
    with pytest.raises(CatalogQueryError, match="run the sync first"):
        Catalog.open("sqlite:////nonexistent/catalog.db")
