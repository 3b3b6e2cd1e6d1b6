"""Bring a Lustre file system's metadata up to date with its S3 data repository: start (or adopt) an
IMPORT_METADATA_FROM_REPOSITORY task and follow it to a terminal state.

There is no completion event for data repository tasks: the caller polls. Only one task runs at a time per
file system; a second start fails with DataRepositoryTaskExecuting, in which case the running import is
adopted instead of failing the night's sync.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

IMPORT = "IMPORT_METADATA_FROM_REPOSITORY"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


class FsxImportError(Exception):
    """The import could not be started or did not succeed; the message says why."""


@dataclass
class ImportStatus:
    task_id: str
    lifecycle: str
    adopted: bool = False
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    failure: str = ""
    paths: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.lifecycle in TERMINAL


MAX_ATTEMPTS_A_DAY = 10


def idempotency_token(file_system_id: str, day: date, attempt: int = 1) -> str:
    """One import per file system, day and attempt: a retried start returns the same task, and a start after a
    failed import today (the same token would return that failed task) takes the next attempt's token."""
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"{file_system_id}-{day:%Y%m%d}-import{suffix}"[:63]


def start_or_adopt(fsx: Any, file_system_id: str, day: date, paths: list[str] | None = None) -> ImportStatus:
    request: dict[str, Any] = {"Type": IMPORT, "FileSystemId": file_system_id, "Report": {"Enabled": False}}
    if paths:
        request["Paths"] = paths[:100]
    try:
        for attempt in range(1, MAX_ATTEMPTS_A_DAY + 1):
            task = fsx.create_data_repository_task(
                **request, ClientRequestToken=idempotency_token(file_system_id, day, attempt))["DataRepositoryTask"]
            if task.get("Lifecycle") not in ("FAILED", "CANCELED"):  # a new task, or today's still running
                return _status(task)
        raise FsxImportError(f"{file_system_id}: {MAX_ATTEMPTS_A_DAY} imports failed today; see the FSx console")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "DataRepositoryTaskExecuting":
            raise FsxImportError(f"could not start the import on {file_system_id}: {error}") from error
    running = fsx.describe_data_repository_tasks(Filters=[
        {"Name": "file-system-id", "Values": [file_system_id]},
        {"Name": "task-lifecycle", "Values": ["PENDING", "EXECUTING"]},
    ]).get("DataRepositoryTasks", [])
    imports = [task for task in running if task.get("Type") == IMPORT]
    if not imports:
        kinds = ", ".join(sorted({task.get("Type", "?") for task in running})) or "unknown"
        raise FsxImportError(f"{file_system_id} is busy with another task ({kinds}); the import will run next time")
    status = _status(imports[0])
    status.adopted = True
    return status


def poll(fsx: Any, task_id: str) -> ImportStatus:
    tasks = fsx.describe_data_repository_tasks(TaskIds=[task_id]).get("DataRepositoryTasks", [])
    if not tasks:
        raise FsxImportError(f"import task {task_id} no longer exists")
    return _status(tasks[0])


def wait(fsx: Any, status: ImportStatus, sleep: Callable[[float], None], interval: float = 30.0,
         max_polls: int = 240) -> ImportStatus:
    """Poll until the task ends; FAILED (some files may have failed) and CANCELED raise with the details."""
    polls = 0
    while not status.done:
        if polls >= max_polls:
            raise FsxImportError(f"import task {status.task_id} still {status.lifecycle} after {polls} polls")
        sleep(interval)
        status = replace(poll(fsx, status.task_id), adopted=status.adopted)
        polls += 1
    if status.lifecycle != "SUCCEEDED":
        raise FsxImportError(f"import task {status.task_id} {status.lifecycle}: {status.failure or 'no details'} "
                           f"({status.succeeded} of {status.total} files imported, {status.failed} failed)")
    return status


def _status(task: dict[str, Any]) -> ImportStatus:
    counts = task.get("Status", {})
    return ImportStatus(
        task_id=task["TaskId"], lifecycle=task["Lifecycle"], total=int(counts.get("TotalCount", 0)),
        succeeded=int(counts.get("SucceededCount", 0)), failed=int(counts.get("FailedCount", 0)),
        failure=task.get("FailureDetails", {}).get("Message", ""), paths=list(task.get("Paths", [])),
    )
