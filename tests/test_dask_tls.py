"""Mutual TLS for every Dask connection: a real cluster started through the image's entrypoint refuses clients
without the platform's certificate; the program hands every Dask task its certificate from Secrets Manager by
ARN and never starts Dask on plain TCP."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from local_platform.processes import stop_groups
from local_platform.tls import LocalTls, create_local_tls
from stackconfig import ConfigError, load_stack_file
from stackgraph.synth import PROJECT_DIR, Graph, RecordedResource
from tests.conftest import SHAPES, cached_graph

ENTRYPOINT = PROJECT_DIR / "images" / "dask" / "entrypoint.py"
BIN = Path(sys.executable).parent
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"


def _entrypoint_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dask_image_entrypoint", ENTRYPOINT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _role_environment(tls: LocalTls, role: str, directory: Path) -> dict[str, str]:
    """What ECS would inject from the role's secret."""
    files = tls.roles[role]
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DASK_TLS_CA": tls.ca.read_text(),
            "DASK_TLS_CERT": files.cert.read_text(), "DASK_TLS_KEY": files.key.read_text(),
            "DASK_TLS_DIR": str(directory)}


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_groups([process])


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A scheduler and a worker started exactly as the image starts them: the entrypoint, PEMs in env."""
    root = tmp_path_factory.mktemp("tls-cluster")
    tls = create_local_tls(root / "ca")
    scheduler_file = root / "scheduler.json"
    scheduler = subprocess.Popen(
        [sys.executable, str(ENTRYPOINT), "scheduler", "--host", "127.0.0.1", "--port", "0",
         "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
        env=_role_environment(tls, "scheduler", root / "run-scheduler"), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [scheduler]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert scheduler.poll() is None and time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        worker = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
             "--no-dashboard", "--name", "pool-test"],
            env=_role_environment(tls, "worker", root / "run-worker"), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(worker)
        yield {"address": address, "tls": tls, "root": root, "scheduler": scheduler, "worker": worker}
    finally:
        for process in reversed(processes):
            _stop(process)


def _connect(address: str, security: Any) -> Any:
    from distributed import Client

    return Client(address, security=security, timeout=5)


@pytest.mark.processes
def test_a_client_with_the_platform_certificate_computes_over_tls(tls_cluster: dict[str, Any]) -> None:
    from distributed import Client

    tls: LocalTls = tls_cluster["tls"]
    assert tls_cluster["address"].startswith("tls://")
    with Client(tls_cluster["address"], security=tls.security(), timeout=30) as client:
        client.wait_for_workers(1, timeout=60)
        workers = list(client.scheduler_info()["workers"])
        assert workers and all(w.startswith("tls://") for w in workers)  # workers listen on TLS too
        assert client.submit(sum, [1, 2, 3]).result() == 6


@pytest.mark.processes
@pytest.mark.parametrize("credentials", ["foreign-certificate", "plain-tcp"])
def test_dask_clients_without_the_platform_certificate_are_refused(tls_cluster: dict[str, Any], tmp_path: Path,
                                                                     credentials: str) -> None:
    from distributed.security import Security

    tls: LocalTls = tls_cluster["tls"]
    address = tls_cluster["address"]
    if credentials == "foreign-certificate":  # a well-formed client certificate from another CA
        other = create_local_tls(tmp_path / "other-ca")
        security: Any = Security(tls_ca_file=str(tls.ca), tls_client_cert=str(other.roles["client"].cert),
                                 tls_client_key=str(other.roles["client"].key), require_encryption=True)
    else:
        security, address = Security(), address.replace("tls://", "tcp://")
    with pytest.raises((OSError, TimeoutError)):
        _connect(address, security)
    assert tls_cluster["scheduler"].poll() is None  # refusing a client does not hurt the scheduler


@pytest.mark.processes
@pytest.mark.parametrize("client_certificate", [False, True])
def test_the_scheduler_itself_demands_a_client_certificate(tls_cluster: dict[str, Any],
                                                           client_certificate: bool) -> None:
    """The scheduler, not the client library, enforces it: a raw TLS client that trusts the CA but presents no
    certificate is cut off (TLS 1.3 reports it on the first read); the same client with the platform's
    certificate receives the first bytes of Dask's own handshake."""
    import socket
    import ssl

    host, port = tls_cluster["address"].removeprefix("tls://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(tls_cluster["tls"].ca))
    context.check_hostname = False
    if client_certificate:
        files = tls_cluster["tls"].roles["client"]
        context.load_cert_chain(str(files.cert), str(files.key))
    with socket.create_connection((host, int(port)), timeout=2) as raw, \
            context.wrap_socket(raw, server_hostname=host) as connection:
        if client_certificate:
            assert connection.recv(1) != b""
        else:
            with pytest.raises(ssl.SSLError):
                connection.recv(1)


@pytest.mark.processes
def test_the_entrypoint_keeps_keys_private(tls_cluster: dict[str, Any]) -> None:
    for role in ("scheduler", "worker"):
        directory = tls_cluster["root"] / f"run-{role}"
        assert directory.stat().st_mode & 0o777 == 0o700
        assert {p.name for p in directory.iterdir()} == {"ca.pem", "cert.pem", "key.pem"}
        assert (directory / "key.pem").stat().st_mode & 0o777 == 0o600
    worker_processes = [tls_cluster["worker"].pid, *_children(tls_cluster["worker"].pid)]
    for pid in (tls_cluster["scheduler"].pid, *worker_processes):  # the worker's entrypoint stays, to drain
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        names = {entry.split(b"=", 1)[0] for entry in environ}
        assert b"DASK_TLS_KEY" not in names and b"DASK_TLS_CERT" not in names  # the key lives only in the file
    assert len(worker_processes) >= 2


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            found += [child, *_children(child)]
    return found


@pytest.mark.processes
def test_the_entrypoint_refuses_to_start_without_certificates_or_on_plain_tcp(tmp_path: Path) -> None:
    bare = {k: v for k, v in os.environ.items() if not k.startswith("DASK_TLS")}
    result = subprocess.run([sys.executable, str(ENTRYPOINT), "scheduler"], env=bare, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "DASK_TLS_CA, DASK_TLS_CERT, DASK_TLS_KEY not set" in result.stderr
    tls = create_local_tls(tmp_path / "ca")
    result = subprocess.run([sys.executable, str(ENTRYPOINT), "worker", "tcp://10.0.0.1:8786"],
                            env=_role_environment(tls, "worker", tmp_path / "run"), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2 and "use tls:// addresses" in result.stderr


def test_the_entrypoint_adds_the_tls_flags_only_to_dask_processes(tmp_path: Path) -> None:
    entrypoint = _entrypoint_module()
    paths = {field: tmp_path / f"{field}.pem" for field in ("ca", "cert", "key")}
    scheduler = entrypoint.dask_command(["scheduler", "--port", "8786"], paths)
    assert scheduler[:5] == ["dask", "scheduler", "--port", "8786", "--protocol"] and scheduler[5] == "tls"
    assert scheduler[-6:] == ["--tls-ca-file", str(paths["ca"]), "--tls-cert", str(paths["cert"]),
                              "--tls-key", str(paths["key"])]
    assert entrypoint.dask_command(["--version"], {}) == ["dask", "--version"]
    with pytest.raises(entrypoint.EntrypointError):
        entrypoint.dask_command(["scheduler", "--protocol", "tcp"], paths)


# ------------------------------------------------------------------------------------------- the graph
def _containers(graph: Graph) -> list[tuple[RecordedResource, dict[str, Any]]]:
    return [(task, container) for task in graph.of_type(TASK_DEFINITION)
            for container in json.loads(task.inputs["containerDefinitions"])]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_task_definition_starts_dask_on_plain_tcp(shape: str) -> None:
    graph = cached_graph(shape)
    dask_containers = [(t, c) for t, c in _containers(graph) if c["command"][0] in ("scheduler", "worker")]
    assert len(dask_containers) == 1 + len(graph.outputs["workerPools"])
    assert graph.outputs["schedulerAddress"].startswith("tls://")
    for task, container in dask_containers:
        text = json.dumps(container)
        assert "tcp://" not in text, task.name
        if container["command"][0] == "scheduler":
            assert container["command"][1:3] == ["--protocol", "tls"]
        else:
            assert container["command"][1] == graph.outputs["schedulerAddress"]


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_dask_tasks_get_their_certificate_from_secrets_manager_by_arn(shape: str) -> None:
    graph = cached_graph(shape)
    secrets = {s.outputs["arn"]: s for s in graph.of_type(SECRET)}
    keys = {k.region: k.outputs["arn"] for k in graph.of_type("aws:kms/key:Key")}
    for task, container in _containers(graph):
        environment = {e["name"]: e["value"] for e in container.get("environment", [])}
        assert not any("PRIVATE KEY" in value for value in environment.values())  # never as plain environment
        by_name = {s["name"]: s["valueFrom"] for s in container["secrets"]}
        assert set(by_name) == {"DASK_TLS_CA", "DASK_TLS_CERT", "DASK_TLS_KEY"}
        arns = {value.rsplit(":", 3)[0] for value in by_name.values()}
        assert len(arns) == 1, task.name
        secret = secrets[arns.pop()]  # a full ARN of a secret the program creates ...
        assert secret.region == task.region  # ... in the task's own region
        assert secret.inputs["kmsKeyId"] == keys[task.region]  # encrypted with that region's key
        assert {v.rsplit(":", 3)[1] for v in by_name.values()} == {"ca", "cert", "key"}
        role = "scheduler" if container["command"][0] == "scheduler" else "worker"
        assert secret.name == f"dask-tls-{role}-{task.region}"
        statements = json.loads(_policy_of(graph, task).inputs["policy"])["Statement"]
        reads = [s for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]
        assert [s["Resource"] for s in reads] == [secret.outputs["arn"]]  # that secret only
        # The task is defined only once the secret holds its value.
        version = next(v for v in graph.of_type(SECRET_VERSION) if v.inputs["secretId"] == secret.id)
        assert version.urn in task.dependencies


def _policy_of(graph: Graph, task: RecordedResource) -> RecordedResource:
    role = next(r for r in graph.of_type("aws:iam/role:Role") if r.outputs["arn"] == task.inputs["executionRoleArn"])
    return next(p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id)


def test_certificates_cover_the_scheduler_name_and_their_roles(dev_graph: Graph) -> None:
    host = dev_graph.outputs["schedulerAddress"].removeprefix("tls://").rsplit(":", 1)[0]
    requests = {r.name: r for r in dev_graph.of_type("tls:index/certRequest:CertRequest")}
    assert requests["dask-tls-scheduler"].inputs["dnsNames"] == [host]
    certificates = {r.name: r for r in dev_graph.of_type("tls:index/locallySignedCert:LocallySignedCert")}
    assert "server_auth" not in certificates["dask-tls-client"].inputs["allowedUses"]
    for role in ("scheduler", "worker"):
        assert {"server_auth", "client_auth"} <= set(certificates[f"dask-tls-{role}"].inputs["allowedUses"])
    (ca,) = dev_graph.of_type("tls:index/selfSignedCert:SelfSignedCert")
    assert ca.inputs["isCaCertificate"] is True
    assert ca.inputs["validityPeriodHours"] > certificates["dask-tls-worker"].inputs["validityPeriodHours"]
    # Stored values are Pulumi secrets (encrypted in the state), one per role and region that needs it.
    versions = dev_graph.of_type(SECRET_VERSION)
    assert sorted(v.name for v in versions) == ["dask-tls-client-eu-west-2", "dask-tls-scheduler-eu-west-2",
                                                "dask-tls-worker-us-east-1", "dask-tls-worker-us-west-2"]


def test_workers_keep_their_key_on_tmpfs_and_the_notebook_gets_a_client_certificate(dev_graph: Graph) -> None:
    for _, container in _containers(dev_graph):
        if container["command"][0] == "worker":
            (mount,) = container["linuxParameters"]["tmpfs"]
            environment = {e["name"]: e["value"] for e in container["environment"]}
            assert environment["DASK_TLS_DIR"].startswith(mount["containerPath"] + "/")
    (lifecycle,) = dev_graph.of_type("aws:sagemaker/notebookInstanceLifecycleConfiguration:"
                                     "NotebookInstanceLifecycleConfiguration")
    import base64

    script = base64.b64decode(lifecycle.inputs["onStart"]).decode()
    client_secret = dev_graph.named("dask-tls-client-eu-west-2", SECRET).outputs["arn"]
    assert f'--secret-id "{client_secret}"' in script and "umask 077" in script
    assert "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY" in script
    notebook_policy = dev_graph.named("client-notebook-policy", "aws:iam/rolePolicy:RolePolicy")
    statements = json.loads(notebook_policy.inputs["policy"])["Statement"]
    assert {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": client_secret} in statements


def test_security_groups_keep_the_same_ports(dev_graph: Graph) -> None:
    """TLS runs on the same ports: the scheduler still listens on 8786 and nothing else opened."""
    ports = {(r.inputs["fromPort"], r.inputs["toPort"]) for r in dev_graph.of_type(
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if "scheduler-from" in r.name}
    assert ports == {(8786, 8786)}


@pytest.mark.parametrize("days", [0, 30, 826, "a year"])
def test_bad_certificate_validity_names_the_key(days: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        load_stack_file(PROJECT_DIR, "dev", {"daskTlsValidityDays": days})
    assert "daskTlsValidityDays" in str(caught.value) and "Fix:" in str(caught.value)
