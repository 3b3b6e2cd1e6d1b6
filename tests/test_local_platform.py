"""The local platform's command line end to end, in a temporary state directory: up, status, demo, down,
with nothing left running; a second up, Ctrl-C during the demo and a bad stack file handled clearly."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackconfig import PROJECT_DIR as ROOT

pytestmark = pytest.mark.processes




def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "local_platform", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, check=False, env={**os.environ, "COLUMNS": "200"})


def recorded_pids(state_dir: Path) -> list[int]:
    state = json.loads((state_dir / "platform.json").read_text())
    return [entry["pid"] for entry in state["processes"].values()]


def listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_gone(pid: int) -> bool:
    from local_platform.platform import group_alive

    return not group_alive(pid)


@pytest.mark.slow
def test_up_status_down_leaves_nothing_running(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    started = cli("up", "--stack", "dev", "--state-dir", str(state_dir))
    assert started.returncode == 0, started.stdout + started.stderr
    pids = recorded_pids(state_dir)
    recorded = json.loads((state_dir / "platform.json").read_text())
    ports = [int(recorded["scheduler_address"].rsplit(":", 1)[1]),
             int(recorded["dashboard_url"].split(":")[2].split("/")[0])]
    ports += [int(endpoint.rsplit(":", 1)[1]) for endpoint in recorded["s3_endpoints"].values()]
    try:
        assert "tls://127.0.0.1:" in started.stdout and "pool-us-west-2" in started.stdout
        status = cli("status", "--state-dir", str(state_dir))
        assert status.returncode == 0 and status.stdout.count(": running") == len(pids) == 4
        # 3 AWS emulations and the agent, which runs the scheduler's task (as in AWS no client-region pool; worker
        # pools start empty: minTasks 0)
        assert "ALB: the dashboard is served directly on loopback" in status.stdout
        again = cli("up", "--stack", "dev", "--state-dir", str(state_dir))
        assert again.returncode == 1 and "is already running" in again.stdout and "Traceback" not in again.stderr
        catalog = json.loads((state_dir / "platform.json").read_text())["catalog"]
        from dask_regions import Catalog

        assert len(Catalog.open(catalog).find(variable="air_temperature_at_2_metres")) == 12
        # mirrored from S3 into the region's own stand-in, under the association's file system path
        assert (state_dir / "fsx" / "us-west-2" / "us-west-2" / "CMIP6" / "ScenarioMIP" / "MOHC").is_dir()
        assert not list((state_dir / "fsx" / "us-east-1").glob("**/CMIP6"))  # each region sees its own data only
    finally:
        stopped = cli("down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0
    assert all(group_gone(pid) for pid in pids)
    assert not any(listening(port) for port in ports)  # no port left behind either
    assert cli("status", "--state-dir", str(state_dir)).returncode == 1


@pytest.fixture(scope="module")
def dev_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One run of the dev stack's demo (with the OpenSearch catalog), for the tests that read it: a run takes over a
    minute on 2 cores (make test keeps a module on one pytest worker)."""
    state_dir = tmp_path_factory.mktemp("dev-demo") / "state"
    return cli("demo", "--stack", "dev", "--state-dir", str(state_dir), "--catalog", "opensearch"), state_dir


@pytest.mark.slow
def test_demo_prints_the_audit_writes_the_plot_and_stops_everything(
        dev_demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, state_dir = dev_demo
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "misplaced tasks: 0; ambiguous: 0" in result.stdout and "from -> to" in result.stdout
    assert "pool-eu-west-2" not in result.stdout  # as in AWS: no pool in the client region
    plot = state_dir / "demo.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {plot}" in result.stdout
    assert "stopped 5 processes" in result.stdout  # with the osmem catalog
    for pool in ("pool-us-east-1", "pool-us-west-2"):  # grew under load, back to zero after it
        (story,) = [line for line in result.stdout.splitlines() if line.startswith(f"{pool} workers over time: 0 -> ")]
        assert story.endswith(" -> 0") and max(int(n) for n in story.split(": ")[1].split(" -> ")) >= 1
    assert not (state_dir / "platform.json").exists()


WARMING = re.compile(r"mean warming \(area-weighted global mean\): (-?[0-9.]+) K")


@pytest.mark.slow
def test_the_lean_stack_runs_the_reference_analysis_with_the_dev_stacks_numbers(
        tmp_path: Path, dev_demo: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """Pulumi.lean.yaml (storage s3, catalog s3, vpc-peering): the twin runs what it declares, reads the data from
    the buckets through the read cache, finds it in the S3 catalog, and the analysis gives what it gives on dev
    (Lustre, an OpenSearch catalog, Transit Gateway)."""
    result = cli("demo", "--stack", "lean", "--state-dir", str(tmp_path / "lean"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "misplaced tasks: 0; ambiguous: 0" in result.stdout
    found = {"dev": WARMING.search(dev_demo[0].stdout), "lean": WARMING.search(result.stdout)}
    assert found["dev"] and found["lean"] and found["lean"].group(1) == found["dev"].group(1)
    lean = tmp_path / "lean"
    # No Lustre stand-in: the chunks came from the bucket, through the read cache ...
    assert not (lean / "fsx").exists() and list((lean / "read-cache" / "us-east-1").rglob("*"))
    # ... and the datasets from the S3 catalog's snapshots (no local SQLite catalog, no OpenSearch stand-in).
    def endpoints(state_dir: Path) -> set[str]:
        twin = json.loads((state_dir / "twin.json").read_text())
        return {f["environment"]["CATALOG_ENDPOINT"] for f in twin["functions"].values()}

    catalog_log = Path("logs") / "catalog.log"  # the OpenSearch stand-in's
    assert not (lean / "catalog.db").exists() and not (lean / catalog_log).exists()
    assert (dev_demo[1] / catalog_log).exists()
    (lean_catalog,), (dev_catalog,) = endpoints(lean), endpoints(dev_demo[1])
    assert lean_catalog.startswith("s3://") and dev_catalog.startswith("http")  # dev's: the OpenSearch stand-in


@pytest.mark.slow
def test_ctrl_c_during_the_demo_tears_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    process = subprocess.Popen([sys.executable, "-m", "local_platform", "demo", "--state-dir", str(state_dir)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300  # generous: the other pytest worker may load both cores meanwhile
    while True:  # interrupt once the Dask processes exist
        state = state_dir / "platform.json"
        if state.exists() and "agent" in json.loads(state.read_text() or "{}").get("processes", {}):
            break
        assert process.poll() is None, f"the demo ended before its platform was up: {process.communicate()[0]}"
        assert time.monotonic() < deadline, "the demo's platform did not come up within 300 s"
        time.sleep(0.2)
    pids = recorded_pids(state_dir)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output[-2000:]
    assert "interrupted: stopping the platform" in output
    assert all(group_gone(pid) for pid in pids), output[-1500:]


def test_an_opensearch_stand_in_for_a_stack_with_the_s3_catalog_is_refused_naming_why(tmp_path: Path) -> None:
    result = cli("up", "--stack", "lean", "--state-dir", str(tmp_path / "state"), "--catalog", "opensearch")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    text = " ".join((result.stdout + result.stderr).split())
    assert "--catalog opensearch: stack lean's catalog is S3 (catalog.kind s3)" in text and "drop --catalog" in text
    assert not (tmp_path / "state" / "platform.json").exists()


@pytest.mark.parametrize(("stack_file", "message"), [
    ("config:\n  cross-region-dask:client: {region: eu-west-9, cidr: 10.0.0.0/16}\n"
     "  cross-region-dask:workers: []\n", "client.region: 'eu-west-9' is not an AWS region"),
    ("config: [unclosed\n", "is not valid YAML"),
])
def test_a_bad_stack_file_fails_with_the_validation_messages(tmp_path: Path, stack_file: str, message: str) -> None:
    stack = f"broken-{os.getpid()}"
    path = ROOT / f"Pulumi.{stack}.yaml"
    path.write_text(stack_file)
    try:
        result = cli("up", "--stack", stack, "--state-dir", str(tmp_path / "state"))
    finally:
        path.unlink()
    assert result.returncode == 2
    assert message in " ".join(result.stdout.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "platform.json").exists()


def test_the_demo_of_a_stack_with_users_is_refused_naming_them_and_what_to_run_instead(tmp_path: Path) -> None:
    import yaml

    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    raw["config"]["cross-region-dask:client"] |= {"groups": [{"name": "climate"}],
                                                  "users": [{"name": "ana", "group": "climate"}]}
    stack = f"users-{os.getpid()}"
    path = ROOT / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        result = cli("demo", "--stack", stack, "--state-dir", str(tmp_path / "state"))
    finally:
        path.unlink()
    text = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"stack '{stack}' declares client.users (ana): each user computes on a cluster of their own" in text, text
    assert f'Fix: `python -m local_platform up --stack {stack}`, then as each user `eval "$(python -m ' \
           'local_platform env --user <name>)"`' in text
    assert not (tmp_path / "state" / "platform.json").exists()


def test_bad_flags_are_clear(tmp_path: Path) -> None:
    result = cli("up", "--catalog", "mongodb", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1 and "--catalog 'mongodb': use sqlite or opensearch" in result.stdout


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A local platform up for the module, and the environment a kernel gets from `python -m local_platform env`."""
    state_dir = tmp_path_factory.mktemp("running") / "state"
    assert cli("up", "--stack", "dev", "--state-dir", str(state_dir)).returncode == 0
    try:
        exports = cli("env", "--state-dir", str(state_dir)).stdout.splitlines()
        environment = {}
        for line in exports:
            name, _, value = line.removeprefix("export ").partition("=")
            environment[name] = shlex.split(value)[0]
        assert {"DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", "DASK_SCHEDULER_ADDRESS", "CATALOG_ENDPOINT"} <= set(
            environment)
        yield {"state": json.loads((state_dir / "platform.json").read_text()), "environment": environment}
    finally:
        cli("down", "--state-dir", str(state_dir))


@pytest.mark.slow
def test_the_example_notebook_runs_headless_against_the_local_platform(running: dict[str, Any], tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    for name, value in running["environment"].items():  # the kernel's environment, as users set it
        monkeypatch.setenv(name, value)
    output = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "reference_analysis.ipynb"), str(output),
                               parameters={"scheduler_address": running["state"]["scheduler_address"],
                                           "catalog_location": running["state"]["catalog"]},
                               kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    cells = json.loads(output.read_text())["cells"]
    outputs = [o for cell in cells if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot
    text = "".join("".join(o.get("text", "")) for o in outputs)
    assert "misplaced: 0" in text and "regridded by linear interpolation" in text
    import re

    warming = float(re.search(r"mean warming \(area-weighted global mean\): (-?[0-9.]+) K", text).group(1))  # type: ignore[union-attr]
    assert abs(warming - 4.0) < 0.05  # the sample data's warming, by construction


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_examples() -> list[str]:
    """Every Python example of the README and the docs, in order."""
    examples = []
    for doc in DOCS:
        text = doc.read_text()
        examples += [block.split("\n", 1)[1] for block in text.split("```")[1::2] if block.startswith("python\n")]
    return examples


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_every_python_example_of_the_docs_runs_against_the_local_platform(running: dict[str, Any], index: int,
                                                                     tmp_path: Path) -> None:
    """As written: in a fresh interpreter with the environment `python -m local_platform env` gives."""
    example = readme_examples()[index]
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False, env={**os.environ, **running["environment"],
                                                           "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, f"docs example {index + 1} failed:\n{example}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr


def test_connect_scales_a_pool_and_reads_the_logs_of_the_local_platform(running: dict[str, Any],
                                                                         tmp_path: Path) -> None:
    """`dr.connect()` in a kernel with the platform's environment: `scale` makes the local agent start real worker tasks
    in that region's pool, `adapt` hands the pool back to its work, and `get_logs` reads the platform's log
    files."""
    script = """
import time, dask_regions as dr
with dr.connect() as platform:
    deployed = platform.adapt(region="us-east-1")
    scaled = platform.scale(2, region="us-east-1")
    deadline = time.monotonic() + 120
    while len(platform.pools().get("us-east-1", [])) < 2:
        assert time.monotonic() < deadline, platform.pools()
        time.sleep(0.5)
    print("workers", len(platform.pools()["us-east-1"]), "in", sorted(platform.pools()))
    again = platform.adapt(region="us-east-1")
    print("bounds", (scaled["min_tasks"], scaled["max_tasks"]) == (2, 2),
          (again["min_tasks"], again["max_tasks"]) == (deployed["min_tasks"], deployed["max_tasks"]))
    logs = platform.get_logs()
    print("logs", any(name.startswith("scheduler-") for name in logs),
          any(name.startswith("workers-us-east-1-") for name in logs))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, check=False, env={**os.environ, **running["environment"],
                                                           "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == ["workers 2 in ['us-east-1', 'us-west-2']", "bounds True True",
                                          "logs True True"], result.stdout


@pytest.mark.slow
def test_the_example_notebook_runs_in_the_declared_kernel(running: dict[str, Any], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel as AWS builds it (components/kernel.py): a venv with the data plane's wheel and its notebook
    extra, pinned as the images are, and a kernelspec with the declared environment pointing at this platform. The
    example notebook runs in it with no parameters: everything comes from the kernel's environment."""
    import papermill

    from components.kernel import KERNEL
    from local_platform.kernel import install_kernelspec, kernel_certificate, kernel_venv
    from local_platform.tls import load_local_tls

    state = running["state"]
    certificate = kernel_certificate(load_local_tls(Path(state["tls_dir"])), tmp_path / "kernel-tls")
    environment = KERNEL.environment(state["scheduler_address"], state["catalog"], str(certificate),
                                     log_dir=running["environment"]["DASK_PLATFORM_LOG_DIR"])
    spec = install_kernelspec(kernel_venv(), tmp_path / "jupyter", environment)
    assert json.loads((spec / "kernel.json").read_text())["env"] == environment
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    output = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "reference_analysis.ipynb"), str(output),
                               kernel_name=KERNEL.name, cwd=str(tmp_path), progress_bar=False)
    cells = json.loads(output.read_text())["cells"]
    outputs = [o for cell in cells if cell["cell_type"] == "code" for o in cell.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]
