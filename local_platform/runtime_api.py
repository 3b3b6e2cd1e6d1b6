"""Lambda functions run as their image, as Lambda runs them: a container of the function's image (its entrypoint is
AWS's runtime interface client, its CMD the handler) asks this process for events over Lambda's Runtime API
(`/2018-06-01/runtime/...`, at $AWS_LAMBDA_RUNTIME_API) and posts each answer or function error back.

`ContainerFunctions` has the interface of local_platform.nightly.Functions (invoke, close), so the declared state
machine runs the same way with either: the twin's warm processes, or the built images (local_platform.images).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from local_platform.images import docker, run_detached
from local_platform.lambda_runtime import TIMEOUT_VARIABLE
from local_platform.nightly import FunctionSpec
from local_platform.step_functions import TaskFailedError

PREFIX = "/2018-06-01/runtime"
DEFAULT_TIMEOUT = 900.0  # Lambda's largest; a declared function's own is in its TIMEOUT_VARIABLE
HOST_ONLY = ("PATH", "HOME", "PYTHONPATH")  # this machine's, not the image's


@dataclass
class _Invocation:
    id: str
    event: Any
    deadline_ms: int
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] = field(default_factory=dict)


class RuntimeApi:
    """One function's Runtime API on 127.0.0.1 (a free port): one invocation at a time, as reserved concurrency 1."""

    def __init__(self, arn: str) -> None:
        self.arn = arn
        self.pending: queue.Queue[_Invocation] = queue.Queue()
        self.active: dict[str, _Invocation] = {}
        self.init_error: dict[str, Any] | None = None
        self.closing = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a runtime stopped mid-poll
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404)
                while not api.closing.is_set():  # a long poll, as Lambda's, until an event or the end
                    try:
                        invocation = api.pending.get(timeout=0.5)
                    except queue.Empty:
                        continue
                    api.active[invocation.id] = invocation
                    return self._reply(200, json.dumps(invocation.event).encode(), {
                        "Lambda-Runtime-Aws-Request-Id": invocation.id,
                        "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": api.arn,
                        "Lambda-Runtime-Trace-Id": f"Root=1-{invocation.id[:8]}-{invocation.id[9:33]}"})
                return self._reply(410)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_error = json.loads(body or b"{}")
                    return self._reply(202)
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error") \
                        and (invocation := api.active.pop(parts[1], None)) is not None:
                    value = json.loads(body) if body else None
                    invocation.answer = {"result": value} if parts[2] == "response" else {"error": value or {}}
                    invocation.done.set()
                    return self._reply(202)
                return self._reply(404)

        return Handler

    def call(self, event: Any, timeout: float, alive: Callable[[], bool], runtime: str) -> Any:
        """Hand `event` to the runtime and wait for its answer: the result, or TaskFailedError for a function error,
        a handler that could not start, a runtime that is gone (`alive`) or no answer in `timeout` seconds."""
        invocation = _Invocation(str(uuid.uuid4()), event, int((time.time() + timeout) * 1000))
        self.pending.put(invocation)
        deadline = time.monotonic() + timeout
        while not invocation.done.wait(0.5):
            if self.init_error is not None:
                raise TaskFailedError("Lambda.Unknown", f"{runtime} could not start its handler: "
                                      f"{self.init_error.get('errorType')}: {self.init_error.get('errorMessage')}")
            if not alive():
                raise TaskFailedError("Lambda.ServiceException", f"{runtime} exited")
            if time.monotonic() > deadline:
                raise TaskFailedError("States.Timeout", f"{runtime} gave no answer in {timeout:.0f} s")
        if "error" in invocation.answer:
            error = invocation.answer["error"]
            raise TaskFailedError(str(error.get("errorType", "Unhandled")), str(error.get("errorMessage", "")))
        return invocation.answer["result"]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def _running(name: str) -> bool:
    return docker("inspect", "--format", "{{.State.Running}}", name, check=False).stdout.strip() == "true"


class ContainerFunctions:
    """The declared functions, each a container of `image`, started on its first invocation and kept warm."""

    _serial = itertools.count(1)

    def __init__(self, specs: dict[str, FunctionSpec], image: str, log_dir: Path, *, network: str = "host") -> None:
        self.specs, self.image, self.log_dir, self.network = specs, image, log_dir, network
        self.running: dict[str, tuple[RuntimeApi, str]] = {}  # arn -> its API and container name
        self._lock = threading.Lock()

    def _start(self, arn: str) -> tuple[RuntimeApi, str]:
        spec = self.specs[arn]
        api = RuntimeApi(arn)
        name = f"lambda-{spec.name}-{next(self._serial)}-{uuid.uuid4().hex[:6]}"
        environment = {k: v for k, v in spec.environment.items() if k not in HOST_ONLY}
        environment |= {"AWS_LAMBDA_RUNTIME_API": api.address, "AWS_LAMBDA_FUNCTION_NAME": spec.name}
        run_detached(name, self.image, [spec.handler], environment, network=self.network)
        return api, name

    def invoke(self, arn: str, payload: Any) -> Any:
        if arn not in self.specs:
            raise TaskFailedError("Lambda.ResourceNotFoundException", f"no function {arn} in this deployment")
        with self._lock:  # reserved concurrency 1: one invocation of a function at a time
            if arn not in self.running:
                self.running[arn] = self._start(arn)
            api, name = self.running[arn]
            timeout = float(self.specs[arn].environment.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT))
            return api.call(payload, timeout, lambda: _running(name), f"the container {name} (logs: {self.log_dir})")

    def close(self) -> None:
        """Stop every container (its output kept in the log directory) and its API."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for api, name in self.running.values():
            logs = docker("logs", name, check=False)
            (self.log_dir / f"{name}.log").write_text(logs.stdout + logs.stderr)
            with contextlib.suppress(Exception):
                docker("rm", "--force", name, check=False)
            api.close()
        self.running.clear()
