"""Dask's own tests on the platform's scheduler (issue 37, point 5): does loading the platform's preloads break
anything Dask's test suite expects of a scheduler?

In a scratch directory outside the project, the installed `distributed` (the version requirements.txt pins) is
copied, and the test modules of a dask/distributed checkout are laid over it (the wheel and the sdist ship no
tests; the checkout comes from a snapshot of the repository, e.g. the search tool's `fetch`). Its test plugins
(pytest-timeout, pytest-rerunfailures) are installed into the scratch directory from PyPI. Then the chosen test
modules run four times, each in its own pytest process with a junit report:
- `plain`: as Dask's CI runs them;
- `preloads`: every scheduler with the platform's preloads (DASK_DISTRIBUTED__SCHEDULER__PRELOAD);
- `plain-pool` and `preloads-pool`: the same, with every worker in one configured region's pool
  (DASK_DISTRIBUTED__WORKER__RESOURCES, DASK_DASK_REGIONS__REGIONS).
A test broken by the preloads is one that passed in `plain` (or `plain-pool`) and did not pass in `preloads` (or
`preloads-pool`), and again so when those tests are rerun in both settings (Dask's tests are timing-sensitive; a
candidate that passes on the recheck is listed apart, not hidden). The result, with the commit of the tests and
every broken test, goes to bench/results/dask-compat.json. Not part of `make test` (it takes about an hour on 2
cores): `make bench-dask-compat REPO=<distributed's git directory>`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from platform_facts import DASK_REGIONS_SECTION, dask_variable, regions_variable
from stackconfig import PROJECT_DIR as ROOT

RESULT = ROOT / "bench" / "results" / "dask-compat.json"
MODULES = [f"distributed/tests/test_{name}.py" for name in (
    "client", "resources", "actor", "locks", "semaphore", "queues", "variable", "events", "publish",
    "as_completed", "spans", "priorities")] + [f"distributed/shuffle/tests/test_{name}.py" for name in (
    "rechunk", "shuffle", "merge")]
TEST_PLUGINS = ["pytest-timeout", "pytest-rerunfailures"]
PRELOADS = json.dumps(["dask_regions.routing", "dask_regions.demand"])
POOL = {"DASK_DISTRIBUTED__WORKER__RESOURCES": json.dumps({"pool-us-east-1": 100}),
        regions_variable("regions"): json.dumps(["us-east-1"])}
RUNS = {"plain": {}, "preloads": {"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": PRELOADS},
        "plain-pool": POOL, "preloads-pool": {"DASK_DISTRIBUTED__SCHEDULER__PRELOAD": PRELOADS, **POOL}}
PAIRS = (("plain", "preloads"), ("plain-pool", "preloads-pool"))


class CompatError(RuntimeError):
    """The comparison cannot be prepared; the message says what to fix."""


def prepare(repo: Path, commit: str | None, scratch: Path, plugins: bool = True) -> dict[str, Any]:
    """The installed distributed with the checkout's tests laid over it, in `scratch/site`; what was used."""
    version = importlib.metadata.version("distributed")
    git = ["git", "--git-dir", str(repo)]
    if commit is None:  # the release's tag when the snapshot has it, else its newest commit
        tags = subprocess.run([*git, "tag", "--list", version], capture_output=True, text=True, check=False)
        commit = version if tags.stdout.strip() else "HEAD"
    resolved = subprocess.run([*git, "rev-parse", f"{commit}^{{commit}}"], capture_output=True, text=True, check=False)
    if resolved.returncode != 0:
        raise CompatError(f"--commit {commit}: not in {repo} ({resolved.stderr.strip()}). Fix: name a commit or tag "
                          "of the snapshot, or fetch dask/distributed again")
    sha = resolved.stdout.strip()
    date = subprocess.run([*git, "show", "-s", "--format=%cI", sha], capture_output=True, text=True,
                          check=True).stdout.strip()
    site = scratch / "site"
    import distributed

    shutil.copytree(Path(distributed.__file__).parent, site / "distributed",
                    ignore=shutil.ignore_patterns("__pycache__"))
    checkout = scratch / "checkout"
    checkout.mkdir()
    archive = subprocess.run([*git, "archive", sha, "conftest.py", "pyproject.toml", "distributed/tests",
                              "distributed/shuffle/tests"], capture_output=True, check=False)
    if archive.returncode != 0:
        raise CompatError(f"{sha} has not the layout of dask/distributed ({archive.stderr.decode().strip()}). Fix: "
                          "pass the git directory of a dask/distributed snapshot")
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive.stdout, check=True)
    for tests in ("distributed/tests", "distributed/shuffle/tests"):
        shutil.copytree(checkout / tests, site / tests, dirs_exist_ok=True)
    for name in ("conftest.py", "pyproject.toml"):  # the suite's fixtures and its pytest settings (markers, warnings)
        shutil.copy(checkout / name, site / name)
    if plugins:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
                        str(scratch / "plugins"), *TEST_PLUGINS], check=True)
    return {"distributed": version, "tests_commit": sha, "tests_commit_date": date,
            "tests_from_release_tag": commit == version}


def run(scratch: Path, name: str, modules: list[str], timeout: float, plugins: bool = True) -> dict[str, Any]:
    """One pytest run of `modules` with the run's environment; its outcome per test."""
    report = scratch / f"{name}.xml"
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("DASK_DISTRIBUTED__", dask_variable(DASK_REGIONS_SECTION) + "__"))}
    environment |= {"PYTHONPATH": os.pathsep.join([str(scratch / "site"), str(scratch / "plugins"), str(ROOT)]),
                    **RUNS[name]}
    started = time.monotonic()
    bounded = ["--timeout", "300"] if plugins else []  # pytest-timeout: one test at most as long as Dask's CI allows
    pytest = subprocess.Popen([sys.executable, "-m", "pytest", *modules, "-q", "-p", "no:cacheprovider",
                               "--junitxml", str(report), *bounded, "-o", "addopts=--strict-markers -p no:asyncio"],
                              cwd=scratch / "site", env=environment, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        pytest.wait(timeout=timeout)
    except subprocess.TimeoutExpired:  # its report is missing: every test of the run counts as not passed
        print(f"{name}: stopped after {timeout:.0f} s (--run-timeout)", flush=True)
    finally:  # the run's own process group: its clusters' processes too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pytest.pid, signal.SIGKILL)
        pytest.wait()
    outcomes = outcomes_of(report) if report.exists() else {}
    return {"seconds": round(time.monotonic() - started), "outcomes": outcomes}


def outcomes_of(report: Path) -> dict[str, str]:
    """Test id -> passed, failed, error or skipped, from a junit report."""
    found = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        found[test] = next((kind for kind in ("failure", "error", "skipped") if kind in kinds), "passed")
        found[test] = {"failure": "failed"}.get(found[test], found[test])
    return found


def broken(plain: dict[str, str], preloaded: dict[str, str]) -> list[str]:
    """Tests that passed plainly and did not pass with the preloads."""
    return sorted(test for test, outcome in plain.items() if outcome == "passed" and preloaded.get(test) != "passed")


def node_id(test: str, site: Path) -> str:
    """A junit id (`distributed.tests.test_client::test_x[1]`, or with a class) as pytest's node id."""
    classname, _, name = test.partition("::")
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = Path(*parts[:cut]).with_suffix(".py")
        if (site / path).exists():
            return "::".join([str(path), *parts[cut:], name])
    return test


def recheck(scratch: Path, pair: tuple[str, str], candidates: list[str], timeout: float,
            plugins: bool) -> list[str]:
    """The candidates that again pass plainly and fail with the preloads, rerun together in both runs' settings
    (Dask's tests are timing-sensitive: a failure once on a busy machine is not yet a break)."""
    if not candidates:
        return []
    nodes = {node_id(test, scratch / "site"): test for test in candidates}
    again = [run(scratch, name, list(nodes), timeout, plugins)["outcomes"] for name in pair]
    plain, preloaded = ({nodes.get(node_id(t, scratch / "site"), t): o for t, o in found.items()} for found in again)
    return broken({t: o for t, o in plain.items() if t in candidates}, preloaded)


def summary(outcomes: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="dask/distributed's git directory (a snapshot)")
    parser.add_argument("--commit", help="the tests' commit (default: the release tag, else the newest commit)")
    parser.add_argument("--modules", nargs="+", default=MODULES, help="test modules, relative to the checkout")
    parser.add_argument("--run-timeout", type=float, default=3600, help="seconds one pytest run may take")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--no-plugins", action="store_true", help="do not install the suite's pytest plugins "
                        "(no per-test timeout; tests marked flaky then fail on unknown markers)")
    arguments = parser.parse_args(argv)
    if not (arguments.repo / "HEAD").exists():
        parser.error(f"--repo {arguments.repo}: not a git directory (it has no HEAD). Fix: pass the path fetch gave")
    with tempfile.TemporaryDirectory(prefix="dask-compat-") as directory:
        scratch = Path(directory)
        try:
            used = prepare(arguments.repo, arguments.commit, scratch, plugins=not arguments.no_plugins)
        except CompatError as error:
            parser.error(str(error))
        runs, plugins = {}, not arguments.no_plugins
        for name in RUNS:
            runs[name] = run(scratch, name, arguments.modules, arguments.run_timeout, plugins)
            print(f"{name}: {summary(runs[name]['outcomes'])} in {runs[name]['seconds']} s", flush=True)
        candidates = {pair: broken(runs[pair[0]]["outcomes"], runs[pair[1]]["outcomes"]) for pair in PAIRS}
        confirmed = {pair: recheck(scratch, pair, tests, arguments.run_timeout, plugins)
                     for pair, tests in candidates.items()}
    result = {**used, "date": time.strftime("%Y-%m-%d"), "modules": arguments.modules,
              "runs": {name: {"seconds": r["seconds"], **summary(r["outcomes"])} for name, r in runs.items()},
              "broken_by_preloads": {f"{a} -> {b}": confirmed[(a, b)] for a, b in PAIRS},
              "not_confirmed_on_recheck": {f"{a} -> {b}": sorted(set(candidates[(a, b)]) - set(confirmed[(a, b)]))
                                           for a, b in PAIRS},
              "failing_plainly": {name: sorted(t for t, o in runs[name]["outcomes"].items() if o in ("failed", "error"))
                                  for name in ("plain", "plain-pool")}}
    result["ok"] = all(not tests for tests in result["broken_by_preloads"].values()) and all(
        runs[name]["outcomes"] for name in RUNS)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "failing_plainly"}, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
