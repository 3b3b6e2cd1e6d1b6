"""`storage: s3` (issue 32, point 1): a worker region without a file system, whose workers read the dataset's bucket in
the region through the nightly sync's reference sets, with the byte ranges they read cached on local disk. The
config refuses what would not work, the graph of every stack shape holds no Lustre and grants the workers the
dataset's bucket, the sync catalogues s3:// paths without an import, and a chunk read again comes from the cache."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr

from catalog_sync.records import Association
from catalog_sync.references import References
from catalog_sync.sinks import SQLiteSink
from catalog_sync.sync import rebuild_catalog
from components.nightly_sync import workflow_definition
from dask_regions.cache import RangeCache, read_counts, s3_ranges
from dask_regions.catalog import Catalog
from dask_regions.references import covered, open_spans, read_set
from local_platform.data import ERA5_VARIABLE, publish, write_era5_like
from plan import evaluate
from platform_facts import ERA5_TIME_DIM, READ_CACHE_MOUNT, READ_CACHE_VARIABLE
from stackconfig import ConfigError, parse_stack_config, raw_stack_config
from stackconfig.schema import LUSTRE_KEYS
from stackgraph.synth import PROJECT_DIR, Graph
from tests.catalog_fixtures import s3_client
from tests.conftest import SHAPES, cached_graph, shape_config

S3 = "s3"
FILE_SYSTEM = "aws:fsx/lustreFileSystem:LustreFileSystem"
ASSOCIATION = "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation"


# ------------------------------------------------------------------------------------------------- config
def dev_with(**worker: Any) -> dict[str, Any]:
    _, raw = raw_stack_config(PROJECT_DIR, "dev", {})
    return {**raw, "workers": [{**raw["workers"][0], **worker}, *raw["workers"][1:]]}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="dev")
    return [str(problem) for problem in caught.value.problems]


def test_an_unknown_storage_is_refused_naming_the_allowed_ones() -> None:
    (problem,) = problems(dev_with(storage="efs"))
    assert problem.startswith("workers[0].storage: 'efs' is not a storage kind.") and "'lustre', 's3'" in problem


def test_storage_s3_refuses_every_lustre_key_given_naming_it() -> None:
    found = problems(dev_with(storage=S3, lustreDeploymentType="SCRATCH_2", lustreStorageGiB=2400))
    assert {p.split(":")[0] for p in found} == {f"workers[0].{key}" for key in (
        "lustreFileSystemPath", "lustreDeploymentType", "lustreStorageGiB")}
    assert all("applies only with storage 'lustre'" in p for p in found)


def test_storage_s3_refuses_a_known_dataset_outside_the_region() -> None:
    raw = dev_with(storage=S3, lustreFileSystemPath=None)
    del raw["workers"][0]["lustreFileSystemPath"]
    raw["workers"][0]["region"] = "eu-central-1"  # era5-pds is in us-east-1
    (problem,) = problems(raw)
    assert problem.startswith("workers[0].dataset: 'era5-pds' is in us-east-1, not eu-central-1")
    assert "set workers[0].region to 'us-east-1'" in problem


def test_an_unknown_bucket_with_storage_s3_loads_with_a_warning_naming_what_to_check() -> None:
    config = shape_config("one-worker", worker_storage=S3)
    (warning,) = config.warnings
    assert str(warning).startswith("workers[0].dataset: 'dataset-us-east-1' is not a public dataset the platform")
    assert "must be in us-east-1" in str(warning)
    assert shape_config("one-worker").warnings == ()  # Lustre: FSx reads the bucket, as before


# -------------------------------------------------------------------------------------------------- graph
@pytest.fixture(params=sorted(SHAPES))
def on_s3(request: pytest.FixtureRequest) -> tuple[str, Graph]:
    return request.param, cached_graph(request.param, worker_storage=S3)


def test_every_shape_on_s3_has_no_file_system_and_passes_plan(on_s3: tuple[str, Graph]) -> None:
    shape, graph = on_s3
    assert not graph.of_type(FILE_SYSTEM) and not graph.of_type(ASSOCIATION)
    assert not [g for g in graph.of_type("aws:ec2/securityGroup:SecurityGroup") if g.name.endswith("-lustre-sg")]
    review = evaluate(graph, shape_config(shape, worker_storage=S3))
    assert review.violations == [] and review.policy_violations == []
    assert all(verdict == "yes" for verdict in review.journeys.values())
    assert review.cost is not None and review.cost.errors == []
    lustre = evaluate(cached_graph(shape), shape_config(shape)).cost
    assert lustre is not None and review.cost.idle_usd_per_month is not None
    assert lustre.idle_usd_per_month is not None and review.cost.idle_usd_per_month < lustre.idle_usd_per_month
    for outputs in graph.outputs["workerRegions"].values():
        assert outputs["fileSystemId"] is None and outputs["storage"] == S3


def _containers(graph: Graph, region: str) -> dict[str, Any]:
    (task,) = [t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition")
               if t.name == f"worker-{region}-workers"]
    (container,) = json.loads(task.inputs["containerDefinitions"])
    return {"task": task, "container": container}


def test_the_workers_mount_the_read_cache_and_may_read_only_their_dataset(on_s3: tuple[str, Graph]) -> None:
    shape, graph = on_s3
    for worker in shape_config(shape, worker_storage=S3).workers:
        found = _containers(graph, worker.region)
        assert found["container"]["mountPoints"] == [
            {"sourceVolume": "read-cache", "containerPath": READ_CACHE_MOUNT, "readOnly": False}]
        assert {"name": READ_CACHE_VARIABLE, "value": READ_CACHE_MOUNT} in found["container"]["environment"]
        role = graph.named(f"worker-{worker.region}-workers-task-role", "aws:iam/role:Role")
        policies = [p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
        statements = [s for p in policies for s in json.loads(p.inputs["policy"])["Statement"]]
        dataset = worker.dataset
        reads = [s for s in statements if s["Action"] == "s3:GetObject"]
        under = f"{dataset.prefix}/" if dataset.prefix else ""
        assert f"arn:aws:s3:::{dataset.bucket}/{under}*" in {s["Resource"] for s in reads}
        (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
        assert listing["Resource"] == f"arn:aws:s3:::{dataset.bucket}"
        if dataset.prefix:  # only under its prefix
            assert listing["Condition"]["StringLike"]["s3:prefix"] == [dataset.prefix, f"{dataset.prefix}/*"]
        else:
            assert "Condition" not in listing


def test_the_sync_of_an_s3_region_imports_nothing_and_may_not_call_fsx() -> None:
    graph = cached_graph("dev", worker_storage=S3)
    for machine in graph.of_type("aws:sfn/stateMachine:StateMachine"):
        states = json.loads(machine.inputs["definition"])
        assert states["StartAt"] == "BeginIndex" and not any("Import" in name for name in states["States"])
    for function in graph.of_type("aws:lambda/function:Function"):
        variables = (function.inputs.get("environment") or {}).get("variables", {})
        if "DATASET" in variables:
            assert "FILE_SYSTEM_ID" not in variables and "FSX_PATH" not in variables
    for policy in graph.of_type("aws:iam/rolePolicy:RolePolicy"):
        assert "fsx:" not in policy.inputs["policy"]
    with_import = workflow_definition("arn:aws:lambda:us-east-1:1:function:f")
    without = workflow_definition("arn:aws:lambda:us-east-1:1:function:f", import_metadata=False)
    assert set(with_import["States"]) - set(without["States"]) == {
        "StartImport", "WaitForImport", "PollImport", "ImportFinished?", "ImportFailed"}
    for state in without["States"].values():  # nothing left points at a removed state
        assert {state.get("Next"), state.get("Default")} & set(with_import["States"]) - set(without["States"]) == set()


def test_lustre_keys_are_what_storage_s3_leaves_out() -> None:
    lustre = shape_config("dev").workers[0]
    assert lustre.on_lustre and all(key.startswith("lustre") for key in LUSTRE_KEYS)


# ------------------------------------------------------------------------------------------- the read cache
def test_the_cache_keeps_ranges_whole_and_within_its_bound(tmp_path: Path) -> None:
    cache = RangeCache(tmp_path / "cache", limit=10_000)
    assert cache.get("s3://b/k", 0, 100) is None
    cache.put("s3://b/k", 0, 100, b"a" * 100)
    assert cache.get("s3://b/k", 0, 100) == b"a" * 100 and cache.get("s3://b/k", 0, 99) is None
    for i in range(30):  # 30 kB through a 10 kB cache: the oldest go, the newest stay
        cache.put("s3://b/k", i * 1000, (i + 1) * 1000, bytes([i]) * 1000)
    assert cache.sweep() <= 10_000
    assert cache.get("s3://b/k", 29_000, 30_000) == bytes([29]) * 1000
    assert cache.get("s3://b/k", 0, 1000) is None
    assert not list((tmp_path / "cache").glob("*/.partial-*"))  # no half-written range left behind


def test_ranges_written_by_many_threads_at_once_are_read_whole(tmp_path: Path) -> None:
    caches = [RangeCache(tmp_path / "shared", limit=1 << 30) for _ in range(4)]  # as four worker processes
    payload = bytes(range(256)) * 400
    seen: list[bytes | None] = []

    def work(cache: RangeCache) -> None:
        for _ in range(20):
            cache.put("s3://b/same", 0, len(payload), payload)
            seen.append(cache.get("s3://b/same", 0, len(payload)))

    threads = [threading.Thread(target=work, args=(cache,)) for cache in caches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen and all(found == payload for found in seen)


# ------------------------------------------------------------------------------- the sync and the reads, on S3
@pytest.fixture
def on_bucket(tmp_path: Path, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Four ERA5-like months in a dataset bucket, synced as a region with storage `s3` (no file system)."""
    s3 = s3_client(moto_endpoint)
    name = f"era5-{uuid.uuid4().hex[:8]}"
    staging = tmp_path / "staging"
    write_era5_like(staging, months=4, steps=4, lat=73, lon=144)  # chunks over the size a set holds inline
    publish(s3, staging, name, "", "us-east-1")
    s3.create_bucket(Bucket=f"{name}-references")
    sink = SQLiteSink(tmp_path / "catalog.db")
    rebuild_catalog(s3, Association("us-east-1", name, "", None), sink,
                    references=References(s3, f"s3://{name}-references/sets"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # where a worker reads, in its region
    read_set.cache_clear()
    s3_ranges.cache_clear()
    return {"s3": s3, "bucket": name, "staging": staging, "tmp": tmp_path,
            "catalog": Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")}


def _open(records: list[Any]) -> Any:
    uri = records[0].references
    spans = covered(uri, [r.path for r in records])
    assert spans is not None
    return open_spans(uri, spans, ERA5_TIME_DIM, {})


@pytest.mark.processes
def test_an_s3_region_catalogues_bucket_paths_and_reads_chunks_again_from_its_cache(on_bucket: dict[str, Any]) -> None:
    months = on_bucket["catalog"].find(variable=ERA5_VARIABLE)
    assert len(months) == 4
    assert all(m.path == m.s3_uri and m.path.startswith(f"s3://{on_bucket['bucket']}/") for m in months)
    assert all(m.references for m in months)
    expected = xr.concat([xr.open_dataset(p, engine="h5netcdf") for p in sorted(
        on_bucket["staging"].glob(f"*/*/data/{ERA5_VARIABLE}.nc"))], dim=ERA5_TIME_DIM)
    with dask.config.set({"dask-regions.read-cache.directory": str(on_bucket["tmp"] / "read-cache")}):
        first = _open(months)[ERA5_VARIABLE].values
        after_first = read_counts()
        # The objects gone from the bucket: every chunk read again must come from the cache.
        for month in months:
            bucket, _, key = month.s3_uri.removeprefix("s3://").partition("/")
            on_bucket["s3"].delete_object(Bucket=bucket, Key=key)
        again = _open(months)[ERA5_VARIABLE].values
        after_again = read_counts()
    np.testing.assert_array_equal(first, expected[ERA5_VARIABLE].values)
    np.testing.assert_array_equal(again, first)
    assert after_first["misses"] > 0 and after_first["fetched_bytes"] > 0
    assert after_again["fetched_bytes"] == after_first["fetched_bytes"]  # nothing more from S3
    assert after_again["hits"] >= after_first["misses"]


@pytest.mark.processes
def test_without_a_cache_every_read_goes_to_the_bucket(on_bucket: dict[str, Any]) -> None:
    months = on_bucket["catalog"].find(variable=ERA5_VARIABLE)
    _open(months)[ERA5_VARIABLE].values  # noqa: B018 (read)
    once = read_counts()
    _open(months)[ERA5_VARIABLE].values  # noqa: B018
    twice = read_counts()
    assert once["cache"] is None and twice["hits"] == 0
    assert twice["fetched_bytes"] == 2 * once["fetched_bytes"] > 0


# ------------------------------------------------------------------ placement proven by isolation, on buckets
def _region_data(directory: Path, endpoint: str, region: str, lat: int, lon: int) -> dict[str, Any]:
    """A region's ERA5-like months in its own bucket on its own AWS emulation, synced (storage `s3`) into the
    shared catalog at `directory`/catalog.db."""
    s3 = s3_client(endpoint, region)
    name = f"era5-{region}-{uuid.uuid4().hex[:6]}"
    staging = directory / region
    write_era5_like(staging, months=3, steps=4, lat=lat, lon=lon)
    publish(s3, staging, name, "", region)
    s3.create_bucket(Bucket=f"{name}-references", **({} if region == "us-east-1" else {
        "CreateBucketConfiguration": {"LocationConstraint": region}}))
    rebuild_catalog(s3, Association(region, name, "", None), SQLiteSink(directory / "catalog.db"),
                    references=References(s3, f"s3://{name}-references/sets"))
    return {"staging": staging, "bucket": name}


@pytest.mark.processes
@pytest.mark.slow
def test_each_pool_sees_only_its_regions_bucket_and_computes_from_its_cache(tmp_path: Path) -> None:
    import subprocess
    import sys

    import dask_regions as dr
    from local_platform.platform import _wait_for_port
    from local_platform.processes import stop_groups
    from tests.catalog_fixtures import free_port, moto_environment
    from tests.regional_cluster import RegionalCluster

    moto_environment()
    servers, endpoints = [], {}
    for region in ("us-east-1", "us-west-2"):  # an AWS emulation of its own a region (a process: moto's state is
        port = free_port()                    # per process), so a bucket exists in one region only
        log = tmp_path / f"aws-{region}.log"
        servers.append(subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                                         "-p", str(port)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True))
        _wait_for_port(port, f"moto for {region}", servers[-1], log)
        endpoints[region] = f"http://127.0.0.1:{port}"
    try:
        data = {"us-east-1": _region_data(tmp_path, endpoints["us-east-1"], "us-east-1", 73, 144),
                "us-west-2": _region_data(tmp_path, endpoints["us-west-2"], "us-west-2", 60, 120)}
        catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
        pool_env = {f"pool-{region}": {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": region,
                                       READ_CACHE_VARIABLE: str(tmp_path / "cache" / region)}
                    for region, endpoint in endpoints.items()}
        cluster = RegionalCluster(tmp_path, {pool: 1 for pool in pool_env}, pool_env=pool_env,
                                  regions=list(endpoints)).start()
        try:
            client = cluster.client()
            opened = {region: dr.open_mfdataset(client, catalog.find(variable=ERA5_VARIABLE, region=region),
                                                concat_dim=ERA5_TIME_DIM) for region in endpoints}
            means = {region: float(dataset[ERA5_VARIABLE].mean().compute()) for region, dataset in opened.items()}
            for region, found in means.items():
                expected = xr.concat([xr.open_dataset(p, engine="h5netcdf") for p in sorted(
                    data[region]["staging"].glob(f"*/*/data/{ERA5_VARIABLE}.nc"))], dim=ERA5_TIME_DIM)
                assert found == pytest.approx(float(expected[ERA5_VARIABLE].mean()), rel=1e-6)
            again = float(opened["us-east-1"][ERA5_VARIABLE].mean().compute())
            assert again == means["us-east-1"]
            counts = {pool: next(iter(client.run(read_counts, workers=[w for w, info in client.scheduler_info()[
                "workers"].items() if pool in info["resources"]]).values())) for pool in pool_env}
            east = counts["pool-us-east-1"]
            assert east["fetched_bytes"] > 0 and east["hits"] > 0  # the second mean read its chunks from disk
            # A read placed in the wrong region fails loudly: that pool's AWS has no such bucket.
            records = catalog.find(variable=ERA5_VARIABLE, region="us-east-1")
            # (Opening a collection there reads its reference set first: that read fails.)
            misplaced = client.submit(read_set.__wrapped__, records[0].references, resources={"pool-us-west-2": 1},
                                      pure=False)
            with pytest.raises(Exception, match="NoSuchBucket"):
                misplaced.result(timeout=60)
            client.close()
        finally:
            cluster.close()
    finally:
        stop_groups(servers)


@pytest.mark.processes
def test_every_call_of_an_s3_regions_sync_is_allowed_to_its_role(moto_endpoint: str, osmem_url: str,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    from tests.test_permissions import denied, record_sync

    graph, calls = record_sync(cached_graph("dev", worker_storage=S3), moto_endpoint, osmem_url, monkeypatch,
                               tmp_path)
    actions = {call.action for call in calls.calls}
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "es:ESHttpPost"} <= actions
    assert not any(action.startswith("fsx:") for action in actions)
    assert denied(graph, calls.calls) == []  # by the authorization reference (stackgraph.permissions)


def test_the_workers_chunk_reads_are_allowed_to_their_role_in_their_dataset_only(moto_endpoint: str,
                                                                                 tmp_path: Path) -> None:
    """What dask_regions.cache.S3Ranges calls (recorded against moto), as the workers' task role."""
    from unittest import mock

    from stackgraph.permissions import Call
    from tests.aws_calls import AwsCalls
    from tests.test_permissions import denied

    graph = cached_graph("dev", worker_storage=S3)
    s3 = s3_client(moto_endpoint)
    s3.create_bucket(Bucket="era5-pds")
    s3.put_object(Bucket="era5-pds", Key="2000/01/data/t.nc", Body=b"0123456789")
    calls, role = AwsCalls(), "worker-us-east-1-workers-task-role"
    reader = s3_ranges.__wrapped__()
    with calls.acting_as(role), mock.patch("boto3.client", lambda service, **_: calls.watch(s3)):
        assert reader.cat_file("s3://era5-pds/2000/01/data/t.nc", 2, 5) == b"234"
    assert [c.action for c in calls.calls] == ["s3:GetObject"]
    assert denied(graph, calls.calls) == []
    assert len(denied(graph, [Call(role, "s3:GetObject", "arn:aws:s3:::cmip6-pds/CMIP6/x"),  # not its region's
                              Call(role, "s3:PutObject", "arn:aws:s3:::era5-pds/x")])) == 2  # read only
