"""The simulated WAN that bench/wan.py builds on (namespaces per region behind a router, tbf-shaped links, link
byte counters, nothing left behind), and the benchmark's smoke runs on it at a tiny size. Every test that builds the
WAN is in this module, so that pytest-xdist runs them on one worker, one after another (the namespaces' names are
fixed; bench/wan_network.py also holds a lock so that other runs wait)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.wan_network import hostname, leftovers, wan
from stackconfig import PROJECT_DIR as ROOT

pytestmark = [pytest.mark.processes, pytest.mark.root,
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


@pytest.mark.slow
def test_wan_benchmark_runs_every_mode_as_declared_and_leaves_nothing_behind(tmp_path: Path) -> None:
    from bench.wan_network import leftovers

    output = tmp_path / "wan.json"
    result = subprocess.run([sys.executable, "bench/wan.py", "--gigabytes", "0.005", "--repeats", "1", "--output",
                             str(output), "--work-dir", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(output.read_text())
    assert set(data["modes"]) == {"local", "pinned", "unpinned", "naive"} and data["targets"]["checksums_agree"]
    assert {"pinned_vs_floor", "pinned_vs_naive", "pinned_bytes"} <= set(data["targets"])
    assert set(data["modes"]["pinned"]["phases"]) == {"open", "compute", "gather"}
    assert data["ratios_within_repeats"]["pinned_over_floor"]["per_repeat"]
    assert data["round_trip_ms"]["between_regions"]["median_ms"] >= 80  # 40 ms each way by default
    naive, pinned = data["modes"]["naive"], data["modes"]["pinned"]
    # Whatever the size: the naive run pulls every stored byte across (the analysis reads all of it); pinned far less.
    stored = sum(data["stored_bytes"].values())
    assert naive["proxied_bytes"]["storage (S3)"] >= stored and naive["link_bytes"] > stored > 4 * pinned["link_bytes"]
    # As AWS deploys: no pool in the client region, so naive computes in the notebook's process (the cluster only
    # opened the data, in its regions); the floor runs wholly in one region, so nothing crosses.
    assert naive["misplaced_tasks"] == 0 and naive["regional_tasks"] < pinned["regional_tasks"]
    assert pinned["misplaced_tasks"] == pinned["ambiguous_tasks"] == 0
    assert sum(data["modes"]["local"]["proxied_bytes"].values()) == 0
    assert all("pool-eu-west-2" not in r["placement"] for r in data["runs"] if r["mode"] == "pinned")
    assert data["settings"]["dask_comm"].startswith("tls")
    # As deployed, the nightly sync wrote ERA5's reference set: pinned and the floor open the collection from it;
    # plain Dask and the notebook, reading S3 by URL, open the files.
    assert {(r["mode"], r["era5_opened_from"]) for r in data["runs"]} == {
        ("local", "references"), ("pinned", "references"), ("unpinned", "files"), ("naive", "files")}
    # Pinned: no process outside a region (client, scheduler, another region's worker) touched its storage.
    assert pinned["proxied_bytes"]["storage (S3)"] == pinned["proxied_round_trips"]["storage (S3)"] == 0
    assert pinned["proxied_round_trips"]["dask scheduler"] > 0  # the control messages that crossed, counted
    assert output.with_suffix(".png").stat().st_size > 10_000
    assert data["leftovers"] == [] and leftovers() == []
    assert "pinned" in result.stdout and "targets:" in result.stdout


@pytest.mark.root
@pytest.mark.skipif(not shutil.which("ip") or not shutil.which("unshare"), reason="needs iproute2 and util-linux")
def test_a_benchmark_task_sees_only_its_own_regions_lustre_stand_in(tmp_path: Path) -> None:
    """Placement proved by isolation: a task that read another region's data would fail, not read it silently."""
    from bench.wan import Processes, fsx_mount_point, fsx_root

    regions = ("us-east-1", "us-west-2")
    for region in regions:
        (fsx_root(tmp_path, region) / region).mkdir(parents=True)
        (fsx_root(tmp_path, region) / region / "data.nc").write_text(region)
    mount_point = fsx_mount_point(tmp_path)
    mount_point.mkdir(parents=True)
    namespace = f"crdiso-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        processes = Processes(tmp_path)
        look = "import os, sys; print(sorted(os.listdir(sys.argv[1])), os.path.exists(sys.argv[2]))"
        for region, other in (regions, regions[::-1]):
            processes.start(region, namespace, [sys.executable, "-c", look, str(mount_point),
                                                str(mount_point / other / "data.nc")], dict(os.environ),
                            (fsx_root(tmp_path, region), mount_point))
            assert processes.running[region].wait(timeout=60) == 0
            assert (tmp_path / f"{region}.log").read_text().split() == [f"['{region}']", "False"]
        assert os.listdir(mount_point) == []  # bound in the tasks' own mount namespaces only
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=True)


@pytest.mark.slow
def test_a_link_fault_run_interrupted_removes_its_namespaces_and_processes(tmp_path: Path) -> None:
    import signal

    from bench.wan_network import PREFIX

    run = subprocess.Popen([sys.executable, "bench/faults.py", "--faults", "slow-link", "--work-dir",
                            str(tmp_path / "work"), "--output", str(tmp_path / "faults.json")], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        for line in run.stdout:  # the WAN is built and the platform runs in it: interrupt it there
            if line.startswith("slow-link:"):
                break
        namespaces = [name for name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                      check=True).stdout.split() if name.startswith(PREFIX)]
        inside = {int(pid) for name in namespaces for pid in subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, check=True).stdout.split()}
        assert len(inside) >= 8  # proxies, emulations, the catalog, the scheduler and the pools' tasks
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err[-3000:]
    assert "interrupted; processes stopped, namespaces left: none" in err and "Traceback" not in err
    assert leftovers() == [] and not (tmp_path / "faults.json").exists()
    alive = [pid for pid in inside if os.path.exists(f"/proc/{pid}") and
             b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()]
    assert alive == []
