"""`dask_regions.connect()`: from a notebook to the platform in one call.

It reads where the platform is from the kernel's environment (the "Dask platform" kernel sets the scheduler
address, the catalog endpoint and the client certificate), or from a stack's outputs, checks the connection
before Dask tries it (so a missing certificate, a wrong CA, `tcp://` to a TLS scheduler or a scheduler that is
down each get one sentence, not a timeout), starts the scheduler if it stopped when idle (dask_regions.idle),
connects, runs Dask's own version check, and returns a small object
in the style of Dask's cluster managers.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import socket
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask.config
from distributed.core import Status
from distributed.deploy.cluster import Cluster

from dask_regions.budget import guard
from dask_regions.catalog import Catalog
from dask_regions.demand import BOUNDS_HANDLER, pool_demand
from dask_regions.errors import ConnectError, VersionMismatchError
from dask_regions.idle import OBSERVER, SchedulerService, start_scheduler
from dask_regions.startup import missing_message, platform_on_scheduler
from dask_regions.versions import check_versions
from platform_facts import (
    LOG_DIR_VARIABLE,
    LOG_GROUPS_VARIABLE,
    REGION_PATTERN,
    is_pool,
    pool_of_region,
    region_of_pool,
)

LOG_LINES = 200
TLS_KEYS = {"ca": "distributed.comm.tls.ca-file", "cert": "distributed.comm.tls.client.cert",
            "key": "distributed.comm.tls.client.key"}


def connect(outputs: Mapping[str, Any] | str | Path | None = None, *, timeout: float = 10.0,
            compare_versions: bool = True, observer: bool = False, user: str | None = None) -> Platform:
    """Connect to the platform. `outputs`: a stack's outputs (`pulumi stack output --json`, as a mapping or a
    file), else the kernel's environment (DASK_SCHEDULER_ADDRESS, CATALOG_ENDPOINT, and the client certificate
    in Dask's TLS settings). A scheduler stopped when idle is started, and waited for. `compare_versions=False`
    skips Dask's version comparison, for a process that computes nothing (the Jupyter server's Dask sidebar, whose
    Python is SageMaker's). `observer=True` (the sidebar): a stopped scheduler stays stopped, and the connection
    does not keep the scheduler from stopping when idle. `user`: with a stack of `client.users`, whose own cluster
    to connect to (the outputs' `userClusters`; their notebook's kernel needs no outputs: it is set up for them)."""
    from distributed import Client

    outputs = _read_outputs(outputs) if isinstance(outputs, str | Path) else outputs
    outputs = for_user(outputs, user)
    address, catalog, log_groups = _locations(outputs)
    secret = outputs.get("clientTlsSecret") if isinstance(outputs, Mapping) else None
    if secret and address.startswith("tls://") and not all(dask.config.get(k, None) for k in TLS_KEYS.values()):
        _use_certificate_from(secret)
    tls = _tls_files(address)
    _reach(address, tls, timeout, None if observer else _scheduler_service(outputs))
    try:
        client = Client(address, timeout=timeout, set_as_default=not observer,  # type: ignore[no-untyped-call]
                        name=OBSERVER if observer else None)
    except (OSError, TimeoutError) as error:  # preflight passed: something between the handshake and Dask's hello
        raise ConnectError(f"the scheduler at {address} accepted the connection but Dask's handshake failed: "
                                f"{error}") from None
    guard(client)  # the crossing budget, when one is set (dask_regions.budget)
    try:
        if compare_versions:
            check_versions(client)  # Dask's own comparison, over Dask's packages and the platform's
        check_platform(client, _stack_regions(outputs))
    except (VersionMismatchError, ConnectError):
        client.close()  # type: ignore[no-untyped-call]
        raise
    return Platform(client, catalog, log_groups=log_groups, log_dir=os.environ.get(LOG_DIR_VARIABLE))


def for_jupyterlab(outputs: Mapping[str, Any] | str | Path | None = None, *, asynchronous: bool = False,
                   timeout: float = 10.0) -> Any:
    """dask-labextension's cluster factory (`labextension.factory` in the Jupyter server's Dask config): the
    platform, connected as connect() connects, without the version comparison: the Jupyter server lists, scales and
    opens the dashboard, and computes nothing. The extension calls it with `asynchronous=True` on the Jupyter
    server's event loop and awaits the result; the connection is then made in a thread, so that the server keeps
    answering while it waits. It connects as an observer: it neither starts a stopped scheduler nor keeps one from
    stopping when idle (the kernel's connect() does start it)."""
    if not asynchronous:
        return connect(outputs, timeout=timeout, compare_versions=False, observer=True)

    def connected() -> Platform:
        platform = connect(outputs, timeout=timeout, compare_versions=False, observer=True)
        platform.awaited_close = True
        return platform

    return asyncio.get_running_loop().run_in_executor(None, connected)


class Adapting(dict[str, Any]):
    """What `Platform.adapt()` returns for every pool: region -> the pool's figure, with the `minimum` and `maximum`
    asked for, as Dask's `Adaptive` has them (dask-labextension reads them)."""

    def __init__(self, figures: Mapping[str, Any], minimum: int | None, maximum: int | None) -> None:
        super().__init__(figures)
        self.minimum, self.maximum = minimum, maximum


def check_platform(client: Any, regions: list[str] | None = None) -> dict[str, Any]:
    """The router's settings, once the scheduler is shown to run the router and the demand plugin and (given the
    stack's worker regions) to route for exactly those regions; otherwise a ConnectError saying what to fix."""
    address = client.scheduler.address
    try:
        found = client.run_on_scheduler(platform_on_scheduler)
    except Exception as error:  # e.g. a scheduler without dask_regions installed cannot unpickle the question
        raise ConnectError(f"the scheduler at {address} cannot say whether it runs the platform's plugins "
                           f"({type(error).__name__}: {error}). Fix: run the platform's image (dask_regions "
                           "installed, its preloads loaded)") from None
    if found["missing"]:
        raise ConnectError(missing_message(address, found["missing"]))
    routed = found["router"]["regions"]
    if regions is not None and sorted(regions) != routed:
        raise ConnectError(f"the scheduler at {address} routes for regions {', '.join(routed) or 'none'}, but the "
                           f"stack's outputs name {', '.join(sorted(regions))}. Fix: pass this stack's outputs, or "
                           "deploy the stack again (pulumi up) so that its scheduler knows every worker region")
    return dict(found["router"])


def for_user(outputs: Mapping[str, Any] | None, user: str | None) -> Mapping[str, Any] | None:
    """A stack's outputs as `user`'s own cluster's: its scheduler, service, logs and client certificate."""
    clusters = outputs.get("userClusters") if isinstance(outputs, Mapping) else None
    if not isinstance(clusters, Mapping):
        if user is not None:
            raise ConnectError(f"user {user!r}: the stack has no users (no userClusters output): everyone shares "
                               "its one cluster. Fix: connect() without user=, or add client.users to the stack")
        return outputs
    assert outputs is not None
    if user is None or user not in clusters:
        known = ", ".join(sorted(clusters)) or "none"
        what = "no user given" if user is None else f"no user {user!r} in the stack"
        raise ConnectError(f"{what}: each user of this stack has a cluster of their own ({known}). Fix: "
                           "connect(outputs, user='<your name>'), or use your notebook's 'Dask platform' kernel")
    cluster = clusters[user]
    return {**outputs, "schedulerAddress": cluster["schedulerAddress"],
            "schedulerService": cluster["schedulerService"], "logGroups": cluster["logGroups"],
            "clientTlsSecret": cluster["tlsSecret"]}


def _stack_regions(outputs: Mapping[str, Any] | None) -> list[str] | None:
    """The worker regions a stack's outputs name (`workerPools`), or None when they name none."""
    pools = outputs.get("workerPools") if isinstance(outputs, Mapping) else None
    return sorted(pools) if isinstance(pools, Mapping) else None


def _read_outputs(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConnectError(f"cannot read the stack outputs {path}: {error}. Fix: pass the file "
                           "`pulumi stack output --json > outputs.json` wrote") from None


def _use_certificate_from(secret: Mapping[str, Any]) -> None:
    """Fetch the platform's client certificate (the secret the notebook's start script also reads: JSON with
    `ca`, `cert`, `key`) into a private directory and use it in this process."""
    import tempfile

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = boto3.client("secretsmanager", region_name=secret["region"]).get_secret_value(
            SecretId=secret["arn"])["SecretString"]
        pems = json.loads(value)
        missing = {"ca", "cert", "key"} - set(pems)
        if missing:
            raise ValueError(f"the secret has no {', '.join(sorted(missing))}")
    except (BotoCoreError, ClientError, KeyError, ValueError) as error:
        raise ConnectError(f"cannot read the platform's client certificate {secret.get('arn')}: {error}. Fix: use "
                           "credentials that may secretsmanager:GetSecretValue on it, or configure a "
                           "certificate (DASK_DISTRIBUTED__COMM__TLS__*)") from None
    directory = Path(tempfile.mkdtemp(prefix="dask-platform-tls-"))  # 0700
    for name in ("ca", "cert", "key"):
        path = directory / f"{name}.pem"
        path.touch(mode=0o600)
        path.write_text(pems[name])
    dask.config.set({key: str(directory / f"{name}.pem") for name, key in TLS_KEYS.items()})


def _locations(outputs: Mapping[str, Any] | None) -> tuple[str, str | None, dict[str, Any]]:
    if outputs is not None:
        if not isinstance(outputs, Mapping) or "schedulerAddress" not in outputs:
            raise ConnectError("the stack outputs have no schedulerAddress. Fix: pass the whole "
                                    "`pulumi stack output --json` of a deployed stack")
        return str(outputs["schedulerAddress"]), outputs.get("catalogEndpoint"), dict(outputs.get("logGroups") or {})
    address = os.environ.get("DASK_SCHEDULER_ADDRESS") or dask.config.get("scheduler-address", None)
    if not address:
        raise ConnectError("no scheduler address: DASK_SCHEDULER_ADDRESS is not set. Fix: use the 'Dask "
                                "platform' kernel, run `eval $(python -m local_platform env)` for the local "
                                "platform, or pass connect(outputs=...)")
    try:
        groups = json.loads(os.environ.get(LOG_GROUPS_VARIABLE) or "{}")
    except ValueError:
        raise ConnectError(f"{LOG_GROUPS_VARIABLE} is not JSON. Fix: restart the notebook (its start script sets "
                           "it) or unset it") from None
    return str(address), os.environ.get("CATALOG_ENDPOINT"), groups


def _tls_files(address: str) -> dict[str, str]:
    files = {name: dask.config.get(key, None) for name, key in TLS_KEYS.items()}
    if not address.startswith("tls://"):
        return {}
    missing = [name for name, value in files.items() if not value]
    if missing:
        raise ConnectError(
            f"the scheduler {address} needs a client certificate, and no {', '.join(missing)} is configured. Fix: "
            "use the 'Dask platform' kernel (it fetches the certificate at start), or set "
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, __CLIENT__CERT and __CLIENT__KEY")
    for name, value in files.items():
        if not Path(str(value)).is_file():
            raise ConnectError(f"the client {name} file {value} does not exist. Fix: restart the notebook "
                                    "(its start script fetches the certificate) or point the setting at the file")
    return {name: str(value) for name, value in files.items()}


def _scheduler_service(outputs: Mapping[str, Any] | None) -> SchedulerService | None:
    """The scheduler's ECS service, when it may be stopped and started (a stack's outputs, or the kernel's)."""
    if outputs is None:
        return SchedulerService.from_environment()
    return SchedulerService.from_mapping(outputs.get("schedulerService") or {})


def _reach(address: str, tls: Mapping[str, str], timeout: float, service: SchedulerService | None) -> None:
    """The preflight; a scheduler that does not answer and may be stopped (its service is known) is started and
    waited for (dask_regions.idle.start_scheduler), saying so."""
    try:
        preflight(address, tls, timeout)
        return
    except ConnectError as error:
        if service is None or not error.down:
            raise

    def answers() -> bool:
        try:
            preflight(address, tls, min(timeout, 5.0))
        except ConnectError as error:
            if error.down:
                return False
            raise
        return True

    start_scheduler(service, answers)


def preflight(address: str, tls: Mapping[str, str], timeout: float) -> None:
    """Open the connection Dask would open, and say plainly why it cannot be made."""
    scheme, _, where = address.partition("://")
    host, _, port_text = where.rpartition(":")
    if scheme not in ("tls", "tcp") or not host or not port_text.isdigit():
        raise ConnectError(f"{address!r} is not a scheduler address. Fix: tls://<host>:<port>")
    try:
        raw = socket.create_connection((host, int(port_text)), timeout=timeout)
    except socket.gaierror:  # also a stopped scheduler in AWS: its name leaves DNS with its task
        raise ConnectError(f"the scheduler's name {host} does not resolve here. Fix: run in a VPC of the "
                           "platform (the name is private to it); if the scheduler was stopped, start its service",
                           down=True) from None
    except ConnectionRefusedError:
        raise ConnectError(f"nothing listens at {host}:{port_text}: the scheduler is down. Fix: check its "
                           "service (ECS) or start the local platform", down=True) from None
    except (TimeoutError, OSError) as error:
        raise ConnectError(f"no answer from {host}:{port_text} within {timeout:g} s ({error}). Fix: check "
                           "the routes and security groups (`python -m plan`)", down=True) from None
    with raw:
        if scheme == "tcp":
            if _speaks_tls(raw, host, timeout):
                raise ConnectError(f"the scheduler at {host}:{port_text} speaks TLS. Fix: use "
                                        f"tls://{host}:{port_text} with the platform's client certificate")
            return
        context = ssl.create_default_context(cafile=tls["ca"])
        context.check_hostname = False  # Dask itself checks the certificate chain, not the name
        context.load_cert_chain(tls["cert"], tls["key"])
        try:
            with context.wrap_socket(raw, server_hostname=host) as connection:
                connection.settimeout(timeout)
                connection.recv(1)
        except ssl.SSLCertVerificationError:
            raise ConnectError(f"the scheduler's certificate is not signed by your CA ({tls['ca']}): a wrong "
                                    "CA, or another platform's scheduler. Fix: use this stack's certificate") from None
        except (ssl.SSLError, ConnectionResetError):
            raise ConnectError(f"the scheduler at {host}:{port_text} refused your client certificate "
                                    f"({tls['cert']}): it is not from this platform's CA. Fix: use this stack's "
                                    "certificate") from None
        except TimeoutError:
            return  # the handshake held; Dask's own first message comes after ours


def _speaks_tls(raw: socket.socket, host: str, timeout: float) -> bool:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        with context.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False) as probe:
            probe.settimeout(timeout)
            probe.do_handshake()
    except ssl.SSLError as error:
        # A TLS server answers a ClientHello with TLS (here: asking for a certificate we do not send).
        return "WRONG_VERSION_NUMBER" not in str(error) and "record layer" not in str(error)
    except OSError:
        return False
    return True


class Platform(Cluster):
    """The connected platform, a Dask cluster (`distributed.deploy.Cluster`): `Client(platform)`,
    `platform.get_client()`, `scheduler_address`, `dashboard_link`, `name`, `scale(n)` and `adapt(minimum,
    maximum)` (every pool, or one with `region=`), `close()`, the HTML repr; and the catalog, the pools with their
    workers and the servers' logs. It shares its client's event loop and TLS settings."""

    def __init__(self, client: Any, catalog_endpoint: str | None, *, log_groups: Mapping[str, Any] | None = None,
                 log_dir: str | None = None, name: str = "dask-platform") -> None:
        self.client = client
        self.catalog_endpoint = catalog_endpoint
        self.log_groups = dict(log_groups or {})
        self.log_dir = log_dir
        self._catalog: Any = None
        self.awaited_close = False  # for_jupyterlab's: close() returns a future
        super().__init__(asynchronous=False, loop=client.loop if client is not None else None,  # type: ignore[no-untyped-call]
                         name=name)
        if client is None:  # only reading logs (tests, tools): nothing to connect
            self.status = Status.closed
            return
        from distributed.core import rpc

        self.security = client.security  # Client(platform) connects with it
        self.scheduler_comm = rpc(client.scheduler.address,  # type: ignore[no-untyped-call]
                                  connection_args=client.security.get_connection_args("client"))
        self.sync(self._start)  # type: ignore[no-untyped-call]

    def get_client(self) -> Any:
        """A client of the platform (the current one if it is the platform's), its graphs checked against the
        crossing budget as connect()'s are."""
        client = super().get_client()  # type: ignore[no-untyped-call]
        guard(client)
        return client

    @property
    def dashboard_link(self) -> str:
        return str(self.client.dashboard_link)

    @property
    def catalog(self) -> Any:
        """The dataset catalog (dask_regions.Catalog), opened on first use."""
        if self._catalog is None:
            if not self.catalog_endpoint:
                raise ConnectError("no catalog endpoint: CATALOG_ENDPOINT is not set and the outputs have no "
                                        "catalogEndpoint")
            self._catalog = Catalog.open(self.catalog_endpoint, domain_region(self.catalog_endpoint))
        return self._catalog

    def pools(self, figures: dict[str, dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
        """Region -> its live workers (name, address, threads, memory limit), from the scheduler."""
        # Configured pools are listed even when empty (a pool at rest has no workers).
        figures = pool_demand(self.client) if figures is None else figures
        found: dict[str, list[dict[str, Any]]] = {region_of_pool(pool): [] for pool in figures}
        for address, worker in sorted(self.client.scheduler_info(n_workers=-1)["workers"].items()):
            for resource in worker.get("resources", {}):
                if is_pool(resource):
                    found.setdefault(region_of_pool(resource), []).append({
                        "name": worker.get("name"), "address": address, "threads": worker.get("nthreads"),
                        "memory": worker.get("memory_limit")})
        return dict(sorted(found.items()))

    def scale(self, n: int, *, region: str | None = None) -> Any:
        """Keep `n` workers in `region`'s pool (without a region: in every pool), whatever its work, within the
        stack's bounds. Returns the pool's figure (without a region: region -> figure)."""
        _check_count("scale", n=n)
        return self._each_pool(region, n, n)

    def adapt(self, minimum: int | None = None, maximum: int | None = None, *,  # type: ignore[override]
              region: str | None = None, **_: Any) -> Any:
        """Let `region`'s pool (without a region: every pool) follow its work between `minimum` and `maximum`
        workers; without either, the stack's own bounds again. The scheduler's demand plugin does the adapting
        (Dask's client-side Adaptive is not used)."""
        _check_count("adapt", minimum=minimum, maximum=maximum)
        figures = self._each_pool(region, minimum, maximum)
        return figures if region is not None else Adapting(figures, minimum, maximum)

    def _each_pool(self, region: str | None, minimum: int | None, maximum: int | None) -> Any:
        if region is not None:
            return self._bounds(region, minimum, maximum)
        return {each: self._bounds(each, minimum, maximum) for each in self._configured_regions()}

    def _configured_regions(self) -> list[str]:
        return sorted(region_of_pool(pool) for pool in pool_demand(self.client))

    def _bounds(self, region: str, minimum: int | None, maximum: int | None) -> dict[str, Any]:
        """The demand plugin's per-pool bounds (dask_regions.demand): the figure that drives each region's scaling
        (CloudWatch and Auto Scaling in AWS, the local agent locally) stays within them."""
        try:
            answer = self.client.sync(getattr(self.client.scheduler, BOUNDS_HANDLER), pool=pool_of_region(region),
                                      minimum=minimum, maximum=maximum)
        except (KeyError, ValueError, AttributeError) as error:
            raise ConnectError(f"the scheduler does not size pools ({error}): it runs without "
                               "`--preload dask_regions.demand`") from None
        if not isinstance(answer, dict):
            raise ConnectError("the scheduler does not size pools: it runs without `--preload dask_regions.demand`")
        if "error" in answer:
            raise ValueError(answer["error"])
        return answer

    def get_logs(self, cluster: bool = True, scheduler: bool = True, workers: bool = True, *,
                 lines: int = LOG_LINES) -> dict[str, str]:
        """The servers' recent log lines, by process (the scheduler's, the workers' as Dask's `get_logs` flags
        choose; a platform has no cluster manager process): from CloudWatch in AWS, from the log files locally,
        else the lines the scheduler and each worker keep in memory."""
        if self.log_groups:
            logs = _cloudwatch_logs(self.log_groups, lines)
        elif self.log_dir:
            logs = {path.stem: "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
                    for path in sorted(Path(self.log_dir).glob("*.log"))}
        else:
            logs = {"scheduler": _lines(self.client.get_scheduler_logs(n=lines))}
            logs |= {str(worker): _lines(entries) for worker, entries in self.client.get_worker_logs(n=lines).items()}
        return {name: text for name, text in logs.items() if (scheduler if name.startswith("scheduler") else workers)}

    def close(self, timeout: float | None = None) -> Any:
        """Stop watching the scheduler and close the platform's client (the platform itself keeps running). For
        dask-labextension, which awaits it on the Jupyter server's event loop, the closing is done in a thread and
        its future returned."""
        if self.awaited_close:
            return asyncio.get_running_loop().run_in_executor(None, self._close_now, timeout)
        return self._close_now(timeout)

    def _close_now(self, timeout: float | None) -> None:
        if self.client is not None and self.status != Status.closed:
            super().close(timeout=timeout)
            self.client.close()

    def _repr_html_(self, cluster_status: Any = None) -> str:
        figures = pool_demand(self.client)
        rows = []
        for region, workers in self.pools(figures).items():
            figure = figures.get(pool_of_region(region), {})
            bounds = f"{figure['min_tasks']}..{figure['max_tasks']}" if figure else "not sized"
            rows.append(f"<tr><td>{html.escape(region)}</td><td>{html.escape(pool_of_region(region))}</td>"
                        f"<td>{len(workers)}</td><td>{sum(int(w['threads'] or 0) for w in workers)}</td>"
                        f"<td>{html.escape(str(figure.get('desired_tasks', '')))}</td><td>{bounds}</td>"
                        f"<td>{html.escape(', '.join(str(w['name']) for w in workers))}</td></tr>")
        link = html.escape(self.dashboard_link)
        return (f"<div><strong>Dask platform</strong> at <code>{html.escape(self.client.scheduler.address)}</code>"
                f" &middot; <a href='{link}' target='_blank'>dashboard</a>"
                f" &middot; catalog <code>{html.escape(str(self.catalog_endpoint))}</code>"
                "<table><tr><th>region</th><th>pool</th><th>workers</th><th>threads</th><th>desired tasks</th>"
                "<th>bounds (tasks)</th><th>names</th></tr>"
                f"{''.join(rows) or '<tr><td colspan=7>no pools</td></tr>'}</table></div>")

    def __repr__(self) -> str:
        if self.status != Status.running:
            return f"<Platform {self.name} {self.status.name}>"
        pools = ", ".join(f"{region}: {len(workers)}" for region, workers in self.pools().items())
        return f"<Platform {self.client.scheduler.address} workers per region {{{pools}}}>"


def _check_count(verb: str, **counts: int | None) -> None:
    """Worker counts are whole numbers, 0 or more."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{verb}({name}={value!r}): give a whole number of workers, 0 or more")


def domain_region(endpoint: str) -> str | None:
    """The region that signs catalog requests: CATALOG_REGION, else the one an AWS domain endpoint names
    (`vpc-<domain>-<id>.<region>.es.amazonaws.com`); None for a local catalog (nothing to sign)."""
    if os.environ.get("CATALOG_REGION"):
        return os.environ["CATALOG_REGION"]
    match = re.search(rf"\.({REGION_PATTERN})\.es\.amazonaws\.com(?::\d+)?/?$", endpoint)
    return match.group(1) if match else None


def _cloudwatch_logs(groups: Mapping[str, Any], lines: int) -> dict[str, str]:
    """The last `lines` events of the last hour of each log group, each read in its own region."""
    import time

    import boto3

    since = int((time.time() - 3600) * 1000)
    logs = {}
    for name, where in sorted(groups.items()):
        client = boto3.client("logs", region_name=where["region"])
        events: list[str] = []
        for page in client.get_paginator("filter_log_events").paginate(logGroupName=where["group"],
                                                                       startTime=since):
            events = (events + [event["message"] for event in page["events"]])[-lines:]
        logs[name] = "\n".join(events)
    return logs


def _lines(entries: Any) -> str:
    return "\n".join(str(message) for _, message in entries)
