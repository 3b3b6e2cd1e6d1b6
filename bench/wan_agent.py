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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.wan_network import hostname  # noqa: E402

MODES = ("local", "pinned", "unpinned", "naive")
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


def sync(bucket: str, prefix: str, fsx_path: str, region: str, port: int, catalog: str) -> dict[str, Any]:
    """The nightly job of the region (no FSx here: the data is read from the S3 emulation directly)."""
    from catalog_sync.records import Association
    from catalog_sync.sinks import open_sink
    from catalog_sync.sync import sync_region

    report, _ = sync_region(s3_client(region, port), Association(region, bucket, prefix, fsx_path),
                            open_sink(catalog))
    return {"region": region, "documents": report.documents}


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


def analyse(mode: str, scheduler: str, catalog: str, s3_port: int, storage_region: str | None = None
            ) -> dict[str, Any]:
    """The reference analysis, timed by phase from opening the data to holding the three maps in the client region.
    local: the floor, everything in one region; pinned: the router keeps every task in its data's region;
    unpinned: the scheduler only observes, so tasks go wherever plain Dask puts them; naive: the notebook computes
    in its own process (AWS runs no Dask workers in the client region), pulling the raw data across. All open the
    data the same way (metadata read once, in its region). `storage_region`: the region whose storage holds every
    object, for the floor (each dataset still opened and computed by its own region's pool)."""
    import dask
    from distributed import Client, wait

    import dask_regions as dr
    from dask_regions.climate import regrid

    with Client(scheduler, timeout=60) as client:  # type: ignore[no-untyped-call]
        found = dr.Catalog.open(catalog)
        months = found.find(variable="air_temperature_at_2_metres")
        (store,) = found.find(variable_id="tas", experiment_id="ssp585")
        era5_storage, cmip6_storage = storage_region or months[0].region, storage_region or store.region
        since = dr.mark(client)
        started = time.monotonic()
        era5 = dr.open_mfdataset(client, [m.s3_uri for m in months], region=months[0].region, concat_dim="time0",
                                 storage_options=storage_options(era5_storage, s3_port))
        cmip6 = dr.open_dataset(client, store.s3_uri, region=store.region,
                                storage_options=storage_options(cmip6_storage, s3_port))
        opened = time.monotonic()
        # The benchmark's analysis: time-mean maps (as its committed results measured), regridded by interpolation,
        # and their difference. As AWS deploys there is no pool in the client region, so the two maps are computed
        # next to their data and fetched, and the difference is taken here, on the client (as
        # `dr.compute_near_data` does): each map crosses once and nothing else does.
        historical = era5.air_temperature_at_2_metres.mean("time0")
        regridded = regrid(cmip6.tas.sel(time=slice("2090", "2100")).mean("time"), historical)
        if mode == "naive":
            maps = list(dask.compute(historical, regridded,  # type: ignore[attr-defined,no-untyped-call]
                                     scheduler="threads"))
            computed = time.monotonic()
        else:
            futures = client.compute([historical, regridded])
            wait(futures)  # type: ignore[no-untyped-call]
            computed = time.monotonic()
            maps = client.gather(futures)
        maps.append(maps[1] - maps[0])
        finished = time.monotonic()
        report = dr.audit(client, since)
    result_bytes = int(maps[0].nbytes + maps[1].nbytes)  # the reduced results that must cross to the client region
    return {"mode": mode, "wall_seconds": finished - started,
            "phases": {"open": opened - started, "compute": computed - opened, "gather": finished - computed},
            "input_bytes": int(era5.air_temperature_at_2_metres.nbytes + cmip6.tas.nbytes),
            "result_bytes": result_bytes, "checksum": checksum(*maps),
            "mean_difference_kelvin": float(maps[2].mean()), "audit_bytes": report.bytes_across_regions,
            "audit_pairs": {f"{a} -> {b}": size for (a, b), size in report.bytes_between_pools.items()},
            "tasks": report.tasks, "regional_tasks": report.regional, "misplaced_tasks": len(report.misplaced),
            "ambiguous_tasks": len(report.ambiguous), "combining_tasks": report.combining,
            "placement": report.placement}


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
    nightly.add_argument("--fsx-path", required=True)
    nightly.add_argument("--catalog", required=True)
    cluster = commands.add_parser("wait-cluster")
    cluster.add_argument("--scheduler", required=True)
    cluster.add_argument("--workers", type=int, required=True)
    cluster.add_argument("--timeout", type=float, default=120)
    run = commands.add_parser("analyse")
    run.add_argument("--mode", choices=MODES, required=True)
    run.add_argument("--scheduler", required=True)
    run.add_argument("--catalog", required=True)
    run.add_argument("--s3-port", type=int, required=True)
    run.add_argument("--storage-region", default=None)
    a = parser.parse_args(argv)
    if a.command == "wait-port":
        result = wait_for_port(a.port, a.timeout)
    elif a.command == "upload":
        result = upload(a.staging, a.bucket, a.prefix, a.region, a.s3_port)
    elif a.command == "sync":
        result = sync(a.bucket, a.prefix, a.fsx_path, a.region, a.s3_port, a.catalog)
    elif a.command == "wait-cluster":
        result = wait_for_cluster(a.scheduler, a.workers, a.timeout)
    else:
        result = analyse(a.mode, a.scheduler, a.catalog, a.s3_port, a.storage_region)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
