"""The FSx API calls the nightly sync makes, answered locally: an import mirrors each data repository
association's S3 keys into the file system's stand-in directory, under the association's file system path, as
FSx makes them appear under `/fsx`. Tasks are kept in a file beside the stand-in, so a start is idempotent per
client request token (as in FSx) across Lambda invocations."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS_FILE = ".fsx-tasks.json"
IMPORT = "IMPORT_METADATA_FROM_REPOSITORY"


@dataclass(frozen=True)
class StandIn:
    """One file system: where its stand-in lives and what it links (file system path -> s3://bucket[/prefix])."""

    root: Path
    associations: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"root": str(self.root), "associations": self.associations}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StandIn:
        return cls(Path(data["root"]), dict(data["associations"]))


class LocalFsx:
    def __init__(self, s3: Any, file_systems: dict[str, StandIn]) -> None:
        self.s3, self.file_systems = s3, file_systems

    def _tasks_file(self, file_system_id: str) -> Path:
        return self.file_systems[file_system_id].root / TASKS_FILE

    def _tasks(self, file_system_id: str) -> dict[str, dict[str, Any]]:
        path = self._tasks_file(file_system_id)
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def _save(self, file_system_id: str, tasks: dict[str, dict[str, Any]]) -> None:
        path = self._tasks_file(file_system_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(tasks))

    def create_data_repository_task(self, **request: Any) -> dict[str, Any]:
        if request.get("Type") != IMPORT:
            raise ValueError(f"the local FSx stand-in only imports, not {request.get('Type')}")
        file_system_id = request["FileSystemId"]
        if file_system_id not in self.file_systems:
            raise ValueError(f"no file system {file_system_id} in this deployment")
        tasks = self._tasks(file_system_id)
        token = request.get("ClientRequestToken", "")
        for task in tasks.values():  # FSx returns the task a token already started
            if token and task.get("ClientRequestToken") == token:
                return {"DataRepositoryTask": task}
        total = self._mirror(self.file_systems[file_system_id])
        task_id = f"task-local{len(tasks) + 1:012d}"
        task = {"TaskId": task_id, "Lifecycle": "SUCCEEDED", "Type": IMPORT, "FileSystemId": file_system_id,
                "ClientRequestToken": token,
                "Status": {"TotalCount": total, "SucceededCount": total, "FailedCount": 0}}
        tasks[task_id] = task
        self._save(file_system_id, tasks)
        return {"DataRepositoryTask": {**task, "Lifecycle": "PENDING"}}

    def describe_data_repository_tasks(self, **request: Any) -> dict[str, Any]:
        every = list(itertools.chain.from_iterable(self._tasks(f).values() for f in self.file_systems))
        wanted = set(request.get("TaskIds", []))
        fields = {"file-system-id": "FileSystemId", "task-lifecycle": "Lifecycle"}
        filters = [(fields[f["Name"]], set(f["Values"])) for f in request.get("Filters", [])]
        return {"DataRepositoryTasks": [t for t in every if (not wanted or t["TaskId"] in wanted)
                                        and all(t.get(key) in values for key, values in filters)]}

    def _mirror(self, stand_in: StandIn) -> int:
        count = 0
        for path, repository in stand_in.associations.items():
            bucket, _, prefix = repository.removeprefix("s3://").partition("/")
            prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
            target = stand_in.root / path.lstrip("/")
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for entry in page.get("Contents", ()):
                    destination = target / entry["Key"][len(prefix):]
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    self.s3.download_file(bucket, entry["Key"], str(destination))
                    count += 1
        return count
