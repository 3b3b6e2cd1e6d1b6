"""The link faults of bench/faults.py, on the WAN benchmark's namespaces (bench/wan_network.py): one namespace per
region behind a router namespace, the declared tasks started as bench/wan.py starts them (the scheduler in the client
region, each pool's task in its region), the nightly syncs run, the catalog in the client region.

- A cut is a pair of DROP rules in the router's FORWARD chain (iptables in the router's namespace only): packets
  vanish as through a broken route, nobody is told, connections stay open. `region-cut` drops everything to and
  from the worker region; `client-cut` only what passes between it and the client region.
- `slow-link` changes the region's link (both ends' tbf) to a tenth of its rate during the reference analysis.
- The platform's answer to a cut is the stack's `client.regionGraceSeconds` (Dask's worker-ttl): a cut shorter than
  it loses nothing; a longer one fails the work that needs the region with an error naming it, while work for the
  other regions goes on. When the link is back, the region's workers (told that the scheduler removed them) close,
  and their ECS service starts a new task, as the run does here; the next analysis must give the same checksum.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.wan import (
    CATALOG_PORT,
    S3_PORT,
    SCHEDULER_PORT,
    BenchError,
    Cluster,
    Processes,
    Sizes,
    agent,
    declared_references,
    environment,
    generate,
    platform_in_namespaces,
    scheduler_address,
    start_pool,
    start_scheduler,
)
from bench.wan_network import RegionLink, run_in
from local_platform.declared import read_deployment
from local_platform.tls import create_local_tls
from stackconfig import PROJECT_DIR as ROOT
from stackconfig import load_stack_file, raw_stack_config
from stackgraph.synth import synthesize

STACK = "dev"
GIGABYTES = 0.005  # per worker region: the faults are about the links, not the volume
RATE_MBIT, DELAY_MS = 50.0, 40.0  # the WAN benchmark's defaults
MODE = "pinned"  # as deployed: every task in its data's region
PROBE_TASKS, PROBE_SECONDS = 120, 0.5  # a computation of a minute of task time: still running when the cut comes
CUT_AFTER_SECONDS = 3.0  # after the probe is started: mid-computation
BRIEF_CUT_SECONDS = 10.0  # well within any grace the stack allows (10 s at least)
ECS_POLL_SECONDS = 1.0  # how soon a pool's ended task is replaced (ECS takes tens of seconds on Fargate)


def _in_namespace(namespace: str, *command: str) -> None:
    try:
        run_in(namespace, *command)
    except RuntimeError as error:
        raise BenchError(str(error)) from None


def cut_rules(kind: str, links: dict[str, RegionLink], client_region: str, region: str) -> list[list[str]]:
    """The router's DROP rules of a cut (iptables arguments after the chain): both directions."""
    cut, client = links[region].network, links[client_region].network
    if kind == "region-cut":
        return [["-s", cut, "-j", "DROP"], ["-d", cut, "-j", "DROP"]]
    return [["-s", cut, "-d", client, "-j", "DROP"], ["-s", client, "-d", cut, "-j", "DROP"]]


@dataclass
class Fleet:
    """The platform on the WAN: its declared tasks, started, replaced and probed."""

    config: Any
    cluster: Cluster
    router: str
    links: dict[str, RegionLink]
    processes: Processes
    bound: float
    pools: dict[str, str] = field(default_factory=dict)  # region -> the name of its pool's running task
    replacements: dict[str, list[float]] = field(default_factory=dict)  # region -> when its tasks were replaced
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client(self) -> RegionLink:
        return self.links[self.config.client.region]

    @property
    def scheduler(self) -> str:
        return scheduler_address(self.client)

    def start(self) -> None:
        start_scheduler(MODE, self.cluster, self.client, self.processes, "scheduler")
        agent(self.client.namespace, "wait-port", "--port", str(SCHEDULER_PORT))
        for container in self.cluster.deployment.pools():
            self.replacements[container.region] = []
            self._start_pool(container.region)
        threading.Thread(target=self._keep_tasks_running, daemon=True).start()
        self.wait_for_workers()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:  # a replacement being started finishes first
            pass

    def _start_pool(self, region: str) -> None:
        count = len(self.replacements[region])
        self.pools[region] = f"pool-{region}" + (f"-{count}" if count else "")
        (container,) = [c for c in self.cluster.deployment.pools() if c.region == region]
        start_pool(MODE, self.cluster, container, self.links, self.config.client.region, self.processes,
                   self.pools[region])

    def _keep_tasks_running(self) -> None:
        """ECS's part, as each pool's service does: a task that ends is replaced by a new one (its desired count)."""
        while not self._stop.wait(ECS_POLL_SECONDS):
            with self._lock:
                if self._stop.is_set():
                    return
                for region, name in list(self.pools.items()):
                    process = self.processes.running.get(name)
                    if process is not None and process.poll() is not None:
                        self.processes.running.pop(name)
                        self.replacements[region].append(time.time())
                        self._start_pool(region)

    def wait_for_workers(self) -> None:
        agent(self.client.namespace, "wait-cluster", "--scheduler", self.scheduler, "--workers",
              str(len(self.pools)), "--timeout", str(self.bound), tls=self.cluster.tls, timeout=self.bound + 30)

    def analyse(self) -> dict[str, Any]:
        return agent(self.client.namespace, "analyse", "--mode", MODE, "--scheduler", self.scheduler, "--catalog",
                     f"http://127.0.0.1:{CATALOG_PORT}", "--s3-port", str(S3_PORT), tls=self.cluster.tls,
                     timeout=self.bound * 5)

    def state(self) -> dict[str, Any]:
        """The catalog's digest, and each worker region's reference sets that its storage lacks (read there)."""
        catalog = agent(self.client.namespace, "catalog-state", "--catalog", f"http://127.0.0.1:{CATALOG_PORT}",
                        "--s3-port", str(S3_PORT))
        missing = [s for region in self.pools for s in agent(
            self.links[region].namespace, "catalog-state", "--catalog",
            f"http://{self.config.client.region}.wan:{CATALOG_PORT}", "--region", region, "--s3-port",
            str(S3_PORT))["missing_sets"]]
        return {"digest": catalog["digest"], "documents": catalog["documents"], "missing_sets": missing}

    def probe(self, region: str) -> subprocess.Popen[str]:
        """A computation that needs `region` alone, running in the notebook's place (the client region)."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.client.namespace, sys.executable, str(ROOT / "bench" / "wan_agent.py"),
             "probe", "--scheduler", self.scheduler, "--region", region, "--tasks", str(PROBE_TASKS), "--seconds",
             str(PROBE_SECONDS), "--timeout", str(self.bound * 3)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=environment(self.cluster.tls), start_new_session=True)

    def outcome(self, probe: subprocess.Popen[str]) -> dict[str, Any]:
        import json

        try:
            out, err = probe.communicate(timeout=self.bound * 4)
        except subprocess.TimeoutExpired:
            probe.kill()
            raise BenchError("a probe computation did not end within its own timeout") from None
        if probe.returncode != 0:
            raise BenchError(f"a probe computation failed:\n{err[-2000:]}")
        answer: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return answer

    @contextmanager
    def cut(self, kind: str, region: str) -> Iterator[float]:
        """The cut in place; yields when it began (wall clock); lifted on leaving, whatever happened."""
        rules = cut_rules(kind, self.links, self.config.client.region, region)
        for rule in rules:
            _in_namespace(self.router, "iptables", "-I", "FORWARD", *rule)
        try:
            yield time.time()
        finally:
            for rule in rules:
                _in_namespace(self.router, "iptables", "-D", "FORWARD", *rule)

    def replaced_since(self, region: str, since: float) -> list[float]:
        """How long after `since` (wall clock) the region's task was replaced, each time."""
        return [round(when - since, 1) for when in self.replacements[region] if when >= since]


def link_cut(fleet: Fleet, kind: str, region: str, grace: float, cut_for: float,
             baseline: dict[str, Any]) -> dict[str, Any]:
    """A brief cut (within the grace), then a long one (past it), of `region`'s link (kind: region-cut or
    client-cut), each in the middle of a computation that needs the region; during the long one, a computation that
    needs only another region. Then the region's recovery and the reference analysis again."""
    other = next(r for r in fleet.pools if r != region)
    brief = fleet.probe(region)
    time.sleep(CUT_AFTER_SECONDS)
    with fleet.cut(kind, region) as began:
        time.sleep(BRIEF_CUT_SECONDS)
    within = fleet.outcome(brief)

    cut_off = fleet.probe(region)
    time.sleep(CUT_AFTER_SECONDS)
    with fleet.cut(kind, region) as began:
        unaffected = fleet.outcome(fleet.probe(other))
        failed = fleet.outcome(cut_off)
        time.sleep(max(0.0, began + cut_for - time.time()))
    restored, back = time.monotonic(), time.time()
    fleet.wait_for_workers()
    rejoined = time.monotonic() - restored
    after = fleet.analyse()
    recovered = time.monotonic() - restored
    error = failed["error"] or ""
    dropped = f"to and from {region}" if kind == "region-cut" else f"between {region} and the client region"
    return {
        "injected": f"the router dropping every packet {dropped} (iptables DROP both ways), mid-computation: "
                    f"{BRIEF_CUT_SECONDS:.0f} s, then {cut_for:.0f} s",
        "grace_s": grace, "region": region,
        "within_grace": {"cut_s": BRIEF_CUT_SECONDS, "result_correct": within["correct"], "error": within["error"],
                         "finished_after_s": round(within["ended"] - within["submitted"], 1)},
        "past_grace": {
            "cut_s": cut_for, "client_error": error or None,
            "error_names_region": region in error and "unreachable" in error,
            "other_region_correct": unaffected["correct"] and not unaffected["error"],
            "other_region_finished_after_s": round(unaffected["ended"] - began, 1)},
        "time_to_detect_s": round(failed["ended"] - began, 1) if error else None,
        "time_to_clear_error_s": round(failed["ended"] - began, 1) if error else None,
        # ECS's part: when the region's task ended (its workers closed) and a new one was started, after the cut
        "tasks_replaced_after_cut_s": fleet.replaced_since(region, began), "link_back_after_s": round(back - began, 1),
        "pool_rejoined_after_s": round(rejoined, 1),
        "time_to_recovery_s": round(recovered, 1),
        "result_correct": (within["correct"] and unaffected["correct"] and after["checksum"] == baseline["checksum"]
                           and region in error),
        "checksum_before": baseline["checksum"], "checksum_after": after["checksum"]}


def slow_link(fleet: Fleet, region: str, baseline: dict[str, Any]) -> dict[str, Any]:
    """The reference analysis with `region`'s link (both ends) at a tenth of its rate from its start."""
    link = fleet.links[region]
    slow = RATE_MBIT / 10

    def shape(rate: float) -> None:
        for namespace, interface in ((link.namespace, link.interface), (fleet.router, link.router_interface)):
            _in_namespace(namespace, "tc", "qdisc", "change", "dev", interface, "root", "tbf", "rate", f"{rate:g}mbit",
                    "burst", "64kb", "latency", "400ms")

    shape(slow)
    try:
        began = time.monotonic()
        result = fleet.analyse()
        took = time.monotonic() - began
    finally:
        shape(RATE_MBIT)
    return {"injected": f"{region}'s link at {slow:g} Mbit/s both ways (a tenth of {RATE_MBIT:g}) during the "
                        "reference analysis",
            "region": region, "time_to_detect_s": None, "analysis_s": round(took, 1),
            "analysis_at_full_rate_s": round(baseline["wall_seconds"], 1),
            "slowdown": round(took / baseline["wall_seconds"], 2), "time_to_recovery_s": 0.0,
            "result_correct": result["checksum"] == baseline["checksum"],
            "link_bytes_note": "pinned, only the reduced maps cross the slow link"}


def run(names: list[str], bound: float, grace: float, cut_for: float | None, work: Path) -> dict[str, dict[str, Any]]:
    """Every named link fault, on one WAN built for them; each result with its data_lost."""
    _, raw = raw_stack_config(ROOT, STACK)
    overrides = {"client": {**raw["client"], "regionGraceSeconds": int(grace)}}
    config = load_stack_file(ROOT, STACK, overrides)
    deployment = read_deployment(synthesize(STACK, overrides))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    staging = generate(config, Sizes(GIGABYTES), work)
    processes = Processes(logs)
    cluster = Cluster(deployment, create_local_tls(work / "tls"), work)
    settings = argparse.Namespace(rate_mbit=RATE_MBIT, delay_ms=DELAY_MS, references="on", modes=[MODE])
    # Past the grace: Dask removes a silent worker between one and two graces after its last heartbeat, after
    # waiting up to 30 s more for its nanny; then a margin.
    cut_for = cut_for or 2 * grace + 45
    results: dict[str, dict[str, Any]] = {}
    try:
        with platform_in_namespaces(config, staging, settings, processes, {}, work,
                                    declared_references(deployment)) as (router, links):
            fleet = Fleet(config, cluster, router, links, processes, bound)
            try:
                fleet.start()
                baseline = fleet.analyse()
                before = fleet.state()
                region = config.workers[-1].region
                for name in names:
                    print(f"{name}: {region}", flush=True)
                    try:
                        result = (slow_link(fleet, region, baseline) if name == "slow-link"
                                  else link_cut(fleet, name, region, grace, cut_for, baseline))
                    except BenchError as error:  # recorded under the fault's name; the next fault still runs
                        results[name] = {"hang_or_failure": str(error)[-2000:]}
                        fleet.wait_for_workers()
                        continue
                    now = fleet.state()
                    result["data_lost"] = {"catalog_documents": now["digest"] != before["digest"],
                                           "reference_sets": bool(now["missing_sets"])}
                    results[name] = result
            finally:
                fleet.stop()
    finally:
        processes.stop()
    return results
