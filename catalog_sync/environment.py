"""The nightly sync function's environment, declared once: the Pulumi program writes it (`variables`, from
components/nightly_sync.py) and the handler reads it (`required`, `optional`). Every value is the stack's; nothing
read here has a fallback of its own (the drop limit is the stack's `syncMaxDropPercent`, always set)."""

from __future__ import annotations

import os
from typing import Any

FILE_SYSTEM_ID = "FILE_SYSTEM_ID"  # the region's FSx for Lustre file system
DATASET = "DATASET"  # s3://bucket[/prefix]: the region's dataset
FSX_PATH = "FSX_PATH"  # the association's file-system path; unset with storage `s3` (records point into the bucket)
CATALOG_ENDPOINT = "CATALOG_ENDPOINT"  # https://<domain>
CATALOG_REGION = "CATALOG_REGION"  # the domain's region, which signs requests (SigV4)
MAX_DROP = "MAX_DROP"  # the largest share of a region's datasets one sync may drop, a fraction (0.5 = 50%)
PUBLISHED_COUNT_PARAMETER = "PUBLISHED_COUNT_PARAMETER"  # the region's SSM parameter: its last published count
REFERENCES = "REFERENCES"  # s3://bucket[/prefix] the collections' reference sets are written under


def variables(*, file_system_id: Any, dataset: Any, fsx_path: Any, catalog_endpoint: Any, catalog_region: Any,
              max_drop_percent: int, published_count_parameter: Any, references: Any) -> dict[str, Any]:
    """The function's whole environment (values may be Pulumi outputs); without a file system (storage `s3`), no
    FILE_SYSTEM_ID nor FSX_PATH."""
    storage = {FILE_SYSTEM_ID: file_system_id, FSX_PATH: fsx_path} if file_system_id is not None else {}
    return {**storage, DATASET: dataset,
            CATALOG_ENDPOINT: catalog_endpoint, CATALOG_REGION: catalog_region, MAX_DROP: str(max_drop_percent / 100),
            PUBLISHED_COUNT_PARAMETER: published_count_parameter, REFERENCES: references}


class MissingSettingError(KeyError):
    """A variable the program sets is missing: the function was not deployed by this program's version."""


def required(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        raise MissingSettingError(f"the function's environment has no {name}: deploy the stack again (pulumi up), "
                                "which sets it") from None


def optional(name: str) -> str | None:
    return os.environ.get(name) or None
