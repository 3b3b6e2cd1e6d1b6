"""The WAN benchmark (issue 9): the platform's reason to exist, measured. Each region of a stack config runs in
its own network namespace behind a router (bench/wan_network.py); links between regions are shaped with tc tbf
and delayed by a user-space proxy (bench/wan_proxy.py). The scheduler and the catalog run in the client region;
each worker region holds its pool, its S3 emulation (moto, reachable from elsewhere only across the WAN) and its
Lustre stand-in, filled by the region's declared nightly sync (which also writes the netCDF collections' reference
sets, unless --references off). The reference analysis then runs in four modes, each on a fresh cluster,
interleaved within each of N repeats:

    local     the floor: the same tasks, pools and storage, all in the client region, no WAN
    pinned    dask_regions: the router keeps every task next to its data; only reduced maps cross regions
    unpinned  plain Dask: the same graph, tasks wherever the scheduler puts them (the router only observes)
    naive     the raw data pulled to the client region and computed there

For each: wall time and its phases, bytes and round trips that crossed inter-region links (interface counters and
the proxies' accounts) next to the audit's figure (Dask's transfer logs), the machine's load, and a checksum of
the results (all modes must agree). Medians, min and max go to bench/results/wan.json and a bar chart next to it.
Needs root (network namespaces).

    sudo make bench-wan                                        # ~1 GB per region, 50 Mbit/s, 40 ms, 3 repeats
    sudo .venv/bin/python bench/wan.py --gigabytes 0.02 --repeats 1      # a quick run (after make test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run by path: the project's packages
from bench.wan_agent import MODES
from bench.wan_network import RegionLink, counters, leftovers, wan
from local_platform.agent import ENTRYPOINT
from local_platform.data import CMIP6_STORE, sample_kind, write_cmip6_like, write_era5_like
from local_platform.declared import Container, Deployment, read_deployment
from local_platform.platform import local_arguments, role_secrets, task_environment
from local_platform.processes import stop_groups
from local_platform.tls import LocalTls, create_local_tls
from platform_facts import FSX_MOUNT, regions_variable
from stackconfig import PROJECT_DIR as ROOT
from stackconfig import ConfigError, StackConfig, load_stack_file, raw_stack_config
from stackgraph.synth import SynthesisError, synthesize

RESULTS = ROOT / "bench" / "results" / "wan.json"
# Ports inside every namespace (each has its own port space): the service listens on loopback, the region's
# latency proxy on the region's address.
SCHEDULER_PORT, WORKER_PORT, S3_PORT, CATALOG_PORT, ECHO_PORT = 8786, 8790, 9000, 9200, 9999
DASHBOARD_PORT = 8787  # inside the client region only
TARGET_WITHIN_FLOOR = 1.3  # pinned within this factor of the same analysis with no WAN at all
SERVICES = {SCHEDULER_PORT: "dask scheduler", WORKER_PORT: "dask workers", S3_PORT: "storage (S3)",
            CATALOG_PORT: "catalog"}
MIB = 1 << 20
TARGET_FASTER_THAN_NAIVE = 20.0


class Model(NamedTuple):
    """A CMIP6 region the benchmark can add: its VPC, the modelling centre, its sample store and warming (K)."""

    region: str
    cidr: str
    institution: str
    store: str  # the DRS path below the institution
    warming: float
    seed: int


# `--worker-regions 4`: the stack's regions plus CMIP6 regions of two more modelling centres (a benchmark-only
# shape; the analysis becomes a multi-model ensemble).
MORE_MODELS = (Model("eu-central-1", "10.3.0.0/16", "MPI-M", "MPI-ESM1-2-HR/ssp585/r1i1p1f1/Amon/tas/gn/v20190710",
                     3.0, 3),
               Model("ap-southeast-2", "10.4.0.0/16", "CSIRO-ARCCSS",
                     "ACCESS-CM2/ssp585/r1i1p1f1/Amon/tas/gn/v20191108", 5.0, 4))
BIN = Path(sys.executable).parent


class BenchError(RuntimeError):
    """The benchmark cannot run as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Sizes:
    """Sample data of about `gigabytes` per worker region, on ERA5's own 0.25 degree grid."""

    gigabytes: float
    lat: int = 721
    lon: int = 1440
    years: int = 1  # of ERA5 monthly files

    @property
    def step_bytes(self) -> int:
        lat, lon = self.grid()
        return lat * lon * 4

    @property
    def era5_steps_per_month(self) -> int:  # 12 monthly files a year
        # At least 4 steps in a year's files (fewer make every chunk tiny); years of files are about their count,
        # and a step each keeps them to the size asked.
        least = 4 if self.years == 1 else 1
        return max(least, round(self.gigabytes * 1e9 / (12 * self.years * self.step_bytes)))

    @property
    def cmip6_steps_per_month(self) -> int:  # 2090-2100: 132 months
        return max(1, round(self.gigabytes * 1e9 / (132 * self.step_bytes)))

    @property
    def era5_time_chunk(self) -> int:
        """As few stored chunks per monthly file as Dask's chunk size allows, each read by one task in one request:
        the S3 emulation copies a whole object for every ranged GET, a cost S3 does not have. A stored chunk above
        the chunk size (a month at 2 GB was 166 MB) is split by Dask's auto-chunking, and every part then reads it
        whole: naive at 2 GB fell to 256 KiB requests at 1.2 MB/s."""
        import dask.config
        from dask.utils import parse_bytes

        steps = self.era5_steps_per_month
        limit = parse_bytes(dask.config.get("array.chunk-size"))
        return -(-steps // -(-steps * self.step_bytes // limit))

    def grid(self) -> tuple[int, int]:
        """A coarser grid for small runs (below ~0.5 GB: fewer steps would make every chunk tiny)."""
        if self.gigabytes >= 0.5:
            return self.lat, self.lon
        scale = max(0.05, (self.gigabytes / 0.5) ** 0.5)
        return max(8, int(self.lat * scale)), max(16, int(self.lon * scale))


@dataclass
class Processes:
    """Every process the benchmark starts, each in its own process group, stopped on exit whatever happens."""

    logs: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, namespace: str, command: Sequence[str], env: dict[str, str],
              mount: tuple[Path, Path] | None = None) -> None:
        """`mount` (source, mount point): bound in the process's own mount namespace, seen by it alone."""
        if mount is not None:
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       'mount --bind "$1" "$2" && shift 2 && exec "$@"', "mount", *map(str, mount), *command]
        with (self.logs / f"{name}.log").open("wb") as log:
            self.running[name] = subprocess.Popen(["ip", "netns", "exec", namespace, *command], stdout=log,
                                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                                  start_new_session=True)

    def stop(self, names: Sequence[str] | None = None) -> None:
        chosen = list(self.running) if names is None else [n for n in names if n in self.running]
        stop_groups([self.running.pop(name) for name in chosen], timeout=15)

    def check(self, name: str) -> None:
        if (code := self.running[name].poll()) is not None:
            raise BenchError(f"{name} exited with {code}; see {self.logs / (name + '.log')}")


def environment(tls: LocalTls | None = None) -> dict[str, str]:
    """The benchmark's own processes (its agent commands, the emulations): the client's TLS settings when given."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
            # moto takes the first label of a host name for a bucket (virtual-host style) unless told not to
            "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true", **(tls.client_environment() if tls else {})}


def agent(namespace: str, *arguments: str, timeout: float = 1800, tls: LocalTls | None = None) -> dict[str, Any]:
    """Run one bench/wan_agent.py command inside a namespace; returns its JSON answer."""
    result = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, str(ROOT / "bench" / "wan_agent.py"),
                             *arguments], capture_output=True, text=True, env=environment(tls), timeout=timeout,
                            check=False)
    if result.returncode != 0:
        raise BenchError(f"wan_agent {arguments[0]} in {namespace} failed:\n{result.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def generate(config: StackConfig, sizes: Sizes, work: Path) -> dict[str, Path]:
    """Each worker region's sample data (ERA5-like monthly netCDF or a CMIP6-like zarr store), kept between runs
    of the same size."""

    staging: dict[str, Path] = {}
    lat, lon = sizes.grid()
    for worker in config.workers:
        directory = work / "staging" / worker.region
        marker = directory / ".size.json"
        kind = sample_kind(worker.dataset.prefix)
        wanted = {"gigabytes": sizes.gigabytes, "lat": lat, "lon": lon, "kind": kind, "layout": 2,
                  "model": list(model_of(worker.region)) if kind == "cmip6" else None,
                  "era5_time_chunk": sizes.era5_time_chunk if kind != "cmip6" else None,
                  "era5_years": sizes.years if kind != "cmip6" else None}
        if not (marker.exists() and json.loads(marker.read_text()) == wanted):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            if kind == "cmip6":
                store, warming, seed = model_of(worker.region)
                write_cmip6_like(directory, years=range(2090, 2101), lat=lat, lon=lon, warming=warming,
                                 steps_per_month=sizes.cmip6_steps_per_month, time_chunk=6, store=store, seed=seed)
            else:
                write_era5_like(directory, years=tuple(range(2000, 2000 + sizes.years)),
                                steps=sizes.era5_steps_per_month, lat=lat, lon=lon, time_chunk=sizes.era5_time_chunk)
            marker.write_text(json.dumps(wanted))
        staging[worker.region] = directory
    return staging


def model_of(region: str) -> tuple[str, float, int]:
    """The CMIP6 sample store a region holds, its warming and its random seed (the stack's own: the default)."""
    for model in MORE_MODELS:
        if model.region == region:
            return model.store, model.warming, model.seed
    return CMIP6_STORE, 4.0, 2


def more_regions(config: StackConfig, count: int) -> dict[str, Any] | None:
    """Stack config overrides that run `count` worker regions: the stack's own, then MORE_MODELS'."""
    if count == len(config.workers):
        return None
    own = {w.region for w in config.workers} | {config.client.region}
    extra = [m for m in MORE_MODELS if m.region not in own][:count - len(config.workers)]
    if count < len(config.workers) or len(config.workers) + len(extra) != count:
        raise BenchError(f"--worker-regions {count}: this stack has {len(config.workers)} worker regions and the "
                         f"benchmark can add {len(extra)} ({', '.join(m.region for m in extra) or 'none'})")
    workers = list(raw_stack_config(ROOT, config.stack)[1]["workers"])
    workers += [{"region": m.region, "cidr": m.cidr, "dataset": f"s3://cmip6-pds/CMIP6/ScenarioMIP/{m.institution}",
                 "lustreFileSystemPath": f"CMIP6/ScenarioMIP/{m.institution}"} for m in extra]
    return {"workers": workers}


def check_config(config: StackConfig) -> None:
    kinds = [sample_kind(w.dataset.prefix) for w in config.workers]
    if kinds.count("era5") != 1 or "cmip6" not in kinds:
        raise BenchError("the reference analysis needs one ERA5 region and CMIP6 regions (like Pulumi.dev.yaml); "
                         f"this stack has {', '.join(f'{w.region}: {w.dataset.bucket}' for w in config.workers)}")
    if config.client.region in {w.region for w in config.workers}:
        raise BenchError(f"client.region {config.client.region} is also a worker region: the benchmark needs the "
                         "client in a region of its own (the data has to be elsewhere for the WAN to matter)")


def link_bytes(router: str, links: dict[str, RegionLink]) -> dict[str, dict[str, int]]:
    return {region: dict(zip(("into", "out_of"), counters(link, router), strict=True))
            for region, link in links.items()}


def crossed(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Bytes that crossed between regions: everything that left any region (it can only go to another one)."""
    per_region = {region: {way: after[region][way] - before[region][way] for way in ("into", "out_of")}
                  for region in after}
    return {"total": sum(r["out_of"] for r in per_region.values()), "per_region": per_region}


@contextmanager
def platform_in_namespaces(config: StackConfig, staging: dict[str, Path], arguments: argparse.Namespace,
                           processes: Processes, stored: dict[str, int], work: Path,
                           references: dict[str, str]) -> Iterator[tuple[str, dict[str, RegionLink]]]:
    """The WAN with the long-lived services in place: proxies everywhere; in each worker region its AWS emulation
    (moto) holding its data; in the client region the catalog and an AWS emulation for the scheduler's metrics.
    Each worker region's nightly sync imports its data into the region's Lustre stand-in, writes its netCDF
    collections' reference sets to the region's `references` bucket (unless --references off) and fills the
    catalog across the WAN."""
    from osmem_server import resolve_binary

    shutil.rmtree(work / "fsx", ignore_errors=True)  # each run imports afresh, as the nightly sync does
    fsx_mount_point(work).mkdir(parents=True, exist_ok=True)

    regions = [config.client.region] + [w.region for w in config.workers]
    with wan(regions, rate_mbit=arguments.rate_mbit) as (router, links):
        env = environment()
        for region, link in links.items():
            processes.start(f"proxy-{region}", link.namespace, [
                sys.executable, str(ROOT / "bench" / "wan_proxy.py"), "serve", "--listen", link.address,
                "--own-network", link.network, "--delay-ms", str(arguments.delay_ms), "--echo-port", str(ECHO_PORT),
                "--account", str(processes.logs / f"proxy-{region}.connections.jsonl"),
                "--ports", ",".join(map(str, (SCHEDULER_PORT, WORKER_PORT, S3_PORT, CATALOG_PORT)))], env)
        client, client_ns = config.client.region, links[config.client.region].namespace
        processes.start("catalog", client_ns, [resolve_binary(), "-addr", f"127.0.0.1:{CATALOG_PORT}",
                                               "-no-stdin-watch", "-no-ja"], env)
        for region in regions:
            processes.start(f"s3-{region}", links[region].namespace,
                            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(S3_PORT)], env)
        for port in (CATALOG_PORT, S3_PORT):
            agent(client_ns, "wait-port", "--port", str(port))
        for worker in config.workers:
            namespace = links[worker.region].namespace
            agent(namespace, "wait-port", "--port", str(S3_PORT))
            common = ["--bucket", worker.dataset.bucket, "--prefix", worker.dataset.prefix, "--s3-port", str(S3_PORT)]
            done = agent(namespace, "upload", "--staging", str(staging[worker.region]), "--region", worker.region,
                         *common)
            stored[worker.region] = done["bytes"]
            print(f"  {worker.region}: {done['bytes'] / 1e9:.2f} GB into its S3 emulation in {done['seconds']:.0f} s",
                  flush=True)
            # The nightly job publishes to the catalog in the client region: across the WAN, as in AWS.
            written = ["--references", references[worker.region]] if arguments.references == "on" else []
            linked = ["--fsx-path", worker.fsx_path] if worker.on_lustre else []  # storage s3: no import
            synced = agent(namespace, "sync", *common, "--region", worker.region, *linked,
                           "--catalog", f"http://{client}.wan:{CATALOG_PORT}", "--fsx-root",
                           str(fsx_root(work, worker.region)), *written)
            print(f"  {worker.region}: nightly sync {synced['seconds']:.1f} s, {synced['documents']} datasets"
                  + (f", references: {'on' if written else 'off'}"), flush=True)
            if written and "local" in arguments.modes:  # the floor keeps all storage in the client region
                agent(namespace, "mirror", "--location", references[worker.region], "--region", worker.region,
                      "--to-region", client, "--s3-port", str(S3_PORT))
            if not worker.on_lustre and "local" in arguments.modes:  # ... the dataset too, from the same files
                agent(client_ns, "upload", "--staging", str(staging[worker.region]), "--region", client, *common)
        try:
            yield router, links
        finally:
            processes.stop()  # before the namespaces go: nothing may keep one alive


def declared_references(deployment: Deployment) -> dict[str, str]:
    """Each worker region's references location, as its nightly sync's function is told (REFERENCES)."""
    from catalog_sync.environment import REFERENCES as LOCATION_VARIABLE

    return {f.region: f.environment[LOCATION_VARIABLE] for f in deployment.functions.values()
            if LOCATION_VARIABLE in f.environment}


def fsx_root(work: Path, region: str) -> Path:
    """The region's Lustre stand-in: what its nightly import fills and its pool's tasks see at /fsx."""
    return work / "fsx" / region


def fsx_mount_point(work: Path) -> Path:
    """Where every task finds /fsx (DASK_REGIONS_FSX_ROOT): empty, except in each task's own mount namespace,
    where its region's stand-in is bound. A task sees its own region's data only, as a pool in AWS does."""
    return work / "mnt" / "fsx"


def measure_rtt(links: dict[str, RegionLink], client_region: str, worker_region: str) -> dict[str, Any]:
    client_ns = links[client_region].namespace
    rtt = [sys.executable, str(ROOT / "bench" / "wan_proxy.py"), "rtt", "--port", str(ECHO_PORT), "--host"]
    results = {}
    for name, host in (("between_regions", links[worker_region].address),
                       ("within_region", links[client_region].address)):
        done = subprocess.run(["ip", "netns", "exec", client_ns, *rtt, host], capture_output=True, text=True,
                              check=True, timeout=60)
        results[name] = json.loads(done.stdout)
    return results


@dataclass(frozen=True)
class Cluster:
    """What the graph declares for the Dask processes, and this run's TLS material (one CA for every mode)."""

    deployment: Deployment
    tls: LocalTls
    work: Path

    @cached_property
    def secrets(self) -> dict[str, dict[str, str]]:
        """The run's TLS material in the declared secret shape, read once."""
        return role_secrets(self.tls)

    def task(self, processes: Processes, name: str, namespace: str, container: Container, arguments: list[str],
             overrides: dict[str, str] | None = None) -> None:
        """One declared task, through the image's entrypoint, with its declared environment and secrets."""
        # Storage s3: a read cache of the task's own (task names are per run: every run reads from S3, cold).
        environment = task_environment(container, self.secrets, processes.logs / "tasks" / name,
                                       self.work, f"http://127.0.0.1:{S3_PORT}", fsx_mount_point(self.work),
                                       processes.logs / "read-cache" / name)
        mount = ((fsx_root(self.work, container.region), fsx_mount_point(self.work)) if FSX_MOUNT in container.mounts
                 else None)
        processes.start(name, namespace, [sys.executable, str(ENTRYPOINT), *arguments],
                        {**environment, **(overrides or {})}, mount)


class SchedulerUsage:
    """The scheduler process's CPU and memory while a run lasts, sampled from /proc every `every` seconds: peak
    resident memory (the kernel's high-water mark), CPU seconds, the mean and the busiest one-second window in
    cores. What the scheduler's Fargate size (`client.schedulerCpu`, `schedulerMemoryMiB`) must cover."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self._pid, self._every = pid, every
        self._stop = threading.Event()
        self._samples: list[tuple[float, float]] = []  # (monotonic time, CPU seconds)
        self._peak_kib = 0
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _read(self) -> tuple[float, int] | None:
        try:
            fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{self._pid}/status").read_text()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime (fields 14 and 15 of stat)
        peak = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
        return cpu, peak

    def _sample(self) -> None:
        while not self._stop.wait(self._every):
            if (read := self._read()) is None:
                return
            self._samples.append((time.monotonic(), read[0]))
            self._peak_kib = max(self._peak_kib, read[1])

    def finish(self) -> dict[str, float]:
        """Stop sampling (before the scheduler stops) and summarise."""
        self._stop.set()
        self._thread.join(timeout=5)
        if len(self._samples) < 2:
            return {}
        windows = [(c2 - c1) / (t2 - t1) for (t1, c1), (t2, c2) in zip(self._samples, self._samples[1:], strict=False)
                   if t2 > t1]
        per_second = max(self._per_second(), default=max(windows))
        elapsed = self._samples[-1][0] - self._started
        return {"peak_rss_mib": round(self._peak_kib / 1024, 1), "cpu_seconds": round(self._samples[-1][1], 2),
                "mean_cores": round(self._samples[-1][1] / elapsed, 3), "peak_cores_1s": round(per_second, 3)}

    def _per_second(self) -> list[float]:
        """CPU cores used in each window of about one second."""
        found, first = [], 0
        for last in range(1, len(self._samples)):
            (t1, c1), (t2, c2) = self._samples[first], self._samples[last]
            if t2 - t1 >= 1.0:
                found.append((c2 - c1) / (t2 - t1))
                first = last
        return found


def scheduler_address(client: RegionLink) -> str:
    return f"tls://{client.address}:{SCHEDULER_PORT}"


def start_scheduler(mode: str, cluster: Cluster, client: RegionLink, processes: Processes, name: str) -> None:
    """The scheduler's declared task in the client region (unpinned: its router only observes)."""
    deployment = cluster.deployment
    overrides = {regions_variable("route"): "False"} if mode == "unpinned" else {}
    cluster.task(processes, name, client.namespace, deployment.scheduler(),
                 local_arguments(deployment.scheduler(), deployment, SCHEDULER_PORT, DASHBOARD_PORT), overrides)


def start_pool(mode: str, cluster: Cluster, container: Container, links: dict[str, RegionLink], client_region: str,
               processes: Processes, name: str) -> None:
    """One task of a pool's declared service: in its own region (local, the floor: in the client region)."""
    deployment, client = cluster.deployment, links[client_region]
    if mode == "local":  # the same pool, beside everything else
        cluster.task(processes, name, client.namespace, container,
                     local_arguments(container, deployment, SCHEDULER_PORT, 0))
        return
    link = links[container.region]
    cluster.task(processes, name, link.namespace, container, local_arguments(
        container, deployment, SCHEDULER_PORT, 0, scheduler_host=client.address,
        worker_contact=f"{link.address}:{WORKER_PORT}"))


def run_mode(mode: str, config: StackConfig, cluster: Cluster, router: str, links: dict[str, RegionLink],
             processes: Processes, index: int, analysis_timeout: float) -> dict[str, Any]:
    """One run of one mode on a fresh cluster, as the graph declares it: the scheduler's task in the client region
    and one task of each worker region's pool in its region (AWS runs no pool in the client region). `local` (the
    floor) runs the same tasks in the client region, each pool still pinned to its own region's Lustre stand-in:
    what is left of pinned beyond it is the WAN's cost."""
    client = links[config.client.region]
    scheduler = scheduler_address(links[config.client.region])
    names = [f"{mode}{index}-scheduler"]
    started, load_before = time.time(), os.getloadavg()
    start_scheduler(mode, cluster, links[config.client.region], processes, names[0])
    try:
        usage = SchedulerUsage(processes.running[names[0]].pid)  # `ip netns exec` and the entrypoint exec: one pid
        agent(client.namespace, "wait-port", "--port", str(SCHEDULER_PORT))
        for container in cluster.deployment.pools():
            names.append(f"{mode}{index}-{container.service}")
            start_pool(mode, cluster, container, links, config.client.region, processes, names[-1])
        agent(client.namespace, "wait-cluster", "--scheduler", scheduler, "--workers",
              str(len(cluster.deployment.pools())), tls=cluster.tls)
        before = link_bytes(router, links)
        result = agent(client.namespace, "analyse", "--mode", mode, "--scheduler", scheduler, "--catalog",
                       f"http://127.0.0.1:{CATALOG_PORT}", "--s3-port", str(S3_PORT),
                       timeout=analysis_timeout, tls=cluster.tls)
        result["link_bytes"] = crossed(before, link_bytes(router, links))
        result["scheduler"] = usage.finish()
    finally:
        processes.stop(names)
    result["load"] = {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)}
    result["repeat"] = index
    # The run's connections closed with its cluster; the proxies write each one's account as it ends.
    _settle(processes.logs.glob("proxy-*.connections.jsonl"))
    result["proxied_bytes"], result["proxied_connections"], result["proxied_round_trips"] = proxied(
        processes.logs, started)
    return result


def _settle(paths: Iterator[Path], quiet: float = 0.3, limit: float = 10.0) -> None:
    """Wait until the files have stopped growing for `quiet` seconds (at most `limit`)."""
    files = list(paths)
    deadline = time.monotonic() + limit
    sizes = [f.stat().st_size for f in files]
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = [f.stat().st_size for f in files]
        if now == sizes:
            return
        sizes = now


def proxied(logs: Path, since: float) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Payload bytes, connections and round trips between regions since `since`, per service, from the proxies'
    accounts (what the link counters see, without headers and acknowledgements, split by who was talking)."""
    totals, connections, round_trips = ({service: 0 for service in SERVICES.values()} for _ in range(3))
    for path in logs.glob("proxy-*.connections.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["foreign"] and entry["time"] >= since and entry["port"] in SERVICES:
                totals[SERVICES[entry["port"]]] += entry["received"] + entry["sent"]
                connections[SERVICES[entry["port"]]] += 1
                round_trips[SERVICES[entry["port"]]] += entry["round_trips"]
    return totals, connections, round_trips


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by_mode: dict[str, Any] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        by_mode[mode] = {
            "runs": len(mine),
            "wall_seconds": statistics.median(r["wall_seconds"] for r in mine),
            "wall": _spread([r["wall_seconds"] for r in mine]),
            "phases": {phase: _spread([r["phases"][phase] for r in mine]) for phase in mine[0]["phases"]},
            "load_before": _spread([r["load"]["before"] for r in mine]),
            "link_bytes": int(statistics.median(r["link_bytes"]["total"] for r in mine)),
            "audit_bytes": int(statistics.median(r["audit_bytes"] for r in mine)),
            "proxied_bytes": {service: int(statistics.median(r["proxied_bytes"][service] for r in mine))
                              for service in SERVICES.values()},
            "proxied_connections": {service: int(statistics.median(r["proxied_connections"][service] for r in mine))
                                    for service in SERVICES.values()},
            "proxied_round_trips": {service: int(statistics.median(r["proxied_round_trips"][service] for r in mine))
                                    for service in SERVICES.values()},
            "misplaced_tasks": int(statistics.median(r["misplaced_tasks"] for r in mine)),
            "ambiguous_tasks": max(r["ambiguous_tasks"] for r in mine),
            "regional_tasks": mine[0]["regional_tasks"], "combining_tasks": mine[0]["combining_tasks"],
            "checksums": sorted({r["checksum"] for r in mine}),
            "result_bytes": mine[0]["result_bytes"], "input_bytes": mine[0]["input_bytes"],
            # the most any run needed: what a size must cover
            "scheduler": {figure: max(r.get("scheduler", {}).get(figure, 0) for r in mine)
                          for figure in ("peak_rss_mib", "peak_cores_1s", "mean_cores", "cpu_seconds")}}
    return by_mode


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Within each repeat (the modes of one repeat ran back to back): pinned against the floor, naive against
    pinned; the median, min and max over the repeats."""
    found: dict[str, list[float]] = {"pinned_over_floor": [], "naive_over_pinned": []}
    for index in sorted({r["repeat"] for r in runs}):
        wall = {r["mode"]: r["wall_seconds"] for r in runs if r["repeat"] == index}
        if "pinned" in wall and "local" in wall:
            found["pinned_over_floor"].append(wall["pinned"] / wall["local"])
        if "pinned" in wall and "naive" in wall:
            found["naive_over_pinned"].append(wall["naive"] / wall["pinned"])
    return {name: {**_spread(values), "per_repeat": [round(v, 3) for v in values]}
            for name, values in found.items() if values}


def targets(by_mode: dict[str, Any], within: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if "pinned" in by_mode:
        pinned = by_mode["pinned"]
        limit = 2 * pinned["result_bytes"] + MIB
        found["pinned_bytes"] = {"measured": pinned["link_bytes"], "limit": limit,
                                 "met": pinned["link_bytes"] <= limit,
                                 "target": "pinned moves <= 2x the reduced results + 1 MiB across regions"}
    if "naive_over_pinned" in within:
        speedup = within["naive_over_pinned"]["median"]
        found["pinned_vs_naive"] = {"speedup": round(speedup, 1), "target": TARGET_FASTER_THAN_NAIVE,
                                    "met": speedup >= TARGET_FASTER_THAN_NAIVE,
                                    "meaning": "naive / pinned, median of the per-repeat ratios"}
    if "pinned_over_floor" in within:
        factor = within["pinned_over_floor"]["median"]
        found["pinned_vs_floor"] = {"factor": round(factor, 2), "target": TARGET_WITHIN_FLOOR,
                                    "met": factor <= TARGET_WITHIN_FLOOR,
                                    "meaning": "pinned / local (no WAN), median of the per-repeat ratios"}
    checksums = {c for mode in by_mode.values() for c in mode["checksums"]}
    found["checksums_agree"] = len(checksums) == 1
    return found


def _shown(path: Path) -> str:
    """A path as the reader should see it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def chart(by_mode: dict[str, Any], setting: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(by_mode)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    seconds = [by_mode[m]["wall_seconds"] for m in modes]
    colours = {"local": "#8ab17d", "pinned": "#2a9d8f", "unpinned": "#e9c46a", "naive": "#e76f51"}
    left.bar(modes, seconds, color=[colours[m] for m in modes])
    left.set_ylabel("wall time, s (median)")
    for x, value in enumerate(seconds):
        left.annotate(f"{value:.1f} s", (x, value), ha="center", va="bottom")
    width = 0.38
    positions = range(len(modes))
    measured = [by_mode[m]["link_bytes"] / 1e6 for m in modes]
    audited = [by_mode[m]["audit_bytes"] / 1e6 for m in modes]
    right.bar([p - width / 2 for p in positions], measured, width, label="link counters (all traffic)")
    right.bar([p + width / 2 for p in positions], audited, width, label="audit (Dask transfers)")
    right.set_xticks(list(positions), modes)
    right.set_ylabel("MB across regions (median)")
    right.legend()
    for x, value in enumerate(measured):
        right.annotate(f"{value:.1f}", (x - width / 2, value), ha="center", va="bottom")
    figure.suptitle(f"Reference analysis across simulated regions ({setting})")
    figure.savefig(path, dpi=90)
    plt.close(figure)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="the stack config (Pulumi.<stack>.yaml) whose regions to run")
    parser.add_argument("--gigabytes", type=float, default=1.0, help="sample data per worker region (default 1)")
    parser.add_argument("--rate-mbit", type=float, default=50.0, help="each region's link, both ways (default 50)")
    parser.add_argument("--delay-ms", type=float, default=40.0, help="one-way latency between regions (default 40)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each mode; medians are reported (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--worker-regions", type=int, default=None,
                        help="run this many worker regions: the stack's own (default) or more, adding CMIP6 regions "
                             f"of other modelling centres (up to {len(MORE_MODELS)} more)")
    parser.add_argument("--era5-years", type=int, default=1,
                        help="years of ERA5 monthly files holding the region's data (default 1: 12 files)")
    parser.add_argument("--references", choices=("on", "off"), default="on",
                        help="whether the nightly sync writes each netCDF collection's reference set, as deployed "
                             "(default on); off: every file's metadata is read when it is opened")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON results (a PNG chart goes beside it)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/crossregiondask-wan"),
                        help="sample data (kept for the next run of the same size) and logs")
    arguments = parser.parse_args(argv)
    problems = []
    if not 0.001 <= arguments.gigabytes <= 20:
        problems.append(f"--gigabytes {arguments.gigabytes:g}: use 0.001 to 20")
    if not 1 <= arguments.rate_mbit <= 10_000:
        problems.append(f"--rate-mbit {arguments.rate_mbit:g}: use 1 to 10000")
    if not 0 <= arguments.delay_ms <= 1000:
        problems.append(f"--delay-ms {arguments.delay_ms:g}: use 0 to 1000")
    if arguments.worker_regions is not None and not 2 <= arguments.worker_regions <= 8:
        problems.append(f"--worker-regions {arguments.worker_regions}: use 2 to 8")
    if not 1 <= arguments.era5_years <= 40:
        problems.append(f"--era5-years {arguments.era5_years}: use 1 to 40")
    if not 1 <= arguments.repeats <= 20:
        problems.append(f"--repeats {arguments.repeats}: use 1 to 20")
    arguments.modes = [m.strip() for m in arguments.modes.split(",") if m.strip()]
    if not arguments.modes or any(m not in MODES for m in arguments.modes):
        problems.append(f"--modes {','.join(arguments.modes)!r}: use a comma-separated list of {', '.join(MODES)}")
    if problems:
        parser.error("; ".join(problems))
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse(argv)
    try:
        if os.geteuid() != 0:
            raise BenchError("the WAN benchmark needs root (it creates network namespaces): run it with sudo")
        for tool in ("ip", "tc"):
            if not shutil.which(tool):
                raise BenchError(f"`{tool}` is missing: install iproute2")
        if leftovers():
            raise BenchError(f"namespaces of an earlier run are still there: {', '.join(leftovers())}; remove them "
                             "with `ip netns delete <name>` (and rm -r /etc/netns/crdwan-*)")
        config = load_stack_file(ROOT, arguments.stack)
        overrides = more_regions(config, arguments.worker_regions or len(config.workers))
        config = load_stack_file(ROOT, arguments.stack, overrides)
        check_config(config)
        return run(config, read_deployment(synthesize(arguments.stack, overrides)), arguments)
    except (BenchError, ConfigError, SynthesisError, subprocess.TimeoutExpired) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; processes stopped, namespaces left: {leftovers() or 'none'}", file=sys.stderr)
        return 130


def run(config: StackConfig, deployment: Deployment, arguments: argparse.Namespace) -> int:
    sizes = Sizes(arguments.gigabytes, years=arguments.era5_years)
    load_at_start = os.getloadavg()
    work = arguments.work_dir.resolve()
    logs = work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    setting = f"{arguments.rate_mbit:g} Mbit/s, {arguments.delay_ms:g} ms one way"
    print(f"generating ~{sizes.gigabytes:g} GB of sample data per worker region in {work / 'staging'}", flush=True)
    staging = generate(config, sizes, work)
    processes = Processes(logs)
    cluster = Cluster(deployment, create_local_tls(work / "tls"), work)
    # Naive pulls every stored byte through one region's link: allow three times that, and at least 30 minutes.
    timeout = max(1800.0, 3 * 2 * sizes.gigabytes * 8e9 / (arguments.rate_mbit * 1e6))
    runs: list[dict[str, Any]] = []
    stored: dict[str, int] = {}
    try:
        print(f"building the WAN ({setting}) and loading the regions' storage", flush=True)
        with platform_in_namespaces(config, staging, arguments, processes, stored, work,
                                    declared_references(deployment)) as (router, links):
            rtt = measure_rtt(links, config.client.region, config.workers[0].region)
            print(f"round trip {config.client.region} -> {config.workers[0].region}: "
                  f"{rtt['between_regions']['median_ms']:.1f} ms (within a region: "
                  f"{rtt['within_region']['median_ms']:.2f} ms)", flush=True)
            for index in range(1, arguments.repeats + 1):
                for mode in arguments.modes:
                    result = run_mode(mode, config, cluster, router, links, processes, index, timeout)
                    runs.append(result)
                    phases = " ".join(f"{k} {v:.1f}" for k, v in result["phases"].items())
                    print(f"  run {index} {mode:<9} {result['wall_seconds']:7.1f} s ({phases})  "
                          f"{result['link_bytes']['total'] / 1e6:9.1f} MB on the links  "
                          f"{result['audit_bytes'] / 1e6:9.1f} MB in the audit  "
                          f"misplaced {result['misplaced_tasks']}/{result['regional_tasks']}  "
                          f"checksum {result['checksum']}", flush=True)
    finally:
        processes.stop()
    remaining = leftovers()
    by_mode = summarise(runs)
    within = ratios(runs)
    found = targets(by_mode, within)
    output: Path = arguments.output
    output.parent.mkdir(parents=True, exist_ok=True)
    picture = output.with_suffix(".png")
    result = {"benchmark": "wan", "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": {"python": platform.python_version(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "load_at_start": [round(v, 2) for v in load_at_start]},
              "command": " ".join(["python", "bench/wan.py", *(sys.argv[1:])]),
              "stack": config.stack, "client_region": config.client.region,
              "worker_regions": [w.region for w in config.workers],
              "settings": {"gigabytes_per_region": sizes.gigabytes, "grid": list(sizes.grid()),
                           "rate_mbit": arguments.rate_mbit, "delay_ms_one_way": arguments.delay_ms,
                           "repeats": arguments.repeats, "modes": arguments.modes,
                           "era5_monthly_files": 12 * sizes.years, "references": arguments.references,
                           "dask_comm": "tls, as the graph declares (the scheduler's and pools' task definitions)"},
              "topology": "as the graph declares: the scheduler task in the client region, one task of each worker "
                          "region's pool in its region, no pool in the client region (naive computes in the "
                          "notebook's own process); local: the same tasks, pools and objects, all in the client region",
              "stored_bytes": stored, "round_trip_ms": rtt, "modes": by_mode, "ratios_within_repeats": within,
              "targets": found, "runs": runs,
              "chart": _shown(picture),
              "leftovers": remaining,
              "difference_explained": (
                  "link counters count every byte that left a region: Dask's worker-to-worker transfers, which the "
                  "audit counts too, plus what it cannot see: reads that tasks make straight from another region's "
                  "storage (S3 requests and responses), scheduler and client messages (graphs, task assignments, "
                  "heartbeats), and TCP/IP and Ethernet headers and acknowledgements. proxied_bytes splits the "
                  "payload by service: 'dask workers' is what the audit sees (plus the scheduler fetching results "
                  "for the client), 'storage (S3)' what it cannot")}
    output.write_text(json.dumps(result, indent=2) + "\n")
    chart(by_mode, setting, picture)
    print(f"\n{'mode':<10} {'wall s':>8} {'links MB':>10} {'audit MB':>10} {'misplaced':>10}  checksum")
    for mode, row in by_mode.items():
        print(f"{mode:<10} {row['wall_seconds']:>8.1f} {row['link_bytes'] / 1e6:>10.2f} "
              f"{row['audit_bytes'] / 1e6:>10.2f} {row['misplaced_tasks']:>4}/{row['regional_tasks']:<5}  "
              f"{', '.join(row['checksums'])}")
        print(" " * 10 + "  between regions by service: " + ", ".join(
            f"{service} {size / 1e6:.2f} MB in {row['proxied_round_trips'][service]} round trips"
            for service, size in row["proxied_bytes"].items()))
    print(f"targets: {json.dumps(found)}")
    print(f"-> {output} and {picture}; namespaces left: {remaining or 'none'}")
    return 0 if found["checksums_agree"] and not remaining else 1


if __name__ == "__main__":
    sys.exit(main())
