"""Virtual references (issue 20, point 5): the nightly sync writes one kerchunk reference set per netCDF collection of
its load (boto3 against moto on loopback), the catalog names it on each of the collection's records, and
`dask_regions.open_mfdataset` opens the collection from it on a worker of the region: one read of the set instead
of every file's metadata, the same data as opening file by file."""

from __future__ import annotations

import json
import pickle
import shutil
import sqlite3
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from distributed import get_task_stream

import dask_regions as dr
from catalog_sync import handlers
from catalog_sync.records import Association
from catalog_sync.references import References, collection_of
from catalog_sync.sinks import SQLiteSink
from catalog_sync.sync import rebuild_catalog
from dask_regions.catalog import Catalog
from dask_regions.references import RegionalReferences, covered, open_spans, read_set
from local_platform.data import ERA5_VARIABLE, publish, write_era5_like
from platform_facts import ERA5_TIME_DIM, REFERENCES_LAYOUT_KEY
from tests.catalog_fixtures import s3_client
from tests.regional_cluster import RegionalCluster
from tests.test_catalog_sync import LambdaContext

REGION = "us-east-1"
MONTHS = 6
STEPS = 4



def open_set(uri: str, paths: list[str], concat_dim: str, options: dict[str, Any]) -> Any:
    """The files `paths` of the set at `uri`, joined along `concat_dim` in the order given; None when the set does
    not cover them all (as dask_regions.opening decides)."""
    spans = covered(uri, paths)
    return None if spans is None else open_spans(uri, spans, concat_dim, options)

def _sync_data(directory: Path, moto_endpoint: str, *, broken: bool = True) -> dict[str, Any]:
    """Six ERA5-like months (and a `.nc` file that is not HDF5) in a fresh dataset bucket, the same files in the
    region's Lustre stand-in, and an empty references bucket."""
    s3 = s3_client(moto_endpoint)
    name = f"era5-{uuid.uuid4().hex[:8]}"
    association = Association(REGION, name, "", f"/{REGION}/{name}")
    fsx = directory / "fsx"
    staging = fsx / association.fsx_path.lstrip("/")
    write_era5_like(staging, months=MONTHS, steps=STEPS, lat=9, lon=18)
    if broken:  # one file of another collection that is no netCDF4 at all
        (staging / "2000" / "01" / "data" / "broken_variable.nc").write_bytes(b"not hdf5" * 10)
    publish(s3, staging, name, "", REGION)
    s3.create_bucket(Bucket=f"{name}-references")
    return {"s3": s3, "association": association, "fsx": fsx, "staging": staging,
            "references": References(s3, f"s3://{name}-references/sets")}


@pytest.fixture
def synced(tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    data = _sync_data(tmp_path, moto_endpoint)
    sink = SQLiteSink(tmp_path / "catalog.db")
    _, checkpoint = rebuild_catalog(data["s3"], data["association"], sink, references=data["references"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # where dask_regions reads the sets, as a worker would
    monkeypatch.setenv("DASK_REGIONS_FSX_ROOT", str(data["fsx"]))
    read_set.cache_clear()
    return {**data, "checkpoint": checkpoint, "catalog": Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")}


def _files(synced: dict[str, Any]) -> Any:
    paths = sorted(synced["staging"].glob(f"*/*/data/{ERA5_VARIABLE}.nc"))
    return xr.concat([xr.open_dataset(p, engine="h5netcdf") for p in paths], dim=ERA5_TIME_DIM)


@pytest.mark.processes
def test_the_sync_names_one_set_per_collection_and_it_opens_as_the_files_do(synced: dict[str, Any]) -> None:
    months = synced["catalog"].find(variable=ERA5_VARIABLE)
    assert len(months) == MONTHS
    (uri,) = {m.references for m in months}
    assert uri.startswith(synced["references"].location + "/us-east-1/") and uri.endswith(f".{ERA5_VARIABLE}.json")
    held = read_set(uri)
    assert [path for path, _ in held[REFERENCES_LAYOUT_KEY]["files"]] == [m.path for m in months]
    assert [steps for _, steps in held[REFERENCES_LAYOUT_KEY]["files"]] == [STEPS] * MONTHS
    # The file that is not HDF5 is catalogued as before, without references, and counted.
    (broken,) = synced["catalog"].find(variable="broken_variable")
    assert broken.references == "" and synced["checkpoint"].unreferenced == 1
    opened = open_set(uri, [m.path for m in months], ERA5_TIME_DIM, {})
    expected = _files(synced)
    np.testing.assert_array_equal(opened[ERA5_TIME_DIM].values, expected[ERA5_TIME_DIM].values)
    np.testing.assert_array_equal(opened[ERA5_VARIABLE].values, expected[ERA5_VARIABLE].values)


@pytest.mark.processes
def test_a_subset_of_the_files_opens_as_those_files_in_the_order_asked(synced: dict[str, Any]) -> None:
    months = synced["catalog"].find(variable=ERA5_VARIABLE)
    uri, expected = months[0].references, _files(synced)
    steps = np.arange(MONTHS * STEPS).reshape(MONTHS, STEPS)
    for chosen in ([1, 2, 3], [4, 0], [5]):
        opened = open_set(uri, [months[i].path for i in chosen], ERA5_TIME_DIM, {})
        wanted = expected.isel({ERA5_TIME_DIM: steps[chosen].ravel()})
        np.testing.assert_array_equal(opened[ERA5_TIME_DIM].values, wanted[ERA5_TIME_DIM].values)
        np.testing.assert_array_equal(opened[ERA5_VARIABLE].values, wanted[ERA5_VARIABLE].values)
    assert open_set(uri, [months[0].path, "/fsx/us-east-1/elsewhere.nc"], ERA5_TIME_DIM, {}) is None


@pytest.mark.processes
def test_opening_from_the_set_reads_no_file_and_pickles_as_its_address(synced: dict[str, Any]) -> None:
    months = synced["catalog"].find(variable=ERA5_VARIABLE)
    hidden = synced["staging"].with_name("hidden")
    synced["staging"].rename(hidden)  # no file to read: opening must not need one
    try:
        opened = open_set(months[0].references, [m.path for m in months], ERA5_TIME_DIM, {})
    finally:
        hidden.rename(synced["staging"])
    assert opened.sizes[ERA5_TIME_DIM] == MONTHS * STEPS
    # A graph carries the set's address, not the references: every process reads the set in the region.
    filesystem = RegionalReferences(months[0].references)
    assert len(pickle.dumps(filesystem)) < 500 < len(json.dumps(read_set(months[0].references)))
    read_set.cache_clear()
    RegionalReferences.clear_instance_cache()  # as in another process
    unpickled = pickle.loads(pickle.dumps(opened))  # as the scheduler or the client, in another region, would
    assert read_set.cache_info().misses == 0  # read nothing
    np.testing.assert_array_equal(unpickled[ERA5_VARIABLE].values, opened[ERA5_VARIABLE].values)
    assert read_set.cache_info().misses == 1  # the first chunk read reads the set, once


@pytest.mark.processes
def test_files_that_cannot_be_joined_keep_no_set_and_the_sync_goes_on(tmp_path: Path, moto_endpoint: str) -> None:
    data = _sync_data(tmp_path, moto_endpoint, broken=False)
    odd = data["staging"] / "2001" / "01" / "data" / f"{ERA5_VARIABLE}.nc"  # stored in other chunks
    write_era5_like(tmp_path / "odd", years=(2001,), months=1, steps=3, lat=9, lon=18, time_chunk=3)
    data["s3"].upload_file(str(tmp_path / "odd" / "2001" / "01" / "data" / f"{ERA5_VARIABLE}.nc"),
                           data["association"].bucket, str(odd.relative_to(data["staging"])))
    sink = SQLiteSink(tmp_path / "catalog.db")
    report, _ = rebuild_catalog(data["s3"], data["association"], sink, references=data["references"])
    assert report.documents == MONTHS + 1
    writer = data["references"].writer(REGION, report.loaded)
    assert writer.collections() == [f"era5-netcdf.{ERA5_VARIABLE}"]
    listed = data["s3"].list_objects_v2(Bucket=writer.bucket, Prefix=writer.root + "/")
    assert not [o["Key"] for o in listed.get("Contents", []) if "/pieces/" not in o["Key"]]  # no set written


@pytest.mark.processes
def test_a_package_missing_from_the_image_fails_the_sync_instead_of_leaving_no_set(
        tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files that cannot be joined are the data's business (above); a missing package is the image's, and hiding it
    left every collection without its set (found by the built catalog-sync image, without s3fs)."""
    import catalog_sync.references as references

    data = _sync_data(tmp_path, moto_endpoint, broken=False)
    report, _ = rebuild_catalog(data["s3"], data["association"], SQLiteSink(tmp_path / "catalog.db"),
                                references=data["references"])
    writer = data["references"].writer(REGION, report.loaded)

    def missing(*_: Any) -> Any:
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(references, "combine", missing)
    with pytest.raises(ImportError, match="s3fs"):
        writer.combine_collection(f"era5-netcdf.{ERA5_VARIABLE}")


@pytest.mark.processes
def test_the_workflow_writes_pieces_while_indexing_and_sets_in_steps(tmp_path: Path, moto_endpoint: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = _sync_data(tmp_path, moto_endpoint)
    second = data["staging"] / "2000" / "02" / "data" / "sea_surface_temperature.nc"
    shutil.copy(data["staging"] / "2000" / "01" / "data" / f"{ERA5_VARIABLE}.nc", second)
    data["s3"].upload_file(str(second), data["association"].bucket, str(second.relative_to(data["staging"])))
    monkeypatch.setattr(handlers.boto3, "client", lambda service, **_: {"s3": data["s3"]}[service])
    for key, value in {"AWS_REGION": REGION, "DATASET": f"s3://{data['association'].bucket}",
                       "FSX_PATH": data["association"].fsx_path, "CATALOG_ENDPOINT": f"sqlite:///{tmp_path}/c.db",
                       "REFERENCES": data["references"].location, "MAX_DROP": "0.5"}.items():
        monkeypatch.setenv(key, value)
    step = handlers.handle({"action": "index"}, LambdaContext(3600))
    assert step["done"] and step["checkpoint"]["unreferenced"] == 1
    combined, steps = {"done": False, "after": ""}, 0
    while not combined["done"]:  # no time left: one collection per invocation
        combined = handlers.handle({"action": "reference", "checkpoint": step["checkpoint"],
                                    "after": combined["after"]}, LambdaContext(0))
        steps += 1
    assert steps == 2 and combined["after"] == "era5-netcdf.sea_surface_temperature"  # the last, in order
    handlers.handle({"action": "swap", "checkpoint": step["checkpoint"]}, None)
    with sqlite3.connect(tmp_path / "c.db") as db:
        named = {row[0] for row in db.execute('SELECT "references" FROM datasets WHERE kind = "era5-netcdf"')}
    assert len(named) == 3  # the two collections' sets, and "" for the file that is no netCDF4
    for uri in named - {""}:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        assert data["s3"].head_object(Bucket=bucket, Key=key)["ContentLength"] > 0


def test_a_catalog_from_before_references_keeps_its_rows_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with sqlite3.connect(path) as db:  # the first catalog's schema, with a row and an unfinished load
        columns = ("id TEXT, region TEXT, kind TEXT, s3_uri TEXT, path TEXT, pool TEXT, size INTEGER, "
                   "object_count INTEGER, last_modified TEXT, facets TEXT, fileName TEXT, bucket TEXT, "
                   "dask_pool TEXT, project TEXT, PRIMARY KEY (region, id)")
        db.execute(f"CREATE TABLE datasets ({columns})")
        db.execute(f"CREATE TABLE load_old ({columns})")
        db.execute("CREATE TABLE loads (load_id TEXT PRIMARY KEY, region TEXT NOT NULL)")
        db.execute("INSERT INTO loads VALUES ('load_old', 'us-east-1')")
        row = ("a", "us-east-1", "file", "s3://b/a", "/fsx/a", "pool-us-east-1", 1, 1, "2026-01-01T00:00:00Z", "{}",
               "/fsx/a", "b", "pool-us-east-1", "b")
        db.execute("INSERT INTO datasets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        db.execute("INSERT INTO load_old VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", ("b", *row[1:]))
    sink = SQLiteSink(path)
    (kept,) = Catalog.open(f"sqlite:///{path}").find(kind="file")
    assert (kept.id, kept.references) == ("a", "")
    sink.resume("load_old", "us-east-1").commit()  # the unfinished load still swaps in
    assert [d.id for d in Catalog.open(f"sqlite:///{path}").find(kind="file")] == ["b"]


def test_collections_are_named_by_kind_and_variable() -> None:
    from catalog_sync.records import DatasetRecord

    def record(kind: str, facets: dict[str, str]) -> DatasetRecord:
        return DatasetRecord(id="i", region=REGION, kind=kind, s3_uri="s3://b/k", path="/fsx/k", pool="pool-us-east-1",
                             size=1, object_count=1, last_modified="", facets=facets)

    assert collection_of(record("era5-netcdf", {"variable": "t2m", "year": "2000"})) == "era5-netcdf.t2m"
    assert collection_of(record("netcdf", {})) is None  # a lone netCDF file has no collection
    assert collection_of(record("era5-netcdf", {})) is None


# ------------------------------------------------------------------------------------- on a regional cluster
@pytest.fixture(scope="module")
def cluster_synced(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("references")
    data = _sync_data(directory, moto_endpoint, broken=False)
    rebuild_catalog(data["s3"], data["association"], SQLiteSink(directory / "catalog.db"),
                    references=data["references"])
    cluster = RegionalCluster(directory, {f"pool-{REGION}": 1}, fsx_root=data["fsx"])
    cluster.env["AWS_ENDPOINT_URL"] = moto_endpoint  # the workers' S3, as the twin gives its tasks
    cluster.start()
    try:
        client = cluster.client()
        yield {**data, "client": client, "catalog": Catalog.open(f"sqlite:///{directory / 'catalog.db'}")}
        client.close()
    finally:
        cluster.close()


@pytest.mark.processes
def test_open_mfdataset_opens_a_collection_from_its_set_in_one_task(cluster_synced: dict[str, Any]) -> None:
    client, months = cluster_synced["client"], cluster_synced["catalog"].find(variable=ERA5_VARIABLE)
    with warnings.catch_warnings(), get_task_stream(client) as stream:
        warnings.simplefilter("error")  # no fallback
        era5 = dr.open_mfdataset(client, months, concat_dim=ERA5_TIME_DIM)
    assert [task["key"].split("-")[0] for task in stream.data] == ["_open_set_in_region"]
    assert dr.region_of(era5) == REGION
    assert era5.attrs.get("source") and era5.sizes[ERA5_TIME_DIM] == MONTHS * STEPS
    by_files = dr.open_mfdataset(client, [m.path for m in months], region=REGION, concat_dim=ERA5_TIME_DIM)
    np.testing.assert_array_equal(era5[ERA5_VARIABLE].values, by_files[ERA5_VARIABLE].values)
    # Cut as the files are (one file's steps never share a chunk with another's), so reductions agree to the bit.
    assert era5[ERA5_VARIABLE].chunks == by_files[ERA5_VARIABLE].chunks
    np.testing.assert_array_equal(era5[ERA5_VARIABLE].mean(ERA5_TIME_DIM).compute().values,
                                  by_files[ERA5_VARIABLE].mean(ERA5_TIME_DIM).compute().values)
    np.testing.assert_array_equal(era5[ERA5_TIME_DIM].values, by_files[ERA5_TIME_DIM].values)


@pytest.mark.processes
def test_a_missing_set_falls_back_to_the_files_with_a_warning(cluster_synced: dict[str, Any]) -> None:
    client, months = cluster_synced["client"], cluster_synced["catalog"].find(variable=ERA5_VARIABLE)
    gone = [type(m)(**{**m.__dict__, "references": m.references.replace(".json", "-expired.json")}) for m in months]
    with pytest.warns(UserWarning, match="could not be opened.*one by one"):
        era5 = dr.open_mfdataset(client, gone, concat_dim=ERA5_TIME_DIM)
    assert era5.sizes[ERA5_TIME_DIM] == MONTHS * STEPS


@pytest.mark.processes
def test_combining_leaves_the_callers_event_loop_alone(synced: dict[str, Any]) -> None:
    """kerchunk's combine calls asyncio.run(): run in the caller's thread it closed the thread's event loop, and
    Pulumi's next synthesis in the same process failed ("no current event loop")."""
    import asyncio

    from catalog_sync.references import combine, file_references

    months = synced["catalog"].find(variable=ERA5_VARIABLE)[:2]
    pieces = [file_references(synced["s3"], synced["association"].bucket, m.s3_uri.split("/", 3)[3], m.size, m.path)
              for m in months]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # left set afterwards: later tests in this process may need a current loop
    assert json.loads(combine(pieces, ERA5_TIME_DIM)["refs"][f"{ERA5_TIME_DIM}/.zarray"])["shape"] == [2 * STEPS]
    assert asyncio.get_event_loop() is loop
