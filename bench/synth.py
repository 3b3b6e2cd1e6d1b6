"""Program scaling benchmark: time to run the Pulumi program under mocks, and resource counts, for 1..8
worker regions (each in its own region, so the peering mesh is the largest it can be). Prints and writes
bench/results/synth.json.

    python bench/synth.py                 # 1..8 worker regions, 3 runs each
    python bench/synth.py --max-workers 2 --runs 1   # a smoke run
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from stackconfig import PROJECT_DIR as ROOT
from stackgraph.synth import synthesize

RESULTS = ROOT / "bench" / "results" / "synth.json"
WORKER_REGIONS = ["us-east-1", "us-west-2", "eu-central-1", "ap-southeast-2", "ca-central-1", "sa-east-1",
                  "ap-northeast-1", "eu-north-1"]
TARGETS_SECONDS = {"dev": 10.0, "8 worker regions": 30.0}
PEERING = "aws:ec2transitgateway/peeringAttachment:PeeringAttachment"


def workers(count: int) -> list[dict[str, str]]:
    return [{"region": region, "cidr": f"10.{i + 1}.0.0/16", "dataset": f"s3://dataset-{region}"}
            for i, region in enumerate(WORKER_REGIONS[:count])]


def measure(count: int | None, runs: int) -> dict[str, Any]:
    overrides = None if count is None else {"workers": workers(count)}
    seconds, graph = [], None
    for _ in range(runs):
        start = time.perf_counter()
        graph = synthesize("dev", overrides)
        seconds.append(time.perf_counter() - start)
    assert graph is not None
    types = Counter(r.type for r in graph.aws_resources)
    return {"worker_regions": count if count is not None else len(graph.outputs["workerPools"]),
            "stack": "dev" if count is None else f"{count} worker regions",
            "median_seconds": round(statistics.median(seconds), 3), "resources": len(graph.resources),
            "aws_resources": len(graph.aws_resources), "peerings": types[PEERING],
            "tgw_routes": types["aws:ec2transitgateway/route:Route"], "vpc_routes": types["aws:ec2/route:Route"],
            "worker_mesh_rules": sum(1 for r in graph.aws_resources if "-workers-from-worker-" in r.name
                                     or "-workers-to-worker-" in r.name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-workers", type=int, default=8, choices=range(1, 9), metavar="1..8")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = [measure(None, args.runs)] + [measure(n, args.runs) for n in range(1, args.max_workers + 1)]
    growth = []
    for a, b in itertools.pairwise(rows[1:]):
        added = b["aws_resources"] - a["aws_resources"]
        # The mesh: a peering and its accepter per new pair, TGW routes both ways, VPC routes to every VPC, and
        # each worker group's rules for every other worker region.
        mesh = sum(b[k] - a[k] for k in ("tgw_routes", "vpc_routes", "worker_mesh_rules")) + 2 * (
            b["peerings"] - a["peerings"])
        growth.append({"from": a["worker_regions"], "to": b["worker_regions"], "aws_resources_added": added,
                       "mesh_added": mesh, "everything_else_added": added - mesh})
    by_stack = {str(r["stack"]): r for r in rows}
    result = {"benchmark": "synth", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": {"python": platform.python_version(), "platform": platform.platform()},
              "rows": rows, "growth": growth, "targets_seconds": TARGETS_SECONDS,
              "met": {name: by_stack[name]["median_seconds"] < limit
                      for name, limit in TARGETS_SECONDS.items() if name in by_stack}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'stack':<20} {'seconds':>8} {'resources':>10} {'aws':>6} {'peerings':>9} {'tgw routes':>11}")
    for r in rows:
        print(f"{r['stack']:<20} {r['median_seconds']:>8} {r['resources']:>10} {r['aws_resources']:>6} "
              f"{r['peerings']:>9} {r['tgw_routes']:>11}")
    print("added by the n-th worker region (mesh + everything else):",
          ", ".join(f"{g['to']}: {g['mesh_added']} + {g['everything_else_added']}" for g in growth))
    print(f"targets met: {result['met']}  ->  {args.output}")


if __name__ == "__main__":
    main()
