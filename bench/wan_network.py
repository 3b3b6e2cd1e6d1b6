"""A simulated WAN on one machine, for bench/wan.py (issue 9): one Linux network namespace per region joined to
a router namespace by a veth pair, inter-region links shaped with `tc` tbf, and byte counters per link.

Needs root (network namespaces). Addresses come from a private range the benchmark owns (10.77.<i>.0/24 per
region); everything created is removed on exit, also on errors. This kernel has no netem: latency is added
in user space by the benchmark, not here.

Each region also gets a name, `<region>.wan` (see `hostname`): inside its own namespace it resolves to loopback,
everywhere else to the region's address, through a hosts file per namespace (`ip netns exec` mounts
/etc/netns/<namespace>/hosts over /etc/hosts). A service listening on loopback with a proxy on the region's
address is then reached directly from its own region and through the proxy from the others.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

PREFIX = "crdwan"  # every namespace and interface name starts with it, so leftovers are easy to find
SUBNET = "10.77"
NETNS_ETC = "/etc/netns"
# The namespaces' names are fixed, so one WAN exists at a time on a machine: a second run (another benchmark, a
# test on another pytest worker) waits for this lock, at most LOCK_WAIT_SECONDS, then says who holds it.
LOCK_FILE = "/run/crdwan.lock"
LOCK_WAIT_SECONDS = 1800.0


@dataclass(frozen=True)
class RegionLink:
    region: str
    namespace: str
    address: str  # the region's address (its namespace's end of the link)
    router_interface: str  # the router's end, whose counters measure what crossed this region's link
    interface: str  # the region's end
    network: str  # the link's /24: the region's own addresses


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def run_in(namespace: str, *command: str) -> str:
    """`command` in a network namespace (the router's or a region's); a failure raises, naming it."""
    return _run("ip", "netns", "exec", namespace, *command)


def hostname(region: str) -> str:
    return f"{region}.wan"


def _write_hosts(namespace: str, own_region: str | None, addresses: dict[str, str]) -> None:
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    lines += [f"{'127.0.0.1' if region == own_region else address} {hostname(region)}"
              for region, address in addresses.items()]
    directory = os.path.join(NETNS_ETC, namespace)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "hosts"), "w") as hosts:
        hosts.write("\n".join(lines) + "\n")


def leftovers() -> list[str]:
    """Namespaces (and their hosts files) of ours that still exist: there should be none outside a run."""
    found = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.startswith(PREFIX)]
    if os.path.isdir(NETNS_ETC):
        found += [os.path.join(NETNS_ETC, name) for name in os.listdir(NETNS_ETC) if name.startswith(PREFIX)]
    return found


def counters(link: RegionLink, router: str) -> tuple[int, int]:
    """(bytes into the region, bytes out of it) on its link, from the router end's interface counters."""
    data = json.loads(_run("ip", "netns", "exec", router, "ip", "-s", "-j", "link", "show", link.router_interface))
    stats = data[0]["stats64"]
    return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])


@contextmanager
def _only_wan(wait_seconds: float) -> Iterator[None]:
    """Hold the machine's one WAN: wait for another run to finish (bounded), then keep others waiting."""
    with open(LOCK_FILE, "a+") as lock:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.seek(0)
                    holder = lock.read().strip() or "unknown"
                    raise TimeoutError(f"another WAN run (process {holder}) has held the namespaces {PREFIX}-* for "
                                       f"over {wait_seconds:.0f} s: wait for it to end, or stop it") from None
                time.sleep(1.0)
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def wan(regions: Sequence[str], rate_mbit: float = 50.0,
        wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[tuple[str, dict[str, RegionLink]]]:
    """Create the router and one namespace per region; yields (router namespace, region -> link). One WAN at a
    time on a machine: a run waits (at most `wait_seconds`) while another holds it."""
    if os.geteuid() != 0:
        raise PermissionError("the WAN simulation needs root (network namespaces); run it as root")
    with _only_wan(wait_seconds), _built(regions, rate_mbit) as built:
        yield built


@contextmanager
def _built(regions: Sequence[str], rate_mbit: float) -> Iterator[tuple[str, dict[str, RegionLink]]]:
    router = f"{PREFIX}-router"
    created: list[str] = []
    links: dict[str, RegionLink] = {}
    try:
        _run("ip", "netns", "add", router)
        created.append(router)
        _run("ip", "netns", "exec", router, "ip", "link", "set", "lo", "up")
        _run("ip", "netns", "exec", router, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        for index, region in enumerate(regions, start=1):
            namespace, inside, outside = f"{PREFIX}-r{index}", f"{PREFIX}{index}a", f"{PREFIX}{index}b"
            _run("ip", "netns", "add", namespace)
            created.append(namespace)
            _run("ip", "link", "add", inside, "netns", namespace, "type", "veth", "peer", "name", outside,
                 "netns", router)
            address, gateway = f"{SUBNET}.{index}.2", f"{SUBNET}.{index}.1"
            for ns, interface, own in ((namespace, inside, address), (router, outside, gateway)):
                _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{own}/24", "dev", interface)
                _run("ip", "netns", "exec", ns, "ip", "link", "set", interface, "up")
                # Both directions shaped: the region's uplink and its downlink.
                _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", interface, "root", "tbf",
                     "rate", f"{rate_mbit}mbit", "burst", "64kb", "latency", "400ms")
            _run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")
            _run("ip", "netns", "exec", namespace, "ip", "route", "add", "default", "via", gateway)
            links[region] = RegionLink(region, namespace, address, outside, inside, f"{SUBNET}.{index}.0/24")
        addresses = {region: link.address for region, link in links.items()}
        _write_hosts(router, None, addresses)
        for region, link in links.items():
            _write_hosts(link.namespace, region, addresses)
        yield router, links
    finally:
        for namespace in reversed(created):  # deleting a namespace deletes its ends of the veth pairs
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)
            shutil.rmtree(os.path.join(NETNS_ETC, namespace), ignore_errors=True)
