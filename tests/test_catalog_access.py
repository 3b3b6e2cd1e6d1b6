"""Least privilege on the catalog beyond what IAM paths can say (catalog_access/): the security plugin's
roles as the recorded graph applies them at deploy, held to the catalog's rule by the documented model of the
plugin, and the deploy function run against a stand-in domain, every request it sends evaluated against the
recorded IAM policies of the role it runs as.

What this cannot show here: the security plugin itself enforcing the roles (osmem has no security plugin, and
no OpenSearch runs on this machine). The README says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import catalog_access as access
from catalog_access import READ_ALIAS, allows, security_config, widenings
from stackgraph.synth import Graph
from tests.conftest import cached_graph
from tests.json_stub import JsonHandler, serving
from tests.test_permissions import denied, domain_arn, es_call


def applied(graph: Graph) -> dict[str, Any]:
    (invocation,) = graph.of_type("aws:lambda/invocation:Invocation")
    return dict(json.loads(invocation.inputs["input"]))


def role_arn(graph: Graph, name: str) -> str:
    (role,) = [r for r in graph.of_type("aws:iam/role:Role") if r.name == name]
    return str(role.outputs["arn"])


# What a region's sync does (catalog_sync/sinks.py), as the security plugin's actions on the indices touched.
def own_work(region: str) -> list[tuple[str, list[str]]]:
    load, old = f"catalog-{region}-dataset-2", f"catalog-{region}-dataset-1"
    return [("indices:admin/create", [load]), ("indices:data/write/index", [load]),
            ("indices:data/write/bulk[s]", [load]), ("indices:admin/settings/update", [load]),
            ("indices:admin/refresh", [load]), ("indices:data/read/search", [load]),
            ("indices:admin/aliases/get", [f"catalog-{region}-*", READ_ALIAS]),
            ("indices:admin/aliases", [load, READ_ALIAS]), ("indices:admin/delete", [old]),
            ("indices:admin/get", [load]), ("indices:data/write/bulk", [])]


# What a writer must never do to another region, however the request is shaped.
def attacks(region: str, other: str) -> list[tuple[str, list[str]]]:
    own, theirs = f"catalog-{region}-dataset-2", f"catalog-{other}-dataset-1"
    return [("indices:admin/delete", [own, theirs]),  # DELETE /own,theirs passes any IAM path pattern
            ("indices:data/write/index", [theirs]),  # a _bulk body line naming their index
            ("indices:data/write/delete", [theirs]), ("indices:data/write/delete/byquery", [theirs]),
            ("indices:admin/create", [f"catalog-{other}-dataset-3"]),
            ("indices:admin/aliases", [theirs, READ_ALIAS]),  # take their index out of the read alias
            ("indices:admin/delete", [READ_ALIAS]), ("indices:data/write/index", [READ_ALIAS])]


@pytest.mark.parametrize("shape", ["dev", "four-regions"])
def test_each_regions_writer_may_do_its_work_and_nothing_to_another_region(shape: str) -> None:
    graph = cached_graph(shape)
    config = applied(graph)["config"]
    regions = sorted(graph.outputs["workerRegions"])
    assert widenings(config) == []
    for region in regions:
        writer = role_arn(graph, f"worker-{region}-catalog-sync-function-role")
        assert [w for w in own_work(region) if not allows(config, writer, *w)] == []
        for other in (r for r in regions if r != region):
            assert [a for a in attacks(region, other) if allows(config, writer, *a)] == []


@pytest.mark.parametrize("shape", ["dev", "four-regions"])
def test_readers_may_search_and_get_and_change_nothing(shape: str) -> None:
    graph = cached_graph(shape)
    config = applied(graph)["config"]
    reader = role_arn(graph, "client-notebook-role")
    region = sorted(graph.outputs["workerRegions"])[0]
    for action in ("indices:data/read/search", "indices:data/read/get", "indices:data/read/mget[shard]"):
        assert allows(config, reader, action, [READ_ALIAS, f"catalog-{region}-dataset-1"]), action
    assert allows(config, reader, "indices:data/read/msearch")  # the composite request itself
    for action in (*access.CHANGES, "indices:admin/aliases"):
        assert not allows(config, reader, action, [READ_ALIAS]), action
    assert not allows(config, reader, "indices:data/write/bulk")


def test_the_roles_name_the_recorded_roles_and_the_master_user_is_the_deploy_function() -> None:
    graph = cached_graph("dev")
    event = applied(graph)
    mappings = event["config"]["rolesmapping"]
    assert mappings[access.READER_ROLE] == {"backend_roles": [role_arn(graph, "client-notebook-role")]}
    for region in graph.outputs["workerRegions"]:
        assert mappings[access.writer_role(region)] == {
            "backend_roles": [role_arn(graph, f"worker-{region}-catalog-sync-function-role")]}
    (domain,) = graph.of_type("aws:opensearch/domain:Domain")
    master = domain.inputs["advancedSecurityOptions"]["masterUserOptions"]["masterUserArn"]
    assert master == role_arn(graph, "client-catalog-admin-role")
    (function,) = [f for f in graph.of_type("aws:lambda/function:Function") if f.name == "client-catalog-access"]
    assert function.inputs["role"] == master and function.inputs["handler"] == "catalog_access.handler"
    assert event["endpoint"] == graph.outputs["catalogEndpoint"] and event["region"] == domain.region


def test_the_model_catches_a_widened_writer() -> None:
    config = security_config(["arn:reader"], {"us-east-1": "arn:a", "eu-west-1": "arn:b"})
    config["roles"][access.writer_role("us-east-1")]["index_permissions"][0]["index_patterns"] = ["catalog*"]
    found = widenings(config)
    assert ("the writer of us-east-1 (arn:a) may indices:admin/delete on eu-west-1's index catalog-eu-west-1-x"
            in found)
    assert "the writer of us-east-1 (arn:a) may indices:admin/delete on the read alias catalog" in found
    config = security_config(["arn:reader"], {"us-east-1": "arn:a"})
    config["roles"][access.READER_ROLE]["index_permissions"][0]["allowed_actions"].append("crud")
    assert "the reader arn:reader may indices:data/write/index on catalog" in widenings(config)


# ------------------------------------------------------------------------- the deploy function, on the wire
class SecurityApi(JsonHandler):
    """Answers like the security plugin's REST API for what the function sends, and records every request."""

    requests: ClassVar[list[tuple[str, str, Any, str]]] = []
    roles: ClassVar[dict[str, Any]] = {}
    refuse: ClassVar[str | None] = None

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length)) if length else None
        SecurityApi.requests.append((self.command, self.path, body, self.headers.get("Authorization", "")))
        kind, _, name = self.path.removeprefix(f"/{access.SECURITY_API}/").partition("/")
        if SecurityApi.refuse and SecurityApi.refuse in self.path:
            return self._reply(403, {"status": "FORBIDDEN", "message": "no permissions for []"})
        if self.command == "GET":
            return self._reply(200, SecurityApi.roles)
        if self.command == "DELETE" and kind == "rolesmapping" and name not in SecurityApi.roles:
            return self._reply(404, {"status": "NOT_FOUND"})
        return self._reply(200, {"status": "OK"})

    do_PUT = do_GET = do_DELETE = _handle  # noqa: N815


@pytest.fixture
def security_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    SecurityApi.requests, SecurityApi.refuse = [], None
    SecurityApi.roles = {"all_access": {}, "catalog_writer_sa_east_1": {}, "catalog_reader": {}}
    with serving(SecurityApi, monkeypatch) as url:
        yield url


def test_the_deploy_function_applies_the_recorded_roles_as_its_role_may(security_api: str) -> None:
    graph = cached_graph("dev")
    event = {**applied(graph), "endpoint": security_api}
    result = access.handler(event)
    config = event["config"]
    assert result == {"applied": sorted(config["roles"]), "deleted": ["catalog_writer_sa_east_1"]}
    puts = {(path, json.dumps(body, sort_keys=True)) for method, path, body, _ in SecurityApi.requests
            if method == "PUT"}
    assert puts == {(f"/{access.SECURITY_API}/{kind}/{name}", json.dumps(body, sort_keys=True))
                    for kind in ("roles", "rolesmapping") for name, body in config[kind].items()}
    assert all(f"/{event['region']}/es/aws4_request" in auth for *_, auth in SecurityApi.requests)
    # A region that left the stack loses its writer role; roles the function did not make are left alone.
    deletes = [path for method, path, *_ in SecurityApi.requests if method == "DELETE"]
    assert deletes == [f"/{access.SECURITY_API}/{kind}/catalog_writer_sa_east_1" for kind in ("rolesmapping", "roles")]
    # Every request is one the function's role may make, by the recorded IAM policy and the domain's policy.
    calls = [es_call(graph, "client-catalog-admin-role", f"{method} {path.lstrip('/')}")
             for method, path, *_ in SecurityApi.requests]
    assert denied(graph, calls) == []
    assert denied(graph, [es_call(graph, "client-notebook-role", f"PUT {access.SECURITY_API}/roles/x")])
    assert domain_arn(graph) in calls[0].resource


def test_a_refusal_fails_the_deploy_naming_the_request(security_api: str) -> None:
    SecurityApi.refuse = "rolesmapping/catalog_reader"
    with pytest.raises(RuntimeError, match=r"^PUT /_plugins/_security/api/rolesmapping/catalog_reader was refused "
                                           r"\(403\): .*no permissions"):
        access.handler({**applied(cached_graph("dev")), "endpoint": security_api})


def test_iam_paths_alone_would_let_a_writer_delete_another_regions_index() -> None:
    """Why the roles exist: a multi-index path passes the writer's path-scoped IAM policy."""
    graph = cached_graph("dev")
    mine, theirs = sorted(graph.outputs["workerRegions"])[:2]
    role = f"worker-{mine}-catalog-sync-function-role"
    both = [f"catalog-{mine}-x", f"catalog-{theirs}-y"]
    assert denied(graph, [es_call(graph, role, f"DELETE {','.join(both)}")]) == []
    assert not allows(applied(graph)["config"], role_arn(graph, role), "indices:admin/delete", both)


@pytest.mark.processes
def test_the_deploy_functions_archive_imports_alone(tmp_path: Any) -> None:
    """The catalog-access function ships only the files its archive names (the runtime adds botocore): its handler
    imports from them, in an interpreter that sees nothing of this project."""
    import shutil
    import subprocess
    import sys
    import sysconfig

    from stackconfig import PROJECT_DIR

    (function,) = [f for f in cached_graph("dev").of_type("aws:lambda/function:Function")
                   if f.inputs.get("handler") == "catalog_access.handler"]
    archive = function.inputs["code"]
    names = sorted(archive.assets) if hasattr(archive, "assets") else sorted(archive["archive"])
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_DIR / name, tmp_path / name)
    purelib = sysconfig.get_paths()["purelib"]
    code = (f"import sys; sys.path[:] = [{str(tmp_path)!r}] + [p for p in sys.path if 'python3' in p and "
            f"'site-packages' not in p] + [{purelib!r}]; import catalog_access as a; print(a.handler.__name__)")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "handler", result.stderr[-2000:]
