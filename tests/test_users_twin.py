"""Two users at once on the deployment twin (issue 33, point 4): a stack with client.users runs locally as declared,
a cluster per user started by the cluster broker when its user connects. Two users compute the reference analysis
concurrently, each in a process of their own with their kernel's environment (`python -m local_platform env
--user`); the group quotas hold; each audit holds only its user's tasks; one user's certificate fails the TLS
handshake at the other's scheduler and workers; a third user over their group's cluster quota is refused, naming
it."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stackconfig import PROJECT_DIR as ROOT
from stackconfig import raw_stack_config

pytestmark = [pytest.mark.processes, pytest.mark.slow]

USERS = {"ana": "climate", "bo": "ops", "cy": "climate"}
# climate: one cluster at a time, one worker task per region; ops: no quota (the local sizes bound it: 2 tasks).
GROUPS = [{"name": "climate", "maxClusters": 1, "maxWorkersPerRegion": 1}, {"name": "ops"}]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "local_platform", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "COLUMNS": "200"})


def kernel_environment(state_dir: Path, user: str) -> dict[str, str]:
    """What `eval "$(python -m local_platform env --user <user>)"` sets, over a clean environment."""
    exports = cli("env", "--state-dir", str(state_dir), "--user", user)
    assert exports.returncode == 0, exports.stdout + exports.stderr
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "PYTHONPATH": str(ROOT)}
    for line in exports.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        environment[name] = shlex.split(value)[0] if value else ""
    return environment


@pytest.fixture(scope="module")
def users_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from local_platform.platform import LocalPlatform

    _, raw = raw_stack_config(ROOT, "dev")
    client = {**raw["client"], "groups": GROUPS, "users": [{"name": n, "group": g} for n, g in USERS.items()]}
    platform = LocalPlatform("dev", tmp_path_factory.mktemp("users") / "state", overrides={"client": client})
    state = platform.up()
    try:
        yield state
    finally:
        platform.down()


def sessions(state_dir: Path, *users: str) -> dict[str, dict[str, Any]]:
    """Each user's notebook session (tests/user_session.py), all at once; their JSON answers."""
    started = {user: subprocess.Popen([sys.executable, str(ROOT / "tests" / "user_session.py"), user], cwd=ROOT,
                                      env=kernel_environment(state_dir, user), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for user in users}
    answers = {}
    for user, process in started.items():
        out, err = process.communicate(timeout=400)
        assert process.returncode == 0, f"{user}: {out}\n{err}"
        answers[user] = json.loads(out.strip().splitlines()[-1])
    return answers


def test_two_users_compute_at_once_each_on_their_own_cluster_within_their_quotas(users_platform: Any) -> None:
    import boto3

    from local_platform.agent import pool_history

    state_dir = Path(users_platform.state_dir)
    answers = sessions(state_dir, "ana", "bo")
    ana, bo = answers["ana"], answers["bo"]
    # Both computed the reference analysis, every task in its data's region, on schedulers and workers of their own.
    assert ana["warming"] == pytest.approx(bo["warming"]) and ana["proven"] and bo["proven"]
    assert set(ana["placement"]) == set(bo["placement"]) == {"pool-us-east-1", "pool-us-west-2"}
    assert ana["scheduler"] == users_platform.users["ana"]["scheduler_address"] != bo["scheduler"]
    assert not set(ana["workers"]) & set(bo["workers"])
    # Each scheduler saw only its own user's work: the key each submitted is in its own scheduler's log alone.
    assert "only-ana" in ana["keys"] and "only-ana" not in bo["keys"]
    assert "only-bo" in bo["keys"] and "only-bo" not in ana["keys"]
    # Each user's logs are their own servers' (their own directory).
    assert ana["logs"] and all(name.startswith(("scheduler", "workers")) for name in ana["logs"])
    assert not {p.stem for p in (state_dir / "logs" / "bo").glob("*.log")} & set(ana["logs"])
    # The quotas: the broker shared each region (climate's one task, ops the rest of the declared 16), the agent
    # kept each pool within what the broker set, and ana's pools never passed her group's one task.
    for region in ("us-east-1", "us-west-2"):
        targets = boto3.client("application-autoscaling", region_name=region,
                               endpoint_url=users_platform.s3_endpoints[region], aws_access_key_id="local",
                               aws_secret_access_key="local").describe_scalable_targets(
            ServiceNamespace="ecs")["ScalableTargets"]
        maxima = {t["ResourceId"].split("-workers-")[1].split("-")[0]: t["MaxCapacity"] for t in targets}
        assert maxima == {"ana": 1, "bo": 15, "cy": 1}, maxima
    assert ana["scale_refused"] == ("pool-us-east-1: 2..2 workers is 2..2 tasks of 1 worker(s), outside your "
                                    "cluster's 0..1 (workers[].minTasks, and the maxWorkersPerRegion quota of ana's "
                                    "group climate in the stack config)")
    assert bo["scale_refused"] == ""  # bo's group has no quota: 2 workers is within the stack's bound (2 tasks here)
    history = pool_history(state_dir)
    assert max(history["ana:pool-us-east-1"]) == max(history["ana:pool-us-west-2"]) == 1, history
    assert max(history["cy:pool-us-east-1"]) == 0  # cy never connected


def test_a_third_user_over_the_groups_cluster_quota_is_refused_naming_it(users_platform: Any) -> None:
    state_dir = Path(users_platform.state_dir)
    if not sessions_ran(state_dir):  # the quota holds while ana's cluster runs
        sessions(state_dir, "ana")
    (answer,) = sessions(state_dir, "cy").values()
    assert "the cluster broker refused to start your cluster: group 'climate' already runs 1 cluster(s) (ana), its " \
           "maxClusters quota is 1" in answer["refused"], answer


def sessions_ran(state_dir: Path) -> bool:
    return any((state_dir / "logs" / "ana").glob("scheduler-*.log"))


def test_one_users_certificate_fails_the_handshake_at_another_users_scheduler_and_workers(
        users_platform: Any) -> None:
    from distributed import Client

    from dask_regions.connect import preflight
    from dask_regions.errors import ConnectError

    state_dir = Path(users_platform.state_dir)
    if not sessions_ran(state_dir):
        sessions(state_dir, "ana", "bo")
    ana, bo = users_platform.for_user("ana"), users_platform.for_user("bo")
    with Client(bo.scheduler_address, security=bo.tls.security(), timeout=30) as client:  # type: ignore[no-untyped-call]
        workers = sorted(client.scheduler_info()["workers"])
    assert workers  # bo's pools keep a warm worker for the idle timeout
    anas = {"cert": str(ana.tls.roles["client"].cert), "key": str(ana.tls.roles["client"].key)}
    for address in [bo.scheduler_address, *workers]:
        # Trusting bo's CA, presenting ana's certificate: bo's server refuses it in the handshake.
        with pytest.raises(ConnectError, match="refused your client certificate"):
            preflight(address, {"ca": str(bo.tls.ca), **anas}, 10)
        # With ana's own CA, bo's server is not one ana trusts either.
        with pytest.raises(ConnectError, match="not signed by your CA"):
            preflight(address, {"ca": str(ana.tls.ca), **anas}, 10)
    preflight(bo.scheduler_address, {"ca": str(bo.tls.ca), "cert": str(bo.tls.roles["client"].cert),
                                     "key": str(bo.tls.roles["client"].key)}, 10)  # bo's own passes


def test_env_names_the_users_when_one_is_missing_or_unknown(users_platform: Any) -> None:
    state_dir = str(users_platform.state_dir)
    missing, unknown = cli("env", "--state-dir", state_dir), cli("env", "--state-dir", state_dir, "--user", "zed")
    for result, said in ((missing, "--user is needed"), (unknown, "no user 'zed' on this platform")):
        text = " ".join(result.stdout.split())
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"{said} (users: ana, bo, cy). Fix: --user <one of them>" in text, text
