"""Opening a decade of monthly files, before and after the reference sets (issue 20, point 5): one chart of the phases
of the two WAN benchmark runs that differ only in `--references` (see the README for their commands).

    .venv/bin/python bench/wan_decade.py      # reads bench/results/wan-decade-{files,references}.json
                                              # -> bench/results/wan-decade.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PHASES = ("open", "compute", "gather")


def chart(before: dict, after: dict, output: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{mode}\n{label}", run["modes"][mode]) for mode in ("local", "pinned")
            for label, run in (("files", before), ("reference set", after)) if mode in run["modes"]]
    figure, axis = plt.subplots(figsize=(8, 4), constrained_layout=True)
    bottoms = [0.0] * len(rows)
    for phase in PHASES:
        heights = [mode["phases"][phase]["median"] for _, mode in rows]
        axis.bar([name for name, _ in rows], heights, bottom=bottoms, label=phase)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for index, total in enumerate(bottoms):
        axis.text(index, total, f"{total:.1f} s", ha="center", va="bottom")
    files = before["settings"]["era5_monthly_files"]
    axis.set_ylabel("seconds (median of each phase)")
    axis.set_title(f"{files} monthly ERA5 files opened file by file or from their reference set")
    axis.legend()
    figure.savefig(output, dpi=100)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, default=RESULTS / "wan-decade-files.json")
    parser.add_argument("--after", type=Path, default=RESULTS / "wan-decade-references.json")
    parser.add_argument("--output", type=Path, default=RESULTS / "wan-decade.png")
    arguments = parser.parse_args(argv)
    runs = []
    for path, wanted in ((arguments.before, "off"), (arguments.after, "on")):
        try:
            run = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            parser.error(f"{path}: {error}; run bench/wan.py with --references {wanted} first")
        if run.get("settings", {}).get("references") != wanted:
            parser.error(f"{path}: a run with --references {run.get('settings', {}).get('references')}, "
                         f"expected {wanted}")
        runs.append(run)
    chart(runs[0], runs[1], arguments.output)
    print(f"-> {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
