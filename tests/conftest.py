"""Shared fixtures: stack configs of several shapes and their recorded graphs (synthesised once each)."""

from __future__ import annotations

import contextlib
import copy
import multiprocessing.util
import os
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from stackconfig import StackConfig, parse_stack_config, raw_stack_config
from stackconfig.schema import LUSTRE_KEYS
from stackgraph.synth import PROJECT_DIR, Graph, synthesize
from wheel_build import wheel

CLIENT = {"region": "eu-west-2", "cidr": "10.0.0.0/16"}
WORKER_REGIONS = ["us-east-1", "us-west-2", "eu-central-1", "ap-southeast-2", "ca-central-1", "sa-east-1",
                  "ap-northeast-1", "eu-north-1"]


def workers(regions: list[str]) -> list[dict[str, Any]]:
    return [{"region": region, "cidr": f"10.{i + 1}.0.0/16", "dataset": f"s3://dataset-{region}/prefix/data"}
            for i, region in enumerate(regions)]


# name -> top-level overrides applied over Pulumi.dev.yaml
SHAPES: dict[str, dict[str, Any]] = {
    "dev": {},
    "one-worker-in-client-region": {"workers": workers(["eu-west-2"])},
    "one-worker": {"workers": workers(["us-east-1"])},
    "three-workers": {"workers": workers(["us-east-1", "us-west-2", "eu-west-2"])},
    "four-regions": {"workers": workers(["us-east-1", "us-west-2", "eu-central-1"])},
    "five-workers": {"workers": workers(["us-east-1", "us-west-2", "eu-central-1", "ap-southeast-2", "eu-west-2"])},
}
# Shipped stacks other than dev, as shapes (their whole config over dev's): the graph record holds them too. Not in
# SHAPES: they differ from dev by choices (backbone, storage) that tests of every shape do not assume.
SHIPPED_SHAPES: dict[str, dict[str, Any]] = {"lean": raw_stack_config(PROJECT_DIR, "lean")[1]}
ALL_SHAPES = {**SHAPES, **SHIPPED_SHAPES}


def storage_workers(shape: str, storage: str) -> list[dict[str, Any]]:
    """A shape's worker regions with `storage` (no Lustre keys: storage `s3` refuses them)."""
    _, raw = raw_stack_config(PROJECT_DIR, "dev", ALL_SHAPES[shape])
    return [{**{k: v for k, v in w.items() if k not in LUSTRE_KEYS}, "storage": storage} for w in raw["workers"]]


def _overrides(shape: str, top: dict[str, Any]) -> dict[str, Any]:
    storage = top.pop("worker_storage", "lustre")  # lustre: the default, the shape as it is (one graph, cached once)
    kind = top.pop("catalog_kind", None)  # the `catalog` object's kind (a dict cannot be a cache key)
    return {**ALL_SHAPES[shape], **top, **({"workers": storage_workers(shape, storage)} if storage != "lustre" else {}),
            **({"catalog": {"kind": kind}} if kind else {})}


@cache
def _graph(shape: str, top: tuple[tuple[str, Any], ...] = ()) -> Graph:
    return synthesize("dev", _overrides(shape, dict(top)))


@pytest.fixture(params=sorted(SHAPES))
def graph(request: pytest.FixtureRequest) -> Graph:
    """The recorded graph of every config shape (a fresh copy: tests may mutate it)."""
    return copy.deepcopy(_graph(request.param))


def shape_config(shape: str, **top: Any) -> StackConfig:
    """The validated config the program saw for a shape (with `top`: more top-level keys, e.g. backbone=...;
    worker_storage=... for every worker region's `storage`; catalog_kind=... for the catalog's `kind`)."""
    project, raw = raw_stack_config(PROJECT_DIR, "dev", _overrides(shape, top))
    return parse_stack_config(raw, stack="dev", project=project)


def cached_graph(shape: str, **top: Any) -> Graph:
    """A fresh copy of a shape's graph (with `top`: more top-level keys of plain values, worker_storage=... or
    catalog_kind=...),
    synthesised once per test session."""
    return copy.deepcopy(_graph(shape, tuple(sorted(top.items()))))


@pytest.fixture
def dev_graph() -> Graph:
    return copy.deepcopy(_graph("dev"))


def site_regions(graph: Graph) -> dict[str, str]:
    """Site name -> region, from the program's own exports."""
    outputs = graph.outputs
    return {site: _region_of_vpc(graph, vpc_id) for site, vpc_id in outputs["vpcIds"].items()}


def _region_of_vpc(graph: Graph, vpc_id: str) -> str:
    vpc = graph.by_id(vpc_id)
    assert vpc is not None and vpc.region
    return vpc.region


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server (S3, SSM, Scheduler, ...) on loopback, stopped when the block ends."""
    from moto.server import ThreadedMotoServer

    from tests.catalog_fixtures import free_port, moto_environment

    moto_environment()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def moto_process(log: Path) -> Iterator[str]:
    """A moto server in a process of its own, for a test that needs AWS state no other test can have touched (moto's
    state is per process: servers in the tests' process share it), stopped when the block ends."""
    import sys

    from local_platform.platform import _wait_for_port
    from tests.catalog_fixtures import free_port, moto_environment

    moto_environment()
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(port, "moto", server, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto server for the whole session."""
    with moto_server() as endpoint:
        yield endpoint


# ------------------------------------------------------------------------------------------- test tiers
# Markers (declared in pyproject.toml): `processes` (starts a process: a Dask cluster, a server, a command),
# `root` (network or mount namespaces), `slow` (over about 10 s). `make test-fast` runs the tests with none of them.
PROCESS_FIXTURES = {"osmem_url"}  # fixtures that start a process: a test using one is marked `processes`
ROOT_REASON = "needs root: it creates network or mount namespaces (run the tests as root, as CI does)"


class UnmarkedProcessError(AssertionError):
    """A test that is not marked `processes` started one: the fast tier would not be what it says."""


@contextlib.contextmanager
def _no_processes(nodeid: str) -> Iterator[None]:
    """Any process started meanwhile fails the test, naming the marker it lacks."""
    def refuse(*_: Any, **__: Any) -> None:
        raise UnmarkedProcessError(f"{nodeid} starts a process: mark it (or its module) pytest.mark.processes")

    originals = (subprocess.Popen._execute_child, multiprocessing.util.spawnv_passfds, os.fork)
    subprocess.Popen._execute_child = refuse  # type: ignore[method-assign,assignment]
    multiprocessing.util.spawnv_passfds = refuse  # type: ignore[assignment]
    os.fork = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        subprocess.Popen._execute_child, multiprocessing.util.spawnv_passfds, os.fork = originals  # type: ignore[method-assign]


def pytest_sessionstart(session: pytest.Session) -> None:
    """The data plane's wheel, which the program declares (the images and the kernel install it), is built before
    any test (once per source digest, then kept in dist/): building it is the suite's set-up, not a test's process."""
    wheel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if item.get_closest_marker("processes"):
        yield
        return
    with _no_processes(item.nodeid):
        yield


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") and os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test using a fixture that starts a process is marked `processes` (a fixture's mark would not reach it)."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)
