"""The nightly workflow in AWS's own engine (issue 35, point 3): the declared definition, validated against the ASL
schema cfn-lint ships, runs in moto's port of the Step Functions engine and in the twin's interpreter
(local_platform/step_functions.py) with the Lambda answered by our handler, and both enter the same states and end
the same way: a sync that succeeds (with and without the FSx import), an import that fails, the handler raising, and
a throttled invocation retried. Waits and retry intervals are shortened alike in both (moto's waits really wait)."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from catalog_sync import handlers
from components.nightly_sync import workflow_definition
from local_platform.step_functions import TaskFailedError, run
from tests.catalog_fixtures import cmip6_keys
from tests.test_catalog_sync import LambdaContext

pytestmark = pytest.mark.slow

REGION = "us-west-2"
FUNCTION = f"arn:aws:lambda:{REGION}:123456789012:function:catalog-sync"
FILE_SYSTEM = "fs-0123456789abcdef0"
IMPORT = "IMPORT_METADATA_FROM_REPOSITORY"
Answer = Callable[[dict[str, Any]], Any]  # a payload -> the handler's result; raises what the handler raises


def shortened(definition: dict[str, Any]) -> dict[str, Any]:
    """The definition with every wait and retry interval at 1 s (the same in both engines)."""
    shorter = copy.deepcopy(definition)
    for state in shorter["States"].values():
        if state["Type"] == "Wait":
            state["Seconds"] = 1
        for retry in state.get("Retry", []):
            retry["IntervalSeconds"] = 1
    return shorter


def test_the_declared_definitions_are_valid_asl() -> None:
    import jsonschema
    from cfnlint.data.schemas.other import step_functions

    schema = json.loads((Path(step_functions.__file__).parent / "statemachine.json").read_text())
    for import_metadata in (True, False):
        jsonschema.validate(workflow_definition(FUNCTION, import_metadata=import_metadata), schema)
    with pytest.raises(jsonschema.ValidationError):  # the schema does refuse a broken definition
        jsonschema.validate({**workflow_definition(FUNCTION), "StartAt": 3}, schema)


# --------------------------------------------------------------------------------------------- the engines
class _Lambda:
    """What moto's engine calls for `lambda:invoke`: our handler's answer as Lambda returns it (a function error
    as `FunctionError` with errorType and errorMessage, a throttle as the service's error)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def invoke(self, **parameters: Any) -> dict[str, Any]:
        payload = json.loads(parameters.get("Payload") or "{}")
        try:
            result, error = self.answer(payload), None
        except Throttled:
            raise ClientError({"Error": {"Code": "TooManyRequestsException", "Message": "Rate exceeded"},
                               "ResponseMetadata": {"HTTPStatusCode": 429, "RequestId": "r"}}, "Invoke") from None
        except Exception as failure:
            result, error = {"errorType": type(failure).__name__, "errorMessage": str(failure)}, "Unhandled"
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(result).encode()),
                **({"FunctionError": error} if error else {})}


class Throttled(Exception):  # noqa: N818 (Lambda's answer, not our failure)
    """Lambda refused the invocation (TooManyRequestsException): Step Functions retries it."""


def in_moto(definition: dict[str, Any], answer: Answer, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    monkeypatch.setattr(lambda_eval_utils, "boto_client_for", lambda service, **_: _Lambda(answer))
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(name=f"sync-{time.monotonic_ns()}", definition=json.dumps(definition),
                                       roleArn="arn:aws:iam::123456789012:role/workflow")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps({"region": REGION}))["executionArn"]
    deadline = time.monotonic() + 120
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "moto's execution did not end within 2 minutes"
        time.sleep(0.1)
    events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    return {"status": described["status"], "error": described.get("error", ""),
            "output": json.loads(described["output"]) if described.get("output") else None,
            "states": [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]}


def in_the_twin(definition: dict[str, Any], answer: Answer) -> dict[str, Any]:
    def invoke(_: str, payload: Any) -> Any:
        try:
            return answer(payload)
        except Throttled:
            raise TaskFailedError("Lambda.TooManyRequestsException", "Rate exceeded") from None
        except Exception as failure:  # as local_platform/lambda_runtime.py reports it
            raise TaskFailedError(type(failure).__name__, str(failure)) from None

    execution = run(definition, {"region": REGION}, invoke)
    return {"status": execution.status, "error": execution.error, "output": execution.output,
            "states": execution.states}


# --------------------------------------------------------------------------------------------- the handler
@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """moto in-process with its ASL engine on; a CMIP6-like dataset; the handler's environment."""
    from moto import mock_aws

    for key, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": REGION,
                       "AWS_DEFAULT_REGION": REGION, "DATASET": "s3://cmip6-data/CMIP6", "MAX_DROP": "0.5",
                       "CATALOG_ENDPOINT": f"sqlite:///{tmp_path / 'catalog.db'}"}.items():
        monkeypatch.setenv(key, value)
    for key in ("FSX_PATH", "FILE_SYSTEM_ID", "REFERENCES", "PUBLISHED_COUNT_PARAMETER", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="cmip6-data", CreateBucketConfiguration={"LocationConstraint": REGION})
        for key in cmip6_keys(chunks=1):
            s3.put_object(Bucket="cmip6-data", Key=key, Body=b"x")
        yield {"tmp": tmp_path}


def handler(*, fsx_lifecycle: str | None = None, throttle_first: str | None = None) -> Answer:
    """Our handler answering each invocation; with `fsx_lifecycle`, the region has a file system whose import
    ends so (FSx's task APIs answered by botocore's Stubber: moto lacks them); with `throttle_first`, the first
    invocation of that action is refused by Lambda."""
    throttled: set[str] = set()

    def answer(payload: dict[str, Any]) -> Any:
        if payload.get("action") == throttle_first and throttle_first not in throttled:
            throttled.add(throttle_first)
            raise Throttled
        return handlers.handle(payload, LambdaContext(600))

    if fsx_lifecycle is None:
        return answer
    fsx = boto3.client("fsx", region_name=REGION)
    stubber = Stubber(fsx)
    task = {"TaskId": "task-0123456789abcdef0", "Type": IMPORT, "FileSystemId": FILE_SYSTEM,
            "CreationTime": "2026-12-07T00:00:00Z"}
    stubber.add_response("create_data_repository_task", {"DataRepositoryTask": {**task, "Lifecycle": "PENDING"}},
                         {"Type": IMPORT, "FileSystemId": FILE_SYSTEM, "Report": {"Enabled": False},
                          "ClientRequestToken": ANY})
    status = {"TotalCount": 1, "SucceededCount": int(fsx_lifecycle == "SUCCEEDED"),
              "FailedCount": int(fsx_lifecycle != "SUCCEEDED")}
    stubber.add_response("describe_data_repository_tasks", {"DataRepositoryTasks": [{
        **task, "Lifecycle": fsx_lifecycle, "Status": status}]}, {"TaskIds": ANY})
    stubber.activate()
    real = boto3.client

    def with_file_system(payload: dict[str, Any]) -> Any:
        import os

        os.environ.update({"FILE_SYSTEM_ID": FILE_SYSTEM, "FSX_PATH": "/us-west-2/CMIP6"})
        original, handlers.boto3.client = handlers.boto3.client, (  # type: ignore[assignment]
            lambda service, **kw: fsx if service == "fsx" else real(service, **kw))
        try:
            return answer(payload)
        finally:
            handlers.boto3.client = original  # type: ignore[assignment]

    return with_file_system


def agree(definition: dict[str, Any], make: Callable[[], Answer], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Both engines on the same definition, each with a fresh handler; what they agree on."""
    import os

    definition = shortened(definition)
    catalog = os.environ["CATALOG_ENDPOINT"]
    fresh = catalog.startswith("sqlite:///")  # each engine its own catalog, as each would be a first sync

    def catalog_of(engine: str) -> None:
        if fresh:
            monkeypatch.setenv("CATALOG_ENDPOINT", catalog.removesuffix(".db") + f"-{engine}.db")

    catalog_of("moto")
    moto = in_moto(definition, make(), monkeypatch)
    catalog_of("twin")
    twin = in_the_twin(definition, make())
    assert moto["states"] == twin["states"]
    assert (moto["status"], moto["error"]) == (twin["status"], twin["error"])
    if moto["output"] is not None or twin["output"] is not None:
        assert same_shape(moto["output"], twin["output"]), (moto["output"], twin["output"])
    return moto


def same_shape(a: Any, b: Any) -> bool:
    """The same keys all the way down and the same values, but for the names of loads and times (each run has
    its own)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_shape(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str) and a.startswith("load_") and b.startswith("load_"):
        return True
    return bool(a == b)


# ------------------------------------------------------------------------------------------------ the cases
def test_a_sync_without_an_import_succeeds_alike(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    result = agree(workflow_definition(FUNCTION, import_metadata=False), handler, monkeypatch)
    assert result["status"] == "SUCCEEDED" and result["states"][0] == "BeginIndex"
    assert result["states"][-2:] == ["Swap", "Done"] and result["output"]["swap"]["result"]["documents"] > 0


def test_a_sync_with_its_import_succeeds_alike(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    result = agree(workflow_definition(FUNCTION), lambda: handler(fsx_lifecycle="SUCCEEDED"), monkeypatch)
    assert result["status"] == "SUCCEEDED"
    assert result["states"][:5] == ["StartImport", "WaitForImport", "PollImport", "ImportFinished?", "BeginIndex"]


def test_a_failed_import_fails_alike(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    result = agree(workflow_definition(FUNCTION), lambda: handler(fsx_lifecycle="FAILED"), monkeypatch)
    assert (result["status"], result["error"]) == ("FAILED", "ImportFailed")
    assert result["states"][-2:] == ["ImportFinished?", "ImportFailed"]


def test_the_handler_raising_drops_the_load_alike(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATALOG_ENDPOINT", "bogus://nowhere")  # the handler's sink refuses it (SinkError)
    result = agree(workflow_definition(FUNCTION, import_metadata=False), handler, monkeypatch)
    assert (result["status"], result["error"]) == ("FAILED", "CatalogSyncFailed")
    assert result["states"] == ["BeginIndex", "Index", "Abort", "SyncFailed"]


def test_a_throttled_invocation_is_retried_alike(aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    result = agree(workflow_definition(FUNCTION, import_metadata=False),
                   lambda: handler(throttle_first="index"), monkeypatch)
    assert result["status"] == "SUCCEEDED" and result["states"].count("Index") >= 1
