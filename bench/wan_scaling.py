"""How the WAN benchmark's cost grows with the data: `bench/wan.py` at several sizes per worker region (each size
a full run of its own: fresh WAN, fresh storage), then one JSON and one chart of time and bytes across regions
against the size, per mode. Needs root, like bench/wan.py.

    sudo .venv/bin/python bench/wan_scaling.py          # 0.25, 0.5, 1, 2 GB per region; and 4 regions at 0.5 GB
    sudo .venv/bin/python bench/wan_scaling.py --gigabytes 0.005,0.01 --regions-at 0.005   # a quick run

Expected shape (issue 20): pinned bytes stay flat (only the reduced maps cross), pinned time tracks the floor
(`local`), naive grows with the data divided by the bandwidth. With 4 worker regions instead of 2 (the analysis
becomes a multi-model ensemble: two more CMIP6 regions) pinned moves two more maps; naive pulls twice the data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from stackconfig import PROJECT_DIR as ROOT

RESULTS = ROOT / "bench" / "results" / "wan-scaling.json"
MODES = ("local", "pinned", "naive")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", default="0.25,0.5,1,2", help="comma-separated sizes per worker region")
    parser.add_argument("--worker-regions", default="2,4",
                        help="worker region counts: the sizes run with the first (the stack's own), each other "
                             "count once at --regions-at (default 2,4)")
    parser.add_argument("--regions-at", type=float, default=0.5, help="GB per region for the other counts (0.5)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode at each size (default 1)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON (a PNG chart goes beside it)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/crossregiondask-wan"),
                        help="passed to bench/wan.py (sample data is kept there per size)")
    arguments = parser.parse_args(argv)
    try:
        arguments.sizes = sorted({float(v) for v in arguments.gigabytes.split(",") if v.strip()})
    except ValueError:
        parser.error(f"--gigabytes {arguments.gigabytes!r}: use comma-separated numbers, e.g. 0.25,0.5,1,2")
    if not arguments.sizes or not all(0.001 <= size <= 20 for size in arguments.sizes):
        parser.error(f"--gigabytes {arguments.gigabytes!r}: each size from 0.001 to 20")
    try:
        arguments.counts = [int(v) for v in arguments.worker_regions.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--worker-regions {arguments.worker_regions!r}: use comma-separated counts, e.g. 2,4")
    if not arguments.counts or not all(2 <= count <= 8 for count in arguments.counts):
        parser.error(f"--worker-regions {arguments.worker_regions!r}: each count from 2 to 8")
    if not 0.001 <= arguments.regions_at <= 20:
        parser.error(f"--regions-at {arguments.regions_at:g}: use 0.001 to 20")
    return arguments


def runs(arguments: argparse.Namespace) -> list[tuple[float, int]]:
    """(GB per region, worker regions) of each run: every size with the first count, then the other counts."""
    first, *others = arguments.counts
    return [(size, first) for size in arguments.sizes] + [(arguments.regions_at, count) for count in others]


def row(size: float, data: dict[str, Any]) -> dict[str, Any]:
    modes = {mode: {"wall_seconds": values["wall_seconds"], "wall": values["wall"], "phases": values["phases"],
                    "link_bytes": values["link_bytes"], "result_bytes": values["result_bytes"],
                    "proxied_round_trips": values["proxied_round_trips"],
                    "input_bytes": values["input_bytes"]}
             for mode, values in data["modes"].items()}
    return {"gigabytes_per_region": size, "worker_regions": len(data["worker_regions"]),
            "stored_bytes": data["stored_bytes"], "modes": modes,
            "ratios_within_repeats": data["ratios_within_repeats"], "targets": data["targets"]}


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    sizes = sorted({r["gigabytes_per_region"] for r in rows})
    counts = list(dict.fromkeys(r["worker_regions"] for r in rows))
    for mode, colour in (("local", "#8ab17d"), ("pinned", "#2a9d8f"), ("naive", "#e76f51")):
        for count, style in zip(counts, ("o-", "s--", "^:", "D-."), strict=False):
            present = [r for r in rows if mode in r["modes"] and r["worker_regions"] == count]
            if not present:
                continue
            x = [r["gigabytes_per_region"] for r in present]
            label = f"{mode}, {count} regions"
            left.plot(x, [r["modes"][mode]["wall_seconds"] for r in present], style, color=colour, label=label,
                      fillstyle="full" if count == counts[0] else "none")
            right.plot(x, [r["modes"][mode]["link_bytes"] / 1e6 for r in present], style, color=colour, label=label,
                       fillstyle="full" if count == counts[0] else "none")
    for axis, label in ((left, "wall time, s"), (right, "MB across regions (link counters)")):
        axis.set_xlabel("GB per worker region")
        axis.set_ylabel(label)
        axis.set_xticks(sizes)
        axis.legend()
    right.set_yscale("log")
    figure.suptitle("The reference analysis as the data grows (local: no WAN; pinned; naive)")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def write(arguments: argparse.Namespace, rows: list[dict[str, Any]], argv: Sequence[str] | None) -> Path:
    """The JSON and chart of the sizes done so far (written after each size: an interrupted run keeps them)."""
    picture: Path = arguments.output.with_suffix(".png")
    result = {"benchmark": "wan-scaling", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "command": " ".join(["python", "bench/wan_scaling.py", *(sys.argv[1:] if argv is None else argv)]),
              "modes": list(MODES), "repeats": arguments.repeats, "sizes": rows, "chart": picture.name,
              "complete": len(rows) == len(runs(arguments))}
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    chart(rows, picture)
    return picture


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse(argv)
    rows: list[dict[str, Any]] = []
    picture = arguments.output.with_suffix(".png")
    for size, count in runs(arguments):
        output = arguments.output.parent / f"wan-scaling-{size:g}GB-{count}.json"
        print(f"== {size:g} GB per worker region, {count} worker regions", flush=True)
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "wan.py"), "--gigabytes", f"{size:g}",
                               "--worker-regions", str(count), "--repeats", str(arguments.repeats), "--modes",
                               ",".join(MODES), "--output", str(output), "--work-dir", str(arguments.work_dir)],
                              cwd=ROOT, check=False)
        if done.returncode not in (0, 1):  # 1: ran, with a leftover or a checksum disagreement (in the JSON)
            print(f"error: bench/wan.py at {size:g} GB, {count} regions exited with {done.returncode}",
                  file=sys.stderr)
            return 2
        rows.append(row(size, json.loads(output.read_text())))
        output.unlink()
        output.with_suffix(".png").unlink(missing_ok=True)
        picture = write(arguments, rows, argv)
    print(f"\n{'GB':>6} {'regions':>7} " + " ".join(f"{mode + ' s':>10} {mode + ' MB':>10}" for mode in MODES))
    for r in rows:
        print(f"{r['gigabytes_per_region']:>6g} {r['worker_regions']:>7} " + " ".join(
            f"{r['modes'][m]['wall_seconds']:>10.1f} {r['modes'][m]['link_bytes'] / 1e6:>10.1f}"
            if m in r["modes"] else f"{'-':>10} {'-':>10}" for m in MODES))
    print(f"-> {arguments.output} and {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
