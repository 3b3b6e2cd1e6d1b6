"""The S3 catalog (issue 32, point 2): per-region SQLite snapshots in a versioned bucket. The sinks' shared contract
(tests/test_catalog_sinks.py) runs against it too; here, what is its own: the sync publishing to it, a
swap seen at once by a reader already open, a failed sync leaving the snapshot as it was, and a snapshot that
cannot be read replaced by its previous version with a warning, never an empty catalog."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from catalog_sync.catalogs import open_sink
from catalog_sync.records import Association
from catalog_sync.s3_catalog import S3SnapshotSink
from catalog_sync.sinks import SwapRefused
from catalog_sync.sync import rebuild_catalog
from components.iam import S3_CATALOG_PREFIX
from dask_regions.catalog import Catalog, CatalogQueryError
from plan import evaluate
from platform_facts import CATALOG_S3_ENDPOINT_VARIABLE, catalog_load_prefix, catalog_snapshot_key
from stackgraph.permissions import reference_findings
from stackgraph.synth import Graph
from tests.catalog_fixtures import cmip6_keys, era5_keys, s3_client
from tests.conftest import SHAPES, cached_graph, shape_config

PREFIX = "catalog"


@pytest.fixture
def world(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Two regions' datasets (ERA5-like keys in us-east-1, CMIP6-like in us-west-2) and a versioned catalog
    bucket in the client region."""
    monkeypatch.setenv(CATALOG_S3_ENDPOINT_VARIABLE, moto_endpoint)
    s3 = s3_client(moto_endpoint)
    suffix = uuid.uuid4().hex[:8]
    buckets = {"us-east-1": f"era5-{suffix}", "us-west-2": f"cmip6-{suffix}", "catalog": f"catalog-{suffix}"}
    for name in buckets.values():
        s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=buckets["catalog"], VersioningConfiguration={"Status": "Enabled"})
    for key in era5_keys(years=(2021,)):
        s3.put_object(Bucket=buckets["us-east-1"], Key=key, Body=b"x")
    for key in cmip6_keys(chunks=1):
        s3.put_object(Bucket=buckets["us-west-2"], Key=key, Body=b"x")
    location = f"s3://{buckets['catalog']}/{PREFIX}"
    return {"s3": s3, "buckets": buckets, "location": location,
            "sink": open_sink(location, "eu-west-2")}


def sync(world: dict[str, Any], region: str, **options: Any) -> Any:
    prefix = "CMIP6" if region == "us-west-2" else ""
    association = Association(region, world["buckets"][region], prefix, None)
    return rebuild_catalog(world["s3"], association, world["sink"], **options)


def snapshot_versions(world: dict[str, Any], region: str) -> list[str]:
    key = catalog_snapshot_key(PREFIX, region)
    listed = world["s3"].list_object_versions(Bucket=world["buckets"]["catalog"], Prefix=key).get("Versions", [])
    return [v["VersionId"] for v in listed if v["Key"] == key]


def test_the_sync_publishes_each_regions_snapshot_and_the_reader_answers_as_the_others_do(
        world: dict[str, Any], tmp_path: Path) -> None:
    assert isinstance(world["sink"], S3SnapshotSink)
    sync(world, "us-east-1")
    sync(world, "us-west-2")
    catalog = Catalog.open(world["location"], "eu-west-2")
    months = catalog.find(variable="air_temperature_at_2_metres")
    assert len(months) == 12 and {m.region for m in months} == {"us-east-1"}  # one a month
    assert all(m.path.startswith(f"s3://{world['buckets']['us-east-1']}/") for m in months)
    stores = catalog.find(variable_id="tas")
    assert stores and {s.region for s in stores} == {"us-west-2"}
    # The batch lookup: one query, by path or by S3 URI.
    wanted = [months[0].path, stores[0].s3_uri]
    assert set(catalog.locate(wanted)) == set(wanted)
    description = catalog.to_intake_esm(tmp_path / "esm", name="cmip6", variable_id="tas")
    assert json.loads(description.read_text())["assets"]["column_name"] == "path"
    # Nothing of the loads is left beside the snapshots.
    listed = world["s3"].list_objects_v2(Bucket=world["buckets"]["catalog"], Prefix=f"{PREFIX}/")
    assert sorted(entry["Key"] for entry in listed["Contents"]) == [
        catalog_snapshot_key(PREFIX, "us-east-1"), catalog_snapshot_key(PREFIX, "us-west-2")]


def test_a_swap_is_seen_at_once_by_a_reader_already_open(world: dict[str, Any]) -> None:
    sync(world, "us-east-1")
    catalog = Catalog.open(world["location"], "eu-west-2")
    before = len(catalog.find(region="us-east-1"))
    world["s3"].put_object(Bucket=world["buckets"]["us-east-1"], Key="2022/01/data/air_temperature_at_2_metres.nc",
                           Body=b"x")
    sync(world, "us-east-1")
    assert len(catalog.find(region="us-east-1")) == before + 1  # the same reader, the next query


def test_a_refused_or_failed_sync_leaves_the_serving_snapshot(world: dict[str, Any]) -> None:
    report, _ = sync(world, "us-east-1")
    serving = snapshot_versions(world, "us-east-1")
    bucket = world["buckets"]["us-east-1"]
    for key in era5_keys(years=(2021,))[2:]:  # all but two files gone: over the drop limit
        world["s3"].delete_object(Bucket=bucket, Key=key)
    with pytest.raises(SwapRefused, match=f"the serving one {report.documents}"):
        sync(world, "us-east-1")
    assert snapshot_versions(world, "us-east-1") == serving
    assert len(Catalog.open(world["location"], "eu-west-2").find(region="us-east-1")) == report.documents
    # A load that fails half way is dropped: its parts go, the snapshot stays.
    load = world["sink"].begin("us-east-1", "s3://x")
    load.add([])
    load.abort()
    listed = world["s3"].list_objects_v2(Bucket=world["buckets"]["catalog"],
                                         Prefix=catalog_load_prefix(PREFIX, "us-east-1"))
    assert listed.get("KeyCount", 0) == 0 and snapshot_versions(world, "us-east-1") == serving


def test_an_unreadable_snapshot_falls_back_to_the_previous_version_with_a_warning(world: dict[str, Any]) -> None:
    report, _ = sync(world, "us-east-1")
    catalog = Catalog.open(world["location"], "eu-west-2")
    key = catalog_snapshot_key(PREFIX, "us-east-1")
    world["s3"].put_object(Bucket=world["buckets"]["catalog"], Key=key, Body=b"not a SQLite file")  # newest
    with pytest.warns(UserWarning, match="cannot be read.*trying the version before it"):
        found = catalog.find(region="us-east-1")
    assert len(found) == report.documents > 0  # the previous snapshot, never an empty catalog


def test_a_region_with_no_readable_snapshot_is_an_error_naming_it(world: dict[str, Any]) -> None:
    key = catalog_snapshot_key(PREFIX, "us-west-2")
    world["s3"].put_object(Bucket=world["buckets"]["catalog"], Key=key, Body=b"truncated")
    with pytest.warns(UserWarning), pytest.raises(CatalogQueryError, match=f"no version of .*{key} can be read"):
        Catalog.open(world["location"], "eu-west-2").find()
    with pytest.raises(CatalogQueryError, match="holds no snapshot yet"):
        Catalog.open(f"s3://{world['buckets']['us-east-1']}/nothing-here", "eu-west-2").find()


# ------------------------------------------------------------------------------ the graph: catalog.kind s3
S3_CATALOG = "s3"


@pytest.fixture(params=sorted(SHAPES))
def s3_catalog_graph(request: pytest.FixtureRequest) -> tuple[str, Graph]:
    return request.param, cached_graph(request.param, catalog_kind=S3_CATALOG)


def test_every_shape_with_the_s3_catalog_has_no_domain_and_passes_plan(s3_catalog_graph: tuple[str, Graph]) -> None:
    shape, graph = s3_catalog_graph
    assert not graph.of_type("aws:opensearch/domain:Domain") and not graph.of_type("aws:lambda/invocation:Invocation")
    assert graph.outputs["catalogEndpoint"].startswith("s3://") and graph.outputs["catalogEndpoint"].endswith(
        f"/{S3_CATALOG_PREFIX}")
    review = evaluate(graph, shape_config(shape, catalog_kind=S3_CATALOG))
    assert review.violations == [] and review.policy_violations == []
    assert all(verdict == "yes" for verdict in review.journeys.values())
    assert review.cost is not None and review.cost.errors == []
    assert reference_findings(graph) == []  # every statement against AWS's authorization reference
    bucket = graph.outputs["catalogEndpoint"].removeprefix("s3://").split("/")[0]
    (versioning,) = [v for v in graph.of_type("aws:s3/bucketVersioning:BucketVersioning")
                     if v.inputs["bucket"] == bucket]
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"  # what readers fall back to


def test_each_sync_may_write_only_its_own_regions_snapshot_and_the_notebook_only_read(
        s3_catalog_graph: tuple[str, Graph]) -> None:
    from stackgraph.permissions import Call
    from tests.test_permissions import denied

    _, graph = s3_catalog_graph
    bucket = graph.outputs["catalogEndpoint"].removeprefix("s3://").split("/")[0]
    arn = f"arn:aws:s3:::{bucket}"
    regions = sorted(graph.outputs["workerRegions"])
    for region in regions:
        role = f"worker-{region}-catalog-sync-function-role"
        own = f"{arn}/{catalog_snapshot_key(S3_CATALOG_PREFIX, region)}"
        assert denied(graph, [Call(role, "s3:PutObject", own), Call(role, "s3:GetObject", own)]) == []
        for other in set(regions) - {region}:
            assert denied(graph, [Call(role, "s3:PutObject", f"{arn}/{catalog_snapshot_key(S3_CATALOG_PREFIX, other)}"),
                                  Call(role, "s3:DeleteObject",
                                       f"{arn}/{catalog_load_prefix(S3_CATALOG_PREFIX, other, 'load-x')}part.jsonl")])
    reader = "client-notebook-role"
    snapshot = f"{arn}/{catalog_snapshot_key(S3_CATALOG_PREFIX, regions[0])}"
    assert denied(graph, [Call(reader, "s3:GetObject", snapshot), Call(reader, "s3:GetObjectVersion", snapshot),
                          Call(reader, "s3:ListBucket", arn, {"s3:prefix": f"{S3_CATALOG_PREFIX}/"})]) == []
    assert denied(graph, [Call(reader, "s3:PutObject", snapshot)])


@pytest.mark.processes
def test_the_declared_workflow_publishes_to_the_s3_catalog_with_its_roles_calls_allowed(
        moto_endpoint: str, osmem_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.test_permissions import denied, record_sync

    graph, calls = record_sync(cached_graph("dev", catalog_kind=S3_CATALOG), moto_endpoint, osmem_url, monkeypatch,
                               tmp_path)
    actions = {call.action for call in calls.calls}
    assert {"s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions
    assert not any(action.startswith("es:") for action in actions)
    assert denied(graph, calls.calls) == []
    location = lambda_environment_of(graph, "us-west-2")
    monkeypatch.undo()  # the recording clients go; a reader of the catalog, as the notebook reads it
    monkeypatch.setenv(CATALOG_S3_ENDPOINT_VARIABLE, moto_endpoint)
    found = Catalog.open(location, "eu-west-2").find(region="us-west-2")
    assert found and all(d.region == "us-west-2" for d in found)


def lambda_environment_of(graph: Graph, region: str) -> str:
    from tests.test_permissions import lambda_environment

    return lambda_environment(graph, region)["CATALOG_ENDPOINT"]


def test_a_one_node_domain_has_no_masters_one_zone_and_is_exempt_only_where_chosen() -> None:
    from policy.rules import evaluate_policies

    graph = synthesize_with_catalog({"instanceCount": 1, "dedicatedMasters": False, "instanceType": "t3.small.search"})
    (domain,) = graph.of_type("aws:opensearch/domain:Domain")
    cluster = domain.inputs["clusterConfig"]
    assert cluster["instanceCount"] == 1 and cluster["dedicatedMasterEnabled"] is False
    assert not cluster.get("zoneAwarenessEnabled") and len(domain.inputs["vpcOptions"]["subnetIds"]) == 1
    report = evaluate_policies(graph)
    assert report.violations == []
    assert {(policy, name) for policy, name, _ in report.exemptions} >= {
        ("awssolutions-os4-dedicated-masters", "client-catalog"), ("awssolutions-os7-zone-awareness", "client-catalog")}
    # The same domain without masters but with two nodes chose nothing that exempts it.
    two = evaluate_policies(synthesize_with_catalog({"instanceCount": 2, "dedicatedMasters": False}))
    assert [policy for policy, _ in two.violations] == ["awssolutions-os4-dedicated-masters"]
    assert all(name != "client-catalog" for _, name, _ in evaluate_policies(cached_graph("dev")).exemptions)


def synthesize_with_catalog(catalog: dict[str, Any]) -> Graph:
    from stackgraph.synth import synthesize

    return synthesize("dev", {"catalog": catalog})
