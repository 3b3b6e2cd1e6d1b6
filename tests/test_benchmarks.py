"""Smoke runs of the benchmarks at a tiny size: they must run and write their JSON (targets are reported
by the benchmarks themselves, not asserted here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stackconfig import PROJECT_DIR as ROOT

pytestmark = [pytest.mark.processes, pytest.mark.xdist_group("wan")]




def test_catalog_build_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "catalog_build.json"
    result = subprocess.run([sys.executable, "bench/catalog_build.py", "--keys", "3000", "--documents", "100",
                             "--output", str(output)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(output.read_text())
    (grouping,) = data["grouping"]
    assert grouping["keys"] == 3000 and grouping["documents"] > 0 and grouping["keys_per_second"] > 0
    assert data["osmem_load"]["documents"] == 100
    assert "keys/s" in result.stdout


def test_synth_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    output = tmp_path / "synth.json"
    result = subprocess.run([sys.executable, "bench/synth.py", "--max-workers", "3", "--runs", "1", "--output",
                             str(output)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(output.read_text())
    assert [r["peerings"] for r in data["rows"]] == [3, 1, 3, 6]  # dev, then 1..3 worker regions: n(n-1)/2
    assert len({g["everything_else_added"] for g in data["growth"]}) == 1  # linear apart from the mesh


def test_open_refs_benchmark_opens_both_ways_to_the_same_data(tmp_path: Path) -> None:
    output = tmp_path / "open-refs.json"
    result = subprocess.run([sys.executable, "bench/open_refs.py", "--files", "3,6", "--repeats", "1", "--output",
                             str(output)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    rows = json.loads(output.read_text())["rows"]
    assert [r["files"] for r in rows] == [3, 6] and all(r["same_data"] for r in rows)
    assert all(r["open_files_seconds"] > 0 and r["open_references_seconds"] > 0 for r in rows)
    bad = subprocess.run([sys.executable, "bench/open_refs.py", "--files", "x"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "--files 'x'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not shutil.which("ip") or not shutil.which("tc"), reason="needs iproute2 (ip, tc)")
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


def test_wan_benchmark_names_bad_flags() -> None:
    result = subprocess.run([sys.executable, "bench/wan.py", "--modes", "pinned,fast", "--gigabytes", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--gigabytes 0: use 0.001 to 20" in result.stderr and "--modes 'pinned,fast'" in result.stderr


@pytest.mark.slow
@pytest.mark.root
@pytest.mark.skipif(not shutil.which("ip") or not shutil.which("tc"), reason="needs iproute2 (ip, tc)")
def test_wan_scaling_runs_each_size_and_charts_time_and_bytes_against_size(tmp_path: Path) -> None:
    output = tmp_path / "wan-scaling.json"
    result = subprocess.run([sys.executable, "bench/wan_scaling.py", "--gigabytes", "0.004,0.002", "--regions-at",
                             "0.002", "--output", str(output), "--work-dir", str(tmp_path / "work")], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(output.read_text())
    runs = [(r["gigabytes_per_region"], r["worker_regions"]) for r in data["sizes"]]
    assert runs == [(0.002, 2), (0.004, 2), (0.002, 4)] and data["complete"]
    assert all(set(r["modes"]) == {"local", "pinned", "naive"} for r in data["sizes"])
    small, large, four = (r["modes"] for r in data["sizes"])
    assert large["naive"]["link_bytes"] > small["naive"]["link_bytes"]  # naive pulls the raw data: it grows with it
    # Four regions: two more models' data pulled by naive, two more maps fetched by pinned.
    assert four["naive"]["link_bytes"] > small["naive"]["link_bytes"]
    assert four["pinned"]["result_bytes"] == 2 * small["pinned"]["result_bytes"]
    assert output.with_suffix(".png").stat().st_size > 10_000 and not list(tmp_path.glob("wan-scaling-*GB.json"))


def test_wan_scaling_names_bad_sizes() -> None:
    result = subprocess.run([sys.executable, "bench/wan_scaling.py", "--gigabytes", "1,x"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--gigabytes '1,x'" in result.stderr


def test_the_decade_chart_draws_both_runs_and_refuses_swapped_files(tmp_path: Path) -> None:
    results = ROOT / "bench" / "results"
    before, after = results / "wan-decade-files.json", results / "wan-decade-references.json"
    drawn = subprocess.run([sys.executable, "bench/wan_decade.py", "--before", str(before), "--after", str(after),
                            "--output", str(tmp_path / "decade.png")], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, check=False)
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "decade.png").stat().st_size > 10_000
    swapped = subprocess.run([sys.executable, "bench/wan_decade.py", "--before", str(after), "--after", str(before),
                              "--output", str(tmp_path / "swapped.png")], cwd=ROOT, capture_output=True, text=True,
                             timeout=120, check=False)
    assert swapped.returncode == 2 and "Traceback" not in swapped.stderr
    assert "a run with --references on, expected off" in swapped.stderr



@pytest.mark.slow
def test_dask_compat_finds_a_test_the_preloads_break(tmp_path: Path) -> None:
    """bench/dask_compat.py on a tiny repository laid out as dask/distributed's: one test passes on any scheduler,
    one passes only without the router. The comparison names the second as broken, in both pairs of runs."""
    repo = tmp_path / "distributed"
    (repo / "distributed" / "tests").mkdir(parents=True)
    (repo / "distributed" / "shuffle" / "tests").mkdir(parents=True)
    for package in ("distributed/tests", "distributed/shuffle/tests"):
        (repo / package / "__init__.py").write_text("")
    (repo / "conftest.py").write_text("")
    (repo / "pyproject.toml").write_text("[tool.pytest.ini_options]\nmarkers = []\n")
    (repo / "distributed" / "tests" / "test_tiny.py").write_text(
        "import asyncio\nfrom distributed import Scheduler\n\n"
        "async def plugins():\n"
        "    async with Scheduler(host='127.0.0.1', port=0, dashboard_address=':0') as scheduler:\n"
        "        return set(scheduler.plugins)\n\n"
        "def test_any_scheduler():\n    assert asyncio.run(plugins())\n\n"
        "def test_no_router():\n    assert 'dask-regions-router' not in asyncio.run(plugins())\n")
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t"]):
        subprocess.run(["git", *command], cwd=repo, check=True)
    output = tmp_path / "compat.json"
    result = subprocess.run([sys.executable, "bench/dask_compat.py", "--repo", str(repo / ".git"), "--no-plugins",
                             "--modules", "distributed/tests/test_tiny.py", "--run-timeout", "300", "--out",
                             str(output)], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 1, result.stderr  # something broke
    data = json.loads(output.read_text())
    assert data["runs"]["plain"] == {"passed": 2, "seconds": data["runs"]["plain"]["seconds"]}
    assert data["broken_by_preloads"] == {
        "plain -> preloads": ["distributed.tests.test_tiny::test_no_router"],
        "plain-pool -> preloads-pool": ["distributed.tests.test_tiny::test_no_router"]}
    assert data["tests_from_release_tag"] is False and len(data["tests_commit"]) == 40


def test_dask_compat_names_a_wrong_repository(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "bench/dask_compat.py", "--repo", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "--repo" in result.stderr and "not a git directory" in result.stderr
    assert "Traceback" not in result.stderr
