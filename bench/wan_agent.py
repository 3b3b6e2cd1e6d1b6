"""What bench/wan.py runs inside a region's network namespace (`ip netns exec <namespace> python bench/wan_agent.py
...`): upload a region's data to its S3 emulation, run its nightly catalog sync, wait for the cluster, and run the
reference analysis in one of its modes. Each command prints one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages

from bench import catalog_check
from bench.wan_network import hostname

MODES = ("local", "pinned", "unpinned", "naive")
FILE_SYSTEM = "fs-0bench00000000000"  # the region's one file system (its stand-in)
CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def s3_client(region: str, port: int) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", region_name=region, endpoint_url=f"http://{hostname(region)}:{port}",
                        config=Config(s3={"addressing_style": "path"}), **CREDENTIALS)


def storage_options(region: str, port: int) -> dict[str, Any]:
    """How any process reaches `region`'s storage: by the region's name, which is loopback inside the region and
    the region's proxied address from the others."""
    return {"key": "local", "secret": "local",
            "client_kwargs": {"endpoint_url": f"http://{hostname(region)}:{port}", "region_name": region},
            "config_kwargs": {"s3": {"addressing_style": "path"}}}


def wait_for_port(port: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return {"port": port, "listening": True}
        time.sleep(0.1)
    raise SystemExit(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


def upload(staging: Path, bucket: str, prefix: str, region: str, port: int) -> dict[str, Any]:
    from local_platform.data import publish

    started = time.monotonic()
    size = publish(s3_client(region, port), staging, bucket, prefix, region)
    return {"region": region, "bytes": size, "seconds": time.monotonic() - started}


def sync(bucket: str, prefix: str, fsx_path: str | None, region: str, port: int, catalog: str,
         fsx_root: Path, references: str | None) -> dict[str, Any]:
    """The nightly job of the region, as declared: the FSx import first (answered by the Lustre stand-in under
    `fsx_root`, which copies each object in: what the region's pool reads, as it reads /fsx in AWS), then the
    catalog rebuild, published across the WAN, with each netCDF collection's reference set written to the
    region's declared references bucket when `references` names it. Without `fsx_path` (storage `s3`) there is no
    import: the catalog's paths are the objects' own."""
    from catalog_sync.catalogs import open_sink
    from catalog_sync.records import Association
    from catalog_sync.references import References
    from catalog_sync.sync import sync_region
    from local_platform.data import create_bucket
    from local_platform.fsx_standin import LocalFsx, StandIn

    s3 = s3_client(region, port)
    repository = f"s3://{bucket}/{prefix}".rstrip("/")
    fsx = LocalFsx(s3, {FILE_SYSTEM: StandIn(fsx_root, {fsx_path: repository})}) if fsx_path else None
    if references:  # the declared bucket, as `pulumi up` creates it
        create_bucket(s3, references.removeprefix("s3://").split("/")[0], region)
    started = time.monotonic()
    report, checkpoint = sync_region(s3, Association(region, bucket, prefix, fsx_path), open_sink(catalog), fsx=fsx,
                                     file_system_id=FILE_SYSTEM if fsx_path else None, sleep=lambda _: None,
                                     references=References(s3, references) if references else None)
    return {"region": region, "documents": report.documents, "seconds": time.monotonic() - started,
            "unreferenced": checkpoint.unreferenced}


def mirror(location: str, region: str, to_region: str, port: int) -> dict[str, Any]:
    """Copy the reference sets (or, storage `s3`, the dataset) under `location` from `region`'s storage into
    `to_region`'s (same bucket and keys): the floor runs everything, storage included, in one region."""
    from local_platform.data import create_bucket

    source, target = s3_client(region, port), s3_client(to_region, port)
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    create_bucket(target, bucket, to_region)
    copied = 0
    for page in source.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Contents", []):
            if "/pieces/" not in entry["Key"]:  # the sets are what workers read
                body = source.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                target.put_object(Bucket=bucket, Key=entry["Key"], Body=body)
                copied += 1
    return {"copied": copied}


def wait_for_cluster(scheduler: str, workers: int, timeout: float) -> dict[str, Any]:
    from distributed import Client

    with Client(scheduler, timeout=timeout) as client:  # type: ignore[no-untyped-call]
        client.wait_for_workers(workers, timeout=timeout)
        return {"workers": sorted(client.scheduler_info(n_workers=-1)["workers"])}


def checksum(*arrays: Any) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(array.values.tobytes())
    return digest.hexdigest()[:16]


def analyse(mode: str, scheduler: str, catalog: str, s3_port: int) -> dict[str, Any]:
    """The reference analysis, timed by phase from opening the data to holding its maps in the client region.
    local: the floor, everything in one region; pinned: the router keeps every task in its data's region;
    unpinned: the scheduler only observes, so tasks go wherever plain Dask puts them; naive: the notebook computes
    in its own process (AWS runs no Dask workers in the client region), pulling the raw data across. All open the
    data the same way (metadata read once, in its region). Pinned and the floor read what the catalog says the
    region's workers see (the dataset's path on the region's Lustre file system); a pool sees only its own
    region's, so plain Dask (unpinned), whose tasks land in any pool, and the notebook (naive), which mounts none,
    read the objects in the region's S3 instead."""
    import dask
    from distributed import Client

    import dask_regions as dr
    from dask_regions.climate import regrid
    from dask_regions.opening import REFERENCES_ATTRIBUTE
    from dask_regions.pools import fetch_as_completed

    with Client(scheduler, timeout=60) as client:  # type: ignore[no-untyped-call]
        found = dr.Catalog.open(catalog)
        months = found.find(variable="air_temperature_at_2_metres")
        stores = found.find(variable_id="tas", experiment_id="ssp585")  # one model per CMIP6 region
        since = dr.mark(client)
        started = time.monotonic()
        if mode in ("local", "pinned"):  # as the records say: each region's Lustre file system
            openings = {"era5": partial(dr.open_mfdataset, client, months, concat_dim="time0")}
            openings |= {store.path: partial(dr.open_dataset, client, store) for store in stores}
        else:
            openings = {"era5": partial(dr.open_mfdataset, client, [m.s3_uri for m in months], concat_dim="time0",
                                        region=months[0].region,
                                        storage_options=storage_options(months[0].region, s3_port))}
            openings |= {store.path: partial(dr.open_dataset, client, store.s3_uri, region=store.region,
                                             storage_options=storage_options(store.region, s3_port))
                         for store in stores}
        datasets = dr.open_all(openings)
        era5, models = datasets.pop("era5"), list(datasets.values())
        opened = time.monotonic()
        # The benchmark's analysis: the time-mean map of ERA5 and of each model's 2090-2100 (regridded onto ERA5's
        # grid by interpolation), and the ensemble's mean difference. As AWS deploys there is no pool in the client
        # region, so each map is computed next to its data and fetched as soon as it is done, and the difference is
        # taken here, on the client (as `dr.compute_near_data` does): each map crosses once and nothing else does.
        historical = era5.air_temperature_at_2_metres.mean("time0")
        regridded = [regrid(model.tas.sel(time=slice("2090", "2100")).mean("time"), historical) for model in models]
        if mode == "naive":
            maps = list(dask.compute(historical, *regridded,  # type: ignore[attr-defined,no-untyped-call]
                                     scheduler="threads"))
            computed = time.monotonic()
        else:
            futures = client.compute([historical, *regridded])
            done: list[float] = []
            for future in futures:  # "compute" ends when the last map is computed; its fetch is the "gather"
                future.add_done_callback(lambda _: done.append(time.monotonic()))
            maps = list(fetch_as_completed({str(i): future for i, future in enumerate(futures)}).values())
            computed = min([max(done, default=time.monotonic()), time.monotonic()])
        result_bytes = sum(int(m.nbytes) for m in maps)  # the reduced results that must cross to the client region
        maps.append(sum(maps[1:]) / len(regridded) - maps[0])
        finished = time.monotonic()
        report = dr.audit(client, since)
    return {"mode": mode, "wall_seconds": finished - started,
            "era5_opened_from": "references" if REFERENCES_ATTRIBUTE in era5.attrs else "files",
            "phases": {"open": opened - started, "compute": computed - opened, "gather": finished - computed},
            "input_bytes": int(era5.air_temperature_at_2_metres.nbytes + sum(m.tas.nbytes for m in models)),
            "result_bytes": result_bytes, "checksum": checksum(*maps), "models": len(models),
            "mean_difference_kelvin": float(maps[-1].mean()), "audit_bytes": report.bytes_across_regions,
            "audit_pairs": {f"{a} -> {b}": size for (a, b), size in report.bytes_between_pools.items()},
            "tasks": report.tasks, "regional_tasks": report.regional, "misplaced_tasks": len(report.misplaced),
            "ambiguous_tasks": len(report.ambiguous), "combining_tasks": report.combining,
            "placement": report.placement}


def probe(scheduler: str, region: str, tasks: int, seconds: float, timeout: float) -> dict[str, Any]:
    """A computation that needs `region` alone: `tasks` tasks of `seconds` each on data tagged with the region (the
    router pins them to its pool), summed. Its result, or the error the user gets, and when (wall clock, so that
    bench/faults.py can set it against the moment of its fault); past `timeout`, a hang."""
    import numpy as np
    from distributed import Client

    import dask_regions as dr

    def slow(block: Any) -> Any:
        time.sleep(seconds)
        return block

    with Client(scheduler, timeout=60) as client:  # type: ignore[no-untyped-call]
        submitted = time.time()
        future = client.compute(dr.from_array(region, np.ones((tasks, 4)), chunks=(1, 4)).map_blocks(slow).sum())
        try:
            value, error = float(future.result(timeout=timeout)), None
        except TimeoutError:
            value, error = None, f"hang: no result and no error within {timeout:.0f} s"
        except Exception as failure:  # what the user sees is the measurement
            value, error = None, f"{type(failure).__name__}: {failure}"
        return {"region": region, "submitted": submitted, "ended": time.time(), "correct": value == tasks * 4,
                "error": error}


def catalog_state(catalog: str, region: str | None, s3_port: int) -> dict[str, Any]:
    """What a fault must not lose (bench/catalog_check.py): a digest of the catalog's documents and, for `region`,
    the reference sets its documents name that its storage lacks."""
    import dask_regions as dr

    opened = dr.Catalog.open(catalog)
    documents = catalog_check.documents(opened)
    digest = hashlib.sha256(json.dumps(documents, sort_keys=True, default=str).encode()).hexdigest()[:16]
    missing = catalog_check.missing_sets(opened.find(), partial(s3_client, port=s3_port), region) if region else []
    return {"documents": len(documents), "digest": digest, "missing_sets": missing}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    port = commands.add_parser("wait-port")
    port.add_argument("--port", type=int, required=True)
    port.add_argument("--timeout", type=float, default=60)
    put = commands.add_parser("upload")
    put.add_argument("--staging", type=Path, required=True)
    for command in (put, nightly := commands.add_parser("sync")):
        command.add_argument("--bucket", required=True)
        command.add_argument("--prefix", default="")
        command.add_argument("--region", required=True)
        command.add_argument("--s3-port", type=int, required=True)
    nightly.add_argument("--fsx-path", default=None, help="the association's path; none: storage s3")
    nightly.add_argument("--catalog", required=True)
    nightly.add_argument("--fsx-root", type=Path, required=True)
    nightly.add_argument("--references", default=None, help="s3://bucket[/prefix] for the reference sets")
    copy = commands.add_parser("mirror")
    copy.add_argument("--location", required=True)
    copy.add_argument("--region", required=True)
    copy.add_argument("--to-region", required=True)
    copy.add_argument("--s3-port", type=int, required=True)
    cluster = commands.add_parser("wait-cluster")
    cluster.add_argument("--scheduler", required=True)
    cluster.add_argument("--workers", type=int, required=True)
    cluster.add_argument("--timeout", type=float, default=120)
    run = commands.add_parser("analyse")
    run.add_argument("--mode", choices=MODES, required=True)
    run.add_argument("--scheduler", required=True)
    run.add_argument("--catalog", required=True)
    run.add_argument("--s3-port", type=int, required=True)
    check = commands.add_parser("probe")
    check.add_argument("--scheduler", required=True)
    check.add_argument("--region", required=True)
    check.add_argument("--tasks", type=int, default=40)
    check.add_argument("--seconds", type=float, default=0.5)
    check.add_argument("--timeout", type=float, default=600)
    state = commands.add_parser("catalog-state")
    state.add_argument("--catalog", required=True)
    state.add_argument("--region", default=None)
    state.add_argument("--s3-port", type=int, required=True)
    a = parser.parse_args(argv)
    if a.command == "wait-port":
        result = wait_for_port(a.port, a.timeout)
    elif a.command == "upload":
        result = upload(a.staging, a.bucket, a.prefix, a.region, a.s3_port)
    elif a.command == "sync":
        result = sync(a.bucket, a.prefix, a.fsx_path, a.region, a.s3_port, a.catalog, a.fsx_root, a.references)
    elif a.command == "mirror":
        result = mirror(a.location, a.region, a.to_region, a.s3_port)
    elif a.command == "wait-cluster":
        result = wait_for_cluster(a.scheduler, a.workers, a.timeout)
    elif a.command == "probe":
        result = probe(a.scheduler, a.region, a.tasks, a.seconds, a.timeout)
    elif a.command == "catalog-state":
        result = catalog_state(a.catalog, a.region, a.s3_port)
    else:
        result = analyse(a.mode, a.scheduler, a.catalog, a.s3_port)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
