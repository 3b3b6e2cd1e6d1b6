"""`dask_regions.connect()` against a real scheduler and worker started as the image starts them (the entrypoint,
mutual TLS), configured as the notebook kernel is (environment) or from a stack's outputs; and each way a
connection fails, named in one sentence."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest

import dask_regions
from catalog_sync.sinks import SQLiteSink
from dask_regions import ConnectError, Platform, budget, connect
from dask_regions.demand import pool_demand
from local_platform.tls import LocalTls, create_local_tls
from platform_facts import CLIENT_PRELOADS
from stackconfig import PROJECT_DIR as ROOT
from tests.platform_helpers import settings_environment
from tests.test_dask_tls import ENTRYPOINT, _role_environment, _stop


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("connect")
    tls = create_local_tls(root / "ca")
    SQLiteSink(root / "catalog.db").begin("us-east-1", "dataset").commit()  # an empty, published catalog
    scheduler_file = root / "scheduler.json"
    # The demand plugin sizes one configured pool, 0..4 tasks of 2 workers (as the stack would configure it).
    demand = settings_environment({"pools": {"pool-us-east-1": {"workers_per_task": 2, "min_tasks": 0,
                                                                 "max_tasks": 4}}})
    processes = [subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file),
         "--preload", "dask_regions.routing", "--preload", "dask_regions.demand"],
        env={**_role_environment(tls, "scheduler", root / "run-scheduler"), **demand, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert processes[0].poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        processes.append(subprocess.Popen(
            [sys.executable, str(ENTRYPOINT), "worker", address, "--host", "127.0.0.1", "--nthreads", "2",
             "--no-dashboard", "--name", "us-east-1-0", "--resources", "pool-us-east-1=1"],
            env=_role_environment(tls, "worker", root / "run-worker"), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield {"address": address, "tls": tls, "root": root}
    finally:
        for process in reversed(processes):
            _stop(process)


@pytest.fixture
def kernel(platform: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The environment the 'Dask platform' kernel gets (components/client_region.py's start script)."""
    tls: LocalTls = platform["tls"]
    environment = {"DASK_SCHEDULER_ADDRESS": platform["address"],
                   "CATALOG_ENDPOINT": f"sqlite:///{platform['root']}/catalog.db", **tls.client_environment()}
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    dask.config.refresh()
    yield platform
    monkeypatch.undo()
    dask.config.refresh()


@pytest.mark.processes
def test_one_call_from_the_kernels_environment(kernel: dict[str, Any]) -> None:
    with connect(timeout=30) as platform:
        platform.client.wait_for_workers(1, timeout=60)
        assert platform.client.submit(sum, [1, 2, 3]).result() == 6
        assert platform.dashboard_link.startswith("http://127.0.0.1:") and platform.dashboard_link.endswith("/status")
        (worker,) = platform.pools()["us-east-1"]
        assert (worker["name"], worker["threads"]) == ("us-east-1-0", 2)
        page = platform._repr_html_()
        assert "pool-us-east-1" in page and "us-east-1-0" in page and platform.dashboard_link in page
        assert isinstance(platform.catalog, dask_regions.Catalog)
        logs = platform.get_logs()
        assert "scheduler" in logs and any(key.startswith("tls://") for key in logs)
        client = platform.client
    assert client.status == "closed"


@pytest.mark.processes
def test_scale_and_adapt_set_the_pools_bounds_within_the_stacks(kernel: dict[str, Any]) -> None:
    with connect(timeout=30) as platform:
        figure = platform.scale(3, region="us-east-1")  # 3 workers: 2 tasks of 2 workers
        assert (figure["min_tasks"], figure["max_tasks"], figure["desired_tasks"]) == (2, 2, 2)
        assert pool_demand(platform.client)["pool-us-east-1"]["desired_tasks"] == 2  # what drives the scaling
        assert "<td>2..2</td>" in platform._repr_html_()
        figure = platform.adapt(maximum=4, region="us-east-1")
        assert (figure["min_tasks"], figure["max_tasks"]) == (0, 2)
        assert platform.adapt(region="us-east-1")["max_tasks"] == 4  # the stack's bounds again
        with pytest.raises(ValueError, match=r"pool-us-east-1: 10..10 workers is 5..5 tasks of 2 worker\(s\), "
                                             r"outside the stack's 0..4 \(workers\[\].minTasks and maxTasks"):
            platform.scale(10, region="us-east-1")
        with pytest.raises(ValueError, match=r"'pool-eu-north-1' is no configured pool \(configured: pool-us-east-1"):
            platform.scale(1, region="eu-north-1")
        assert platform.pools()["us-east-1"]  # the worker is still there


def test_logs_come_from_cloudwatch_in_aws_and_from_files_locally(moto_endpoint: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="/dev/us-east-1/workers")
    logs.create_log_stream(logGroupName="/dev/us-east-1/workers", logStreamName="worker/1")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName="/dev/us-east-1/workers", logStreamName="worker/1",
                        logEvents=[{"timestamp": now + i, "message": f"line {i}"} for i in range(5)])
    aws = Platform(None, None, log_groups={"workers-us-east-1": {"region": "us-east-1",
                                                                 "group": "/dev/us-east-1/workers"}})
    assert aws.get_logs(lines=3) == {"workers-us-east-1": "line 2\nline 3\nline 4"}
    (tmp_path / "scheduler.log").write_text("started\nlistening\n")
    local = Platform(None, None, log_dir=str(tmp_path))
    assert local.get_logs() == {"scheduler": "started\nlistening"}


@pytest.mark.processes
def test_one_call_from_a_stacks_outputs(platform: dict[str, Any], tmp_path: Path) -> None:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({"schedulerAddress": platform["address"], "catalogEndpoint": "sqlite:///x.db"}))
    tls: LocalTls = platform["tls"]
    files = tls.roles["client"]
    with dask.config.set({"distributed.comm.tls.ca-file": str(tls.ca), "distributed.comm.tls.client.cert":
                          str(files.cert), "distributed.comm.tls.client.key": str(files.key)}), \
            connect(outputs, timeout=30) as connected:
        assert connected.catalog_endpoint == "sqlite:///x.db"
        assert connected.client.scheduler.address == platform["address"]


@pytest.mark.processes
def test_from_a_stacks_outputs_the_certificate_comes_from_its_secret(platform: dict[str, Any], moto_endpoint: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the notebook (an operator's machine): with no certificate configured, connect() fetches the
    platform's client certificate from the secret the stack outputs name, as the notebook's start script does."""
    import copy

    import boto3

    tls: LocalTls = platform["tls"]
    files = tls.roles["client"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    secrets = boto3.client("secretsmanager", region_name="eu-west-2")
    arn = secrets.create_secret(Name="dask-tls-client-eu-west-2-1", SecretString=json.dumps({
        "ca": tls.ca.read_text(), "cert": files.cert.read_text(), "key": files.key.read_text()}))["ARN"]
    outputs = {"schedulerAddress": platform["address"], "clientTlsSecret": {"arn": arn, "region": "eu-west-2"}}
    saved = copy.deepcopy(dask.config.config)
    try:
        dask.config.set({f"distributed.comm.tls.{k}": None for k in ("ca-file", "client.cert", "client.key")})
        with connect(outputs, timeout=30) as connected:
            assert connected.client.submit(sum, [1, 2]).result() == 3
            fetched = Path(dask.config.get("distributed.comm.tls.client.key"))
            assert fetched.read_text() == files.key.read_text() and fetched.stat().st_mode & 0o077 == 0
            assert fetched.parent.stat().st_mode & 0o077 == 0
        dask.config.set({f"distributed.comm.tls.{k}": None for k in ("ca-file", "client.cert", "client.key")})
        with pytest.raises(ConnectError, match=r"cannot read the platform's client certificate .*Fix: use "
                                               r"credentials that may secretsmanager:GetSecretValue"):
            connect({**outputs, "clientTlsSecret": {"arn": arn + "-gone", "region": "eu-west-2"}}, timeout=5)
    finally:
        dask.config.config.clear()
        dask.config.config.update(saved)


def test_with_users_the_outputs_are_read_as_the_named_users_own_cluster() -> None:
    from dask_regions.connect import for_user

    ana = {"schedulerAddress": "tls://scheduler-ana.dev.x.internal:8786", "logGroups": {"scheduler": {}},
           "schedulerService": {"region": "eu-west-2", "cluster": "c", "service": "x-dev-scheduler-ana"},
           "tlsSecret": {"arn": "arn:ana", "region": "eu-west-2"}, "pools": {}}
    outputs = {"catalogEndpoint": "https://catalog", "userClusters": {"ana": ana, "bo": {}}}
    mine = for_user(outputs, "ana")
    assert mine is not None and mine["schedulerAddress"] == ana["schedulerAddress"]
    assert mine["clientTlsSecret"] == ana["tlsSecret"] and mine["schedulerService"] == ana["schedulerService"]
    assert mine["catalogEndpoint"] == "https://catalog"
    with pytest.raises(ConnectError, match=r"no user given: each user of this stack has a cluster of their own "
                                           r"\(ana, bo\). Fix: connect\(outputs, user='<your name>'\)"):
        connect(outputs)
    with pytest.raises(ConnectError, match=r"no user 'cy' in the stack"):
        connect(outputs, user="cy")
    with pytest.raises(ConnectError, match=r"user 'ana': the stack has no users"):
        connect({"schedulerAddress": "tls://scheduler:8786"}, user="ana")
    team = {"schedulerAddress": "tls://scheduler:8786"}
    assert for_user(team, None) is team


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.processes
@pytest.mark.parametrize("case", ["no address", "no certificate", "missing file", "wrong CA",
                                  "foreign certificate", "tcp to tls", "scheduler down", "unreadable outputs"])
def test_each_failure_says_what_is_wrong(kernel: dict[str, Any], case: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    tls: LocalTls = kernel["tls"]
    address, outputs = kernel["address"], None
    other = create_local_tls(tmp_path / "other") if case in ("wrong CA", "foreign certificate") else None
    settings: dict[str, Any] = {}
    expected = {
        "no address": "no scheduler address: DASK_SCHEDULER_ADDRESS is not set",
        "no certificate": "needs a client certificate, and no ca, cert, key is configured",
        "missing file": "the client cert file /nowhere/cert.pem does not exist",
        "wrong CA": "the scheduler's certificate is not signed by your CA",
        "foreign certificate": "refused your client certificate",
        "tcp to tls": "speaks TLS. Fix: use tls://",
        "scheduler down": "the scheduler is down",
        "unreadable outputs": "cannot read the stack outputs",
    }[case]
    if case == "no address":
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS")
    elif case == "no certificate":
        settings = {f"distributed.comm.tls.{k}": None for k in ("ca-file", "client.cert", "client.key")}
    elif case == "missing file":
        settings = {"distributed.comm.tls.client.cert": "/nowhere/cert.pem"}
    elif case == "wrong CA" and other is not None:
        settings = {"distributed.comm.tls.ca-file": str(other.ca)}
    elif case == "foreign certificate" and other is not None:
        settings = {"distributed.comm.tls.client.cert": str(other.roles["client"].cert),
                    "distributed.comm.tls.client.key": str(other.roles["client"].key)}
    elif case == "tcp to tls":
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address.replace("tls://", "tcp://"))
    elif case == "scheduler down":
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", f"tls://127.0.0.1:{_free_port()}")
    elif case == "unreadable outputs":
        outputs = tmp_path / "missing.json"
    dask.config.refresh()  # the kernel's environment as changed above
    with dask.config.set(settings), pytest.raises(ConnectError) as caught:
        connect(outputs, timeout=5)
    assert expected in str(caught.value) and "Fix:" in str(caught.value), str(caught.value)
    assert isinstance(caught.value, ConnectionError) and caught.value.__cause__ is None
    assert tls.ca.exists()


@pytest.mark.parametrize(("endpoint", "region"), [
    ("https://vpc-dev-catalog-6c6b928c-abc123.eu-west-2.es.amazonaws.com", "eu-west-2"),
    ("https://vpc-x-y.ap-southeast-2.es.amazonaws.com/", "ap-southeast-2"),
    ("http://127.0.0.1:9200", None), ("sqlite:///state/catalog.db", None)])
def test_the_catalog_is_signed_for_the_domains_region(endpoint: str, region: str | None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from dask_regions.connect import domain_region

    monkeypatch.delenv("CATALOG_REGION", raising=False)
    assert domain_region(endpoint) == region
    monkeypatch.setenv("CATALOG_REGION", "us-east-1")
    assert domain_region(endpoint) == "us-east-1"


def test_connect_is_the_librarys_public_entry() -> None:
    assert dask_regions.connect is connect and "connect" in dask_regions.__all__


@pytest.mark.processes
def test_the_platform_is_a_dask_cluster(kernel: dict[str, Any]) -> None:
    """Called the way generic Dask code calls a cluster (distributed.deploy.Cluster's interface)."""
    from distributed import Client
    from distributed.core import Status
    from distributed.deploy.cluster import Cluster

    with connect(timeout=30) as platform:
        assert isinstance(platform, Cluster) and platform.status == Status.running
        assert platform.scheduler_address == kernel["address"] and platform.name == "dask-platform"
        assert platform.dashboard_link.endswith("/status")
        platform.wait_for_workers(1, timeout=30)
        assert [w["resources"] for w in platform.scheduler_info["workers"].values()] == [{"pool-us-east-1": 1}]
        with Client(platform) as client:  # Dask takes it as a cluster: address and TLS settings from it
            assert client.cluster is platform and client.submit(sum, [1, 2]).result(timeout=30) == 3
        with platform.get_client() as client:
            assert client.scheduler.address == kernel["address"]
        # The kernel's client preloads: any client the kernel starts checks its graphs against the crossing budget
        # (here one that is not a size, so that every graph is refused before it is sent).
        preloaded = {"distributed.client.preload": list(CLIENT_PRELOADS), budget.KEY_PATH: "lots"}
        with dask.config.set(preloaded), Client(platform) as client, pytest.raises(ValueError, match="crossing-budget"):
            client.submit(sum, [1, 2])
        every = platform.scale(2)  # no region: every configured pool
        assert list(every) == ["us-east-1"] and every["us-east-1"]["min_tasks"] == 1
        every = platform.adapt(minimum=0, maximum=4)
        assert (every["us-east-1"]["min_tasks"], every["us-east-1"]["max_tasks"]) == (0, 2)
        platform.adapt()  # the stack's bounds again
        for call, text in ((lambda: platform.scale(-1), "scale(n=-1): give a whole number of workers, 0 or more"),
                           (lambda: platform.adapt(maximum=2.5), "adapt(maximum=2.5): give a whole number")):
            with pytest.raises(ValueError, match=re.escape(text)):
                call()
        assert "Dask platform" in platform._repr_html_() and "us-east-1" in repr(platform)
        assert set(platform.get_logs(workers=False)) == {"scheduler"}
    assert platform.status == Status.closed and repr(platform) == "<Platform dask-platform closed>"
    with pytest.raises(RuntimeError, match="Trying to connect to an already closed or closing Cluster"):
        Client(platform)


def declared_server_environment() -> dict[str, str]:
    """The environment the dev stack's notebook start script gives SageMaker's Jupyter server (its systemd drop-in)."""
    import base64

    from tests.conftest import cached_graph

    (lifecycle,) = cached_graph("dev").of_type(
        "aws:sagemaker/notebookInstanceLifecycleConfiguration:NotebookInstanceLifecycleConfiguration")
    script = base64.b64decode(lifecycle.inputs["onStart"]).decode()
    found = re.search(r"<<'UNIT'\n\[Service\]\n(.*?)\nUNIT\n", script, re.DOTALL)
    assert found, "the start script gives the Jupyter server no environment"
    return dict(re.fullmatch(r"Environment='([A-Z0-9_]+)=(.*)'", line).groups()  # type: ignore[union-attr]
                for line in found.group(1).splitlines())


@pytest.mark.processes
def test_jupyterlabs_dask_sidebar_lists_scales_and_closes_the_platform(kernel: dict[str, Any],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """dask-labextension's own cluster manager (the server side of JupyterLab's Dask sidebar), with the extension's
    settings the dev stack gives the Jupyter server, starts the platform's entry, lists it with its workers, scales
    and adapts it, and closes it; the platform keeps running. The server's connection settings are the kernel's
    (held so below); here they are the test platform's."""
    from components.kernel import KERNEL

    declared = declared_server_environment()
    lab = {name: value for name, value in declared.items() if name.startswith("DASK_LABEXTENSION__")}
    kernels = KERNEL.environment("tls://scheduler", "https://catalog", "/tls", dashboard_link="/proxy",
                                 log_groups={"scheduler": {}}, scheduler_service={"service": "s"})
    assert set(declared) - set(lab) == set(kernels) and lab
    assert declared["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == "/home/ec2-user/.dask-platform-tls/ca.pem"
    # Imported before the extension's settings are set: the module's own manager (made at import) starts nothing.
    from dask_labextension.manager import DaskClusterManager

    for name, value in lab.items():
        monkeypatch.setenv(name, value)
    dask.config.refresh()

    async def sidebar() -> tuple[list[Any], Any, Any, Any]:
        async with DaskClusterManager() as manager:  # starts the configured clusters: the platform's entry
            listed = manager.list_clusters()
            (model,) = listed
            scaled = await manager.scale_cluster(model["id"], 2)
            adapted = manager.adapt_cluster(model["id"], 0, 4)
            closed = await manager.close_cluster(model["id"])
            return listed, scaled, adapted, closed

    loop = asyncio.new_event_loop()  # not made current: asyncio.run would leave the main thread without one
    try:
        listed, scaled, adapted, closed = loop.run_until_complete(asyncio.wait_for(sidebar(), 120))
    finally:
        loop.close()  # the extension's settings leave with the test (the kernel fixture keeps the connection's)
        for name in lab:
            monkeypatch.delenv(name)
        dask.config.refresh()
    (model,) = listed
    assert (model["name"], model["scheduler_address"], model["workers"], model["cores"]) == (
        "Dask platform", kernel["address"], 1, 2)
    assert model["dashboard_link"].endswith("/status") and "adapt" not in model
    assert scaled["name"] == "Dask platform" and adapted["adapt"] == {"minimum": 0, "maximum": 4}
    assert closed["id"] == model["id"]
    with connect(timeout=30) as platform:  # the sidebar closed its own connection only
        assert len(platform.scheduler_info["workers"]) == 1
        assert pool_demand(platform.client)["pool-us-east-1"]["max_tasks"] == 2  # adapt's maximum: 4 workers
        platform.adapt()
