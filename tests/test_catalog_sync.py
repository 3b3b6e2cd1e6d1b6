"""The nightly sync end to end: boto3 against a moto S3 server on loopback (real pagination with small
pages), FSx through Stubber, the catalog in SQLite or osmem. Every fault ends with the previous catalog
intact and a clear report."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import ANY, Stubber
from opensearchpy import OpenSearch

from catalog_sync import handlers
from catalog_sync.fsx_import import IMPORT, FsxImportError
from catalog_sync.records import Association
from catalog_sync.sinks import OpenSearchSink, SinkError, SQLiteSink, SwapRefused, _serving
from catalog_sync.sync import Checkpoint, index_step, rebuild_catalog, sync_region
from stackconfig import PROJECT_DIR as ROOT
from tests.catalog_fixtures import CMIP6_PREFIX, cmip6_keys, era5_keys, objects, s3_client
from tests.test_catalog_grouping import group_all


@pytest.fixture
def bucket(moto_endpoint: str) -> Iterator[tuple[Any, str]]:
    """A fresh bucket (named per test) in the moto server."""
    s3 = s3_client(moto_endpoint)
    name = f"dataset-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=name)
    yield s3, name


def put(s3: Any, bucket: str, keys: list[str]) -> None:
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 16)


def cmip6(bucket: str) -> Association:
    return Association("us-west-2", bucket, CMIP6_PREFIX, f"/us-west-2/{CMIP6_PREFIX}")


def serving(sink: SQLiteSink, region: str) -> list[tuple[Any, ...]]:
    with sink.connect() as db:
        return sorted(db.execute("SELECT id, kind, path, object_count FROM datasets WHERE region = ?", (region,)))


def test_listing_through_small_pages_groups_real_shaped_keys(bucket: tuple[Any, str], tmp_path: Path) -> None:
    s3, name = bucket
    put(s3, name, [*cmip6_keys(chunks=3), "elsewhere/ignored.nc"])
    sink = SQLiteSink(tmp_path / "catalog.db")
    report, _ = rebuild_catalog(s3, cmip6(name), sink, page_size=5)
    rows = serving(sink, "us-west-2")
    assert report.documents == len(rows) == 5  # 4 CMIP6 stores and the README
    assert sorted(kind for _, kind, _, _ in rows) == ["cmip6-zarr"] * 4 + ["file"]
    assert all(path.startswith(f"/fsx/us-west-2/{CMIP6_PREFIX}/") for _, _, path, _ in rows)
    assert all(count == 3 + 8 + 3 for _, kind, _, count in rows if kind == "cmip6-zarr")


def test_time_budget_and_resume_through_moto_match_the_uninterrupted_run(bucket: tuple[Any, str],
                                                                        tmp_path: Path) -> None:
    s3, name = bucket
    put(s3, name, era5_keys(years=(2022,)))
    association = Association("us-east-1", name, "", f"/us-east-1/{name}")
    reference = SQLiteSink(tmp_path / "reference.db")
    rebuild_catalog(s3, association, reference, page_size=4)
    sink = SQLiteSink(tmp_path / "resumed.db")
    load = sink.begin("us-east-1", name)
    checkpoint, invocations = Checkpoint("us-east-1", load.load_id, ""), 0
    while True:  # each "invocation" may read the clock three times before its budget is gone
        ticks = iter(range(100))
        progress = index_step(s3, association, sink.resume(checkpoint.load_id, "us-east-1"), checkpoint,
                              deadline=3, clock=lambda t=ticks: float(next(t)), page_size=4)
        checkpoint, invocations = progress.checkpoint, invocations + 1
        if progress.done:
            break
    sink.resume(checkpoint.load_id, "us-east-1").commit()
    assert invocations > 3
    assert serving(sink, "us-east-1") == serving(reference, "us-east-1")


def test_malformed_keys_never_crash_the_run(bucket: tuple[Any, str], tmp_path: Path) -> None:
    s3, name = bucket
    odd = [f"{CMIP6_PREFIX}/a/../b.nc", f"{CMIP6_PREFIX}/dir/", f"{CMIP6_PREFIX}/données/é🌍.nc",
           f"{CMIP6_PREFIX}/" + "/".join(["d" * 80] * 11) + ".nc", f"{CMIP6_PREFIX}/tab\tkey.nc"]
    put(s3, name, [*odd, f"{CMIP6_PREFIX}/fine.nc"])
    sink = SQLiteSink(tmp_path / "catalog.db")
    report, checkpoint = rebuild_catalog(s3, cmip6(name), sink)
    assert report.documents == 3  # fine.nc, the unicode file and the long one
    assert sum(checkpoint.skipped.values()) == 3 and len(checkpoint.skipped) == 3


def test_an_empty_listing_keeps_the_previous_catalog(bucket: tuple[Any, str], tmp_path: Path) -> None:
    s3, name = bucket
    put(s3, name, cmip6_keys(chunks=1))
    sink = SQLiteSink(tmp_path / "catalog.db")
    rebuild_catalog(s3, cmip6(name), sink)
    before = serving(sink, "us-west-2")
    for key in cmip6_keys(chunks=1):
        s3.delete_object(Bucket=name, Key=key)
    with pytest.raises(SwapRefused, match="0 datasets, the serving one 5"):
        rebuild_catalog(s3, cmip6(name), sink)
    assert serving(sink, "us-west-2") == before
    with sink.connect() as db:  # the refused load was dropped
        assert db.execute("SELECT count(*) FROM loads").fetchone()[0] == 0


def stubbed_fsx(*lifecycles: str) -> Any:
    client = boto3.client("fsx", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response("create_data_repository_task", {"DataRepositoryTask": {
        "TaskId": "task-0123456789abcdef0", "Lifecycle": "PENDING", "Type": IMPORT,
        "FileSystemId": "fs-0123456789abcdef0", "CreationTime": "2026-11-26T00:00:00Z"}},
        {"Type": IMPORT, "FileSystemId": "fs-0123456789abcdef0", "Report": {"Enabled": False},
         "ClientRequestToken": ANY})
    for lifecycle in lifecycles:
        task = {"TaskId": "task-0123456789abcdef0", "Lifecycle": lifecycle, "Type": IMPORT,
                "FileSystemId": "fs-0123456789abcdef0", "CreationTime": "2026-11-26T00:00:00Z",
                "Status": {"TotalCount": 10, "SucceededCount": 10 if lifecycle == "SUCCEEDED" else 4,
                           "FailedCount": 0 if lifecycle == "SUCCEEDED" else 6}}
        if lifecycle == "FAILED":
            task["FailureDetails"] = {"Message": "6 files failed to import"}
        stubber.add_response("describe_data_repository_tasks", {"DataRepositoryTasks": [task]}, {"TaskIds": ANY})
    stubber.activate()
    return client


def test_a_failed_import_leaves_the_catalog_untouched(bucket: tuple[Any, str], tmp_path: Path) -> None:
    s3, name = bucket
    put(s3, name, cmip6_keys(chunks=1))
    sink = SQLiteSink(tmp_path / "catalog.db")
    sync_region(s3, cmip6(name), sink, fsx=stubbed_fsx("EXECUTING", "SUCCEEDED"),
                file_system_id="fs-0123456789abcdef0", sleep=lambda _: None)
    before = serving(sink, "us-west-2")
    put(s3, name, [f"{CMIP6_PREFIX}/new.nc"])
    with pytest.raises(FsxImportError, match="FAILED: 6 files failed to import"):
        sync_region(s3, cmip6(name), sink, fsx=stubbed_fsx("FAILED"), file_system_id="fs-0123456789abcdef0",
                    sleep=lambda _: None)
    assert serving(sink, "us-west-2") == before


@pytest.mark.processes
def test_the_sink_becoming_unreachable_mid_load_keeps_the_previous_catalog(bucket: tuple[Any, str],
                                                                          osmem_url: str) -> None:
    s3, name = bucket
    put(s3, name, cmip6_keys(chunks=1))
    live = OpenSearch(hosts=[osmem_url])
    rebuild_catalog(s3, cmip6(name), OpenSearchSink(live))
    before = sum(live.count(index=name)["count"] for name in _serving(live, "us-west-2"))
    assert before > 0

    class DropsMidLoad(OpenSearchSink):
        def begin(self, region: str, dataset: str) -> Any:
            load = super().begin(region, dataset)
            load.client = OpenSearch(hosts=["http://127.0.0.1:9"], max_retries=0, timeout=2)  # nothing listens
            return load

    with pytest.raises(SinkError, match=r"documents were rejected .*Connection") as caught:
        rebuild_catalog(s3, cmip6(name), DropsMidLoad(live))
    assert "could not be dropped" in "".join(getattr(caught.value, "__notes__", []))
    (serving,) = _serving(live, "us-west-2")
    assert live.count(index=serving)["count"] == before


# ------------------------------------------------------------------- the Lambda workflow, state by state
class LambdaContext:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def test_the_workflow_actions_run_import_index_in_steps_and_swap(bucket: tuple[Any, str], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    s3, name = bucket
    put(s3, name, cmip6_keys(chunks=2))
    fsx = stubbed_fsx("SUCCEEDED")
    monkeypatch.setattr(handlers.boto3, "client", lambda service, **_: {"fsx": fsx, "s3": s3}[service])
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    for key, value in {"FILE_SYSTEM_ID": "fs-0123456789abcdef0", "DATASET": f"s3://{name}/{CMIP6_PREFIX}",
                       "FSX_PATH": f"/us-west-2/{CMIP6_PREFIX}", "CATALOG_ENDPOINT": f"sqlite:///{tmp_path}/c.db",
                       "MAX_DROP": "0.5"}.items():
        monkeypatch.setenv(key, value)
    started = handlers.handle({"action": "start_import"}, None)
    polled = handlers.handle({"action": "poll_import", **started}, None)
    assert (polled["done"], polled["succeeded"], polled["polls"]) == (True, True, 1)
    step = handlers.handle({"action": "index"}, LambdaContext(0))  # no time: one dataset per invocation
    steps = 1
    while not step["done"]:
        step = handlers.handle({"action": "index", "checkpoint": step["checkpoint"]}, LambdaContext(0))
        steps += 1
    assert steps >= 4
    swapped = handlers.handle({"action": "swap", "checkpoint": step["checkpoint"]}, None)
    assert (swapped["documents"], swapped["previous"]) == (5, 0)
    with pytest.raises(ValueError, match="unknown action"):
        handlers.handle({"action": "dance"}, None)


def test_abort_action_drops_the_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_REGION": "us-west-2", "DATASET": "s3://b/p", "FSX_PATH": "/us-west-2/p",
                       "CATALOG_ENDPOINT": f"sqlite:///{tmp_path}/c.db"}.items():
        monkeypatch.setenv(key, value)
    sink = SQLiteSink(tmp_path / "c.db")
    load = sink.begin("us-west-2", "s3://b/p")
    handlers.handle({"action": "abort", "checkpoint": Checkpoint("us-west-2", load.load_id, "").to_json()}, None)
    with pytest.raises(SinkError):
        sink.resume(load.load_id, "us-west-2")


# --------------------------------------------------------------------------------------- the command line
def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "catalog_cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=120, check=False)


@pytest.mark.processes
def test_cli_syncs_a_stack_region_against_given_endpoints(bucket: tuple[Any, str], moto_endpoint: str,
                                                          tmp_path: Path) -> None:
    s3, name = bucket
    put(s3, name, era5_keys(years=(2022,)))
    result = run_cli("--region", "us-east-1", "--dataset", f"s3://{name}", "--catalog",
                     f"sqlite:///{tmp_path}/catalog.db", "--s3-endpoint", moto_endpoint, "--page-size", "10")
    assert result.returncode == 0, result.stderr
    assert "us-east-1: 37 datasets now serving (was 0;" in result.stderr
    assert SQLiteSink(tmp_path / "catalog.db").serving_count("us-east-1") == 37


@pytest.mark.parametrize(("args", "message"), [
    (["--region", "us-east-1", "--catalog", "sqlite:///x.db"],
     "give --stack (to read the dataset from it) or --dataset"),
    (["--region", "eu-north-1", "--catalog", "sqlite:///x.db", "--stack", "dev"], "has no worker region 'eu-north-1'"),
    (["--region", "us-east-1", "--catalog", "sqlite:///x.db", "--dataset", "era5-pds"], "is not an s3://bucket"),
    (["--region", "us-east-1", "--catalog", "mysql://x", "--dataset", "s3://b"],
     "use sqlite:///<path>, an http(s):// OpenSearch endpoint or s3://"),
    (["--region", "us-east-1", "--catalog", "sqlite:///x.db", "--stack", "nope"], "Pulumi.nope.yaml: does not exist"),
    (["--region", "us-east-1", "--catalog", "sqlite:///x.db", "--dataset", "s3://b", "--max-drop", "2"],
     "Invalid value for '--max-drop'"),
])
@pytest.mark.processes
def test_cli_bad_input_gets_a_clear_message_not_a_traceback(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_cli(*args, "--s3-endpoint", "http://127.0.0.1:9")
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.processes
def test_cli_reports_an_unreachable_s3_clearly(tmp_path: Path) -> None:
    result = run_cli("--region", "us-east-1", "--dataset", "s3://b", "--catalog", f"sqlite:///{tmp_path}/c.db",
                     "--s3-endpoint", "http://127.0.0.1:9",
                     env={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_MAX_ATTEMPTS": "1"})
    assert result.returncode == 1
    assert "the previous catalog is still serving" in result.stderr and "Traceback" not in result.stderr


def test_a_failing_index_step_drops_its_own_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class BrokenS3:
        def get_paginator(self, _: str) -> Any:
            raise ConnectionError("S3 went away")

    monkeypatch.setattr(handlers.boto3, "client", lambda service, **_: BrokenS3())
    for key, value in {"AWS_REGION": "us-west-2", "DATASET": "s3://b/p", "FSX_PATH": "/us-west-2/p",
                       "CATALOG_ENDPOINT": f"sqlite:///{tmp_path}/c.db"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConnectionError):
        handlers.handle({"action": "index"}, LambdaContext(600))
    with SQLiteSink(tmp_path / "c.db").connect() as db:
        assert db.execute("SELECT count(*) FROM loads").fetchone()[0] == 0
    assert handlers.handle({"action": "abort", "checkpoint": None}, None) == {"aborted": None}


# ------------------------------------------------------------------------------- promises kept however it runs
def test_the_cli_with_a_stack_applies_the_stacks_drop_limit(bucket: tuple[Any, str], moto_endpoint: str,
                                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 30% drop passes the default 50% limit, but not the stack's syncMaxDropPercent of 10."""
    from typer.testing import CliRunner

    import catalog_cli.__main__ as cli

    s3, name = bucket
    keys = era5_keys(years=(2022,))
    put(s3, name, keys)
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "Pulumi.tight.yaml").write_text(yaml.safe_dump({"config": {
        "cross-region-dask:client": {"region": "eu-west-2", "cidr": "10.0.0.0/16"},
        "cross-region-dask:workers": [{"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": f"s3://{name}"}],
        "cross-region-dask:syncMaxDropPercent": 10}}))
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)
    arguments = ["--region", "us-east-1", "--stack", "tight", "--catalog", f"sqlite:///{tmp_path}/c.db",
                 "--s3-endpoint", moto_endpoint]
    assert CliRunner().invoke(cli.app, arguments).exit_code == 0
    for key in [k for k in keys if k.endswith("main.nc")][:4] + [k for k in keys if "precipitation" in k][:7]:
        s3.delete_object(Bucket=name, Key=key)  # 11 of 37 datasets: a 30% drop
    refused = CliRunner().invoke(cli.app, arguments)
    assert refused.exit_code == 1 and "a drop of more than 10%" in " ".join(refused.output.split())
    assert SQLiteSink(tmp_path / "c.db").serving_count("us-east-1") == 37


@pytest.mark.processes
def test_a_sync_that_loses_the_race_to_swap_ends_with_one_clear_line(osmem_url: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two syncs of one region look at the serving index at the same time; the second to swap finds it gone."""
    from opensearchpy import OpenSearch

    import catalog_sync.sinks as sinks
    from catalog_sync.sinks import OpenSearchSink

    sink = OpenSearchSink(OpenSearch(hosts=[osmem_url]))
    first = sink.begin("ap-south-1", "s3://b")
    first.add(group_all(cmip6("b"), objects(cmip6_keys(chunks=1))))
    first.commit()
    winner, loser = sink.begin("ap-south-1", "s3://b"), sink.begin("ap-south-1", "s3://b")
    for load in (winner, loser):
        load.add(group_all(cmip6("b"), objects(cmip6_keys(chunks=1))))
    stale = sinks._serving(sink.client, "ap-south-1")  # what both saw before either swapped
    winner.commit()
    monkeypatch.setattr(sinks, "_serving", lambda client, region: stale)
    with pytest.raises(SinkError) as caught:
        loser.commit()
    assert str(caught.value).startswith("ap-south-1: another sync of this region swapped the catalog at the same time")
    assert "\n" not in str(caught.value)
    monkeypatch.undo()
    assert sinks._serving(sink.client, "ap-south-1") == [winner.load_id]


def test_the_shrink_guard_survives_a_catalog_that_lost_its_indices(bucket: tuple[Any, str], tmp_path: Path) -> None:
    from catalog_sync.published import FileCounts

    s3, name = bucket
    keys = era5_keys(years=(2022,))
    put(s3, name, keys)
    association = Association("us-east-1", name, "", f"/us-east-1/{name}")
    counts = FileCounts(tmp_path / "published.json")
    report, _ = sync_region(s3, association, SQLiteSink(tmp_path / "a.db"), max_drop=0.1, counts=counts)
    assert report.documents == 37 and counts.get("us-east-1") == 37
    for key in [k for k in keys if "precipitation" in k][:11]:
        s3.delete_object(Bucket=name, Key=key)
    restarted = SQLiteSink(tmp_path / "b.db")  # the catalog came back empty: "previous" would be 0
    with pytest.raises(SwapRefused, match="the serving one 37"):
        sync_region(s3, association, restarted, max_drop=0.1, counts=counts)
    assert restarted.serving_count("us-east-1") == 0 and counts.get("us-east-1") == 37
    assert sync_region(s3, association, restarted, max_drop=0.5, counts=counts)[0].documents == 26
    assert counts.get("us-east-1") == 26


def test_the_published_count_lives_in_an_ssm_parameter_in_aws(moto_endpoint: str) -> None:
    from catalog_sync.published import SsmCounts

    ssm = boto3.client("ssm", region_name="eu-north-1", endpoint_url=moto_endpoint)
    name = f"/test/{uuid.uuid4().hex}/published-count"
    ssm.put_parameter(Name=name, Value="none", Type="String")  # as the program creates it
    counts = SsmCounts(ssm, name)
    assert counts.get("eu-north-1") is None
    counts.put("eu-north-1", 1234)
    assert counts.get("eu-north-1") == 1234


def test_a_start_after_a_failed_import_today_starts_a_new_task() -> None:
    """The same day's token would return the failed task (FSx's idempotency): the next attempt's token is used."""
    from datetime import date

    from catalog_sync.fsx_import import idempotency_token, start_or_adopt

    client = boto3.client("fsx", region_name="us-west-2", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    day, system = date(2026, 11, 29), "fs-0123456789abcdef0"
    base = {"Type": IMPORT, "FileSystemId": system, "CreationTime": "2026-11-29T00:00:00Z"}
    expected = {"Type": IMPORT, "FileSystemId": system, "Report": {"Enabled": False}}
    stubber.add_response("create_data_repository_task", {"DataRepositoryTask": {
        **base, "TaskId": "task-00000000000000001", "Lifecycle": "FAILED"}},
        {**expected, "ClientRequestToken": idempotency_token(system, day)})
    stubber.add_response("create_data_repository_task", {"DataRepositoryTask": {
        **base, "TaskId": "task-00000000000000002", "Lifecycle": "PENDING"}},
        {**expected, "ClientRequestToken": idempotency_token(system, day, 2)})
    with stubber:
        status = start_or_adopt(client, system, day)
    assert status.task_id == "task-00000000000000002" and status.lifecycle == "PENDING"
    stubber.assert_no_pending_responses()
