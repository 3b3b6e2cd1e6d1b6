"""The WAN benchmark's latency proxy, on loopback: it delays connections from outside the region's network by the
given time each way, passes the region's own connections at once, passes data intact, and accounts for it."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.wan_proxy import is_foreign, measure_rtt
from stackconfig import PROJECT_DIR as ROOT
from tests.catalog_fixtures import free_port

DELAY_MS = 30


@pytest.fixture()
def proxy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, Path]]:
    """An echo service behind the proxy (on 127.0.0.2); the parameter is the proxy's own network."""
    echo, account = free_port(), tmp_path / "connections.jsonl"
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "wan_proxy.py"), "serve", "--listen", "127.0.0.2",
                                "--ports", "", "--echo-port", str(echo), "--own-network", request.param,
                                "--delay-ms", str(DELAY_MS), "--account", str(account)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert process.stdout is not None
        assert b"proxy on 127.0.0.2" in process.stdout.readline()
        yield echo, account
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.processes
@pytest.mark.parametrize("proxy", ["10.99.0.0/24"], indirect=True)
def test_connections_from_another_region_wait_the_delay_each_way(proxy: tuple[int, Path]) -> None:
    echo, account = proxy
    rtt = measure_rtt("127.0.0.2", echo, 5)
    assert 2 * DELAY_MS <= rtt["min_ms"] < 2 * DELAY_MS + 40, rtt
    deadline = time.monotonic() + 10
    while not account.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (entry,) = [json.loads(line) for line in account.read_text().splitlines()]
    assert entry["round_trips"] == 5  # each answered message: the round trips that crossed


@pytest.mark.processes
@pytest.mark.parametrize("proxy", ["127.0.0.0/8"], indirect=True)
def test_the_regions_own_connections_are_not_delayed(proxy: tuple[int, Path]) -> None:
    echo, _ = proxy
    assert measure_rtt("127.0.0.2", echo, 5)["median_ms"] < DELAY_MS


@pytest.mark.processes
@pytest.mark.parametrize("proxy", ["10.99.0.0/24"], indirect=True)
def test_data_passes_intact_and_is_accounted(proxy: tuple[int, Path]) -> None:
    echo, account = proxy
    payload = bytes(range(256)) * 8192  # 2 MiB
    with socket.create_connection(("127.0.0.2", echo), timeout=10) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)  # the end of the stream passes through too
        received = bytearray()
        while chunk := connection.recv(1 << 16):
            received += chunk
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    deadline = time.monotonic() + 10
    while not account.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (entry,) = [json.loads(line) for line in account.read_text().splitlines()]
    assert entry["port"] == echo and entry["foreign"] is True and entry["peer"] == "127.0.0.1"
    assert entry["received"] == entry["sent"] == len(payload)


def test_foreign_means_outside_the_regions_network() -> None:
    import ipaddress

    network = ipaddress.ip_network("10.77.2.0/24")
    assert is_foreign("10.77.1.2", network) and not is_foreign("10.77.2.2", network)


@pytest.mark.processes
def test_bad_ports_are_named() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "wan_proxy.py"), "serve", "--listen", "127.0.0.2",
                             "--ports", "80,http", "--own-network", "10.0.0.0/24"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2 and "--ports/--own-network" in result.stderr and "Traceback" not in result.stderr
