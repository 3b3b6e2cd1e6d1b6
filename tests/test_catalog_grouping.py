"""Dataset grouping: one document per dataset, the right kind and facets, bounded memory, exact resume."""

from __future__ import annotations

from datetime import timedelta

import pytest

from catalog_sync.grouping import DatasetGrouper, ObjectInfo
from catalog_sync.records import Association, DatasetRecord
from catalog_sync.sinks import SQLiteSink
from catalog_sync.sync import Checkpoint, index_step
from tests.catalog_fixtures import BASE_TIME, CMIP6_PREFIX, CMIP6_STORES, FakeS3, cmip6_keys, era5_keys, objects

CMIP6 = Association("us-west-2", "cmip6-pds", CMIP6_PREFIX, f"/us-west-2/{CMIP6_PREFIX}")
ERA5 = Association("us-east-1", "era5-pds", "", "/us-east-1/era5-pds")


def group_all(association: Association, items: list[ObjectInfo], **kwargs: int) -> list[DatasetRecord]:
    grouper = DatasetGrouper(association, **kwargs)
    records = [r for item in items for r in grouper.add(item)]
    return records + grouper.finish()


def by_path(records: list[DatasetRecord]) -> dict[str, DatasetRecord]:
    return {r.path: r for r in records}


def test_cmip6_stores_are_one_document_each_with_the_nine_drs_facets() -> None:
    records = by_path(group_all(CMIP6, objects(cmip6_keys())))
    stores = [r for r in records.values() if r.kind == "cmip6-zarr"]
    assert len(stores) == len(CMIP6_STORES)
    tas = records[f"/fsx/us-west-2/{CMIP6_PREFIX}/UKESM1-0-LL/ssp585/r1i1p1f2/Amon/tas/gn/v20190507"]
    assert tas.facets == {"activity_id": "ScenarioMIP", "institution_id": "MOHC", "source_id": "UKESM1-0-LL",
                          "experiment_id": "ssp585", "member_id": "r1i1p1f2", "table_id": "Amon",
                          "variable_id": "tas", "grid_label": "gn", "version": "v20190507"}
    assert tas.object_count == 3 + 4 * 2 + 6  # group markers, 4 arrays' markers, 6 chunks
    assert tas.s3_uri == f"s3://cmip6-pds/{CMIP6_STORES[3]}/"
    assert (tas.region, tas.pool, tas.dask_pool, tas.bucket) == ("us-west-2", "pool-us-west-2", "pool-us-west-2",
                                                                 "cmip6-pds")
    assert tas.fileName == tas.path
    readme = records[f"/fsx/us-west-2/{CMIP6_PREFIX}/README.txt"]
    assert (readme.kind, readme.object_count) == ("file", 1)


def test_era5_files_and_zarr_stores() -> None:
    records = by_path(group_all(ERA5, objects(era5_keys())))
    air = records["/fsx/us-east-1/era5-pds/2022/01/data/air_temperature_at_2_metres.nc"]
    assert air.kind == "era5-netcdf"
    assert air.facets == {"year": "2022", "month": "01", "variable": "air_temperature_at_2_metres"}
    sst = records["/fsx/us-east-1/era5-pds/2022/01/data/sea_surface_temperature.zarr"]
    assert (sst.kind, sst.object_count) == ("era5-zarr", 3)
    assert records["/fsx/us-east-1/era5-pds/2021/07/main.nc"].kind == "netcdf"
    assert len([r for r in records.values() if r.kind == "era5-netcdf"]) == 2 * 12 * 2


def test_size_count_and_newest_modification_are_aggregated() -> None:
    keys = ["d/s/.zgroup", "d/s/a/.zarray", "d/s/a/0", "d/s/a/1"]
    items = [ObjectInfo(k, 10 * (i + 1), BASE_TIME + timedelta(days=i)) for i, k in enumerate(keys)]
    (record,) = group_all(Association("eu-west-1", "b", "", "/eu-west-1/b"), items)
    assert (record.kind, record.size, record.object_count) == ("zarr", 100, 4)
    assert record.last_modified == (BASE_TIME + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_zarr_v3_groups_are_found_although_their_marker_sorts_after_their_chunks() -> None:
    keys = ["g/arr/c/0/0", "g/arr/c/0/1", "g/arr/zarr.json", "g/other/c/0", "g/other/zarr.json", "g/zarr.json",
            "h/loose", "h/notes.txt"]
    records = by_path(group_all(Association("eu-west-1", "b", "", "/eu-west-1/b"), objects(keys)))
    assert (records["/fsx/eu-west-1/b/g"].kind, records["/fsx/eu-west-1/b/g"].object_count) == ("zarr", 6)
    assert {p: r.kind for p, r in records.items() if p != "/fsx/eu-west-1/b/g"} == {
        "/fsx/eu-west-1/b/h/loose": "file", "/fsx/eu-west-1/b/h/notes.txt": "file"}


def test_pending_items_are_bounded() -> None:
    keys = [f"top/{i:06d}" for i in range(50)]
    grouper = DatasetGrouper(Association("eu-west-1", "b", "", "/eu-west-1/b"), max_pending=5)
    emitted = [r for item in objects(keys) for r in grouper.add(item)]
    assert len(grouper._pending) <= 5 and len(emitted) >= 45
    assert len(emitted + grouper.finish()) == 50


@pytest.mark.parametrize("key", [
    "CMIP6/ScenarioMIP/MOHC/../../etc/passwd", "CMIP6/ScenarioMIP/MOHC/a//b.nc", "CMIP6/ScenarioMIP/MOHC/./x.nc",
    "CMIP6/ScenarioMIP/MOHC/dir/", "CMIP6/ScenarioMIP/MOHC/tab\there.nc", "elsewhere/file.nc",
    # unsafe as worker paths (issue 21): a C1 control, a bidirectional override, a zero-width space, a component
    # over Lustre's 255-byte name limit
    "CMIP6/ScenarioMIP/MOHC/next\x85line.nc", "CMIP6/ScenarioMIP/MOHC/cn.\u202etxt",
    "CMIP6/ScenarioMIP/MOHC/a\u200bb.nc", "CMIP6/ScenarioMIP/MOHC/" + "x" * 256 + ".nc",
])
def test_malformed_keys_are_skipped_with_a_reason(key: str) -> None:
    grouper = DatasetGrouper(CMIP6)
    assert grouper.add(ObjectInfo(key, 1, BASE_TIME)) == [] and grouper.finish() == []
    assert sum(grouper.skipped.values()) == 1 and grouper.skipped_examples[0][0] == key[:200]


@pytest.mark.parametrize("key", ["CMIP6/ScenarioMIP/MOHC/données/température_2m.nc",
                                 "CMIP6/ScenarioMIP/MOHC/🌍/" + "é" * 120 + ".nc",
                                 "CMIP6/ScenarioMIP/MOHC/" + "/".join(["x" * 60] * 15) + ".nc"])
def test_odd_unicode_and_very_long_keys_still_make_documents(key: str) -> None:
    (record,) = group_all(CMIP6, [ObjectInfo(key, 1, BASE_TIME)])
    assert record.path.endswith(key.removeprefix(CMIP6_PREFIX)) and len(record.id) == 40


def rows(sink: SQLiteSink, region: str) -> set[tuple[object, ...]]:
    with sink.connect() as db:
        return set(db.execute("SELECT * FROM datasets WHERE region = ?", (region,)).fetchall())


@pytest.mark.parametrize("association,keys", [(CMIP6, cmip6_keys()), (ERA5, era5_keys())], ids=["cmip6", "era5"])
def test_resuming_from_any_cut_gives_exactly_the_uninterrupted_catalog(tmp_path, association, keys) -> None:  # type: ignore[no-untyped-def]
    items = objects(keys + ([f"{association.key_prefix}zz/{i}" for i in range(5)]))
    reference = SQLiteSink(tmp_path / "reference.db")
    load = reference.begin(association.region, "d")
    index_step(FakeS3(association.bucket, items), association, load, Checkpoint(association.region, load.load_id, ""),
               page_size=7)
    load.commit()
    expected = rows(reference, association.region)
    for budget in (1, 2, 5, 13, 40):  # stop after this many clock readings, then resume, until done
        sink = SQLiteSink(tmp_path / f"cut-{budget}.db")
        load = sink.begin(association.region, "d")
        checkpoint, steps = Checkpoint(association.region, load.load_id, ""), 0
        while True:
            ticks = iter(range(10**6))
            progress = index_step(FakeS3(association.bucket, items), association,
                                  sink.resume(checkpoint.load_id, association.region), checkpoint,
                                  deadline=budget, clock=lambda t=ticks: float(next(t)), page_size=7)
            checkpoint, steps = progress.checkpoint, steps + 1
            if progress.done:
                break
        sink.resume(checkpoint.load_id, association.region).commit()
        assert rows(sink, association.region) == expected, f"budget {budget}"
        assert steps > 1 or budget == 40
