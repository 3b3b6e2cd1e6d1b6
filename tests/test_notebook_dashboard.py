"""The dashboard through the notebook, run for real (issue 29, point 3): a Jupyter server (jupyter-server with
jupyter-server-proxy, at requirements.txt's pins, as the notebook's start script installs it) with the proxy
settings the dev stack declares, taken from its lifecycle script unchanged, serves a real scheduler's `/status`
page over HTTP at the kernel's dashboard link, and refuses every other host.

The declaration allows the scheduler's private DNS name only. The server runs in a mount namespace of its own,
whose /etc/hosts gives that name this machine's loopback address, where the test's scheduler serves its
dashboard: nothing in the declaration is rewritten for the test."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.client_notebook import DASHBOARD_LINK
from stackconfig import PROJECT_DIR
from tests.conftest import cached_graph
from tests.regional_cluster import DASK

pytestmark = [pytest.mark.processes, pytest.mark.root]

LIFECYCLE = "aws:sagemaker/notebookInstanceLifecycleConfiguration:NotebookInstanceLifecycleConfiguration"
START_WITHIN = 90  # seconds, for the scheduler and the Jupyter server to answer


def declared_proxy_setting() -> tuple[str, str, str]:
    """(the Jupyter config file the start script merges the proxy setting into, the setting as JSON, the merging
    step's Python), from the dev stack's recorded lifecycle script."""
    (lifecycle,) = cached_graph("dev").of_type(LIFECYCLE)
    script = base64.b64decode(lifecycle.inputs["onStart"]).decode()
    found = re.search(r"python3 - (\S+) '(\{.*\})' <<'MERGE'\n(.*?)MERGE\n", script, re.DOTALL)
    assert found, "the start script sets no Jupyter server config"
    return found.group(1), found.group(2), found.group(3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any) -> None:  # a redirect (to the login page) is the answer itself
        return None


def get(url: str, token: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.build_opener(_NoRedirect).open(request, timeout=30) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def wait_until_answers(url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_WITHIN
    while True:
        try:
            if get(url, token)[0] < 500:
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {START_WITHIN} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("notebook-dashboard")
    path, setting, merge = declared_proxy_setting()
    (host,) = json.loads(setting)["ServerProxy"]["host_allowlist"]
    config = root / "config" / Path(path).name  # the user's Jupyter config, here in the test's own directory
    config.parent.mkdir()
    config.write_text(json.dumps({"ServerApp": {"terminals_enabled": False}}))  # what was there: kept
    subprocess.run([sys.executable, "-", str(config), setting], input=merge, text=True, check=True, timeout=30)
    assert json.loads(config.read_text()) == {"ServerApp": {"terminals_enabled": False}, **json.loads(setting)}
    hosts = root / "hosts"
    hosts.write_text(Path("/etc/hosts").read_text() + f"\n127.0.0.1 {host}\n")
    dashboard, jupyter, token = free_port(), free_port(), secrets.token_hex(16)
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_DIR)}
    processes = []
    try:
        with (root / "scheduler.log").open("wb") as log:
            processes.append(subprocess.Popen(
                [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address",
                 f"127.0.0.1:{dashboard}"], env=environment, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True))
        with (root / "jupyter.log").open("wb") as log:
            processes.append(subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                 f'mount --bind {hosts} /etc/hosts && exec "$0" "$@"', sys.executable, "-m", "jupyter_server",
                 "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={jupyter}", f"--ServerApp.token={token}",
                 "--ServerApp.open_browser=False", "--ServerApp.allow_root=True", f"--ServerApp.root_dir={root}"],
                env={**environment, "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_DATA_DIR": str(root / "data"),
                     "JUPYTER_RUNTIME_DIR": str(root / "runtime"), "HOME": str(root)},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_until_answers(f"http://127.0.0.1:{dashboard}/health", token, processes[0], root / "scheduler.log")
        wait_until_answers(f"http://127.0.0.1:{jupyter}/api/status", token, processes[1], root / "jupyter.log")
        yield {"host": host, "dashboard": dashboard, "server": f"http://127.0.0.1:{jupyter}", "token": token}
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


def test_the_scheduler_dashboard_is_served_through_the_notebook_server(served: dict[str, Any]) -> None:
    link = DASHBOARD_LINK.format(host=served["host"], port=served["dashboard"])  # the kernel's dashboard link
    status, page = get(served["server"] + link, served["token"])
    assert status == 200, page[-2000:]
    assert "<title>Dask: Status</title>" in page or "Dask" in page, page[:2000]
    status, health = get(f"{served['server']}/proxy/{served['host']}:{served['dashboard']}/health", served["token"])
    assert (status, health) == (200, "ok")


@pytest.mark.parametrize("other", ["127.0.0.1", "localhost", "169.254.169.254"])
def test_a_host_other_than_the_schedulers_is_refused(served: dict[str, Any], other: str) -> None:
    status, page = get(f"{served['server']}/proxy/{other}:{served['dashboard']}/status", served["token"])
    assert status == 403, (status, page[:500])


def test_the_proxy_needs_the_notebooks_token(served: dict[str, Any]) -> None:
    link = DASHBOARD_LINK.format(host=served["host"], port=served["dashboard"])
    status, page = get(served["server"] + link, "not-the-token")
    assert status in (302, 401, 403) and "Dask" not in page, (status, page[:500])
