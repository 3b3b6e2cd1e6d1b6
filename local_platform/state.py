"""What a running local platform leaves in its state directory: the names of its files, said once, and the
record of what it started (`PlatformState`), read by the CLI, the agent and the demo."""

from __future__ import annotations

import dataclasses
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


def size_key(pool: str, user: str | None) -> str:
    """A pool's key in the sizes files: its name, or `<user>:<pool>` for a user's own pool (client.users: every user
    has a pool of each name)."""
    return f"{user}:{pool}" if user else pool


class UnknownUserError(ValueError):
    """`--user` names no user of the platform, or is missing on a platform of users."""


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
    # client.users: each user's own cluster (scheduler_address, dashboard_url, scheduler_service, tls_dir: as above
    # for the team's) and who they are to the broker (role: their notebook role's name; broker: the function)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    agent_endpoint: str = ""  # the local agent's HTTP address (task metadata, and the broker's function URL)
    user: str | None = None  # set by for_user: whose view this is (never saved)

    def for_user(self, user: str | None) -> PlatformState:
        """The platform as `user` sees it: their own cluster's scheduler, certificates and logs (None: the team's,
        on a stack without client.users). An unknown user, or none on a platform of users, is an UnknownUserError
        naming the users."""
        if user is None and not self.users:
            return self
        if user not in self.users:
            known = ", ".join(sorted(self.users))
            what = "--user is needed" if user is None else f"no user {user!r} on this platform"
            raise UnknownUserError(f"{what} (users: {known}). Fix: --user <one of them>" if self.users else
                                   f"{what}; its stack has no client.users. Fix: leave out --user")
        cluster = self.users[user]
        return dataclasses.replace(self, scheduler_address=cluster["scheduler_address"],
                                   dashboard_url=cluster["dashboard_url"], tls_dir=cluster["tls_dir"],
                                   scheduler_service=cluster["scheduler_service"], users={},
                                   user=user)

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

    def log_dir(self) -> Path:
        """Where the servers' logs are: a user's own directory, on a stack with client.users."""
        logs = Path(self.state_dir).resolve() / "logs"
        return logs / self.user if self.user else logs

    def client_environment(self) -> dict[str, str]:
        """What a shell or kernel needs to reach this platform (`python -m local_platform env`), as the team's
        kernel, or (`for_user`) as that user's own notebook kernel."""
        environment = {"DASK_SCHEDULER_ADDRESS": self.scheduler_address, "CATALOG_ENDPOINT": self.catalog,
                       LOG_DIR_VARIABLE: str(self.log_dir()), **self.tls.client_environment()}
        if self.scheduler_service:  # connect() starts a stopped scheduler through ECS: here, the AWS emulation
            handle = {k: v for k, v in self.scheduler_service.items() if k not in ("endpoint", "role")}
            environment |= {SCHEDULER_SERVICE_VARIABLE: json.dumps(handle, separators=(",", ":"), sort_keys=True),
                            "AWS_ENDPOINT_URL_ECS": self.scheduler_service["endpoint"],
                            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
        environment |= self.catalog_environment()
        if self.user:  # their notebook's role (the broker knows the caller by it); its URL from the local agent
            environment |= {"AWS_ACCESS_KEY_ID": self.scheduler_service["role"], "AWS_ENDPOINT_URL_LAMBDA":
                            self.agent_endpoint}
        return environment

    def save(self) -> None:
        assert self.user is None, "a user's view is not saved"
        (Path(self.state_dir) / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> PlatformState | None:
        path = state_dir / STATE_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None
