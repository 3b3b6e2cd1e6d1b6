"""The data plane as one distribution (pyproject.toml's `[project]`): one wheel per `pulumi up`, installed by the
Dask image, the catalog-sync image and the notebook kernel, so all three run the same code."""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from stackconfig import PROJECT_DIR

DIST_DIR = PROJECT_DIR / "dist"  # inside the image build context; not in git


def project(root: Path = PROJECT_DIR) -> dict[str, Any]:
    with (root / "pyproject.toml").open("rb") as handle:
        return dict(tomllib.load(handle)["project"])


def packages(root: Path = PROJECT_DIR) -> list[str]:
    with (root / "pyproject.toml").open("rb") as handle:
        return list(tomllib.load(handle)["tool"]["setuptools"]["packages"])


def extra(name: str, root: Path = PROJECT_DIR) -> list[str]:
    """Every package an install with the extra (`dask`, `sync`, `notebook`, `lab`) asks for by name: the core
    dependencies, the extra's own, and those of the extras it builds on (`cross-region-dask[dask]`)."""
    meta = project(root)
    found = list(meta["dependencies"])
    for requirement in meta["optional-dependencies"][name]:
        built_on = re.fullmatch(rf"{re.escape(meta['name'])}\[([a-z-]+)\]", requirement)
        found += extra(built_on.group(1), root) if built_on else [requirement]
    return list(dict.fromkeys(found))


def wheel_name(root: Path = PROJECT_DIR) -> str:
    meta = project(root)
    return f"{meta['name'].replace('-', '_')}-{meta['version']}-py3-none-any.whl"


def sources(root: Path = PROJECT_DIR) -> list[Path]:
    """pyproject.toml and every file of the packages (code and package data), without caches."""
    return [root / "pyproject.toml", *sorted(
        p for package in packages(root) for p in (root / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")]


def source_digest(root: Path = PROJECT_DIR) -> str:
    digest = hashlib.sha256()
    for path in sources(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def pin(package: str, root: Path = PROJECT_DIR) -> str:
    """`package==version` as requirements.txt pins it (a KeyError naming the package when it does not)."""
    for line in (root / "requirements.txt").read_text().splitlines():
        name, _, version = re.sub(r"\[[^\]]*\]", "", line.strip()).partition("==")
        if version and name.lower().replace("_", "-") == package.lower().replace("_", "-"):
            return f"{name}=={version}"
    raise KeyError(f"{package} is not pinned in requirements.txt")


def constraints(root: Path = PROJECT_DIR) -> Path:
    """requirements.txt as pip constraints (dist/constraints.txt): the same pins, without extras, which a
    constraints file may not carry (pip refuses `moto[server]==...` there). The images and the kernel install with
    it."""
    lines = [re.sub(r"\[[^\]]*\]", "", line) for line in (root / "requirements.txt").read_text().splitlines()]
    target = root / "dist" / "constraints.txt"
    target.parent.mkdir(exist_ok=True)
    text = "# Generated from requirements.txt by wheel_build/__init__.py: its pins, without extras.\n" + \
        "\n".join(lines) + "\n"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


@functools.cache
def wheel(root: Path = PROJECT_DIR) -> Path:
    """Build the wheel into dist/ (once per source digest: a rebuild only when the code changed), from a copy of
    the sources so that the build leaves nothing in the tree."""
    out = root / "dist"
    target, stamp = out / wheel_name(root), out / f"{wheel_name(root)}.source"
    digest = source_digest(root)
    if target.exists() and stamp.exists() and stamp.read_text() == digest:
        return target
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "src"
        for path in sources(root):
            (work / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, work / path.relative_to(root))
        built = Path(tmp) / "wheel"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
             "--disable-pip-version-check", "--wheel-dir", str(built), str(work)],
            capture_output=True, text=True, check=False, env={"SOURCE_DATE_EPOCH": "315532800",
                                                              "PATH": "/usr/bin:/bin"})
        if result.returncode != 0:
            raise RuntimeError(f"building the data plane's wheel failed: {result.stderr.strip()[-600:]}")
        shutil.move(str(built / wheel_name(root)), target)
    stamp.write_text(digest)
    return target
