"""Catalog build benchmark: listing + grouping throughput and peak memory for synthetic listings of
CMIP6-like and ERA5-like keys (fed from a local generator: moto lists ~1,000 keys a second), and documents
per second into an OpenSearch-compatible server (osmem). Prints and writes bench/results/catalog_build.json.

    python bench/catalog_build.py                      # 100k and 1M keys, 20k documents
    python bench/catalog_build.py --keys 2000 --documents 200   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from catalog_sync.grouping import DatasetGrouper, ObjectInfo
from catalog_sync.records import Association, DatasetRecord
from stackconfig import PROJECT_DIR as ROOT

RESULTS = ROOT / "bench" / "results" / "catalog_build.json"
STAMP = datetime(2024, 1, 1, tzinfo=UTC)
KEYS_PER_STORE = 25  # group and array markers plus chunks, like a small CMIP6 store
TARGET_KEYS_PER_SECOND = 50_000
TARGET_PEAK_MB = 300


def synthetic_keys(count: int) -> Iterator[ObjectInfo]:
    """`count` keys in S3's sorted order: 80% in CMIP6 DRS zarr stores, 20% ERA5 monthly netCDF files."""
    stores = int(count * 0.8) // KEYS_PER_STORE
    variables = ("pr", "tas", "tasmax", "tasmin", "uas", "vas")
    emitted = 0
    for index in range(stores):
        source, member = f"MODEL-{index // 600:04d}", f"r{index % 600:03d}i1p1f2"
        variable = variables[index % len(variables)]
        root = f"CMIP6/ScenarioMIP/MOHC/{source}/ssp585/{member}/Amon/{variable}/gn/v20190507"
        inner = [".zattrs", ".zgroup", ".zmetadata", f"{variable}/.zarray", f"{variable}/.zattrs"]
        inner += [f"{variable}/{chunk}.0.0" for chunk in range(KEYS_PER_STORE - len(inner))]
        for name in sorted(inner):
            yield ObjectInfo(f"{root}/{name}", 1_000_000, STAMP)
            emitted += 1
    year = 1950
    while emitted < count:
        for month in range(1, 13):
            for variable in ("air_pressure_at_mean_sea_level", "air_temperature_at_2_metres"):
                if emitted >= count:
                    return
                yield ObjectInfo(f"ERA5/{year}/{month:02d}/data/{variable}.nc", 500_000_000, STAMP)
                emitted += 1
        year += 1


def group_keys(count: int) -> dict[str, float]:
    association = Association("us-west-2", "bench", "", "/us-west-2/bench")
    grouper = DatasetGrouper(association)
    documents = 0
    start = time.perf_counter()
    for item in synthetic_keys(count):
        documents += len(grouper.add(item))
    documents += len(grouper.finish())
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"keys": count, "documents": documents, "seconds": round(seconds, 3),
            "keys_per_second": round(count / seconds), "peak_rss_mb": round(peak_mb, 1)}


def measure_in_child(count: int) -> dict[str, float]:
    """A fresh process per size, so each peak RSS is that size's own."""
    output = subprocess.run([sys.executable, __file__, "--child", str(count)], capture_output=True, text=True,
                            check=True, timeout=1800).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def documents_into_osmem(count: int) -> dict[str, float]:
    from opensearchpy import OpenSearch
    from osmem_server import OsmemServer

    from catalog_sync.sinks import OpenSearchSink

    association = Association("us-west-2", "bench", "", "/us-west-2/bench")
    grouper = DatasetGrouper(association)
    records: list[DatasetRecord] = []
    for item in synthetic_keys(count * KEYS_PER_STORE):
        records += grouper.add(item)
        if len(records) >= count:
            break
    records = records[:count]
    with OsmemServer.start() as server:
        sink = OpenSearchSink(OpenSearch(hosts=[server.url], timeout=120))
        start = time.perf_counter()
        load = sink.begin("us-west-2", "bench")
        load.add(records)
        report = load.commit()
        seconds = time.perf_counter() - start
    return {"documents": report.documents, "seconds": round(seconds, 3),
            "documents_per_second": round(report.documents / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, nargs="+", default=[100_000, 1_000_000], help="listing sizes")
    parser.add_argument("--documents", type=int, default=20_000, help="documents to load into osmem")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(group_keys(args.child)))
        return
    grouping = [measure_in_child(count) for count in args.keys]
    loading = documents_into_osmem(args.documents)
    result = {
        "benchmark": "catalog_build", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "grouping": grouping, "osmem_load": loading,
        "targets": {"keys_per_second": TARGET_KEYS_PER_SECOND, "peak_rss_mb_at_1m": TARGET_PEAK_MB},
        "met": {"keys_per_second": all(g["keys_per_second"] >= TARGET_KEYS_PER_SECOND for g in grouping),
                "peak_memory": all(g["peak_rss_mb"] < TARGET_PEAK_MB for g in grouping)},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for g in grouping:
        print(f"grouping {g['keys']:>9,} keys: {g['keys_per_second']:>9,} keys/s, {g['documents']:,} documents, "
              f"peak RSS {g['peak_rss_mb']} MB")
    print(f"osmem load {loading['documents']:,} documents: {loading['documents_per_second']:,} documents/s")
    print(f"targets met: {result['met']}  ->  {args.output}")


if __name__ == "__main__":
    main()
