"""The images built from the real Dockerfiles and run (issue 35, point 1), on the Debian base debootstrap makes here
(local_platform/images.py): the scheduler and a worker of the Dask image, each with its declared command, its
declared environment and its TLS secrets through the image's entrypoint, compute over mutual TLS; the catalog-sync
image, called by AWS's runtime interface client as Lambda calls it, runs the declared nightly workflow of the lean
stack against the AWS emulation and publishes a catalog a notebook reads.

Needs root, Debian's docker.io running (`dockerd --storage-driver=vfs --iptables=false --bridge=none`, as .ci/run
starts it) and debootstrap; skipped naming what is missing otherwise. Containers share the host's network (there is
no bridge) and listen on loopback at free ports, so a running local platform is not touched."""

from __future__ import annotations

import operator
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from local_platform.data import create_bucket, publish, sample_kind, write_cmip6_like, write_era5_like
from local_platform.declared import Container, Deployment, read_deployment
from local_platform.images import Built, build_all, docker, engine_problem, run_detached
from local_platform.nightly import FunctionSpec, first_syncs
from local_platform.platform import free_port, local_arguments, role_secrets, task_environment
from local_platform.runtime_api import ContainerFunctions
from local_platform.step_functions import run
from local_platform.tls import LocalTls, create_local_tls
from platform_facts import CATALOG_S3_ENDPOINT_VARIABLE
from tests.catalog_fixtures import s3_client
from tests.conftest import cached_graph, moto_process

pytestmark = [pytest.mark.root, pytest.mark.processes, pytest.mark.slow]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    if problem := engine_problem():
        pytest.skip(f"no container engine to build the images with: {problem}")
    return build_all(tmp_path_factory.mktemp("images") / "build.log")


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[str]:
    """An AWS emulation of this test's own, in its own process: the lean stack's bucket names are fixed by its
    graph, and every moto server in the tests' process shares one state, which other tests may have filled."""
    with moto_process(tmp_path / "moto.log") as endpoint:
        yield endpoint


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of the containers a test starts; each is removed at the end, whatever happened."""
    started: list[str] = []
    yield started
    for name in started:
        docker("rm", "--force", name, check=False)


def test_the_builds_use_the_real_dockerfiles_on_the_local_base(built: dict[str, Built]) -> None:
    assert set(built) == {"base", "lambda-base", "dask", "catalog-sync"}
    python = docker("run", "--rm", "--network", "none", "--entrypoint", "python", built["dask"].reference,
                    "-c", "import sys, dask_regions, distributed; print(sys.version_info[:2], distributed.__version__)")
    import distributed

    assert python.stdout.strip() == f"(3, 11) {distributed.__version__}"  # the pinned version, Python 3.11
    user = docker("image", "inspect", "--format", "{{.Config.User}} {{json .Config.Entrypoint}}",
                  built["dask"].reference).stdout.strip()
    assert user == '10001 ["python","/opt/dask/entrypoint.py"]'


def _start(container: Container, deployment: Deployment, image: str, tls: LocalTls, root: Path, ports: tuple[int, int],
           aws_endpoint: str, started: list[str]) -> str:
    """One declared ECS task as a container: the declared command (this machine's ports), environment and secrets."""
    task_root = root / container.service
    task_root.mkdir(parents=True)
    task_root.chmod(0o777)  # the image's user (10001) writes its TLS files there
    environment = task_environment(container, role_secrets(tls), task_root, root, aws_endpoint, None)
    environment = {k: v for k, v in environment.items() if k not in ("PATH", "HOME")} | {"HOME": "/home/dask"}
    name = f"test-{container.service}-{uuid.uuid4().hex[:6]}"
    run_detached(name, image, local_arguments(container, deployment, *ports), environment, "--volume",
                 f"{task_root}:{task_root}")
    started.append(name)
    return name


def _logs(names: list[str]) -> str:
    return "\n".join(f"--- {n}\n" + (lambda r: r.stdout + r.stderr)(docker("logs", n, check=False)) for n in names)


def test_a_scheduler_and_a_worker_of_the_dask_image_compute_over_mutual_tls(
        built: dict[str, Built], tmp_path: Path, moto_endpoint: str, containers: list[str]) -> None:
    from distributed import Client

    deployment = read_deployment(cached_graph("dev"))
    tls = create_local_tls(tmp_path / "tls")
    ports = (free_port(), free_port())
    pool_container = deployment.pools()[0]
    for container in (deployment.scheduler(), pool_container):
        _start(container, deployment, built["dask"].reference, tls, tmp_path / "tasks", ports, moto_endpoint,
               containers)
    address = f"tls://127.0.0.1:{ports[0]}"
    pool = str(pool_container.flag("--resources")).split("=")[0]
    try:
        with Client(address, security=tls.security(), timeout="60s") as client:
            client.wait_for_workers(1, timeout=120)
            assert client.submit(operator.add, 2, 3, resources={pool: 1}).result(timeout=60) == 5
            prefixes = set(client.run(lambda: sys.prefix).values())
            assert prefixes == {"/opt/python"}  # the workers are the image's processes, not this venv's
            names = [w["name"] for w in client.scheduler_info()["workers"].values()]
            assert names and all(str(n).startswith(str(pool_container.flag("--name"))) for n in names)
    except Exception as error:
        raise AssertionError(f"{error}\n{_logs(containers)}") from error
    stranger = create_local_tls(tmp_path / "another-ca")  # a well-formed certificate from another CA: refused
    with pytest.raises((OSError, TimeoutError)), Client(address, security=stranger.security(), timeout="5s"):
        pass


def _lean_region(deployment: Deployment) -> tuple[dict[str, Any], str]:
    twin_like = {"schedules": [s.__dict__ for s in deployment.schedules]}
    schedule = next(s for s in first_syncs(twin_like))
    return schedule, str(schedule["region"])


def test_the_catalog_sync_image_runs_the_declared_nightly_sync_against_the_aws_emulation(
        built: dict[str, Built], tmp_path: Path, own_moto: str, monkeypatch: pytest.MonkeyPatch) -> None:
    moto_endpoint = own_moto
    deployment = read_deployment(cached_graph("lean"))  # storage s3 and the S3 catalog: what moto can hold
    schedule, region = _lean_region(deployment)
    definition = deployment.machines[schedule["target"]].definition
    for parameter_region, name, value in deployment.parameters:  # what the deploy stores before the first sync
        ssm = boto3.client("ssm", region_name=parameter_region, endpoint_url=moto_endpoint)
        ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
    for bucket_region, bucket in deployment.buckets:
        s3 = s3_client(moto_endpoint, bucket_region)
        create_bucket(s3, bucket, bucket_region)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    (dataset,) = [repository for where, repository in deployment.datasets() if where == region]
    bucket, _, prefix = dataset.removeprefix("s3://").partition("/")
    create_bucket(s3_client(moto_endpoint, region), bucket, region)
    staging = tmp_path / "staging"
    if sample_kind(prefix) == "cmip6":
        write_cmip6_like(staging, years=range(2095, 2101))
    else:
        write_era5_like(staging)
    publish(s3_client(moto_endpoint, region), staging, bucket, prefix.strip("/"), region)
    location, catalog_region = deployment.s3_catalog() or ("", "")
    aws = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_ENDPOINT_URL": moto_endpoint,
           "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
           CATALOG_S3_ENDPOINT_VARIABLE: moto_endpoint, "CATALOG_REGION": catalog_region}
    specs = {arn: FunctionSpec(f.name, f.handler, {**f.environment, **aws}) for arn, f in deployment.functions.items()
             if f.region == region}
    functions = ContainerFunctions(specs, built["catalog-sync"].reference, tmp_path / "logs")
    try:
        execution = run(definition, schedule["input"], functions.invoke)
    finally:
        functions.close()
    logs = "\n".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert execution.status == "SUCCEEDED", f"{execution.error}: {execution.cause}\n{logs}"
    # Every state's Lambda call went to the container (no other invoker was given); the catalog reads as a
    # notebook reads it.
    monkeypatch.setenv(CATALOG_S3_ENDPOINT_VARIABLE, moto_endpoint)
    import dask_regions as dr

    found = dr.Catalog.open(location, catalog_region).find()
    assert found and {d.region for d in found} == {region}
    # and every dataset's reference set was written (kerchunk combines them through s3fs, in the image)
    sets = {d.references for d in found}
    assert "" not in sets, logs
    for uri in sets:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        s3_client(moto_endpoint, region).head_object(Bucket=bucket, Key=key)
