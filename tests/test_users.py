"""Users in the stack config (issue 33, its first point): each user of `client.users` gets a notebook, an IAM role and
a Dask client certificate of their own, the certificate in a secret only that user's role may read; adding a user
adds only that user's resources; with no users the graph is the team's, as before (tests/test_graph_identity.py
holds the shipped stacks' graphs unchanged)."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

import pytest

from stackconfig import PROJECT_DIR, raw_stack_config
from stackgraph.synth import Graph, SynthesisError, synthesize

SECRET = "aws:secretsmanager/secret:Secret"
NOTEBOOK = "aws:sagemaker/notebookInstance:NotebookInstance"
POLICY = "aws:iam/rolePolicy:RolePolicy"
GROUPS = [{"name": "climate"}, {"name": "ops"}]


@cache
def _graph(*users: tuple[str, str]) -> Graph:
    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    client = {**raw["client"], "users": [{"name": n, "group": g} for n, g in users], "groups": GROUPS}
    return synthesize("dev", {"client": client})


def secret_reads(graph: Graph, policy: str) -> list[Any]:
    statements = json.loads(graph.named(policy, POLICY).inputs["policy"])["Statement"]
    return [s["Resource"] for s in statements if s["Action"] == "secretsmanager:GetSecretValue"]


def test_each_user_gets_a_notebook_a_role_and_a_certificate_only_their_role_reads() -> None:
    graph = _graph(("ana", "climate"), ("bo", "ops"))
    assert sorted(n.name for n in graph.of_type(NOTEBOOK)) == ["client-notebook-ana", "client-notebook-bo"]
    secrets = {s.name: s.outputs["arn"] for s in graph.of_type(SECRET) if "dask-tls-client" in s.name}
    assert set(secrets) == {"dask-tls-client-ana-eu-west-2", "dask-tls-client-bo-eu-west-2"}  # no team certificate
    for user in ("ana", "bo"):
        assert secret_reads(graph, f"client-notebook-{user}-policy") == [secrets[f"dask-tls-client-{user}-eu-west-2"]]
        (lifecycle,) = [r for r in graph.of_type("aws:sagemaker/notebookInstanceLifecycleConfiguration:"
                                                 "NotebookInstanceLifecycleConfiguration")
                        if r.name == f"client-notebook-{user}"]
        script = base64.b64decode(lifecycle.inputs["onStart"]).decode()
        assert f'--secret-id "{secrets[f"dask-tls-client-{user}-eu-west-2"]}"' in script
        notebook = graph.named(f"client-notebook-{user}", NOTEBOOK)
        role = next(r for r in graph.of_type("aws:iam/role:Role") if r.outputs["arn"] == notebook.inputs["roleArn"])
        assert role.name == f"client-notebook-{user}-role"
    requests = {r.name: r.inputs["subject"]["commonName"] for r in graph.of_type("tls:index/certRequest:CertRequest")}
    assert requests["dask-tls-client-ana"] == "dask-client-ana" and "dask-tls-client" not in requests
    assert set(graph.outputs["userNotebooks"]) == set(graph.outputs["userTlsSecrets"]) == {"ana", "bo"}
    assert "clientTlsSecret" not in graph.outputs and "notebookName" not in graph.outputs
    # Every user's role reads the catalog: the OpenSearch domain's readers.
    policy = json.loads(graph.named("catalog-access-policy", "aws:opensearch/domainPolicy:DomainPolicy")
                        .inputs["accessPolicies"])
    readers = next(s["Principal"]["AWS"] for s in policy["Statement"] if s["Sid"] == "Readers0")
    assert sorted(readers) == sorted(r.outputs["arn"] for r in graph.of_type("aws:iam/role:Role")
                                     if r.name.startswith("client-notebook-"))


def test_adding_a_user_adds_only_that_users_resources() -> None:
    from tests.test_graph_identity import digests  # the graph record's own comparison

    before, after = digests(_graph(("ana", "climate"))), digests(_graph(("ana", "climate"), ("bo", "ops")))
    added = sorted(after.keys() - before.keys())
    assert not before.keys() - after.keys()
    assert added and all("-bo" in urn.rsplit("::", 1)[1] for urn in added), added
    changed = sorted(urn.rsplit("::", 1)[1] for urn in before.keys() & after.keys() if before[urn] != after[urn])
    assert changed == ["catalog-access-policy", "catalog-access-roles"]  # the catalog's readers: every user's role


def test_a_user_in_an_undeclared_group_is_refused_at_synthesis_naming_the_user() -> None:
    with pytest.raises(SynthesisError, match=r"client.users\[0\].group: 'science' \(user 'ana'\) is not a group"):
        _graph(("ana", "science"))


def test_the_operators_guides_users_example_is_a_valid_stack_config() -> None:
    import yaml

    from stackconfig import parse_stack_config

    text = (PROJECT_DIR / "docs" / "operators.md").read_text()
    block = text[text.index("**Users.**"):].split("```yaml\n", 1)[1].split("```", 1)[0]
    client = yaml.safe_load(block)["cross-region-dask:client"]
    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    config = parse_stack_config({**raw, "client": client}, stack="dev")
    assert [(u.name, u.group) for u in config.client.users] == [("ana", "climate"), ("bo", "ops")]


def test_each_users_resources_carry_their_tags_and_plan_splits_the_cost_by_user() -> None:
    from plan.cost import estimate, render_cost
    from stackconfig import parse_stack_config

    graph = _graph(("ana", "climate"), ("bo", "ops"))
    for kind in (NOTEBOOK, "aws:iam/role:Role", SECRET):
        owned = [r for r in graph.of_type(kind) if (r.inputs.get("tags") or {}).get("user")]
        assert {(r.inputs["tags"]["user"], r.inputs["tags"]["group"]) for r in owned} == {("ana", "climate"),
                                                                                            ("bo", "ops")}, kind
    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    client = {**raw["client"], "users": [{"name": "ana", "group": "climate"}, {"name": "bo", "group": "ops"}],
              "groups": GROUPS}
    cost = estimate(graph, parse_stack_config({**raw, "client": client}, stack="dev"))
    assert set(cost.by_user) == {"ana", "bo", "shared"}
    assert cost.by_user["ana"] == cost.by_user["bo"] and cost.by_user["ana"]["busy_usd_per_hour"] > 0
    assert sum(u["idle_usd_per_month"] for u in cost.by_user.values()) == pytest.approx(cost.idle_usd_per_month,
                                                                                        abs=0.05)
    assert any(line.startswith("  user ana") for line in render_cost(cost))
    team = estimate(synthesize("dev"), parse_stack_config(raw, stack="dev"))
    assert team.by_user == {}  # no users: no split, the report as before
