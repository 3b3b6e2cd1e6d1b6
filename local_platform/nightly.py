"""The nightly sync as the graph declares it: EventBridge Scheduler schedules start the state machine, whose Task
states invoke the Lambda handler with its declared environment.

- `Functions` is the local Lambda service: one warm runtime process per function (local_platform.lambda_runtime).
- `run_execution` runs one execution of a state machine (local_platform.step_functions).
- `Schedules` fires cron() schedules on time (the agent calls it); at() schedules, which AWS fires minutes after
  the deploy, are fired by `up` itself (`first_syncs`).
Every execution is recorded in `<state>/sync-history.jsonl`.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from local_platform.state import SYNC_HISTORY_FILE
from local_platform.step_functions import Execution, TaskFailedError, run
from stackconfig import PROJECT_DIR as ROOT

DAY_NAMES = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)}
MONTH_NAMES = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
_CRON = re.compile(r"^cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)$")
_AT = re.compile(r"^at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)$")


class ScheduleError(ValueError):
    """An expression the local scheduler does not evaluate (the message names it)."""


def _values(spec: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """One cron field as the set of values it allows (None: any, `*` or `?`)."""
    if spec in ("*", "?"):
        return None
    allowed: set[int] = set()
    for part in spec.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1

        def number(text: str) -> int:
            value = (names or {}).get(text.upper(), None)
            if value is None and not text.isdigit():
                raise ScheduleError(f"cron field {spec!r}: {text!r} is not evaluated locally (L, W and # are not)")
            return int(text) if value is None else value

        if body == "*":
            first, last = low, high
        elif "-" in body:
            start, end = body.split("-", 1)
            first, last = number(start), number(end)
        else:
            first = number(body)
            last = high if step_text else first
        allowed.update(range(first, last + 1, step))
    return allowed


def next_time(expression: str, after: datetime) -> datetime | None:
    """When an EventBridge Scheduler expression (UTC) next fires after `after`; None if it never will."""
    at = _AT.match(expression)
    if at:
        moment = datetime.fromisoformat(at.group(1)).replace(tzinfo=UTC)
        return moment if moment > after else None
    cron = _CRON.match(expression)
    if not cron:
        raise ScheduleError(f"{expression!r}: the local scheduler evaluates cron(6 fields) and at() expressions")
    minutes, hours, days, months, weekdays, years = cron.groups()
    allowed = (_values(minutes, 0, 59), _values(hours, 0, 23), _values(days, 1, 31),
               _values(months, 1, 12, MONTH_NAMES), _values(weekdays, 1, 7, DAY_NAMES), _values(years, 1970, 2199))
    start = (after + timedelta(minutes=1)).replace(second=0, microsecond=0)
    day = start.replace(hour=0, minute=0)
    for _ in range(366 * 5):
        weekday = (day.weekday() + 1) % 7 + 1  # AWS: 1 = Sunday
        if all(values is None or value in values for values, value in zip(
                allowed[2:], (day.day, day.month, weekday, day.year), strict=True)):
            for hour in sorted(allowed[1] or range(24)):
                for minute in sorted(allowed[0] or range(60)):
                    moment = day.replace(hour=hour, minute=minute)
                    if moment >= start:
                        return moment
        day += timedelta(days=1)
    return None


@dataclass
class FunctionSpec:
    name: str
    handler: str
    environment: dict[str, str]


class Functions:
    """The local Lambda service: a warm runtime process per function, started on its first invocation."""

    def __init__(self, specs: dict[str, FunctionSpec], log_dir: Path) -> None:
        self.specs, self.log_dir = specs, log_dir
        self.runtimes: dict[str, subprocess.Popen[str]] = {}
        self._lock = threading.Lock()

    def _runtime(self, arn: str) -> subprocess.Popen[str]:
        runtime = self.runtimes.get(arn)
        if runtime is None or runtime.poll() is not None:
            spec = self.specs[arn]
            log = (self.log_dir / f"lambda-{spec.name}.log").open("a")
            runtime = subprocess.Popen([sys.executable, "-m", "local_platform.lambda_runtime", spec.handler],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                       env={**spec.environment, "PYTHONPATH": str(ROOT)})  # the runtime's own code
            log.close()
            self.runtimes[arn] = runtime
        return runtime

    def invoke(self, arn: str, payload: Any) -> Any:
        if arn not in self.specs:
            raise TaskFailedError("Lambda.ResourceNotFoundException", f"no function {arn} in this deployment")
        with self._lock:  # reserved concurrency 1: one invocation of a function at a time
            runtime = self._runtime(arn)
            assert runtime.stdin is not None and runtime.stdout is not None
            try:
                runtime.stdin.write(json.dumps(payload) + "\n")
                runtime.stdin.flush()
                line = runtime.stdout.readline()
            except OSError as error:
                line = ""
                print(f"nightly: the runtime of {arn} failed: {error}", file=sys.stderr)
        if not line:
            raise TaskFailedError("Lambda.ServiceException",
                                  f"the runtime of {self.specs[arn].name} exited; see its log")
        answer = json.loads(line)
        if "errorType" in answer:
            raise TaskFailedError(answer["errorType"], answer["errorMessage"])
        return answer["result"]

    def close(self) -> None:
        for runtime in self.runtimes.values():
            if runtime.stdin is not None:
                with contextlib.suppress(OSError):
                    runtime.stdin.close()
        for runtime in self.runtimes.values():
            try:
                runtime.wait(timeout=10)
            except subprocess.TimeoutExpired:
                runtime.kill()
                runtime.wait()
            if runtime.stdout is not None:
                runtime.stdout.close()


def run_execution(twin: dict[str, Any], schedule: dict[str, Any], functions: Functions, state_dir: Path) -> Execution:
    """One execution of the schedule's state machine with the schedule's input, recorded in the history."""
    definition = twin["machines"][schedule["target"]]
    started = datetime.now(UTC)
    execution = run(definition, schedule["input"], functions.invoke)
    record = {"time": started.isoformat(), "schedule": schedule["name"], "region": schedule["region"],
              "status": execution.status, "error": execution.error, "cause": execution.cause,
              "states": execution.states, "seconds": round((datetime.now(UTC) - started).total_seconds(), 2)}
    with (state_dir / SYNC_HISTORY_FILE).open("a") as history:
        history.write(json.dumps(record) + "\n")
    return execution


def first_syncs(twin: dict[str, Any]) -> list[dict[str, Any]]:
    """The one-time at() schedules: AWS fires them minutes after the deploy; the twin when `up` starts."""
    return [s for s in twin["schedules"] if _AT.match(s["expression"])]


def function_specs(twin: dict[str, Any]) -> dict[str, FunctionSpec]:
    return {arn: FunctionSpec(**spec) for arn, spec in twin["functions"].items()}


class Schedules:
    """The recurring (cron) schedules, each with its next firing time; an execution runs on its own thread."""

    def __init__(self, twin: dict[str, Any], state_dir: Path, now: datetime) -> None:
        self.twin, self.state_dir = twin, state_dir
        self.recurring = [s for s in twin["schedules"] if _CRON.match(s["expression"])]
        self.due = {s["name"]: next_time(s["expression"], now) for s in self.recurring}
        self.functions = Functions(function_specs(twin), state_dir / "logs")
        self.running: dict[str, threading.Thread] = {}

    def fire_due(self, now: datetime) -> list[str]:
        fired = []
        for schedule in self.recurring:
            moment = self.due.get(schedule["name"])
            if moment is None or moment > now:
                continue
            self.due[schedule["name"]] = next_time(schedule["expression"], now)
            busy = self.running.get(schedule["target"])
            if busy is not None and busy.is_alive():
                print(f"agent: {schedule['name']} is due while its state machine still runs: skipped", flush=True)
                continue
            thread = threading.Thread(target=run_execution, args=(self.twin, schedule, self.functions,
                                                                  self.state_dir), daemon=True)
            thread.start()
            self.running[schedule["target"]] = thread
            fired.append(schedule["name"])
            print(f"agent: {schedule['name']} fired ({schedule['expression']})", flush=True)
        return fired

    def stop(self) -> None:
        for thread in self.running.values():
            thread.join(timeout=30)
        self.functions.close()
