"""`dask_regions.connect()` against a real scheduler and worker started as the image starts them (the entrypoint,
mutual TLS), configured as the notebook kernel is (environment) or from a stack's outputs; and each way a
connection fails, named in one sentence."""

from __future__ import annotations

import json
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
from dask_regions import ConnectError, connect
from local_platform.tls import LocalTls, create_local_tls
from tests.test_dask_tls import ENTRYPOINT, _role_environment, _stop


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("connect")
    tls = create_local_tls(root / "ca")
    SQLiteSink(root / "catalog.db").begin("us-east-1", "dataset").commit()  # an empty, published catalog
    scheduler_file = root / "scheduler.json"
    processes = [subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
        env=_role_environment(tls, "scheduler", root / "run-scheduler"), start_new_session=True,
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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
