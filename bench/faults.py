"""Faults injected into the running reference analysis (issue 34): what the platform does when part of it fails,
measured. Each fault records the time to detect it, the time to a clear error or to recovery, whether the result was
correct, and the data lost (the catalog's documents and the reference sets compared before and after: must be none).
Results are merged into bench/results/faults.json (a fault run alone replaces only its own entry), with a chart.

    .venv/bin/python bench/faults.py --faults scheduler-kill [--bound 2m]

The link faults (region-cut, client-cut, slow-link) run on the WAN benchmark's namespaces (bench/faults_wan.py),
as root.
Ctrl-C stops the run and everything it started (the twin's `down`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from bench import catalog_check
from stackconfig import PROJECT_DIR as ROOT

RESULTS = ROOT / "bench" / "results" / "faults.json"
CHART = RESULTS.with_suffix(".png")

FAULTS = {
    "region-cut": "a worker region's link cut both ways mid-computation, restored after --cut-for",
    "client-cut": "the client region's link to one worker region cut mid-computation, restored after --cut-for",
    "scheduler-kill": "the scheduler's task killed mid-computation; its service starts a new one at the same name",
    "catalog-unreachable": "the catalog unreachable from a worker region during its nightly sync",
    "slow-link": "a worker region's bandwidth cut to a tenth mid-computation",
}
ON_THE_WAN = ("region-cut", "client-cut", "slow-link")  # bench/faults_wan.py: the WAN benchmark's namespaces
CATALOGS = {"catalog-unreachable": "opensearch"}  # the twin's catalog per fault (default: SQLite)


class FaultError(RuntimeError):
    """The run could not inject or observe its fault; the message says what."""


# ------------------------------------------------------------------------------------------------ arguments
def duration(flag: str) -> Callable[[str], float]:
    """A duration in Dask's own form (`30s`, `2 minutes`, `500ms`), as seconds; a clear error naming the flag."""
    from dask.utils import parse_timedelta

    def parse(text: str) -> float:
        try:
            seconds = float(parse_timedelta(text, default="s"))
        except (ValueError, KeyError, TypeError):
            raise argparse.ArgumentTypeError(f"{flag} {text!r} is not a duration: give one like 30s, 2m or "
                                             "500ms") from None
        if seconds <= 0:
            raise argparse.ArgumentTypeError(f"{flag} {text!r} must be longer than zero")
        return seconds

    return parse


def fault_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAULTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown fault {', '.join(map(repr, unknown)) or '(none given)'}: the "
                                         f"faults are {', '.join(FAULTS)}")
    return names


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", type=fault_names, default=list(FAULTS),
                        help="comma-separated: " + "; ".join(f"{k}: {v}" for k, v in FAULTS.items()))
    parser.add_argument("--bound", type=duration("--bound"), default=120.0,
                        help="the longest any wait of the run may take (default 2m); past it the fault is a hang")
    parser.add_argument("--grace", type=duration("--grace"), default=60.0,
                        help="the stack's client.regionGraceSeconds for the link faults (default 60s, the stack's "
                             "default; at least 10s)")
    parser.add_argument("--cut-for", type=duration("--cut-for"), default=None,
                        help="how long the long cut lasts (default: twice the grace and 45 s, past it for sure)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/crossregiondask-faults"),
                        help="the link faults' sample data and logs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    arguments = parser.parse_args(argv)
    if arguments.grace < 10:
        parser.error(f"--grace {arguments.grace:g}s: the stack allows 10 s at least (client.regionGraceSeconds)")
    if any(name in ON_THE_WAN for name in arguments.faults) and os.geteuid() != 0:
        parser.error(f"{', '.join(n for n in arguments.faults if n in ON_THE_WAN)} need root (network namespaces); "
                     f"run as root, or choose among {', '.join(n for n in FAULTS if n not in ON_THE_WAN)}")
    return arguments


# --------------------------------------------------------------------------------------------- observation
def catalog_contents(state: Any) -> list[dict[str, Any]]:
    """Every catalog document of the twin, as bench/catalog_check.py compares them."""
    return catalog_check.documents(state.open_catalog())


def missing_sets(state: Any) -> list[str]:
    """The reference sets the twin's catalog names that its region's bucket does not hold (its AWS emulation)."""
    import boto3

    def s3(region: str) -> Any:
        return boto3.client("s3", region_name=region, endpoint_url=state.s3_endpoints[region],
                            aws_access_key_id="local", aws_secret_access_key="local")

    return catalog_check.missing_sets(state.open_catalog().find(), s3)


def scheduler_pids(state_dir: Path) -> list[int]:
    """The twin's live scheduler processes (the entrypoint's `dask scheduler` with the router's preload)."""
    from local_platform.platform import processes_of

    return processes_of(state_dir, b"scheduler", b"dask_regions.routing")


def wait_for(condition: Callable[[], Any], bound: float, what: str) -> Any:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.2)
    raise FaultError(f"{what} did not happen within {bound:.0f} s")


# ----------------------------------------------------------------------------------------------- the faults
def analysis(client: Any, state: Any) -> list[Any]:
    """The reference analysis's futures: both climatologies and the difference, one future per month (so that a
    fault can be injected between the first result and the last)."""
    import dask_regions as dr
    from local_platform.demo import reference_analysis

    catalog = state.open_catalog()
    months = catalog.find(variable="air_temperature_at_2_metres")
    (store,) = catalog.find(variable_id="tas", experiment_id="ssp585")
    historical, regridded, difference = reference_analysis(dr.open_mfdataset(client, months, concat_dim="time0"),
                                                           dr.open_dataset(client, store))
    return list(client.compute([historical, regridded] + [difference.isel(month=i)
                                                          for i in range(difference.sizes["month"])]))


def warming_of(results: list[Any]) -> float:
    import xarray as xr

    from local_platform.demo import warming

    return warming(xr.concat(results[2:], dim="month"))


def scheduler_kill(state: Any, bound: float) -> dict[str, Any]:
    """Kill the scheduler's task after the analysis's first result; the client must get a clear error within the
    bound, `connect()` must reach the replacement, and a rerun must give the result of a run without the fault."""
    from distributed import as_completed

    import dask_regions as dr

    state_dir = Path(state.state_dir)
    platform = dr.connect(timeout=bound)
    client = platform.get_client()
    try:
        expected = warming_of(client.gather(analysis(client, state)))
        futures = analysis(client, state)
        next(iter(as_completed(futures)))  # type: ignore[no-untyped-call]  # mid-computation: one result in, the rest still running
        (victim,) = scheduler_pids(state_dir)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        try:
            client.gather(futures, errors="raise")
            error = None
        except Exception as failure:  # what the user sees: its type and words are the measurement
            error = f"{type(failure).__name__}: {failure}"
        seen = time.monotonic() - killed
    finally:
        lost_close = close_lost(client, platform, bound)
    if seen > bound:
        raise FaultError(f"the client waited {seen:.0f} s for the lost scheduler, past the {bound:.0f} s bound")
    replacement = wait_for(lambda: [p for p in scheduler_pids(state_dir) if p != victim], bound,
                           "a replacement scheduler task")
    started = time.monotonic()
    platform = dr.connect(timeout=bound)
    with platform, platform.get_client() as client:
        connected = time.monotonic() - started
        rerun = warming_of(client.gather(analysis(client, state)))
    recovered = time.monotonic() - killed
    return {"injected": "SIGKILL to the scheduler task's process after the analysis's first result",
            "replacement_pid_differs": replacement[0] != victim,
            "time_to_detect_s": round(seen, 2), "client_error": error,
            "time_to_clear_error_s": round(seen, 2) if error else None, "closing_the_lost_client": lost_close,
            "connect_after_s": round(connected, 2), "time_to_recovery_s": round(recovered, 2),
            "result_correct": abs(rerun - expected) < 1e-6, "expected_warming_k": round(expected, 4),
            "rerun_warming_k": round(rerun, 4)}


def close_lost(client: Any, platform: Any, bound: float) -> str:
    """Close the client (and its platform) whose scheduler was killed, within the bound. Dask's client reconnects in
    the background meanwhile; under load its close has been seen to take past Dask's own 60 s and raise (the
    reconnect's TLS handshake raced the new scheduler's listener). That is recorded, not a failure of the run: the
    user's next step is a new connect(), measured next."""
    started = time.monotonic()
    try:
        client.close(timeout=bound)
        platform.close(timeout=bound)
    except (TimeoutError, OSError) as failure:
        return f"{type(failure).__name__} after {time.monotonic() - started:.1f} s: {failure}"
    return f"closed in {time.monotonic() - started:.1f} s"


class Blackhole:
    """A TCP listener on loopback that accepts and never answers: a catalog cut off as the sync sees it (its
    connections open, then nothing comes back, as through a broken route)."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[Any] = []
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        while True:
            try:
                self.held.append(self.listener.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for connection in self.held:
            connection.close()


def catalog_unreachable(state: Any, bound: float) -> dict[str, Any]:
    """One worker region's nightly sync with its catalog endpoint answering nothing, while a reader keeps querying
    the catalog; then the next sync with the catalog back."""
    import threading

    from catalog_sync.environment import CATALOG_ENDPOINT
    from local_platform.nightly import Functions, function_specs, run_execution
    from local_platform.state import read_twin

    state_dir = Path(state.state_dir)
    twin = read_twin(state_dir)
    schedule = next(s for s in twin["schedules"] if s["expression"].startswith("cron("))
    expected = catalog_contents(state)
    answers: list[bool] = []
    stop = threading.Event()

    def keep_querying() -> None:  # the notebook's side: the catalog itself is up
        while not stop.is_set():
            try:
                answers.append(catalog_contents(state) == expected)
            except Exception:
                answers.append(False)
            time.sleep(0.5)

    reader = threading.Thread(target=keep_querying, daemon=True)
    reader.start()
    hole = Blackhole()
    specs = function_specs(twin)
    cut = {arn: dataclasses.replace(spec, environment={**spec.environment, CATALOG_ENDPOINT: hole.url})
           for arn, spec in specs.items()}
    functions = Functions(cut, state_dir / "logs")
    started = time.monotonic()
    try:
        failed = run_execution(twin, schedule, functions, state_dir)
    finally:
        functions.close()
        hole.close()
    ended = time.monotonic() - started
    stop.set()
    reader.join(timeout=10)
    said = [line for log in sorted((state_dir / "logs").glob("lambda-*.log"))
            for line in log.read_text().splitlines() if line.startswith("[ERROR]")]
    functions = Functions(specs, state_dir / "logs")
    try:
        next_sync = run_execution(twin, schedule, functions, state_dir)
    finally:
        functions.close()
    return {"injected": f"the {schedule['region']} sync's catalog endpoint accepting connections and never "
                        "answering, during one scheduled execution",
            "sync_status": failed.status, "sync_error": f"{failed.error}: {failed.cause}",
            "handler_error": said[-1] if said else None,
            "time_to_detect_s": round(ended, 2), "time_to_clear_error_s": round(ended, 2),
            "within_bound": ended <= bound, "next_sync_status": next_sync.status,
            "time_to_recovery_s": round(time.monotonic() - started, 2),
            "queries_during": len(answers), "queries_answered_as_before": sum(answers),
            "result_correct": failed.status == "FAILED" and next_sync.status == "SUCCEEDED" and all(answers)}


RUNS: dict[str, Callable[[Any, float], dict[str, Any]]] = {"scheduler-kill": scheduler_kill,
                                                           "catalog-unreachable": catalog_unreachable}


# ---------------------------------------------------------------------------------------------------- output
def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(results)
    figure, axis = plt.subplots(figsize=(8, 1.2 + 0.55 * len(names)))
    for offset, (key, label) in enumerate([("time_to_detect_s", "a clear error (after the fault)"),
                                           ("time_to_recovery_s", "recovered (after the fault; a cut: after the "
                                                                  "link is back)")]):
        axis.barh([i + 0.35 * offset for i in range(len(names))], [results[n].get(key) or 0 for n in names],
                  height=0.35, label=label)
    axis.set_yticks([i + 0.17 for i in range(len(names))], names)
    axis.set_xlabel("seconds (2 cores; the twin, and the WAN's namespaces for the links)")
    axis.legend(loc="upper right", fontsize="small")  # the rows at the top have the shortest bars
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse(argv)
    output: Path = arguments.output
    previous = json.loads(output.read_text()) if output.exists() else {}
    results: dict[str, Any] = dict(previous.get("faults", {}))
    try:
        results |= run_faults(arguments)
    except KeyboardInterrupt:
        from bench.wan_network import leftovers

        print(f"interrupted; processes stopped, namespaces left: {leftovers() or 'none'}", file=sys.stderr)
        return 130
    document = {"benchmark": "faults (issue 34)", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "where": "the twin (python -m local_platform): the dev stack's declared tasks on this machine; the "
                         "link faults on the WAN benchmark's namespaces (bench/faults_wan.py)",
                "bound_s": arguments.bound, "faults": results}
    output.write_text(json.dumps(document, indent=1) + "\n")
    chart(results, output.with_suffix(".png"))
    print(f"-> {output}")
    return 0


def run_faults(arguments: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import dask.config

    from local_platform.__main__ import DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW, overrides
    from local_platform.platform import LocalPlatform

    results: dict[str, Any] = {}
    on_the_wan = [name for name in arguments.faults if name in ON_THE_WAN]
    if on_the_wan:
        from bench.faults_wan import run as run_on_the_wan

        for name, result in run_on_the_wan(on_the_wan, arguments.bound, arguments.grace, arguments.cut_for,
                                           arguments.work_dir.resolve()).items():
            results[name] = {"fault": FAULTS[name], **result}
            print(json.dumps(results[name], indent=1), flush=True)
    for name in [name for name in arguments.faults if name not in ON_THE_WAN]:
        with tempfile.TemporaryDirectory(prefix=f"fault-{name}-") as work:
            twin = LocalPlatform("dev", Path(work) / "state", catalog=CATALOGS.get(name, "sqlite"),
                                 overrides=overrides("dev", DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW))
            state = twin.up()
            try:
                os.environ.update(state.client_environment())
                dask.config.refresh()
                documents = catalog_contents(state)
                if missing := missing_sets(state):
                    raise FaultError(f"reference sets missing before the fault: {missing}")
                print(f"{name}: {FAULTS[name]}", flush=True)
                result = RUNS[name](state, arguments.bound)
                result["data_lost"] = {"catalog_documents": documents != catalog_contents(state),
                                       "reference_sets": bool(missing_sets(state))}
            except FaultError as error:
                result = {"hang_or_failure": str(error)}
            except Exception as error:  # recorded with its fault's name, so that one broken run names itself
                traceback.print_exc()
                result = {"hang_or_failure": f"{type(error).__name__}: {error}"}
            finally:
                twin.down()
        results[name] = {"fault": FAULTS[name], **result}
        print(json.dumps(results[name], indent=1), flush=True)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
