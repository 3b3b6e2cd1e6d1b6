"""How the WAN benchmark's cost grows with the data: `bench/wan.py` at several sizes per worker region (each size
a full run of its own: fresh WAN, fresh storage), then one JSON and one chart of time and bytes across regions
against the size, per mode. Needs root, like bench/wan.py.

    sudo .venv/bin/python bench/wan_scaling.py                          # 0.25, 0.5, 1 and 2 GB per region
    sudo .venv/bin/python bench/wan_scaling.py --gigabytes 0.005,0.01   # a quick run

Expected shape (issue 20): pinned bytes stay flat (only the reduced maps cross), pinned time tracks the floor
(`local`), naive grows with the data divided by the bandwidth.
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "wan-scaling.json"
MODES = ("local", "pinned", "naive")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", default="0.25,0.5,1,2", help="comma-separated sizes per worker region")
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
    return arguments


def row(size: float, data: dict[str, Any]) -> dict[str, Any]:
    modes = {mode: {"wall_seconds": values["wall_seconds"], "wall": values["wall"], "phases": values["phases"],
                    "link_bytes": values["link_bytes"], "result_bytes": values["result_bytes"],
                    "input_bytes": values["input_bytes"]}
             for mode, values in data["modes"].items()}
    return {"gigabytes_per_region": size, "stored_bytes": data["stored_bytes"], "modes": modes,
            "ratios_within_repeats": data["ratios_within_repeats"], "targets": data["targets"]}


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    sizes = [r["gigabytes_per_region"] for r in rows]
    for mode, colour in (("local", "#8ab17d"), ("pinned", "#2a9d8f"), ("naive", "#e76f51")):
        present = [r for r in rows if mode in r["modes"]]
        if not present:
            continue
        x = [r["gigabytes_per_region"] for r in present]
        left.plot(x, [r["modes"][mode]["wall_seconds"] for r in present], "o-", color=colour, label=mode)
        right.plot(x, [r["modes"][mode]["link_bytes"] / 1e6 for r in present], "o-", color=colour, label=mode)
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
              "complete": len(rows) == len(arguments.sizes),
              "not_measured": "2 against 4 worker regions: the reference analysis reads one ERA5 and one CMIP6 "
                              "region, so two more regions would only add idle pools"}
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    chart(rows, picture)
    return picture


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse(argv)
    rows: list[dict[str, Any]] = []
    picture = arguments.output.with_suffix(".png")
    for size in arguments.sizes:
        output = arguments.output.parent / f"wan-scaling-{size:g}GB.json"
        print(f"== {size:g} GB per worker region", flush=True)
        done = subprocess.run([sys.executable, str(ROOT / "bench" / "wan.py"), "--gigabytes", f"{size:g}",
                               "--repeats", str(arguments.repeats), "--modes", ",".join(MODES), "--output",
                               str(output), "--work-dir", str(arguments.work_dir)], cwd=ROOT, check=False)
        if done.returncode not in (0, 1):  # 1: ran, with a leftover or a checksum disagreement (in the JSON)
            print(f"error: bench/wan.py at {size:g} GB exited with {done.returncode}", file=sys.stderr)
            return 2
        rows.append(row(size, json.loads(output.read_text())))
        output.unlink()
        output.with_suffix(".png").unlink(missing_ok=True)
        picture = write(arguments, rows, argv)
    print(f"\n{'GB':>6} " + " ".join(f"{mode + ' s':>10} {mode + ' MB':>10}" for mode in MODES))
    for r in rows:
        print(f"{r['gigabytes_per_region']:>6g} " + " ".join(
            f"{r['modes'][m]['wall_seconds']:>10.1f} {r['modes'][m]['link_bytes'] / 1e6:>10.1f}"
            if m in r["modes"] else f"{'-':>10} {'-':>10}" for m in MODES))
    print(f"-> {arguments.output} and {picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
