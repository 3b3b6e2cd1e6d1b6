"""Lambda's Runtime API as local_platform/runtime_api.py serves it, to AWS's own runtime interface client
(awslambdaric, the catalog-sync image's entrypoint here) run as a process: a result comes back as the handler
returned it, a handler's exception as its type and message, a handler that cannot be loaded as an init error, and
a runtime that is gone or silent ends the call within its bound. The image test (tests/test_images_run.py) runs the
same client in the built container."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_platform.runtime_api import RuntimeApi
from local_platform.step_functions import TaskFailedError

pytestmark = pytest.mark.processes

HANDLERS = '''
import time

def echo(event, context):
    return {"got": event, "arn": context.invoked_function_arn, "left": context.get_remaining_time_in_millis() > 0}

def fail(event, context):
    raise LookupError(f"no dataset {event['dataset']}")

def sleep(event, context):
    time.sleep(30)
'''


@pytest.fixture
def runtime(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RuntimeApi, subprocess.Popen[bytes]]]:
    (tmp_path / "handlers.py").write_text(HANDLERS)
    api = RuntimeApi("arn:aws:lambda:us-west-2:123456789012:function:test")
    process = subprocess.Popen([sys.executable, "-m", "awslambdaric", request.param], cwd=tmp_path,
                               env={"AWS_LAMBDA_RUNTIME_API": api.address, "PYTHONPATH": str(tmp_path)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield api, process
    process.kill()
    process.wait()
    api.close()


@pytest.mark.parametrize("runtime", ["handlers.echo"], indirect=True)
def test_results_come_back_as_the_handler_returned_them(runtime: tuple[RuntimeApi, subprocess.Popen[bytes]]) -> None:
    api, process = runtime
    for event in ({"action": "index"}, {"action": "swap", "n": [1, 2]}):
        answer = api.call(event, 30, lambda: process.poll() is None, "the runtime")
        assert answer == {"got": event, "arn": api.arn, "left": True}


@pytest.mark.parametrize("runtime", ["handlers.fail"], indirect=True)
def test_a_handler_exception_is_a_function_error_with_its_type(
        runtime: tuple[RuntimeApi, subprocess.Popen[bytes]]) -> None:
    api, process = runtime
    with pytest.raises(TaskFailedError) as failed:
        api.call({"dataset": "era5"}, 30, lambda: process.poll() is None, "the runtime")
    assert (failed.value.error, failed.value.cause) == ("LookupError", "no dataset era5")


@pytest.mark.parametrize("runtime", ["handlers.missing"], indirect=True)
def test_a_handler_that_cannot_be_loaded_is_named(runtime: tuple[RuntimeApi, subprocess.Popen[bytes]]) -> None:
    api, process = runtime
    with pytest.raises(TaskFailedError) as failed:
        api.call({}, 30, lambda: process.poll() is None, "the runtime")
    assert "could not start its handler" in failed.value.cause and "missing" in failed.value.cause


@pytest.mark.parametrize("runtime", ["handlers.sleep"], indirect=True)
def test_a_silent_or_vanished_runtime_ends_the_call_within_its_bound(
        runtime: tuple[RuntimeApi, subprocess.Popen[bytes]]) -> None:
    api, process = runtime
    with pytest.raises(TaskFailedError) as failed:
        api.call({}, 2, lambda: process.poll() is None, "the runtime")
    assert failed.value.error == "States.Timeout" and "no answer in 2 s" in failed.value.cause
    process.kill()
    process.wait()
    with pytest.raises(TaskFailedError) as gone:
        api.call({}, 30, lambda: process.poll() is None, "the runtime")
    assert gone.value.error == "Lambda.ServiceException" and "exited" in gone.value.cause
