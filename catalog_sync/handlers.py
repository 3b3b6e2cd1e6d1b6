"""Lambda entry point of the nightly sync workflow (Step Functions): one function, one action per state.

Configuration comes from the function's environment, set by the Pulumi program (catalog_sync/environment.py says
each variable). Errors propagate: the workflow catches them, drops the new load and alarms.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any

import boto3

from catalog_sync import environment as env
from catalog_sync import fsx_import
from catalog_sync.catalogs import open_sink
from catalog_sync.published import counts_from_environment
from catalog_sync.records import Association
from catalog_sync.references import References
from catalog_sync.sync import Checkpoint, index_step, publish

SAFETY_MARGIN_SECONDS = 60  # stop listing this long before Lambda's own timeout


def association_from_environment() -> Association:
    bucket, _, prefix = env.required(env.DATASET).removeprefix("s3://").partition("/")
    return Association(region=os.environ["AWS_REGION"], bucket=bucket, prefix=prefix.strip("/"),  # set by Lambda
                       fsx_path=env.optional(env.FSX_PATH))  # none: storage `s3`, records point into the bucket


ACTIONS = ("start_import", "poll_import", "index", "reference", "swap", "abort")


def references_from_environment(s3: Any) -> References | None:
    location = env.optional(env.REFERENCES)
    return References(s3, location) if location else None


def _deadline(context: Any) -> float:
    """Lambda's own timeout less a margin; a step always progresses before honouring it."""
    remaining = context.get_remaining_time_in_millis() / 1000 if context else 600.0
    return time.monotonic() + max(remaining - SAFETY_MARGIN_SECONDS, 0.0)


class CatalogUnreachableError(ConnectionError):
    """The catalog gave no answer: named, with how long the sync waited, so the failed execution says why."""


def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from opensearchpy.exceptions import ConnectionError as CatalogConnectionError

    try:
        return _handle(event, context)
    except CatalogConnectionError as error:
        from catalog_sync.sinks import SYNC_RETRIES, SYNC_TIMEOUT_SECONDS

        raise CatalogUnreachableError(
            f"the catalog at {env.required(env.CATALOG_ENDPOINT)} did not answer {SYNC_RETRIES + 1} tries of "
            f"{SYNC_TIMEOUT_SECONDS} s ({type(error).__name__}); the published catalog is untouched") from error


def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    action = event.get("action")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
    if action == "start_import":
        status = fsx_import.start_or_adopt(boto3.client("fsx"), env.required(env.FILE_SYSTEM_ID),
                                           datetime.now(UTC).date())
        return {"taskId": status.task_id, "lifecycle": status.lifecycle, "adopted": status.adopted, "polls": 0}
    if action == "poll_import":
        status = fsx_import.poll(boto3.client("fsx"), event["taskId"])
        return {"taskId": status.task_id, "lifecycle": status.lifecycle, "done": status.done,
                "succeeded": status.lifecycle == "SUCCEEDED", "total": status.total, "failed": status.failed,
                "failure": status.failure, "polls": int(event.get("polls", 0)) + 1}
    association = association_from_environment()
    sink = open_sink(env.required(env.CATALOG_ENDPOINT), env.optional(env.CATALOG_REGION))
    if action == "index":
        if event.get("checkpoint"):
            checkpoint = Checkpoint.from_json(event["checkpoint"])
            load = sink.resume(checkpoint.load_id, association.region)
        else:
            load = sink.begin(association.region, env.required(env.DATASET))
            checkpoint = Checkpoint(association.region, load.load_id, "")
        s3 = boto3.client("s3")
        references = references_from_environment(s3)
        writer = references.writer(association.region, load.load_id) if references else None
        try:
            progress = index_step(s3, association, load, checkpoint, deadline=_deadline(context), references=writer)
        except Exception:
            load.abort()  # the workflow then fails without a load left behind
            raise
        return {"done": progress.done, "checkpoint": progress.checkpoint.to_json()}
    if action == "abort" and not event.get("checkpoint"):
        return {"aborted": None}  # failed before any load existed
    checkpoint = Checkpoint.from_json(event["checkpoint"])
    if action == "reference":  # the load's collections, each combined into one reference set
        references = references_from_environment(boto3.client("s3"))
        if references is None:
            return {"done": True, "after": "", "sets": 0, "failed": 0}
        combined = references.writer(association.region, checkpoint.load_id).combine_step(
            str(event.get("after") or ""), deadline=_deadline(context))
        return {"done": combined.done, "after": combined.after, "sets": combined.sets, "failed": combined.failed}
    load = sink.resume(checkpoint.load_id, association.region)
    if action == "swap":
        report = publish(load, max_drop=float(env.required(env.MAX_DROP)), force=bool(event.get("force")),
                         counts=counts_from_environment(boto3.client))
        return {"region": report.region, "index": report.loaded, "documents": report.documents,
                "previous": report.previous, "replaced": report.replaced, "skipped": checkpoint.skipped}
    load.abort()  # action == "abort"
    return {"aborted": checkpoint.load_id}
