"""The local platform stops only what it started, and refuses what would break a running one (issue 21): a
refused `up` or `demo` changes nothing, concurrent starts are refused, `down` ends a group whose leader died,
the agent stops within its tasks' stop timeout on SIGTERM, every listener binds loopback, every verb takes
--stack. Each test uses its own state directory and looks only at its own platform's processes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from local_platform.agent import STOP_GRACE_SECONDS
from local_platform.platform import MARKER, members, runs_from
from local_platform.state import LOCK_FILE
from tests.test_local_platform import cli, group_gone, recorded_pids

pytestmark = pytest.mark.processes


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def ours(state_dir: Path) -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if runs_from(int(p.name), state_dir.resolve())]


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses every listening TCP socket of these processes is bound to."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                address = fields[1].split(":")[0]
                found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0))
                          if len(address) == 8 else address)
    return found


@pytest.mark.slow
def test_a_running_platform_survives_a_refused_demo_and_wrong_stack_verbs(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert cli("up", "--stack", "dev", "--state-dir", str(state_dir)).returncode == 0
    try:
        pids, catalog = recorded_pids(state_dir), state_dir / "catalog.db"
        refused = cli("demo", "--stack", "dev", "--state-dir", str(state_dir))
        assert refused.returncode == 1 and "is already running" in refused.stdout, refused.stdout
        assert "stopped" not in refused.stdout and all(not group_gone(pid) for pid in pids) and catalog.exists()
        assert cli("status", "--stack", "dev", "--state-dir", str(state_dir)).returncode == 0
        for verb in ("status", "env", "down"):
            wrong = cli(verb, "--stack", "prod", "--state-dir", str(state_dir))
            assert wrong.returncode == 1 and "is stack 'dev', not 'prod'" in " ".join(wrong.stdout.split()), verb
        assert all(not group_gone(pid) for pid in pids)
        assert cli("env", "--stack", "dev", "--state-dir", str(state_dir)).stdout.startswith("export ")
    finally:
        assert cli("down", "--stack", "dev", "--state-dir", str(state_dir)).returncode == 0


def test_a_second_start_while_one_is_starting_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "catalog.db").write_text("the first platform's catalog")
    with (state_dir / LOCK_FILE).open("w") as lock:  # as a starting `up` or `demo` holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        for verb in ("up", "demo"):
            refused = cli(verb, "--stack", "dev", "--state-dir", str(state_dir))
            assert refused.returncode == 1 and "is starting a platform from" in " ".join(refused.stdout.split())
    assert (state_dir / "catalog.db").read_text() == "the first platform's catalog"
    assert not (state_dir / "platform.json").exists() and ours(state_dir) == []


def test_down_ends_a_recorded_group_whose_leader_died(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    environment = {**os.environ, MARKER: str(state_dir.resolve())}
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], env=environment, start_new_session=True)
    wait_until(lambda: len(members(leader.pid)) == 2, 10, "the group's child")
    (state_dir / "platform.json").write_text(json.dumps({
        "stack": "dev", "state_dir": str(state_dir.resolve()), "catalog": "", "processes": {
            "agent": {"pid": leader.pid, "command": ["sh", "-c"]}}}))
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait()
    assert members(leader.pid)  # the child lives on in the group
    stopped = cli("down", "--state-dir", str(state_dir))
    assert stopped.returncode == 0 and "agent" in stopped.stdout
    wait_until(lambda: not members(leader.pid), 10, "the orphaned group to end")


@pytest.mark.slow
def test_listeners_bind_loopback_and_the_agent_stops_without_a_scheduler(tmp_path: Path) -> None:
    from distributed import Client

    from local_platform.state import PlatformState

    state_dir = tmp_path / "state"
    assert cli("up", "--stack", "dev", "--state-dir", str(state_dir)).returncode == 0
    try:
        state = PlatformState.load(state_dir.resolve())
        assert state is not None
        with Client(state.scheduler_address, security=state.tls.security(), timeout=30) as client:
            client.submit(sum, [1, 2], resources={"pool-us-east-1": 1}).result(timeout=120)  # a worker starts
            workers = client.scheduler_info()["workers"].values()
            assert "pool-us-east-1" in {next(iter(w["resources"])) for w in workers}
        addresses = listening_addresses(ours(state_dir))
        assert addresses == {"127.0.0.1"}, addresses
        agent = state.processes["agent"]["pid"]
        os.kill(agent, signal.SIGSTOP)  # no restart of the scheduler while it is killed
        for pid in ours(state_dir):
            if b"scheduler" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                os.kill(pid, signal.SIGKILL)  # the scheduler is gone
        os.kill(agent, signal.SIGCONT)
        os.kill(agent, signal.SIGTERM)
        # Its workers try to drain through the scheduler; each is stopped at the latest at the stop timeout.
        wait_until(lambda: group_gone(agent), STOP_GRACE_SECONDS + 10, "the agent and its tasks to exit on SIGTERM")
    finally:
        cli("down", "--state-dir", str(state_dir))
    assert ours(state_dir) == []
