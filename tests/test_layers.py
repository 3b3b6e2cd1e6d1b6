"""The import contract (pyproject.toml [tool.importlinter], run by `make lint`) holds for the tree, and breaks on a
seeded violation of each kind: the data plane importing the infrastructure, a component importing the tooling, a
lower layer importing a higher one, and a cycle inside a package."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from stackconfig import PROJECT_DIR as ROOT

with (ROOT / "pyproject.toml").open("rb") as _handle:  # the contract's own list of the project's packages
    PACKAGES = tuple(tomllib.load(_handle)["tool"]["importlinter"]["root_packages"])


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=root, capture_output=True,
                          text=True, timeout=120, check=False, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.mark.processes
def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0 and "0 broken" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("dask_regions/keys.py", "import components.ports", "The data plane never imports the infrastructure"),
    ("components/ports.py", "import stackgraph.synth", "The components import neither the tooling"),
    ("stackconfig/aws.py", "import catalog_sync.records", "Layers:"),
    ("dask_regions/keys.py", "import dask_regions.routing", "No cycles between the modules of a package"),
    ("platform_facts/document.py", "import stackconfig", "The wheel's boundary"),
])
@pytest.mark.processes
def test_a_seeded_violation_breaks_the_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # seeded\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    section = " ".join(result.stdout.split()).split(" dependencies. ", 1)[1].split(" Contracts: ", 1)[0]
    verdicts = dict((name.strip("- "), verdict) for name, verdict in re.findall(r"(.*?) (KEPT|BROKEN)", section))
    assert len(verdicts) == 5, section  # every contract was checked
    assert [verdict for name, verdict in verdicts.items() if name.startswith(broken)] == ["BROKEN"], section


def test_the_wheels_boundary_names_every_package_the_wheel_ships() -> None:
    """The contract's sources are the wheel's packages (pyproject.toml), so a package added to the wheel is held to
    the boundary too."""
    import tomllib

    from wheel_build import packages

    with (ROOT / "pyproject.toml").open("rb") as handle:
        contracts = tomllib.load(handle)["tool"]["importlinter"]["contracts"]
    (boundary,) = [c for c in contracts if c["name"].startswith("The wheel's boundary")]
    assert sorted(boundary["source_modules"]) == sorted(packages())
    assert set(boundary["forbidden_modules"]) == set(PACKAGES) - set(packages())
