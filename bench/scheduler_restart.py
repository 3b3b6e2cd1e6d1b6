"""The scheduler on demand, timed on the twin (issue 31, point 2): the time from `dask_regions.connect()` to a usable
client when the scheduler had stopped because nobody used it, and the time it took to stop. The twin runs the dev
stack with `client.idleShutdownMinutes` 1 and the demo's pool timings; ECS is the client region's AWS emulation.

Each repeat: connect, run one task pinned to a pool (the pool grows from zero), close; wait for the scheduler to
stop itself; then time `connect()` (which starts it and waits) and the same pinned task on the restarted
scheduler. Results go to bench/results/scheduler-restart.json.

    .venv/bin/python bench/scheduler_restart.py --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from local_platform.__main__ import DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW, overrides
from local_platform.platform import LocalPlatform
from stackconfig import PROJECT_DIR as ROOT

RESULTS = ROOT / "bench" / "results" / "scheduler-restart.json"
STOP_WITHIN = 300.0  # seconds: a minute unused, the pools' scale-in, the plugin's next check


def pinned_task(cluster: Any) -> float:
    started = time.monotonic()
    with cluster.get_client() as client:
        assert client.submit(sum, [1, 2], resources={"pool-us-east-1": 1}).result(timeout=300) == 3
    return time.monotonic() - started


def scheduler_running(state_dir: Path) -> bool:
    text = (state_dir / "logs" / "agent.log").read_text()
    return text.rfind("set to 0 task(s) through ECS") < text.rfind("set to 1 task(s) through ECS")


def main(argv: list[str] | None = None) -> int:
    import dask.config

    import dask_regions as dr

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, choices=range(1, 11), metavar="1-10")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    local = overrides("dev", DEMO_IDLE_MINUTES, DEMO_SCALE_IN_WINDOW)
    local["client"] = {**local["client"], "idleShutdownMinutes": 1}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scheduler-restart-") as work:
        state_dir = Path(work) / "state"
        twin = LocalPlatform("dev", state_dir, overrides=local)
        state = twin.up()
        try:
            os.environ.update(state.client_environment())
            dask.config.refresh()
            cluster = dr.connect()
            pinned_task(cluster)
            cluster.close()
            for repeat in range(1, args.repeats + 1):
                idle_from = time.monotonic()
                deadline = idle_from + STOP_WITHIN
                while scheduler_running(state_dir):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the scheduler did not stop within {STOP_WITHIN:.0f} s")
                    time.sleep(0.5)
                stopped_after = time.monotonic() - idle_from
                said = io.StringIO()
                started = time.monotonic()
                with contextlib.redirect_stdout(said):
                    cluster = dr.connect(timeout=5)
                connected = time.monotonic() - started
                first_task = pinned_task(cluster)
                cluster.close()
                runs.append({"repeat": repeat, "stopped_after_idle_s": round(stopped_after, 1),
                             "connect_s": round(connected, 2), "first_pinned_task_s": round(first_task, 2),
                             "said": said.getvalue().strip().splitlines()})
                print(f"run {repeat}: stopped {stopped_after:.0f} s after the last client left; connect() "
                      f"{connected:.1f} s; first pinned task {first_task:.1f} s", flush=True)
        finally:
            twin.down()
    result = {
        "benchmark": "scheduler on demand (twin)", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": " ".join(["python", "bench/scheduler_restart.py", *(argv or sys.argv[1:])]),
        "settings": {"idleShutdownMinutes": 1, "pool_idle_timeout_minutes": DEMO_IDLE_MINUTES,
                     "scale_in_window_s": DEMO_SCALE_IN_WINDOW, "check_interval": "30s (dask-regions default)"},
        "connect_s": {"median": statistics.median(r["connect_s"] for r in runs),
                      "max": max(r["connect_s"] for r in runs)},
        "first_pinned_task_s": {"median": statistics.median(r["first_pinned_task_s"] for r in runs)},
        "runs": runs,
        "aws_estimate": ("not measured (no AWS account here): a Fargate task starts in about 30-90 s (image pull of "
                         "the Dask image, ENI attachment), then Cloud Map registers its address (DNS TTL 10 s); "
                         "expect connect() to wait about 1-2 minutes, within its 5-minute bound"),
    }
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
