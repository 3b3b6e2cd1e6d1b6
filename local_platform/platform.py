"""Start, inspect and stop the local platform: the deployment twin. `up` runs the real Pulumi program under mocks
(stackgraph.synth, the graph `plan` checks), reads what it declares (local_platform.declared) and runs that: each
region's AWS emulation (moto) with sample data, the catalog stand-in, and the local control plane
(local_platform.agent), which runs the declared ECS services through the image's entrypoint and fires the
declared schedules; the first catalog syncs run before `up` returns, as AWS fires them after the deploy.

What the graph declares is changed only by the rules in this module, said once each: addresses and ports (loopback,
free ports, the task's own directories), the sizes (declared.LOCAL_SIZES), and the AWS endpoints and stand-ins
each process is given (TWIN_VARIABLES). Every process it starts is recorded (pid and command line) in the state
directory, and `down` stops exactly those."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cluster_broker import SETTINGS_VARIABLE as BROKER_SETTINGS
from cluster_broker import Settings
from dask_regions.startup import STOP_LINE
from local_platform.data import create_bucket, publish, sample_kind, write_cmip6_like, write_era5_like
from local_platform.declared import (
    LOCAL_SIZES,
    Container,
    DeclarationError,
    Deployment,
    read_deployment,
    sized_demand_pools,
)
from local_platform.fsx_standin import StandIn
from local_platform.lambda_runtime import FILE_SYSTEMS_VARIABLE, TIMEOUT_VARIABLE
from local_platform.nightly import Functions, first_syncs, function_specs, run_execution
from local_platform.state import (
    CATALOG_FILE,
    HISTORY_FILE,
    LOCK_FILE,
    SIZES_FILE,
    STATE_FILE,
    SYNC_HISTORY_FILE,
    TWIN_FILE,
    PlatformState,
    size_key,
)
from local_platform.tls import LocalTls, create_local_tls
from platform_facts import (
    CATALOG_S3_ENDPOINT_VARIABLE,
    FSX_MOUNT,
    PLATFORM_HEALTH_PATH,
    READ_CACHE_MOUNT,
    READ_CACHE_VARIABLE,
    SCHEDULER_IDLE_SHUTDOWN_VARIABLE,
    SCHEDULER_PORT,
    regions_variable,
)
from stackconfig import PROJECT_DIR as ROOT

BIN = Path(sys.executable).parent

# How long `up` waits for each service to listen and for the scheduler to be healthy. Two minutes: on 2 cores
# beside a container start (which copies a 750 MB image under the vfs driver, tests/test_images_run.py) the agent
# did not start the scheduler within one (a fresh clone's .ci/run on 32c5006).
START_TIMEOUT = 120.0
AGENT_INTERVAL = 1.0
MARKER = "LOCAL_PLATFORM_STATE"  # in every process's environment: which platform started it
DEMAND_POOLS = regions_variable("demand.pools")
# What the twin adds to a task's or function's environment, and why (README: the twin's differences).
TWIN_VARIABLES = {
    "AWS_ENDPOINT_URL": "the region's AWS emulation (moto) instead of AWS's endpoints",
    "AWS_ACCESS_KEY_ID": "a stand-in for the task's or function's role", "AWS_SECRET_ACCESS_KEY": "(the same)",
    "AWS_REGION": "as ECS and Lambda set it", "AWS_DEFAULT_REGION": "as ECS and Lambda set it",
    "DASK_REGIONS_FSX_ROOT": "where /fsx (the region's Lustre stand-in) is mounted on this machine",
    "DASK_TLS_DIR": "the task's own directory for its TLS files (in AWS a tmpfs, or the entrypoint's default)",
    "ECS_CONTAINER_METADATA_URI_V4": "the local agent's task metadata", "ECS_AGENT_URI": "the local agent",
    FILE_SYSTEMS_VARIABLE: "the FSx stand-ins (Lambda runtime only)", TIMEOUT_VARIABLE: "the function's timeout",
    MARKER: "which platform started the process (how `down` and the tests find its processes)",
    CATALOG_S3_ENDPOINT_VARIABLE: "the client region's AWS emulation, where the S3 catalog's bucket is",
    READ_CACHE_VARIABLE: "the pool's read cache on this machine (storage s3: the host's directory in AWS)",
    "PATH": "this checkout's venv", "HOME": "kept",
}


class PlatformError(RuntimeError):
    """The platform could not do what was asked; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(entry: dict[str, Any]) -> bool:
    """The recorded process is still running and is still ours (a pid can be reused by another program)."""
    try:
        arguments = Path(f"/proc/{entry['pid']}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return entry["command"][0] in arguments[:2]  # scripts run as `<interpreter> <script> ...`


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def group_alive(group: int) -> bool:
    """Whether any process of the group still runs (zombies, dead but not yet reaped, do not count)."""
    return bool(members(group))


@contextlib.contextmanager
def _exclusive(path: Path, refusal: str) -> Iterator[None]:
    """An exclusive, non-blocking lock on `path` for the duration (released by the OS if the holder dies)."""
    import fcntl

    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PlatformError(refusal) from None
        yield


def members(group: int) -> list[int]:
    """The live processes of a process group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def runs_from(pid: int, state_dir: Path) -> bool:
    """Whether a process was started by the platform of `state_dir` (its environment says so): how `down` and the
    tests tell this platform's processes from everything else on the machine."""
    try:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{MARKER}={state_dir}".encode() in environment


def processes_of(state_dir: Path, *words: bytes) -> list[int]:
    """The live processes the platform of `state_dir` started whose command line has every one of `words` (as a
    part of an argument)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        pid = int(cmdline.parent.name)
        if all(any(word in a for a in arguments) for word in words) and runs_from(pid, state_dir.resolve()):
            found.append(pid)
    return found


def _reap(pid: int) -> None:
    """Collect a child's exit status if it is ours, so it leaves no zombie behind."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _wait_for_port(port: int, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PlatformError(f"{what} exited at start; see {log}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise PlatformError(f"{what} did not listen on port {port} within {START_TIMEOUT:.0f} s; see {log}")



def _base_environment(state_dir: Path) -> dict[str, str]:
    """What every process of the twin starts from: nothing of the caller's environment but PATH and HOME (a
    container does not inherit the operator's shell; a stray DASK_* setting must not change what runs)."""
    return {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", str(state_dir)), MARKER: str(state_dir)}


def _aws(region: str, endpoint: str) -> dict[str, str]:
    return {"AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def local_arguments(container: Container, deployment: Deployment, scheduler_port: int, dashboard_port: int, *,
                    scheduler_host: str = "127.0.0.1", worker_contact: str | None = None,
                    scheduler_ports: Mapping[str, int] | None = None) -> list[str]:
    """The declared command with this machine's addresses and the local sizes: services listen on loopback on free
    ports, the scheduler's private name is its address here (`scheduler_host`), a task runs
    LOCAL_SIZES.workers_per_task worker processes, and workers' fixed port ranges (for security groups) are left to
    the OS. `worker_contact` (`host:port`): a worker that listens on loopback at that port but is reached at that
    address (the WAN benchmark's regions, each behind its proxy). `scheduler_ports` (client.users: each user's
    scheduler's private name -> its port here): a name there means that scheduler, not `scheduler_port`'s."""
    replaced = {"--port": str(scheduler_port), "--dashboard-address": f"127.0.0.1:{dashboard_port}",
                "--nworkers": str(LOCAL_SIZES.workers_per_task)}
    dropped = {"--worker-port", "--nanny-port"}
    names = [f"{name}:{SCHEDULER_PORT}" for name in deployment.scheduler_names]
    arguments: list[str] = []
    command = iter(container.command)
    for argument in command:
        if argument in dropped:
            next(command)
            continue
        arguments.append(argument)
        if argument in replaced:
            next(command)
            arguments.append(replaced[argument])
    here = {name: f"{scheduler_host}:{scheduler_port}" for name in names}
    here |= {f"{name}:{SCHEDULER_PORT}": f"{scheduler_host}:{port}" for name, port in (scheduler_ports or {}).items()}
    arguments = [next((a.replace(n, there) for n, there in here.items() if n in a), a) for a in arguments]
    if worker_contact and arguments[:1] == ["worker"]:
        port = worker_contact.rsplit(":", 1)[1]
        arguments += ["--listen-address", f"tls://127.0.0.1:{port}", "--contact-address", f"tls://{worker_contact}"]
    else:
        arguments += ["--host", "127.0.0.1"]
    if "--no-dashboard" in arguments:  # its HTTP server runs even without a dashboard: on loopback too
        arguments += ["--dashboard-address", "127.0.0.1:0"]
    return arguments


def role_secrets(tls: LocalTls, user: str | None = None) -> dict[str, dict[str, str]]:
    """Each TLS role's secret in the declared shape (JSON fields ca, cert, key), generated for this run; keyed by
    `SecretRef.material` (a user's cluster's: `<role>-<user>`)."""
    suffix = f"-{user}" if user else ""
    return {role + suffix: {"ca": tls.ca.read_text(), "cert": files.cert.read_text(), "key": files.key.read_text()}
            for role, files in tls.roles.items()}


def task_environment(container: Container, secrets: Mapping[str, Mapping[str, str]], task_root: Path,
                     state_dir: Path, aws_endpoint: str, fsx_root: Path | None,
                     cache_root: Path | None = None) -> dict[str, str]:
    """A task's whole environment: the declared one (tmpfs paths moved under `task_root`, the demand settings
    sized), its secrets, and the twin's variables (TWIN_VARIABLES). `{task}` in `task_root` is the task's id."""
    environment = {**_base_environment(state_dir), **_aws(container.region, aws_endpoint)}
    tmpfs = {path: str(task_root / path.strip("/").replace("/", "-")) for path in container.tmpfs}
    for name, value in container.environment.items():
        for path, local in tmpfs.items():
            value = local + value[len(path):] if value == path or value.startswith(path + "/") else value
        environment[name] = value
    if DEMAND_POOLS in environment:
        environment[DEMAND_POOLS] = sized_demand_pools(environment[DEMAND_POOLS])
    for variable, reference in container.secrets.items():
        environment[variable] = secrets[reference.material][reference.field]
    environment.setdefault("DASK_TLS_DIR", str(task_root / "dask-tls"))
    for path, host in container.mounts.items():
        if path == host == READ_CACHE_MOUNT:  # storage `s3`: the host's read cache, a directory of the region's
            if cache_root is not None:
                environment[READ_CACHE_VARIABLE] = str(cache_root)
            continue
        if path != FSX_MOUNT or host != FSX_MOUNT:
            raise PlatformError(f"service {container.service}: mount {host} at {path}: the twin mounts only the "
                                f"region's Lustre stand-in, at {FSX_MOUNT}, or its read cache, at {READ_CACHE_MOUNT}")
        if fsx_root is not None:
            environment["DASK_REGIONS_FSX_ROOT"] = str(fsx_root)
    return environment


def _on_demand(container: Container) -> dict[str, str] | None:
    """A scheduler's own ECS service (region, cluster, service) when it stops when idle (dask_regions.idle)."""
    if SCHEDULER_IDLE_SHUTDOWN_VARIABLE not in container.environment:
        return None
    return {key: container.environment[regions_variable(f"idle-shutdown.{key}")]
            for key in ("region", "cluster", "service")}


class LocalPlatform:
    def __init__(self, stack: str, state_dir: Path, *, catalog: str = "sqlite", size: int = 1,
                 overrides: Mapping[str, Any] | None = None, report: Callable[[str], None] = lambda _: None) -> None:
        if catalog not in ("sqlite", "opensearch"):
            raise PlatformError(f"--catalog {catalog!r}: use sqlite or opensearch")
        if size < 1:
            raise PlatformError(f"--size {size}: use 1 or more (1 is small enough for a 2-core laptop)")
        self.stack, self.state_dir, self.catalog_kind, self.size = stack, state_dir.resolve(), catalog, size
        self.overrides = dict(overrides or {})
        self.report = report

    # ------------------------------------------------------------------------------------------ up
    def up(self) -> PlatformState:
        """Start the platform; refused (changing nothing) while another `up` starts one from the same state
        directory, or while one runs there."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _exclusive(self.state_dir / LOCK_FILE, f"another `up` or `demo` is starting a platform from "
                                                    f"{self.state_dir} right now: wait for it, then see `status`"):
            return self._up()

    def _up(self) -> PlatformState:
        running = PlatformState.load(self.state_dir)
        if running and any(_alive(p) for p in running.processes.values()):
            raise PlatformError(f"a platform (stack {running.stack!r}) is already running from {self.state_dir}: "
                                f"see `python -m local_platform status --state-dir {self.state_dir}`, or stop it "
                                "with `down`")
        self.report("reading the deployment: the Pulumi program under mocks")
        deployment = self._deployment()
        if self.catalog_kind == "opensearch" and deployment.s3_catalog() is not None:
            raise PlatformError(f"--catalog opensearch: stack {self.stack}'s catalog is S3 (catalog.kind s3), which "
                                "the platform runs as declared, in the client region's AWS emulation; drop --catalog")
        for stale in ("fsx", "read-cache", "staging", "tasks", CATALOG_FILE, "logs", "tls", SIZES_FILE, HISTORY_FILE,
                      SYNC_HISTORY_FILE, TWIN_FILE):
            path = self.state_dir / stale
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        (self.state_dir / "logs").mkdir()
        state = PlatformState(stack=self.stack, state_dir=str(self.state_dir), catalog="",
                              tls_dir=str(self.state_dir / "tls"))
        create_local_tls(Path(state.tls_dir))
        for user in deployment.users:  # each user's cluster has a CA of its own (components/dask_tls.py)
            create_local_tls(Path(state.tls_dir) / user)
            state.users[user] = {"tls_dir": str(Path(state.tls_dir) / user)}
            (self.state_dir / "logs" / user).mkdir()
        state.save()
        try:
            self._start(state, deployment)
        except BaseException:
            self.down()
            raise
        return state

    def _deployment(self) -> Deployment:
        from stackgraph.synth import SynthesisError, synthesize

        try:
            return read_deployment(synthesize(self.stack, self.overrides))
        except (SynthesisError, DeclarationError) as error:
            raise PlatformError(str(error)) from None

    def _start(self, state: PlatformState, deployment: Deployment) -> None:
        for region in deployment.regions():
            port = free_port()
            process = self._spawn(state, f"aws-{region}",
                                  [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])
            _wait_for_port(port, f"the AWS emulation of {region}", process, self._log(f"aws-{region}"))
            state.s3_endpoints[region] = f"http://127.0.0.1:{port}"
        self._start_catalog(state, deployment)
        state.save()
        self.report("generating sample data and uploading it to the AWS emulations")
        self._create_parameters(state, deployment)
        self._create_buckets(state, deployment)
        self._create_scheduler_services(state, deployment)
        for region, dataset in deployment.datasets():
            self._publish_dataset(state, region, dataset)

        ports = {user: (free_port(), free_port()) for user in deployment.schedulers()}
        for user, (port, dashboard) in ports.items():
            where = {"scheduler_address": f"tls://127.0.0.1:{port}",
                     "dashboard_url": f"http://127.0.0.1:{dashboard}/status"}
            if user is None:
                state.scheduler_address, state.dashboard_url = where["scheduler_address"], where["dashboard_url"]
            else:
                state.users[user] |= where
        state.agent_endpoint = f"http://127.0.0.1:{free_port()}"
        twin = self._twin(state, deployment, ports)
        (self.state_dir / TWIN_FILE).write_text(json.dumps(twin, indent=1))
        state.pools = [size_key(s["pool"], s["user"]) for s in twin["services"] if s["pool"]]
        self._spawn(state, "agent", [sys.executable, "-m", "local_platform.agent", "--state-dir",
                                     str(self.state_dir)])
        if deployment.users:  # each user's scheduler starts when they connect (the broker sets it going)
            self._wait_for_agent(state, time.monotonic() + START_TIMEOUT)
        else:
            self._wait_for_scheduler(state, *ports[None])
        self.report("running the first catalog sync of each worker region (the declared at() schedules)")
        self._first_syncs(twin)
        state.save()

    def _start_catalog(self, state: PlatformState, deployment: Deployment) -> None:
        if (declared := deployment.s3_catalog()) is not None:  # catalog.kind s3: the declared bucket, as in AWS
            state.catalog, state.catalog_region = declared
            state.catalog_s3_endpoint = state.s3_endpoints[state.catalog_region]
            return
        if self.catalog_kind == "opensearch":
            from osmem_server import resolve_binary

            port = free_port()
            process = self._spawn(state, "catalog", [resolve_binary(), "-addr", f"127.0.0.1:{port}",
                                                     "-no-stdin-watch", "-no-ja"])
            _wait_for_port(port, "the catalog (osmem)", process, self._log("catalog"))
            state.catalog = f"http://127.0.0.1:{port}"
        else:
            state.catalog = f"sqlite:///{self.state_dir / CATALOG_FILE}"

    # -------------------------------------------------------------------------- the twin's declaration
    def _twin(self, state: PlatformState, deployment: Deployment,
              ports: Mapping[str | None, tuple[int, int]]) -> dict[str, Any]:
        """Everything the agent runs, resolved for this machine (`<state>/twin.json`)."""
        secrets = role_secrets(state.tls)
        for user in deployment.users:
            secrets |= role_secrets(state.for_user(user).tls, user)
        services = [self._task_spec(state, deployment, c, secrets, ports) for c in deployment.containers]
        stand_ins: dict[str, StandIn] = {}
        for association in deployment.associations:
            stand_in = stand_ins.setdefault(association.file_system_id, StandIn(self._fsx_root(association.region), {}))
            stand_in.associations[association.file_system_path] = association.repository
        file_systems = json.dumps({k: v.to_json() for k, v in stand_ins.items()})
        functions = {arn: {"name": f.name, "handler": f.handler, "environment": self._function_environment(
            state, deployment, f.region, f.environment, file_systems)} for arn, f in deployment.functions.items()}
        broker = deployment.broker
        return {"stack": deployment.stack, "interval": AGENT_INTERVAL, "services": services,
                "agent_endpoint": state.agent_endpoint,
                "broker": {"name": broker.name, "region": broker.region,
                           "settings": broker.environment[BROKER_SETTINGS], "endpoints": state.s3_endpoints,
                           "schedules": [asdict(s) for s in deployment.broker_schedules]} if broker else None,
                "functions": functions, "machines": {arn: m.definition for arn, m in deployment.machines.items()},
                "schedules": [asdict(s) for s in deployment.schedules],
                "run": deployment.run, "unrun": deployment.unrun}

    def _fsx_root(self, region: str) -> Path:
        return self.state_dir / "fsx" / region

    def _task_spec(self, state: PlatformState, deployment: Deployment, container: Container,
                   secrets: Mapping[str, Mapping[str, str]],
                   ports: Mapping[str | None, tuple[int, int]]) -> dict[str, Any]:
        task_root = self.state_dir / "tasks" / "{task}"
        environment = task_environment(container, secrets, task_root, self.state_dir,
                                       state.s3_endpoints[container.region], self._fsx_root(container.region),
                                       self.state_dir / "read-cache" / container.region)
        pool = container.flag("--resources")
        ecs = _on_demand(container)
        scheduler_ports = {name: ports[user][0] for name, user in deployment.scheduler_users.items()}
        # A user's pool's maximum is what the broker sets on its scaling target (within the local sizes).
        target = ({"region": container.region, "endpoint": state.s3_endpoints[container.region],
                   "resource_id": container.scaling_resource} if container.user and container.scaled else None)
        return {"service": container.service, "region": container.region, "user": container.user, "target": target,
                "ecs": {**ecs, "endpoint": state.s3_endpoints[ecs["region"]]} if ecs else None,
                "arguments": local_arguments(container, deployment, *ports[container.user],
                                             scheduler_ports=scheduler_ports),
                "environment": environment, "minimum": min(container.min_tasks, LOCAL_SIZES.tasks(container.max_tasks)),
                "maximum": LOCAL_SIZES.tasks(container.max_tasks) if container.scaled else container.max_tasks,
                "pool": pool.split("=", 1)[0] if pool and container.scaled else None, "task_root": str(task_root),
                "log_name": deployment.log_names.get(container.log_group, container.service)}

    def _function_environment(self, state: PlatformState, deployment: Deployment, region: str,
                              declared: dict[str, str], file_systems: str) -> dict[str, str]:
        environment = {**_base_environment(self.state_dir), **_aws(region, state.s3_endpoints[region])}
        for name, value in declared.items():
            environment[name] = state.catalog if value in deployment.catalog_endpoints else value
        environment[FILE_SYSTEMS_VARIABLE] = file_systems
        return environment | state.catalog_environment()

    def _create_scheduler_services(self, state: PlatformState, deployment: Deployment) -> None:
        """A scheduler that stops when idle sets its own ECS service's desired count, and connect() sets it again:
        the service, as declared (region, cluster, name from its environment), is created in its region's AWS
        emulation, where the agent reads its desired count as ECS would. With client.users, each user's pools too,
        with their scaling targets as declared: the broker sets their maxima there, and the agent reads them."""
        roles = ({name: entry.role for name, entry in Settings.from_json(
            deployment.broker.environment[BROKER_SETTINGS]).users.items()} if deployment.broker else {})
        for container in deployment.containers:
            if (ecs := _on_demand(container)) is not None:
                self._create_service(state, container, ecs["region"], ecs["cluster"], ecs["service"])
                handle = {**ecs, "endpoint": state.s3_endpoints[ecs["region"]]}
                if container.user is None:
                    state.scheduler_service = handle
                else:
                    assert deployment.broker is not None, "a user's scheduler is started by the broker"
                    state.users[container.user]["scheduler_service"] = {
                        **handle, "broker": deployment.broker.name, "role": roles[container.user]}
            elif container.user and container.scaled:
                _, cluster, service = container.scaling_resource.split("/")
                self._create_service(state, container, container.region, cluster, service)
                self._client("application-autoscaling", state, container.region).register_scalable_target(
                    ServiceNamespace="ecs", ResourceId=container.scaling_resource,
                    ScalableDimension="ecs:service:DesiredCount", MinCapacity=container.min_tasks,
                    MaxCapacity=container.max_tasks)

    def _create_service(self, state: PlatformState, container: Container, region: str, cluster: str,
                        service: str) -> None:
        client = self._client("ecs", state, region)
        client.create_cluster(clusterName=cluster)
        client.register_task_definition(family=service, containerDefinitions=[
            {"name": container.name, "image": "local", "memory": 512}])
        client.create_service(cluster=cluster, serviceName=service, taskDefinition=service,
                              desiredCount=container.min_tasks)

    # ------------------------------------------------------------------------ what AWS holds before the first sync
    def _client(self, service: str, state: PlatformState, region: str) -> Any:
        """A client of the region's AWS emulation."""
        import boto3

        return boto3.client(service, region_name=region, endpoint_url=state.s3_endpoints[region],
                            aws_access_key_id="local", aws_secret_access_key="local")

    def _create_parameters(self, state: PlatformState, deployment: Deployment) -> None:
        for region, name, value in deployment.parameters:
            self._client("ssm", state, region).put_parameter(Name=name, Value=value, Type="String", Overwrite=True)

    def _create_buckets(self, state: PlatformState, deployment: Deployment) -> None:
        for region, name in deployment.buckets:
            s3 = self._client("s3", state, region)
            create_bucket(s3, name, region)
            # Versioned, as secure_bucket declares every bucket (the S3 catalog's readers fall back to a version).
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})

    def _publish_dataset(self, state: PlatformState, region: str, repository: str) -> None:
        bucket, _, prefix = repository.removeprefix("s3://").partition("/")
        staging = self.state_dir / "staging" / region
        if sample_kind(prefix) == "cmip6":
            write_cmip6_like(staging, years=range(2090 - 5 * self.size, 2101))
        else:
            write_era5_like(staging, years=tuple(range(2000, 2000 + self.size)))
        publish(self._client("s3", state, region), staging, bucket, prefix.strip("/"), region)

    def _first_syncs(self, twin: dict[str, Any]) -> None:
        functions = Functions(function_specs(twin), self.state_dir / "logs")
        try:
            for schedule in first_syncs(twin):
                execution = run_execution(twin, schedule, functions, self.state_dir)
                if execution.status != "SUCCEEDED":
                    raise PlatformError(f"the first catalog sync of {schedule['region']} failed: {execution.error}: "
                                        f"{execution.cause} (see {self.state_dir / 'logs'})")
        finally:
            functions.close()

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _spawn(self, state: PlatformState, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        with self._log(name).open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env={**os.environ, MARKER: str(self.state_dir), "PYTHONPATH": str(ROOT)},
                                       start_new_session=True, cwd=self.state_dir)
        state.processes[name] = {"pid": process.pid, "command": command}
        state.save()
        return process

    def _wait_for_scheduler(self, state: PlatformState, port: int, dashboard_port: int) -> None:
        """Until the agent has started the scheduler's task and the scheduler is healthy as its container's health
        check sees it (its platform plugins run: PLATFORM_HEALTH_PATH), and the agent has taken charge of the
        pools (it reports their sizes); pools start at their minimum and scale on demand. A scheduler whose
        platform preload cannot start stops (dask_regions.startup): `up` reports its line, not a platform."""
        from distributed import Client

        agent = state.processes["agent"]
        deadline = time.monotonic() + START_TIMEOUT
        health = f"http://127.0.0.1:{dashboard_port}{PLATFORM_HEALTH_PATH}"
        while not _healthy(health):
            cause = self._preload_failure()
            if cause:
                raise PlatformError(f"the scheduler did not start: {cause}")
            if not _alive(agent) or time.monotonic() > deadline:
                raise PlatformError(f"the scheduler did not become healthy ({health}) within {START_TIMEOUT:.0f} s; "
                                    f"see {self.state_dir / 'logs'}")
            time.sleep(0.2)
        with Client(state.scheduler_address, timeout=START_TIMEOUT,  # type: ignore[no-untyped-call]
                    security=state.tls.security()) as client:
            client.scheduler_info()
        if state.pools:
            self._wait_for_agent(state, deadline)

    def _wait_for_agent(self, state: PlatformState, deadline: float) -> None:
        """Until the agent has taken charge of the pools (it reports their sizes)."""
        while not (self.state_dir / SIZES_FILE).exists():
            if not _alive(state.processes["agent"]) or time.monotonic() > deadline:
                raise PlatformError(f"the agent did not take charge of the pools; see {self._log('agent')}")
            time.sleep(0.1)

    def _preload_failure(self) -> str | None:
        """The line a platform preload logged as it stopped its process, from any task's log."""
        for log in sorted((self.state_dir / "logs").glob("**/*-local*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if STOP_LINE in line:
                    return f"{line.strip()} (see {log})"
        return None

    # ----------------------------------------------------------------------------------- down, status
    def down(self) -> list[str]:
        """Stop every process this platform started (and nothing else); returns their names. A group whose leader
        has died is still stopped when any of its processes is this platform's."""
        state = PlatformState.load(self.state_dir)
        if state is None:
            return []
        root = Path(state.state_dir)
        stopped = []
        for name, entry in state.processes.items():
            group = entry["pid"]
            if _alive(entry):  # the leader stops its own (the agent: pools first, then the scheduler)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(group, signal.SIGTERM)
                stopped.append(name)
            elif any(runs_from(pid, root) for pid in members(group)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGTERM)
                stopped.append(name)
        deadline = time.monotonic() + 45  # the agent drains its pools first
        for name in stopped:  # wait for each whole process group (nannies and workers included)
            group = state.processes[name]["pid"]
            while group_alive(group) and time.monotonic() < deadline:
                _reap(group)
                time.sleep(0.1)
            if group_alive(group):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            _reap(group)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)
        return stopped

    @staticmethod
    def status(state_dir: Path) -> tuple[PlatformState | None, dict[str, bool]]:
        state = PlatformState.load(state_dir.resolve())
        if state is None:
            return None, {}
        return state, {name: _alive(entry) for name, entry in state.processes.items()}
