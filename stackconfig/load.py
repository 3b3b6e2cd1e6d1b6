"""Reading a stack config: Pulumi.yaml's defaults, a stack file, overrides, or the Pulumi program's config."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stackconfig.schema import PROJECT_NAME, TOP_LEVEL_KEYS, ConfigError, Problem, StackConfig
from stackconfig.validate import parse_stack_config


# --------------------------------------------------------------------------------------------- loaders
def project_defaults(project_dir: Path) -> tuple[str, dict[str, Any]]:
    """The project name and the config defaults declared in Pulumi.yaml."""
    document = _read_yaml(project_dir / "Pulumi.yaml")
    name = str(document.get("name", PROJECT_NAME))
    defaults = {key: spec["default"] for key, spec in (document.get("config") or {}).items()
                if isinstance(spec, Mapping) and "default" in spec}
    return name, defaults


def stack_file_values(project_dir: Path, stack: str, project: str) -> dict[str, Any]:
    """The project-namespace values of `Pulumi.<stack>.yaml`, without their namespace."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise ConfigError([Problem(path.name, "does not exist.",
                                   f"create it (see Pulumi.dev.yaml) or choose another stack than {stack!r}.")],
                          f"stack {stack!r}")
    document = _read_yaml(path)
    values: dict[str, Any] = {}
    for key, value in (document.get("config") or {}).items():
        namespace, _, name = str(key).rpartition(":")
        if namespace in ("", project):
            values[name] = value
    return values


def raw_stack_config(project_dir: Path, stack: str, overrides: Mapping[str, Any] | None = None
                     ) -> tuple[str, dict[str, Any]]:
    """Pulumi.yaml defaults, then the stack file, then overrides: what `pulumi up` would see."""
    project, defaults = project_defaults(project_dir)
    return project, {**defaults, **stack_file_values(project_dir, stack, project), **(overrides or {})}


def load_stack_file(project_dir: Path, stack: str, overrides: Mapping[str, Any] | None = None) -> StackConfig:
    """Load and validate `Pulumi.<stack>.yaml` the way the Pulumi program reads its config."""
    project, raw = raw_stack_config(project_dir, stack, overrides)
    return parse_stack_config(raw, stack=stack, project=project)


def load_from_pulumi() -> StackConfig:
    """Load and validate the running Pulumi stack's config through Pulumi's public `Config`, key by declared key.
    A project key the declarations lack never gets here: the Pulumi CLI refuses a stack that sets a project key
    Pulumi.yaml does not declare (that block is generated from the same declarations)."""
    import pulumi

    project, stack = pulumi.get_project(), pulumi.get_stack()
    config = pulumi.Config()  # the project's namespace
    raw: dict[str, Any] = {}
    problems: list[Problem] = []
    for key in TOP_LEVEL_KEYS:
        text = config.get(key.name)  # structured values arrive as JSON text
        if text is not None:
            raw[key.name] = _decode(key.name, text, key.kind, problems)
    try:
        parsed = parse_stack_config(raw, stack=stack, project=project)
    except ConfigError as error:
        problems.extend(error.problems)
    if problems:
        raise ConfigError(problems, f"stack {stack!r}")
    return parsed


def _decode(name: str, text: Any, kind: str | None, problems: list[Problem]) -> Any:
    """Pulumi hands config values over as strings; structured keys hold JSON. An unknown key keeps its text
    when it is not JSON (validation reports it as unknown)."""
    if kind == "string" or not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if kind is not None:
            problems.append(Problem(name, f"is not valid JSON ({error.msg} at character {error.pos}).",
                                    "write it as YAML in the stack file or use `pulumi config set --path`."))
        return text


MAX_YAML_VALUES = 100_000


def _expands_beyond(document: Any, limit: int) -> bool:
    """Whether a loaded document holds more than `limit` values, counting what aliases repeat (an alias bomb of
    a kilobyte is billions of values); stops counting at the limit."""
    count, stack = 0, [document]
    while stack:
        node = stack.pop()
        count += 1
        if count > limit:
            return True
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([Problem(path.name, f"is not valid YAML{where}.", "fix the YAML syntax.")],
                          path.name) from None
    if document is None:
        return {}
    if _expands_beyond(document, MAX_YAML_VALUES):
        raise ConfigError([Problem(path.name, f"expands to more than {MAX_YAML_VALUES:,} values (YAML aliases that "
                                              "repeat themselves?).", "write the values out; a stack file is small.")],
                          path.name)
    if not isinstance(document, dict):
        raise ConfigError([Problem(path.name, "must be a YAML mapping.", "start it with 'config:'.")], path.name)
    return document


