"""A local Lambda runtime: one warm process per function, started with the function's declared environment (plus
the region, its AWS emulation and the FSx stand-in), calling the declared handler once per event.

    python -m local_platform.lambda_runtime <module.function>

Reads one JSON event per line on stdin and answers one JSON line per event on its standard output:
{"result": ...} or {"errorType": ..., "errorMessage": ...}, as Lambda reports a function error. Anything the
handler prints goes to standard error (the function's log). FSx's data repository task API, which no emulator
has, is answered by the stand-in named in LOCAL_PLATFORM_FILE_SYSTEMS.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import Any

FILE_SYSTEMS_VARIABLE = "LOCAL_PLATFORM_FILE_SYSTEMS"  # file system id -> its stand-in (fsx_standin.StandIn)
TIMEOUT_VARIABLE = "LOCAL_PLATFORM_FUNCTION_TIMEOUT"


class Context:
    """What a handler may ask of Lambda's context object."""

    def __init__(self, timeout: float) -> None:
        self._deadline = time.monotonic() + timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def _route_fsx_to_the_stand_in() -> None:
    import boto3

    from local_platform.fsx_standin import LocalFsx, StandIn

    stand_ins = {k: StandIn.from_json(v) for k, v in json.loads(os.environ.get(FILE_SYSTEMS_VARIABLE, "{}")).items()}
    real = boto3.client

    def client(service: str, *args: Any, **kwargs: Any) -> Any:
        if service == "fsx":
            return LocalFsx(real("s3"), stand_ins)
        return real(service, *args, **kwargs)

    boto3.client = client


def main(argv: list[str]) -> int:
    module, _, name = argv[0].rpartition(".")
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # the handler's prints are its log, not answers
    _route_fsx_to_the_stand_in()
    handler = getattr(importlib.import_module(module), name)
    timeout = float(os.environ.get(TIMEOUT_VARIABLE, "900"))
    for line in sys.stdin:
        try:
            answer = {"result": handler(json.loads(line), Context(timeout))}
        except Exception as error:  # a function error: reported to the caller, as Lambda does
            answer = {"errorType": type(error).__name__, "errorMessage": str(error)}
            print(f"[ERROR] {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
