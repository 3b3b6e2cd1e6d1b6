"""Smoke runs of the benchmarks at a tiny size: they must run and write their JSON (targets are reported
by the benchmarks themselves, not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stackconfig import PROJECT_DIR as ROOT

pytestmark = pytest.mark.processes




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


def test_wan_benchmark_names_bad_flags() -> None:
    result = subprocess.run([sys.executable, "bench/wan.py", "--modes", "pinned,fast", "--gigabytes", "0"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--gigabytes 0: use 0.001 to 20" in result.stderr and "--modes 'pinned,fast'" in result.stderr


def test_wan_scaling_names_bad_sizes() -> None:
    result = subprocess.run([sys.executable, "bench/wan_scaling.py", "--gigabytes", "1,x"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "--gigabytes '1,x'" in result.stderr


def test_wan_scaling_runs_every_size_then_each_other_count_and_charts_the_committed_results(tmp_path: Path) -> None:
    from bench.wan_scaling import RESULTS, chart, parse, runs

    order = runs(parse(["--gigabytes", "1,0.25,0.5", "--worker-regions", "2,4,8", "--regions-at", "0.5"]))
    assert order == [(0.25, 2), (0.5, 2), (1.0, 2), (0.5, 4), (0.5, 8)]
    rows = json.loads(RESULTS.read_text())["sizes"]  # several sizes, two counts: what the chart must draw
    assert len({r["gigabytes_per_region"] for r in rows}) > 1 and len({r["worker_regions"] for r in rows}) > 1
    chart(rows, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 10_000


def test_wan_scaling_runs_the_wan_benchmark_once_a_run_and_keeps_one_json_and_chart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The orchestration, each bench/wan.py run answered from the committed WAN results (a real WAN run takes about
    two minutes here; tests/test_wan_network.py runs one, and `make bench-wan-scaling` all of them)."""
    import subprocess as real_subprocess

    import bench.wan_scaling as scaling

    measured = json.loads((ROOT / "bench" / "results" / "wan.json").read_text())
    calls: list[list[str]] = []

    def wan(command: list[str], **_: object) -> real_subprocess.CompletedProcess[str]:
        calls.append(command)
        flags = dict(zip(command[2::2], command[3::2], strict=False))
        count = int(flags["--worker-regions"])
        Path(flags["--output"]).write_text(json.dumps({**measured, "worker_regions": measured["worker_regions"] + [
            f"extra-{i}" for i in range(count - len(measured["worker_regions"]))]}))
        return real_subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(scaling.subprocess, "run", wan)
    output = tmp_path / "wan-scaling.json"
    assert scaling.main(["--gigabytes", "0.5,0.25", "--regions-at", "0.25", "--output", str(output),
                         "--work-dir", str(tmp_path / "work")]) == 0
    runs = [(c[c.index("--gigabytes") + 1], c[c.index("--worker-regions") + 1]) for c in calls]
    assert runs == [("0.25", "2"), ("0.5", "2"), ("0.25", "4")]
    assert all(c[1].endswith("bench/wan.py") and c[c.index("--modes") + 1] == "local,pinned,naive" for c in calls)
    data = json.loads(output.read_text())
    assert data["complete"] and [(r["gigabytes_per_region"], r["worker_regions"]) for r in data["sizes"]] == [
        (0.25, 2), (0.5, 2), (0.25, 4)]
    assert data["sizes"][0]["modes"]["pinned"]["link_bytes"] == measured["modes"]["pinned"]["link_bytes"]
    assert output.with_suffix(".png").stat().st_size > 10_000 and sorted(p.name for p in tmp_path.iterdir()) == [
        "wan-scaling.json", "wan-scaling.png"]  # each run's own JSON removed once read


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


@pytest.mark.parametrize(("flags", "said"), [
    (["--faults", "partition"], "unknown fault 'partition': the faults are region-cut, client-cut, scheduler-kill"),
    (["--grace", "5s"], "--grace 5s: the stack allows 10 s at least (client.regionGraceSeconds)"),
    (["--cut-for", "a while"], "--cut-for 'a while' is not a duration"),
    (["--bound", "soon"], "--bound 'soon' is not a duration: give one like 30s"),
    (["--bound", "0s"], "--bound '0s' must be longer than zero"),
])
def test_the_fault_benchmark_names_bad_flags_and_the_valid_ones(flags: list[str], said: str) -> None:
    result = subprocess.run([sys.executable, "bench/faults.py", *flags], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert said in result.stderr


def test_the_link_faults_without_root_say_so_and_name_the_faults_that_run(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bench import faults

    monkeypatch.setattr(faults.os, "geteuid", lambda: 1000)
    with pytest.raises(SystemExit):
        faults.parse(["--faults", "region-cut,scheduler-kill"])
    assert ("region-cut need root (network namespaces); run as root, or choose among scheduler-kill, "
            "catalog-unreachable") in capsys.readouterr().err
    assert faults.parse(["--faults", "scheduler-kill"]).faults == ["scheduler-kill"]


def test_the_committed_fault_results_lost_nothing_and_recovered() -> None:
    results = json.loads((ROOT / "bench" / "results" / "faults.json").read_text())
    assert results["faults"]
    for name, fault in results["faults"].items():
        assert "hang_or_failure" not in fault, name
        assert fault["data_lost"] == {"catalog_documents": False, "reference_sets": False}, name
        assert fault["result_correct"] and fault["time_to_recovery_s"] < results["bound_s"], name
    cuts = {name: fault for name, fault in results["faults"].items() if name.endswith("-cut")}
    assert set(cuts) == {"region-cut", "client-cut"}
    for name, cut in cuts.items():  # within the grace: nothing lost; past it: a clear error naming the region, soon
        assert cut["within_grace"]["result_correct"] and cut["within_grace"]["error"] is None, name
        assert cut["past_grace"]["error_names_region"] and cut["past_grace"]["other_region_correct"], name
        assert cut["time_to_clear_error_s"] < 2 * cut["grace_s"] + 45, name  # Dask's check period and nanny wait
    assert results["faults"]["slow-link"]["slowdown"] > 0


def test_the_readmes_fault_table_gives_the_committed_figures() -> None:
    results = json.loads((ROOT / "bench" / "results" / "faults.json").read_text())["faults"]
    rows = {line.split("`")[1]: [cell.strip() for cell in line.split("|")[3:5]]
            for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")}
    assert set(rows) == set(results)
    for name, fault in results.items():
        detected = "-" if fault["time_to_detect_s"] is None else f"{fault['time_to_detect_s']:.1f} s"
        assert rows[name] == [detected, f"{fault['time_to_recovery_s']:.0f} s"], name


@pytest.mark.slow
def test_a_scheduler_killed_mid_analysis_gives_a_clear_error_and_a_rerun_recovers(tmp_path: Path) -> None:
    output = tmp_path / "faults.json"
    result = subprocess.run([sys.executable, "bench/faults.py", "--faults", "scheduler-kill", "--output", str(output)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    fault = json.loads(output.read_text())["faults"]["scheduler-kill"]
    assert "hang_or_failure" not in fault, fault
    assert "scheduler-connection-lost" in fault["client_error"] and fault["time_to_detect_s"] < 30
    assert fault["replacement_pid_differs"] and fault["result_correct"]
    assert fault["data_lost"] == {"catalog_documents": False, "reference_sets": False}
