"""Would virtual references make opening cheaper? (issue 20, point 5.) Opening a collection of monthly netCDF files
costs a metadata read per file; a nightly job could instead write one set of kerchunk references per collection, so
that opening it is one read. This measures both ways of opening, in one process on this machine, for collections
of 12, 120 and 480 monthly ERA5-like files (one, ten and forty years; a small grid, since opening reads metadata
whatever the grid):

    files       what dask_regions does now: open each file lazily (h5netcdf) and concatenate them along time0
    references  one kerchunk reference set for the collection (built once: the nightly job's cost, timed apart),
                written to a file and opened from it as one zarr store

Each is timed `--repeats` times after a warm-up (median). Both must give the same time axis and values.

    .venv/bin/python bench/open_refs.py                    # -> bench/results/open-refs.json
    .venv/bin/python bench/open_refs.py --files 12 --repeats 1 --output /tmp/open-refs.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from local_platform.data import ERA5_VARIABLE, write_era5_like
from stackconfig import PROJECT_DIR as ROOT

RESULTS = ROOT / "bench" / "results" / "open-refs.json"
MONTHS_A_YEAR = 12


def write_collection(directory: Path, files: int) -> list[Path]:
    years = tuple(range(2000, 2000 + max(1, files // MONTHS_A_YEAR)))
    keys = write_era5_like(directory, years=years, months=min(files, MONTHS_A_YEAR), steps=4, lat=73, lon=144)
    return [directory / key for key in keys]


def open_files(paths: Sequence[Path]) -> Any:
    """As dask_regions opens a collection today (`open_mfdataset`: each file lazily, then one concatenation)."""
    import xarray as xr

    parts = [xr.open_dataset(path, engine="h5netcdf", chunks=None, cache=False) for path in paths]
    return xr.concat(parts, dim="time0", data_vars="minimal", coords="minimal", compat="override", join="override")


def build_references(paths: Sequence[Path]) -> dict[str, Any]:
    """What the nightly job would write: one reference set for the collection."""
    from kerchunk.combine import MultiZarrToZarr
    from kerchunk.hdf import SingleHdf5ToZarr

    singles = [SingleHdf5ToZarr(str(path), inline_threshold=0).translate() for path in paths]
    combined: dict[str, Any] = MultiZarrToZarr(singles, concat_dims=["time0"], identical_dims=["lat", "lon"],
                                               coo_map={"time0": "cf:time0"}).translate()
    return combined


def open_references(references: Path) -> Any:
    """The collection from its reference file (read each time, as a worker would read it from the file system)."""
    import xarray as xr

    return xr.open_dataset("reference://", engine="zarr", chunks=None, backend_kwargs={
        "consolidated": False, "storage_options": {"fo": str(references), "remote_protocol": "file"}})


def timed(action: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    result = action()  # warm-up: imports and the page cache
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def measure(files: int, repeats: int, work: Path) -> dict[str, Any]:
    import numpy as np

    paths = write_collection(work / f"files-{files}", files)
    started = time.perf_counter()
    references = work / f"references-{files}.json"
    references.write_text(json.dumps(build_references(paths)))
    built = time.perf_counter() - started
    per_file, by_files = timed(lambda: open_files(paths), repeats)
    at_once, by_references = timed(lambda: open_references(references), repeats)
    same = (np.array_equal(by_files.time0.values, by_references.time0.values)
            and np.array_equal(by_files[ERA5_VARIABLE].isel(time0=-1).values,
                               by_references[ERA5_VARIABLE].isel(time0=-1).values))
    return {"files": len(paths), "open_files_seconds": round(per_file, 4),
            "open_references_seconds": round(at_once, 4), "speedup": round(per_file / at_once, 1),
            "build_references_seconds": round(built, 3), "references_bytes": references.stat().st_size,
            "same_data": bool(same)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", default="12,120,480", help="collection sizes, comma-separated (12,120,480)")
    parser.add_argument("--repeats", type=int, default=5, help="timed opens of each kind (default 5)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    arguments = parser.parse_args(argv)
    try:
        sizes = [int(value) for value in arguments.files.split(",") if value.strip()]
    except ValueError:
        sizes = []
    if not sizes or not all(1 <= size <= 2400 for size in sizes):
        parser.error(f"--files {arguments.files!r}: comma-separated counts from 1 to 2400, e.g. 12,120,480")
    if not 1 <= arguments.repeats <= 50:
        parser.error(f"--repeats {arguments.repeats}: use 1 to 50")
    rows = []
    with tempfile.TemporaryDirectory(prefix="open-refs-") as work:
        for size in sizes:
            rows.append(measure(size, arguments.repeats, Path(work)))
            row = rows[-1]
            print(f"{row['files']:>5} files: {row['open_files_seconds']:.3f} s file by file, "
                  f"{row['open_references_seconds']:.3f} s from references ({row['speedup']}x); references built "
                  f"in {row['build_references_seconds']:.2f} s, {row['references_bytes']:,} bytes; same data: "
                  f"{row['same_data']}", flush=True)
    result = {"benchmark": "open-refs", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "command": " ".join(["python", "bench/open_refs.py", *(sys.argv[1:] if argv is None else argv)]),
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load": round(os.getloadavg()[0], 2)},
              "repeats": arguments.repeats, "rows": rows}
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {arguments.output}")
    return 0 if all(row["same_data"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
