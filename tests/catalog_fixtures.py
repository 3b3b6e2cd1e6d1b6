"""Object listings shaped like the real public buckets, and a moto S3 server on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from catalog_sync.grouping import ObjectInfo

CMIP6_PREFIX = "CMIP6/ScenarioMIP/MOHC"
CMIP6_STORES = [f"{CMIP6_PREFIX}/UKESM1-0-LL/{experiment}/r1i1p1f2/Amon/{variable}/gn/v20190507"
                for experiment in ("ssp126", "ssp585") for variable in ("pr", "tas")]
ERA5_VARIABLES = ("air_temperature_at_2_metres", "precipitation_amount_1hour_Accumulation")
BASE_TIME = datetime(2024, 5, 1, tzinfo=UTC)


def cmip6_keys(chunks: int = 6) -> list[str]:
    keys = []
    for store in CMIP6_STORES:
        variable = store.split("/")[-3]
        keys += [f"{store}/.zattrs", f"{store}/.zgroup", f"{store}/.zmetadata"]
        for array in (variable, "time", "lat", "lon"):
            keys += [f"{store}/{array}/.zarray", f"{store}/{array}/.zattrs"]
        keys += [f"{store}/{variable}/{i}.0.0" for i in range(chunks)]
    keys += [f"{CMIP6_PREFIX}/README.txt"]
    return sorted(keys)


def era5_keys(years: tuple[int, ...] = (2021, 2022)) -> list[str]:
    keys = []
    for year in years:
        for month in range(1, 13):
            keys.append(f"{year}/{month:02d}/main.nc")
            keys += [f"{year}/{month:02d}/data/{variable}.nc" for variable in ERA5_VARIABLES]
    keys += ["2022/01/data/sea_surface_temperature.zarr/.zgroup",
             "2022/01/data/sea_surface_temperature.zarr/sst/.zarray",
             "2022/01/data/sea_surface_temperature.zarr/sst/0.0"]
    return sorted(keys)


def objects(keys: list[str], size: int = 100) -> list[ObjectInfo]:
    return [ObjectInfo(key, size + i, BASE_TIME + timedelta(minutes=i)) for i, key in enumerate(sorted(keys))]


class FakeS3:
    """A listing-only S3 client over an in-memory list (for tests of the logic, not of boto3)."""

    def __init__(self, bucket: str, items: list[ObjectInfo]) -> None:
        self.bucket, self.items = bucket, sorted(items, key=lambda o: o.key)
        self.pages = 0

    def get_paginator(self, _: str) -> FakeS3:
        return self

    def paginate(self, Bucket: str, Prefix: str, PaginationConfig: dict[str, int],  # noqa: N803 (boto3 names)
                 StartAfter: str = "") -> Iterator[dict[str, Any]]:  # noqa: N803
        assert Bucket == self.bucket
        chosen = [o for o in self.items if o.key.startswith(Prefix) and o.key > StartAfter]
        size = PaginationConfig["PageSize"]
        for start in range(0, len(chosen), size):
            self.pages += 1
            yield {"Contents": [{"Key": o.key, "Size": o.size, "LastModified": o.last_modified}
                                for o in chosen[start:start + size]]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def moto_environment() -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ[key] = value


def s3_client(endpoint: str, region: str = "us-east-1") -> Any:
    return boto3.client("s3", region_name=region, endpoint_url=endpoint)
