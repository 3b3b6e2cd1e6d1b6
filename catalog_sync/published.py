"""The last published dataset count of each region, kept outside the catalog: the shrink guard compares a new
load with it, so that a catalog that lost its indices (a restarted or rebuilt domain) does not turn the guard off
(it would compare with 0). In AWS an SSM parameter per region; locally, or from the CLI, a JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from catalog_sync.environment import PUBLISHED_COUNT_PARAMETER as PARAMETER_VARIABLE


class PublishedCounts(Protocol):
    def get(self, region: str) -> int | None: ...

    def put(self, region: str, count: int) -> None: ...


class FileCounts:
    """{region: count} in a JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, int]:
        try:
            return {str(k): int(v) for k, v in json.loads(self.path.read_text()).items()}
        except FileNotFoundError:
            return {}

    def get(self, region: str) -> int | None:
        return self._read().get(region)

    def put(self, region: str, count: int) -> None:
        counts = {**self._read(), region: count}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(counts, sort_keys=True))
        temporary.replace(self.path)


class SsmCounts:
    """One region's count in an SSM parameter (the program creates it with the value "none")."""

    def __init__(self, client: Any, name: str) -> None:
        self.client, self.name = client, name

    def get(self, region: str) -> int | None:
        value = self.client.get_parameter(Name=self.name)["Parameter"]["Value"]
        return int(value) if value.isdigit() else None

    def put(self, region: str, count: int) -> None:
        self.client.put_parameter(Name=self.name, Value=str(count), Type="String", Overwrite=True)


def counts_from_environment(client_factory: Any) -> PublishedCounts | None:
    name = os.environ.get(PARAMETER_VARIABLE)
    return SsmCounts(client_factory("ssm"), name) if name else None
