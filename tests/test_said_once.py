"""Each contract is declared once (issue 30): a second definition in the project's code fails here, naming where.
The catalog document and the nightly sync's environment have their own tests (test_catalog_sinks.py,
test_nightly_sync.py); the import contract (pyproject.toml) holds the layers."""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stackconfig import PROJECT_DIR

PACKAGES = ("catalog_access", "catalog_sync", "catalog_cli", "components", "wheel_build", "dask_regions",
            "local_platform", "plan", "platform_facts", "catalog_client", "policy", "stackconfig", "stackgraph",
            "bench", "images")


def sources() -> Iterator[Path]:
    yield PROJECT_DIR / "__main__.py"
    for package in PACKAGES:
        yield from sorted((PROJECT_DIR / package).rglob("*.py"))


def strings(path: Path) -> Iterator[str]:
    """The string constants of a module's code, docstrings and comments left out (they may name a fact)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
                  and isinstance(node.value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


# fact -> (where it is declared, or None where it is built; a test of a string constant that would declare it again)
FACTS: dict[str, tuple[str | None, Callable[[str], bool]]] = {
    "the Lustre mount point": ("platform_facts/__init__.py", lambda text: text == "/fsx"),
    "the AWS region pattern": ("platform_facts/__init__.py", lambda text: "[a-z]{2}" in text),
    "dask_regions settings' variable names": (None, lambda text: "DASK_DASK_REGIONS__" in text),  # regions_variable
}


@pytest.mark.parametrize("fact", sorted(FACTS))
def test_a_fact_is_declared_in_one_place(fact: str) -> None:
    home, declares = FACTS[fact]
    found = sorted(str(path.relative_to(PROJECT_DIR)) for path in sources()
                   if any(declares(text) for text in strings(path)))
    assert found == ([home] if home else []), found


def test_the_project_root_is_found_in_one_place() -> None:
    """stackconfig.PROJECT_DIR; a benchmark run by path finds the project's packages once, to import it."""
    expression = "Path(__file__).resolve().parent.parent"
    found = []
    for path in [*sources(), *sorted((PROJECT_DIR / "tests").rglob("*.py"))]:
        if path == Path(__file__).resolve():
            continue
        for line in path.read_text().splitlines():
            if expression in line and not (path.parent.name == "bench" and line.startswith("sys.path.insert(0, ")):
                found.append(str(path.relative_to(PROJECT_DIR)))
    assert found == ["stackconfig/project.py"]


@pytest.mark.processes
def test_the_layout_doc_names_every_entry_of_the_tree() -> None:
    """docs/layout.md has a row for each file and directory the repository tracks at its root, and none for another."""
    tracked = subprocess.run(["git", "ls-files"], cwd=PROJECT_DIR, capture_output=True, text=True, check=True,
                             timeout=30).stdout.split()
    entries = {path.split("/", 1)[0] for path in tracked if not path.startswith(".")} | {".ci"}
    text = (PROJECT_DIR / "docs" / "layout.md").read_text()
    named = {name.rstrip("/") for row in text.splitlines() if row.startswith("| `")
             for name in re.findall(r"`([^`]+)`", row.split(" | ")[0])}
    assert named == entries, (sorted(entries - named), sorted(named - entries))
