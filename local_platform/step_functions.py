"""A local Step Functions interpreter for the states the nightly sync's definition uses (ASL): Task (the Lambda
`invoke` integration, with Parameters, ResultSelector, ResultPath, Retry and Catch), Wait, Choice, Pass, Succeed
and Fail. A state type or field it does not know is refused by name, so a change to the definition that the twin
cannot run fails loudly instead of running differently. Wait states are shortened to at most `max_wait` seconds
(the local import finishes at once; the declared interval is for FSx).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
KNOWN = {
    "Task": {"Type", "Resource", "Parameters", "ResultSelector", "ResultPath", "Next", "End", "Retry", "Catch",
             "Comment"},
    "Wait": {"Type", "Seconds", "Next", "End", "Comment"},
    "Choice": {"Type", "Choices", "Default", "Comment"},
    "Pass": {"Type", "Result", "ResultPath", "Next", "End", "Comment"},
    "Succeed": {"Type", "Comment"},
    "Fail": {"Type", "Error", "Cause", "Comment"},
}
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "BooleanEquals": lambda a, b: isinstance(a, bool) and a == b,
    "NumericGreaterThanEquals": lambda a, b: isinstance(a, int | float) and a >= b,
    "NumericEquals": lambda a, b: isinstance(a, int | float) and a == b,
    "StringEquals": lambda a, b: isinstance(a, str) and a == b,
}
Invoke = Callable[[str, Any], Any]  # (function ARN, payload) -> result; raises TaskFailedError


class DefinitionError(ValueError):
    """The definition uses something this interpreter does not run."""


class TaskFailedError(Exception):
    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error, self.cause = error, cause


@dataclass
class Execution:
    status: str = "RUNNING"  # SUCCEEDED | FAILED
    output: Any = None
    error: str = ""
    cause: str = ""
    states: list[str] = field(default_factory=list)  # the states entered, in order


def check(definition: dict[str, Any]) -> None:
    """Refuse anything this interpreter would not run as Step Functions does."""
    for name, state in definition["States"].items():
        kind = state.get("Type")
        if kind not in KNOWN:
            raise DefinitionError(f"state {name}: type {kind!r} is not run locally (local_platform/step_functions.py)")
        unknown = set(state) - KNOWN[kind]
        if unknown:
            raise DefinitionError(f"state {name}: {', '.join(sorted(unknown))} not run locally")
        if kind == "Task" and state["Resource"] != LAMBDA_INVOKE:
            raise DefinitionError(f"state {name}: only {LAMBDA_INVOKE} tasks are run locally")
        for choice in state.get("Choices", []):
            _check_rule(name, choice)


def _check_rule(name: str, rule: dict[str, Any]) -> None:
    if "And" in rule:
        for inner in rule["And"]:
            _check_rule(name, inner)
        return
    operators = set(rule) - {"Variable", "Next"}
    if not operators <= set(COMPARISONS):
        raise DefinitionError(f"state {name}: choice operators {', '.join(sorted(operators))} not run locally")


def path(data: Any, expression: str) -> Any:
    """A JSONPath of the form `$` or `$.a.b` (what the definition uses)."""
    if expression == "$":
        return data
    if not expression.startswith("$."):
        raise DefinitionError(f"path {expression!r}: only $.field.field paths are run locally")
    for part in expression[2:].split("."):
        if not isinstance(data, dict) or part not in data:
            raise TaskFailedError("States.Runtime", f"the path {expression} is not in the state's input")
        data = data[part]
    return data


def _place(data: Any, expression: str | None, value: Any) -> Any:
    if expression is None or expression == "$":
        return value
    result = copy.deepcopy(data) if isinstance(data, dict) else {}
    target = result
    parts = expression[2:].split(".")
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value
    return result


def _template(template: Any, data: Any) -> Any:
    if isinstance(template, dict):
        return {key.removesuffix(".$"): path(data, value) if key.endswith(".$") else _template(value, data)
                for key, value in template.items()}
    if isinstance(template, list):
        return [_template(item, data) for item in template]
    return template


def _matches(rule: dict[str, Any], data: Any) -> bool:
    if "And" in rule:
        return all(_matches(inner, data) for inner in rule["And"])
    try:
        value = path(data, rule["Variable"])
    except TaskFailedError:
        return False
    return all(COMPARISONS[op](value, expected) for op, expected in rule.items() if op in COMPARISONS)


def _handles(errors: list[str], error: str) -> bool:
    return "States.ALL" in errors or error in errors


def _task(state: dict[str, Any], data: Any, invoke: Invoke, sleep: Callable[[float], None]) -> Any:
    parameters = _template(state.get("Parameters", {}), data)
    attempts: dict[int, int] = {}
    while True:
        try:
            raw = {"Payload": invoke(parameters["FunctionName"], parameters.get("Payload")), "StatusCode": 200}
            break
        except TaskFailedError as failure:
            for index, retrier in enumerate(state.get("Retry", [])):
                if _handles(retrier["ErrorEquals"], failure.error):
                    attempts[index] = attempts.get(index, 0) + 1
                    if attempts[index] <= retrier.get("MaxAttempts", 3):
                        backoff = retrier.get("BackoffRate", 2.0) ** (attempts[index] - 1)
                        sleep(retrier.get("IntervalSeconds", 1) * backoff)
                        break
                    raise
            else:
                raise
    result = _template(state["ResultSelector"], raw) if "ResultSelector" in state else raw
    return _place(data, state.get("ResultPath", "$"), result)


def run(definition: dict[str, Any], data: Any, invoke: Invoke, *, max_wait: float = 1.0,
        sleep: Callable[[float], None] = time.sleep, max_transitions: int = 10_000) -> Execution:
    """Run an execution to its end; returns its status, output (or error and cause) and the states entered."""
    check(definition)
    execution = Execution()
    name = definition["StartAt"]
    for _ in range(max_transitions):
        state = definition["States"][name]
        execution.states.append(name)
        kind = state["Type"]
        try:
            if kind == "Task":
                data = _task(state, data, invoke, lambda seconds: sleep(min(seconds, max_wait)))
            elif kind == "Wait":
                sleep(min(float(state["Seconds"]), max_wait))
            elif kind == "Pass":
                data = _place(data, state.get("ResultPath", "$"), state.get("Result", data))
            elif kind == "Choice":
                name = next((c["Next"] for c in state["Choices"] if _matches(c, data)), state.get("Default", ""))
                if not name:
                    raise TaskFailedError("States.NoChoiceMatched", f"no choice of {execution.states[-1]} matched")
                continue
            elif kind == "Succeed":
                execution.status, execution.output = "SUCCEEDED", data
                return execution
            else:  # Fail
                execution.status, execution.error, execution.cause = "FAILED", state["Error"], state.get("Cause", "")
                return execution
        except TaskFailedError as failure:
            catcher = next((c for c in state.get("Catch", []) if _handles(c["ErrorEquals"], failure.error)), None)
            if catcher is None:
                execution.status, execution.error, execution.cause = "FAILED", failure.error, failure.cause
                return execution
            data = _place(data, catcher.get("ResultPath", "$"), {"Error": failure.error, "Cause": failure.cause})
            name = catcher["Next"]
            continue
        if state.get("End"):
            execution.status, execution.output = "SUCCEEDED", data
            return execution
        name = state["Next"]
    execution.status, execution.error = "FAILED", "States.Runtime"
    execution.cause = f"more than {max_transitions} transitions"
    return execution
