"""FSx metadata import through botocore's Stubber (moto has no data repository tasks): the request sent,
adoption of a running import, the lifecycle to a terminal state, and failure details."""

from __future__ import annotations

from datetime import date
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from catalog_sync.fsx_import import IMPORT, FsxImportError, idempotency_token, start_or_adopt, wait

FS = "fs-0123456789abcdef0"
DAY = date(2026, 11, 26)


def task(lifecycle: str, task_id: str = "task-0123456789abcdef0", kind: str = IMPORT, **status: int) -> dict[str, Any]:
    body: dict[str, Any] = {"TaskId": task_id, "Lifecycle": lifecycle, "Type": kind, "FileSystemId": FS,
                            "CreationTime": "2026-11-26T00:00:00Z"}
    if status:
        body["Status"] = {"TotalCount": status.get("total", 0), "SucceededCount": status.get("ok", 0),
                          "FailedCount": status.get("failed", 0)}
    return body


@pytest.fixture
def fsx() -> Any:
    client = boto3.client("fsx", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stubber:
        client.stubber = stubber
        yield client
        stubber.assert_no_pending_responses()


EXPECTED_START = {"Type": IMPORT, "FileSystemId": FS, "Report": {"Enabled": False},
                  "ClientRequestToken": idempotency_token(FS, DAY)}


def test_starts_an_import_with_report_disabled_and_a_daily_token(fsx: Any) -> None:
    fsx.stubber.add_response("create_data_repository_task", {"DataRepositoryTask": task("PENDING")}, EXPECTED_START)
    status = start_or_adopt(fsx, FS, DAY)
    assert (status.task_id, status.lifecycle, status.adopted) == ("task-0123456789abcdef0", "PENDING", False)
    assert idempotency_token(FS, DAY) == "fs-0123456789abcdef0-20261126-import"


def test_adopts_the_running_import_instead_of_failing(fsx: Any) -> None:
    fsx.stubber.add_client_error("create_data_repository_task", "DataRepositoryTaskExecuting",
                                 "A data repository task is already executing", 400, expected_params=EXPECTED_START)
    fsx.stubber.add_response("describe_data_repository_tasks",
                             {"DataRepositoryTasks": [task("EXECUTING", "task-0000000000000running")]},
                             {"Filters": ANY})
    status = start_or_adopt(fsx, FS, DAY)
    assert (status.task_id, status.adopted) == ("task-0000000000000running", True)


def test_another_kind_of_running_task_is_reported_not_adopted(fsx: Any) -> None:
    fsx.stubber.add_client_error("create_data_repository_task", "DataRepositoryTaskExecuting", "busy", 400)
    fsx.stubber.add_response("describe_data_repository_tasks", {"DataRepositoryTasks": [
        task("EXECUTING", kind="EXPORT_TO_REPOSITORY")]}, {"Filters": ANY})
    with pytest.raises(FsxImportError, match=r"busy with another task \(EXPORT_TO_REPOSITORY\)"):
        start_or_adopt(fsx, FS, DAY)


def test_other_start_errors_are_clear(fsx: Any) -> None:
    fsx.stubber.add_client_error("create_data_repository_task", "FileSystemNotFound", "no such file system", 400)
    with pytest.raises(FsxImportError, match=f"could not start the import on {FS}"):
        start_or_adopt(fsx, FS, DAY)


def test_polls_pending_executing_succeeded_and_reports_counts(fsx: Any) -> None:
    fsx.stubber.add_response("create_data_repository_task", {"DataRepositoryTask": task("PENDING")}, EXPECTED_START)
    for lifecycle, ok in (("EXECUTING", 10), ("EXECUTING", 60), ("SUCCEEDED", 100)):
        fsx.stubber.add_response("describe_data_repository_tasks", {"DataRepositoryTasks": [
            task(lifecycle, total=100, ok=ok)]}, {"TaskIds": ["task-0123456789abcdef0"]})
    sleeps: list[float] = []
    status = wait(fsx, start_or_adopt(fsx, FS, DAY), sleeps.append, interval=30)
    assert (status.lifecycle, status.succeeded, status.total) == ("SUCCEEDED", 100, 100)
    assert sleeps == [30, 30, 30]


def test_a_failed_import_raises_with_its_details(fsx: Any) -> None:
    fsx.stubber.add_response("create_data_repository_task", {"DataRepositoryTask": task("PENDING")}, EXPECTED_START)
    failed = task("FAILED", total=100, ok=97, failed=3)
    failed["FailureDetails"] = {"Message": "3 files could not be imported"}
    fsx.stubber.add_response("describe_data_repository_tasks", {"DataRepositoryTasks": [failed]}, {"TaskIds": ANY})
    with pytest.raises(FsxImportError, match=r"FAILED: 3 files could not be imported \(97 of 100 files imported"):
        wait(fsx, start_or_adopt(fsx, FS, DAY), lambda _: None)


def test_polling_is_capped(fsx: Any) -> None:
    fsx.stubber.add_response("create_data_repository_task", {"DataRepositoryTask": task("PENDING")}, EXPECTED_START)
    for _ in range(3):
        fsx.stubber.add_response("describe_data_repository_tasks", {"DataRepositoryTasks": [task("EXECUTING")]},
                                 {"TaskIds": ANY})
    with pytest.raises(FsxImportError, match="still EXECUTING after 3 polls"):
        wait(fsx, start_or_adopt(fsx, FS, DAY), lambda _: None, max_polls=3)
