"""The FSx API calls the nightly sync makes, answered locally: an import mirrors the association's S3 keys
into the Lustre stand-in directory, as FSx would make them appear under the file system path."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from catalog_sync.records import Association


class LocalFsx:
    def __init__(self, s3: Any, association: Association, fsx_root: Path) -> None:
        self.s3, self.association, self.fsx_root = s3, association, fsx_root
        self.tasks: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def create_data_repository_task(self, **request: Any) -> dict[str, Any]:
        if request.get("Type") != "IMPORT_METADATA_FROM_REPOSITORY":
            raise ValueError(f"the local FSx stand-in only imports, not {request.get('Type')}")
        task_id = f"task-local{next(self._ids):012d}"
        total = self._mirror()
        task = {"TaskId": task_id, "Lifecycle": "SUCCEEDED", "Type": request["Type"],
                "FileSystemId": request["FileSystemId"],
                "Status": {"TotalCount": total, "SucceededCount": total, "FailedCount": 0}}
        self.tasks[task_id] = task
        return {"DataRepositoryTask": {**task, "Lifecycle": "PENDING"}}

    def describe_data_repository_tasks(self, **request: Any) -> dict[str, Any]:
        return {"DataRepositoryTasks": [self.tasks[i] for i in request.get("TaskIds", []) if i in self.tasks]}

    def _mirror(self) -> int:
        target = self.fsx_root / self.association.fsx_path.lstrip("/")
        paginator = self.s3.get_paginator("list_objects_v2")
        count = 0
        for page in paginator.paginate(Bucket=self.association.bucket, Prefix=self.association.key_prefix):
            for entry in page.get("Contents", ()):
                relative = entry["Key"][len(self.association.key_prefix):]
                destination = target / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                self.s3.download_file(self.association.bucket, entry["Key"], str(destination))
                count += 1
        return count
