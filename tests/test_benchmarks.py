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

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"),
                    reason="the WAN benchmark needs root (network namespaces) and iproute2")
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
    # Pinned: no process outside a region (client, scheduler, another region's worker) touched its storage.
    assert pinned["proxied_bytes"]["storage (S3)"] == 0
    assert output.with_suffix(".png").stat().st_size > 10_000
    assert data["leftovers"] == [] and leftovers() == []
    assert "pinned" in result.stdout and "targets:" in result.stdout


def test_wan_benchmark_names_bad_flags() -> None:
    result = subprocess.run([sys.executable, "bench/wan.py", "--modes", "pinned,fast", "--gigabytes", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--gigabytes 0: use 0.001 to 20" in result.stderr and "--modes 'pinned,fast'" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"),
                    reason="the WAN benchmark needs root (network namespaces) and iproute2")
def test_wan_scaling_runs_each_size_and_charts_time_and_bytes_against_size(tmp_path: Path) -> None:
    output = tmp_path / "wan-scaling.json"
    result = subprocess.run([sys.executable, "bench/wan_scaling.py", "--gigabytes", "0.004,0.002", "--output",
                             str(output), "--work-dir", str(tmp_path / "work")], cwd=ROOT, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(output.read_text())
    assert [r["gigabytes_per_region"] for r in data["sizes"]] == [0.002, 0.004]
    assert all(set(r["modes"]) == {"local", "pinned", "naive"} for r in data["sizes"])
    small, large = (r["modes"]["naive"]["link_bytes"] for r in data["sizes"])
    assert large > small  # naive pulls the raw data: it grows with it
    assert output.with_suffix(".png").stat().st_size > 10_000 and not list(tmp_path.glob("wan-scaling-*GB.json"))


def test_wan_scaling_names_bad_sizes() -> None:
    result = subprocess.run([sys.executable, "bench/wan_scaling.py", "--gigabytes", "1,x"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--gigabytes '1,x'" in result.stderr
