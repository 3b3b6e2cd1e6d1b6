"""The notebook stops when idle (issue 31, point 3): the idle stop the dev stack's lifecycle script installs, taken
from the script unchanged, run against a real Jupyter server (jupyter-server at requirements.txt's pin) with a
stand-in `aws` command that records the call it would make."""

from __future__ import annotations

import base64
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from components.notebook_idle import verdict
from tests.conftest import cached_graph
from tests.test_cost import overridden
from tests.test_notebook_dashboard import LIFECYCLE, free_port, wait_until_answers

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def start_script(graph: Any = None) -> str:
    (lifecycle,) = (graph or cached_graph("dev")).of_type(LIFECYCLE)
    return base64.b64decode(lifecycle.inputs["onStart"]).decode()


def status(minutes_ago: float) -> dict[str, str]:
    return {"last_activity": (NOW - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")}


def test_recent_activity_keeps_the_notebook() -> None:
    assert verdict(status(10), None, NOW, 60) == (False, "active 10 minutes ago (limit 60)")


def test_a_quiet_server_is_stopped_only_when_no_kernel_is_busy() -> None:
    assert verdict(status(61), None, NOW, 60)[0] is False  # the kernels are read first
    busy = [{"name": "dask-platform", "execution_state": "busy"}, {"name": "python3", "execution_state": "idle"}]
    assert verdict(status(61), busy, NOW, 60) == (
        False, "a kernel is busy (dask-platform): a computation is running")
    stop, why = verdict(status(61), [{"execution_state": "idle"}], NOW, 60)
    assert stop and why == "no activity for 61 minutes and no kernel busy (limit 60)"


def test_the_dev_stack_installs_the_idle_stop_every_five_minutes_and_may_stop_only_its_own_notebook() -> None:
    graph = cached_graph("dev")
    script = start_script(graph)
    assert re.search(r"\*/5 \* \* \* \* root /usr/bin/python3 /usr/local/bin/dask-platform-idle-stop --minutes 60 "
                     r"--name cross-region-dask-dev-notebook --region eu-west-2 ", script)
    role = graph.named("client-notebook-policy", "aws:iam/rolePolicy:RolePolicy")
    policy = str(role.inputs["policy"])
    assert ('"Action": "sagemaker:StopNotebookInstance", "Resource": "arn:aws:sagemaker:eu-west-2:123456789012:'
            'notebook-instance/cross-region-dask-dev-notebook"') in policy


def test_an_always_on_notebook_has_no_idle_stop_and_no_permission_to_stop() -> None:
    graph, _ = overridden(notebookIdleMinutes=0)
    assert "rm -f /etc/cron.d/dask-platform-idle-stop" in start_script(graph)
    assert "StopNotebookInstance" not in str(graph.named("client-notebook-policy", "aws:iam/rolePolicy:RolePolicy")
                                              .inputs["policy"])


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    with (tmp_path / "jupyter.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.open_browser=False",
             "--ServerApp.allow_root=True", f"--ServerApp.root_dir={tmp_path}"],
            env={**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "d"),
                 "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "HOME": str(tmp_path)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/api/status", "", process, tmp_path / "jupyter.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.mark.processes
@pytest.mark.slow
def test_the_declared_idle_stop_keeps_a_used_notebook_and_stops_a_quiet_one(jupyter: str, tmp_path: Path) -> None:
    script = start_script()
    installed = tmp_path / "dask-platform-idle-stop"
    installed.write_text(re.search(r"<<'IDLE'\n(.*?)IDLE\n", script, re.DOTALL).group(1))  # type: ignore[union-attr]
    calls = tmp_path / "aws-calls"
    aws = tmp_path / "bin" / "aws"  # stands in for the AWS CLI: records the call
    aws.parent.mkdir()
    aws.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    aws.chmod(aws.stat().st_mode | stat.S_IEXEC)
    started = time.monotonic()

    def run() -> str:
        done = subprocess.run([sys.executable, str(installed), "--minutes", "1", "--name", "nb", "--region",
                               "eu-west-2", "--url", jupyter], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PATH": f"{aws.parent}:{os.environ['PATH']}"}, check=True)
        return done.stdout

    assert "keeping nb: active 0 minutes ago (limit 1)" in run() and not calls.exists()
    time.sleep(max(0.0, 62 - (time.monotonic() - started)))  # its own readings of /api/status count as no activity
    assert "stopping nb: no activity for 1 minutes and no kernel busy (limit 1)" in run()
    assert calls.read_text().split() == ["sagemaker", "stop-notebook-instance", "--region", "eu-west-2",
                                         "--notebook-instance-name", "nb"]
