"""Smoke runs of the benchmarks at a tiny size: they must run and write their JSON (targets are reported
by the benchmarks themselves, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
