"""What a running local platform leaves in its state directory: the names of its files, said once, and the
record of what it started (`PlatformState`), read by the CLI, the agent and the demo."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from local_platform.tls import LocalTls, load_local_tls
from platform_facts import CATALOG_S3_ENDPOINT_VARIABLE, LOG_DIR_VARIABLE, SCHEDULER_SERVICE_VARIABLE

STATE_FILE = "platform.json"
LOCK_FILE = ".starting.lock"  # held while `up` starts a platform: a second `up` is refused, not interleaved
CATALOG_FILE = "catalog.db"  # the SQLite catalog, when the platform runs without an OpenSearch stand-in
TWIN_FILE = "twin.json"  # what the agent runs: the declared services, functions and schedules, resolved here
SYNC_HISTORY_FILE = "sync-history.jsonl"  # one line per state machine execution
SIZES_FILE = "pool-sizes.json"  # the live worker processes per pool now
HISTORY_FILE = "pool-history.jsonl"  # one line per change: time and sizes


def read_twin(state_dir: Path | str) -> dict[str, Any]:
    """What the agent of the platform in `state_dir` runs: its `twin.json` (services, functions, schedules)."""
    twin: dict[str, Any] = json.loads((Path(state_dir) / TWIN_FILE).read_text())
    return twin


@dataclass
class PlatformState:
    stack: str
    state_dir: str
    catalog: str
    scheduler_address: str = ""
    dashboard_url: str = ""
    s3_endpoints: dict[str, str] = field(default_factory=dict)
    pools: list[str] = field(default_factory=list)
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {pid, command}
    tls_dir: str = ""  # this run's CA and certificates: every Dask connection is mutual TLS
    # the scheduler's ECS service in its region's AWS emulation, when it stops when idle (region, cluster, service,
    # endpoint)
    scheduler_service: dict[str, str] = field(default_factory=dict)
    # the S3 catalog (catalog.kind s3): its bucket's region and that region's AWS emulation
    catalog_region: str = ""
    catalog_s3_endpoint: str = ""

    def catalog_environment(self) -> dict[str, str]:
        """What a process needs to read or write this platform's S3 catalog (nothing for the other catalogs)."""
        if not self.catalog_s3_endpoint:
            return {}
        return {CATALOG_S3_ENDPOINT_VARIABLE: self.catalog_s3_endpoint, "CATALOG_REGION": self.catalog_region,
                "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}

    def open_catalog(self) -> Any:
        """The platform's catalog, as a notebook opens it."""
        import os

        import dask_regions as dr

        os.environ.update(self.catalog_environment())  # read as the reader's S3 client is made
        return dr.Catalog.open(self.catalog, self.catalog_region or None)

    @property
    def tls(self) -> LocalTls:
        return load_local_tls(Path(self.tls_dir))

    def client_environment(self) -> dict[str, str]:
        """What a shell or kernel needs to reach this platform (`python -m local_platform env`)."""
        environment = {"DASK_SCHEDULER_ADDRESS": self.scheduler_address, "CATALOG_ENDPOINT": self.catalog,
                       LOG_DIR_VARIABLE: str(Path(self.state_dir).resolve() / "logs"), **self.tls.client_environment()}
        if self.scheduler_service:  # connect() starts a stopped scheduler through ECS: here, the AWS emulation
            handle = {k: v for k, v in self.scheduler_service.items() if k != "endpoint"}
            environment |= {SCHEDULER_SERVICE_VARIABLE: json.dumps(handle, separators=(",", ":"), sort_keys=True),
                            "AWS_ENDPOINT_URL_ECS": self.scheduler_service["endpoint"],
                            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
        return environment | self.catalog_environment()

    def save(self) -> None:
        (Path(self.state_dir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> PlatformState | None:
        path = state_dir / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None
