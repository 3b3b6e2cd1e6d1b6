"""The platform fails closed (issue 37): a platform preload that cannot start stops its process with one line naming
the setting and its valid form; every setting is checked at once; settings survive a config restored from a copy
taken before dask_regions was imported; the scheduler reports itself unhealthy without a platform plugin; and
`connect()` and the audit refuse a scheduler without the router, or one routing other regions than the stack's.
Each test starts its own processes on ports of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dask_regions import ConnectError, connect, settings
from dask_regions.audit import audit
from platform_facts import PLATFORM_HEALTH_PATH
from stackconfig import PROJECT_DIR as ROOT
from tests.regional_cluster import DASK

HEALTHCHECK = ROOT / "images" / "dask" / "healthcheck.py"
PRELOADS = ["--preload", "dask_regions.routing", "--preload", "dask_regions.demand"]
EXIT_WITHIN = 60  # seconds: a generous bound on a 2-core machine; it takes about one


def _environment(**settings_: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DASK_DASK_REGIONS__")}
    return {**environment, "PYTHONPATH": str(ROOT), **settings_}


def _run(arguments: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DASK, *arguments], env=environment, capture_output=True, text=True, timeout=EXIT_WITHIN,
                          stdin=subprocess.DEVNULL, check=False)


BAD = {
    "DASK_DASK_REGIONS__MISSING_POOL_TIMEOUT": ("banana", "dask-regions.missing-pool-timeout",
                                                "='banana': give a duration"),
    "DASK_DASK_REGIONS__ROUTE": ("maybe", "dask-regions.route", "='maybe': use true or false"),
    "DASK_DASK_REGIONS__REGIONS": ("not-a-list", "dask-regions.regions",
                                   "=['not-a-list']: give a list of AWS region names"),
    "DASK_DASK_REGIONS__COMBINE_POOL": ("eu-west-2", "dask-regions.combine-pool",
                                        "='eu-west-2': give a pool name pool-<region>"),
    "DASK_DASK_REGIONS__DEMAND__PUBLISHER": ("statsd", "dask-regions.demand.publisher",
                                             "='statsd': use one of none, cloudwatch"),
    "DASK_DASK_REGIONS__DEMAND__POOLS": ('{"pool-us-east-1": {"max_tasks": -1}}', "dask-regions.demand.pools",
                                         "pool-us-east-1.max_tasks=-1 is not a whole number at least 0"),
}


@pytest.mark.processes
@pytest.mark.parametrize("variable", sorted(BAD))
def test_a_scheduler_with_a_bad_setting_exits_naming_it(variable: str, tmp_path: Path) -> None:
    value, key, form = BAD[variable]
    done = _run(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", *PRELOADS],  # within EXIT_WITHIN
                _environment(**{variable: value}))
    assert done.returncode == 1, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "cannot start, so this process stops" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("dask_regions.routing cannot start"), lines[0]  # the first preload to run
    assert f"{key} ({variable})" in lines[0] and form in lines[0], lines[0]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.processes
def test_every_bad_setting_is_named_at_once() -> None:
    done = _run(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", *PRELOADS],
                _environment(**{variable: value for variable, (value, _, _) in BAD.items()}))
    assert done.returncode == 1
    line = next(line for line in done.stderr.splitlines() if "cannot start" in line)
    for variable, (_, key, form) in BAD.items():
        assert f"{key} ({variable})" in line and form in line, (key, line)


@pytest.mark.processes
def test_a_worker_with_a_bad_setting_exits_naming_it(tmp_path: Path) -> None:
    """The workers' preload (scale-in protection) fails closed too: the worker process stops, so the nanny and the
    `dask worker` command exit non-zero."""
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", str(tmp_path / "scheduler.json")],
                                 env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
    try:
        address = _address(tmp_path / "scheduler.json", scheduler)
        done = _run(["worker", address, "--no-dashboard", "--nthreads", "1", "--preload", "dask_regions.protection"],
                    _environment(DASK_DASK_REGIONS__PROTECTION__MINUTES="zero"))
        assert done.returncode != 0
        line = next(line for line in done.stderr.splitlines() if "cannot start, so this process stops" in line)
        assert line.startswith("dask_regions.protection cannot start"), line
        assert "dask-regions.protection.minutes (DASK_DASK_REGIONS__PROTECTION__MINUTES)='zero'" in line, line
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=30)


def test_check_parses_every_packaged_setting_and_lists_every_problem() -> None:
    def leaves(tree: dict[str, Any], prefix: str = "") -> set[str]:
        found = set()
        for key, value in tree.items():
            if isinstance(value, dict) and value and key != "pools":
                found |= leaves(value, f"{prefix}{key}.")
            else:
                found.add(f"{prefix}{key}")
        return found

    packaged = yaml.safe_load((ROOT / "dask_regions" / "dask_regions.yaml").read_text())["dask-regions"]
    assert set(settings.PARSERS) == leaves(packaged)  # a setting added to the YAML gets a parser
    parsed = settings.check()
    assert parsed["missing-pool-timeout"] == 30.0 and parsed["route"] is True and parsed["regions"] == []
    import dask

    with dask.config.set({"dask-regions.route": "maybe", "dask-regions.demand.interval": "soon",
                          "dask-regions.protection.minutes": 0}), pytest.raises(settings.SettingsError) as caught:
        settings.check()
    assert len(caught.value.problems) == 3, caught.value.problems
    assert "dask-regions.demand.interval (DASK_DASK_REGIONS__DEMAND__INTERVAL)='soon'" in str(caught.value)


RESTORED = textwrap.dedent("""
    import asyncio, copy, json
    import dask
    from distributed import Scheduler
    saved = copy.deepcopy(dask.config.config)  # taken before dask_regions is imported, as Dask's test utilities do
    import dask_regions.routing, dask_regions.demand
    from dask_regions import settings
    dask.config.config.clear()
    dask.config.config.update(copy.deepcopy(saved))
    assert "dask-regions" not in dask.config.config
    async def main():
        async with Scheduler(host="127.0.0.1", port=0, dashboard_address=":0",
                             preload=["dask_regions.routing", "dask_regions.demand"]) as scheduler:
            return sorted(scheduler.plugins)
    print(json.dumps({"plugins": asyncio.run(main()), "timeout": settings.seconds("missing-pool-timeout"),
                      "route": settings.flag("route")}))
""")


@pytest.mark.processes
def test_settings_survive_a_config_restored_from_before_the_import() -> None:
    done = subprocess.run([sys.executable, "-c", RESTORED], env=_environment(), capture_output=True, text=True,
                          timeout=EXIT_WITHIN, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"dask-regions-router", "dask-regions-demand"} <= set(found["plugins"]), found
    assert "dask-regions-connection-warmer" not in found["plugins"]  # off by default: connections as plain Dask
    assert (found["timeout"], found["route"]) == (30.0, True)  # the packaged defaults


def _address(scheduler_file: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + EXIT_WITHIN
    while not scheduler_file.exists():
        assert process.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
        time.sleep(0.1)
    return str(json.loads(scheduler_file.read_text())["address"])


@pytest.fixture
def scheduler(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A plain-TCP scheduler with the preloads the test names (indirect parameter) and a dashboard port."""
    preloads: list[str] = request.param
    scheduler_file = tmp_path / "scheduler.json"
    process = subprocess.Popen(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", "127.0.0.1:0",
         "--scheduler-file", str(scheduler_file), *(a for p in preloads for a in ("--preload", p))],
        env=_environment(DASK_DASK_REGIONS__REGIONS='["us-east-1", "us-west-2"]'),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        address = _address(scheduler_file, process)
        dashboard = json.loads(scheduler_file.read_text())["services"]["dashboard"]
        yield {"address": address, "health": f"http://127.0.0.1:{dashboard}{PLATFORM_HEALTH_PATH}"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def _health(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _container_health(url: str) -> int:
    """The image's health check, as the container runs it."""
    return subprocess.run([sys.executable, str(HEALTHCHECK)], env=_environment(DASK_HEALTH_URL=url),
                          timeout=30, check=False).returncode


@pytest.mark.parametrize(("scheduler", "status", "says"), [
    (["dask_regions.routing", "dask_regions.demand"], 200, "ok"),
    (["dask_regions.demand"], 503, "runs without dask_regions.routing"),
    (["dask_regions.routing"], 503, "runs without dask_regions.demand"),
    ([], 404, ""),
], indirect=["scheduler"], ids=["both", "no router", "no demand", "none"])
@pytest.mark.processes
def test_the_scheduler_is_healthy_only_with_both_plugins(scheduler: dict[str, Any], status: int, says: str) -> None:
    code, text = _health(scheduler["health"])
    assert code == status and says in text, (code, text)
    assert _container_health(scheduler["health"]) == (0 if status == 200 else 1)


@pytest.mark.processes
@pytest.mark.parametrize("scheduler", [["dask_regions.demand"]], indirect=True)
def test_connect_and_the_audit_refuse_a_scheduler_without_the_router(scheduler: dict[str, Any]) -> None:
    with pytest.raises(ConnectError) as caught:
        connect({"schedulerAddress": scheduler["address"]}, timeout=10)
    message = str(caught.value)
    assert "runs without dask_regions.routing" in message and "Fix: start it with --preload dask_regions.routing" \
        in message, message
    from distributed import Client

    with Client(scheduler["address"], timeout=10) as client, pytest.raises(ConnectError) as refused:
        audit(client, since=0.0)
    assert str(refused.value) == message


@pytest.mark.processes
@pytest.mark.parametrize("scheduler", [["dask_regions.routing", "dask_regions.demand"]], indirect=True)
def test_connect_refuses_a_scheduler_routing_other_regions_than_the_stacks(scheduler: dict[str, Any]) -> None:
    outputs = {"schedulerAddress": scheduler["address"],
               "workerPools": {"us-east-1": "pool-us-east-1", "eu-north-1": "pool-eu-north-1"}}
    with pytest.raises(ConnectError, match=r"routes for regions us-east-1, us-west-2, but the stack's outputs name "
                                           r"eu-north-1, us-east-1\. Fix: "):
        connect(outputs, timeout=10)
    outputs["workerPools"] = {"us-east-1": "pool-us-east-1", "us-west-2": "pool-us-west-2"}
    with connect(outputs, timeout=10) as platform:  # the same regions: connected
        assert platform.client.status == "running"


@pytest.mark.processes
def test_the_twins_up_reports_a_scheduler_whose_preload_cannot_start(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The dev stack's scheduler declared with a bad setting: the agent runs its task as ECS would, the scheduler
    stops, and `up` fails with the preload's line instead of reporting a running platform; nothing is left."""
    from local_platform.platform import LocalPlatform, PlatformError
    from tests.test_local_platform_hardening import ours

    declared = LocalPlatform._deployment

    def with_a_bad_setting(self: LocalPlatform) -> Any:
        deployment = declared(self)
        scheduler = next(c for c in deployment.containers if c.command[0] == "scheduler")
        scheduler.environment["DASK_DASK_REGIONS__ROUTE"] = "maybe"
        return deployment

    monkeypatch.setattr(LocalPlatform, "_deployment", with_a_bad_setting)
    state_dir = tmp_path / "state"
    with pytest.raises(PlatformError) as caught:
        LocalPlatform("dev", state_dir).up()
    assert str(caught.value).startswith("the scheduler did not start: dask_regions.routing cannot start"), caught.value
    assert "dask-regions.route (DASK_DASK_REGIONS__ROUTE)='maybe'" in str(caught.value)
    assert ours(state_dir) == []
