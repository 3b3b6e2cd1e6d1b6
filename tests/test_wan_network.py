"""The simulated WAN that bench/wan.py builds on: namespaces per region behind a router, tbf-shaped links, link
byte counters, and nothing left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from bench.wan_network import hostname, leftovers, wan

pytestmark = [pytest.mark.processes, pytest.mark.root, pytest.mark.xdist_group("wan"),
              pytest.mark.skipif(not shutil.which("ip") or not shutil.which("tc"), reason="needs iproute2 (ip, tc)")]
SINK = "import socket; s = socket.socket(); s.bind(('0.0.0.0', 7777)); s.listen(); print('ready', flush=True)\n" \
       "c, _ = s.accept()\nwhile c.recv(1 << 16): pass"
PAYLOAD = 6_000_000  # bytes: 0.96 s at 50 Mbit/s


def test_a_stream_between_regions_is_shaped_and_counted_and_everything_is_removed() -> None:
    with wan(["us-east-1", "us-west-2"], rate_mbit=50) as (router, links):
        east, west = links["us-east-1"], links["us-west-2"]
        sink = subprocess.Popen(["ip", "netns", "exec", west.namespace, sys.executable, "-c", SINK],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"  # listening
            send = (f"import socket, time; s = socket.create_connection(('{west.address}', 7777), timeout=10); "
                    f"t = time.monotonic(); s.sendall(bytes({PAYLOAD})); s.close(); print(time.monotonic() - t)")
            started = time.monotonic()
            subprocess.run(["ip", "netns", "exec", east.namespace, sys.executable, "-c", send], check=True,
                           capture_output=True, timeout=60)
            sink.wait(timeout=30)
            elapsed = time.monotonic() - started
        finally:
            sink.kill()
        from bench.wan_network import counters

        into_west, _ = counters(west, router)
        _, out_of_east = counters(east, router)
        assert into_west >= PAYLOAD and out_of_east >= PAYLOAD  # what crossed, on both links
        mbit = PAYLOAD * 8 / 1e6 / elapsed
        assert 20 < mbit < 60, f"{mbit:.1f} Mbit/s through a 50 Mbit/s link"
        # Regions reach each other only through the router: no direct route between namespaces.
        assert subprocess.run(["ip", "netns", "exec", east.namespace, "ip", "route", "get", west.address],
                              capture_output=True, text=True, check=True).stdout.split()[2] == "10.77.1.1"
    assert leftovers() == []


def test_namespaces_are_removed_when_the_run_fails() -> None:
    with pytest.raises(RuntimeError, match="boom"), wan(["us-east-1"]):
        assert sorted(leftovers()) == ["/etc/netns/crdwan-r1", "/etc/netns/crdwan-router", "crdwan-r1",
                                       "crdwan-router"]  # the namespaces and their hosts files
        raise RuntimeError("boom")
    assert leftovers() == []


def test_a_region_name_is_loopback_at_home_and_the_region_address_elsewhere() -> None:
    resolve = "import socket, sys; print(socket.gethostbyname(sys.argv[1]))"
    with wan(["us-east-1", "us-west-2"]) as (router, links):
        east, west = links["us-east-1"], links["us-west-2"]

        def seen_from(namespace: str, name: str) -> str:
            return subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", resolve, name],
                                  capture_output=True, text=True, check=True, timeout=30).stdout.strip()

        assert seen_from(east.namespace, hostname("us-east-1")) == "127.0.0.1"
        assert seen_from(east.namespace, hostname("us-west-2")) == west.address
        assert seen_from(west.namespace, hostname("us-east-1")) == east.address
        assert seen_from(router, hostname("us-west-2")) == west.address
    assert leftovers() == []
