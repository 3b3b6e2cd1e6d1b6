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

from platform_facts import regions_variable
from stackconfig import PROJECT_DIR, raw_stack_config
from stackgraph.synth import Graph, SynthesisError, synthesize

SECRET = "aws:secretsmanager/secret:Secret"
NOTEBOOK = "aws:sagemaker/notebookInstance:NotebookInstance"
POLICY = "aws:iam/rolePolicy:RolePolicy"
SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
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
    # The catalog's readers (every user's role) and the broker's settings and services (every user's cluster).
    assert changed == ["catalog-access-policy", "catalog-access-roles", "cluster-broker", "cluster-broker-policy"]


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
    # Every AWS resource of a user's own cluster that AWS can tag carries them (ECS tasks take their service's).
    untaggable = {"aws:iam/rolePolicy:RolePolicy", "aws:secretsmanager/secretVersion:SecretVersion",
                  "aws:appautoscaling/policy:Policy"}
    for user, group in (("ana", "climate"), ("bo", "ops")):
        owned = [r for r in graph.resources if r.custom and r.type.startswith("aws:") and f"-{user}" in r.name
                 and r.type not in untaggable]
        assert len(owned) > 20 and all((r.inputs.get("tags") or {}).get("user") == user and
                                       r.inputs["tags"]["group"] == group for r in owned), [
            r.name for r in owned if not (r.inputs.get("tags") or {}).get("user")]
    assert all(s.inputs["propagateTags"] == "SERVICE" for s in graph.of_type(SERVICE))
    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    client = {**raw["client"], "users": [{"name": "ana", "group": "climate"}, {"name": "bo", "group": "ops"}],
              "groups": GROUPS}
    cost = estimate(graph, parse_stack_config({**raw, "client": client}, stack="dev"))
    assert set(cost.by_user) == {"ana", "bo", "shared"}
    assert cost.by_user["ana"] == cost.by_user["bo"] and cost.by_user["ana"]["busy_usd_per_hour"] > 0
    assert sum(u["idle_usd_per_month"] for u in cost.by_user.values()) == pytest.approx(cost.idle_usd_per_month,
                                                                                        abs=0.05)
    assert any(line.startswith("  user ana") for line in render_cost(cost))
    # Their own scheduler bills only while they compute: nothing idle, one Fargate task busy.
    (scheduler,) = [line for line in cost.by_resource if line.resource == "client-scheduler-ana"]
    assert scheduler.user == "ana" and scheduler.idle_usd_per_month == 0 and scheduler.busy_usd_per_hour > 0.05
    team = estimate(synthesize("dev"), parse_stack_config(raw, stack="dev"))
    assert team.by_user == {}  # no users: no split, the report as before




def _container(graph: Graph, name: str) -> dict[str, Any]:
    (container,) = json.loads(graph.named(name, TASK).inputs["containerDefinitions"])
    return dict(container)


def test_each_user_gets_a_cluster_of_their_own_in_every_region_on_demand() -> None:
    graph = _graph(("ana", "climate"), ("bo", "ops"))
    services = {s.name: s for s in graph.of_type(SERVICE)}
    # No team cluster (nor its dashboard's load balancer): a scheduler and a pool per region for each user.
    assert sorted(services) == ["client-scheduler-ana", "client-scheduler-bo", "worker-us-east-1-workers-ana",
                                "worker-us-east-1-workers-bo", "worker-us-west-2-workers-ana",
                                "worker-us-west-2-workers-bo"]
    assert not graph.of_type("aws:lb/loadBalancer:LoadBalancer") and "dashboardUrl" not in graph.outputs
    for user, other in (("ana", "bo"), ("bo", "ana")):
        scheduler = services[f"client-scheduler-{user}"]
        # Started when they connect, stopped when unused (the scheduler stops its own service).
        assert scheduler.inputs["desiredCount"] == 0 and "desiredCount" in scheduler.ignore_changes
        environment = {e["name"]: e["value"] for e in _container(graph, f"client-scheduler-{user}")["environment"]}
        assert environment[regions_variable("idle-shutdown.service")] == scheduler.inputs["name"]
        stack = environment[regions_variable("demand.stack")]
        assert stack.endswith(f"/{user}")
        dns = graph.named(f"client-scheduler-dns-{user}", "aws:servicediscovery/service:Service")
        assert scheduler.inputs["serviceRegistries"]["registryArn"] == dns.outputs["arn"]
        cluster = graph.outputs["userClusters"][user]
        assert cluster["schedulerAddress"] == f"tls://{dns.inputs['name']}.dev.cross-region-dask.internal:8786"
        for region in ("us-east-1", "us-west-2"):
            command = _container(graph, f"worker-{region}-workers-{user}")["command"]
            assert command[:2] == ["worker", cluster["schedulerAddress"]] and f"-{other}." not in command[1]
            alarm = graph.named(f"worker-{region}-workers-{user}-demand", "aws:cloudwatch/metricAlarm:MetricAlarm")
            assert alarm.inputs["dimensions"]["Stack"] == stack
            service = services[f"worker-{region}-workers-{user}"]
            assert cluster["pools"][region]["serviceName"] == service.outputs["name"]


def test_each_users_cluster_has_a_ca_of_its_own_so_no_other_users_certificate_is_accepted() -> None:
    graph = _graph(("ana", "climate"), ("bo", "ops"))
    cas = {r.name: r.outputs["certPem"] for r in graph.of_type("tls:index/selfSignedCert:SelfSignedCert")}
    assert set(cas) == {"dask-tls-ana-ca", "dask-tls-bo-ca"}  # no team CA
    signed = {r.name: r.inputs["caCertPem"] for r in graph.of_type("tls:index/locallySignedCert:LocallySignedCert")}
    for user in ("ana", "bo"):
        assert {name for name, ca in signed.items() if ca == cas[f"dask-tls-{user}-ca"]} == {
            f"dask-tls-client-{user}", f"dask-tls-scheduler-{user}", f"dask-tls-worker-{user}"}
    requests = {r.name: r.inputs for r in graph.of_type("tls:index/certRequest:CertRequest")}
    assert requests["dask-tls-scheduler-ana"]["dnsNames"] == [
        "scheduler-ana.dev.cross-region-dask.internal"]
    # Each user's scheduler and workers get their own cluster's certificate.
    secrets = {s.name: s.outputs["arn"] for s in graph.of_type(SECRET)}
    for user in ("ana", "bo"):
        scheduler = _container(graph, f"client-scheduler-{user}")
        assert {s["valueFrom"].rsplit(":", 3)[0] for s in scheduler["secrets"]} == {
            secrets[f"dask-tls-scheduler-{user}-eu-west-2"]}
        worker = _container(graph, f"worker-us-west-2-workers-{user}")
        assert {s["valueFrom"].rsplit(":", 3)[0] for s in worker["secrets"]} == {
            secrets[f"dask-tls-worker-{user}-us-west-2"]}


def test_a_users_role_asks_the_broker_watches_only_their_own_scheduler_and_reads_only_their_own_logs() -> None:
    graph = _graph(("ana", "climate"), ("bo", "ops"))
    services = {user: graph.outputs["userClusters"][user]["schedulerService"] for user in ("ana", "bo")}
    broker = graph.named("cluster-broker", "aws:lambda/function:Function")
    assert {s["broker"] for s in services.values()} == {broker.inputs["name"]}
    broker_ecs = [s for s in json.loads(graph.named("cluster-broker-policy", POLICY).inputs["policy"])["Statement"]
                  if "ecs:UpdateService" in s["Action"]]
    assert [sorted(r.rsplit("/", 1)[1] for r in s["Resource"]) for s in broker_ecs] == [
        sorted(s["service"] for s in services.values())]  # the users' schedulers, no other service
    url = graph.named("cluster-broker", "aws:lambda/functionUrl:FunctionUrl")
    assert url.inputs["authorizationType"] == "AWS_IAM" and url.inputs["functionName"] == broker.outputs["name"]
    for user, other in (("ana", "bo"), ("bo", "ana")):
        statements = json.loads(graph.named(f"client-notebook-{user}-policy", POLICY).inputs["policy"])["Statement"]
        assert not [s for s in statements if "ecs:UpdateService" in s["Action"]]  # only the broker starts it
        (ecs,) = [s for s in statements if "ecs:DescribeServices" in s["Action"]]
        assert ecs["Resource"].rsplit("/", 1)[1] == services[user]["service"]
        (invoke,) = [s for s in statements if "lambda:InvokeFunctionUrl" in s["Action"]]
        assert invoke["Resource"] == broker.outputs["arn"]
        (logs,) = [s for s in statements if s["Action"] == "logs:FilterLogEvents"]
        groups = {arn.split(":log-group:")[1] for arn in logs["Resource"]}
        assert groups == {where["group"] for where in graph.outputs["userClusters"][user]["logGroups"].values()}
        assert all(user in group and other not in group for group in groups)
        assert {g.inputs["name"] for g in graph.of_type("aws:cloudwatch/logGroup:LogGroup")} >= groups  # they exist


def test_a_users_pools_grow_at_most_to_their_quota() -> None:
    from stackconfig import load_stack_file

    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    client = {**raw["client"], "users": [{"name": "ana", "group": "climate", "maxWorkersPerRegion": 2},
                                          {"name": "bo", "group": "ops"}, {"name": "cy", "group": "climate"}],
              "groups": [{"name": "climate", "maxWorkersPerRegion": 3}, {"name": "ops"}]}
    graph = synthesize("dev", {"client": client})
    targets = {t.name: t.inputs["maxCapacity"] for t in graph.of_type("aws:appautoscaling/target:Target")}
    max_tasks = load_stack_file(PROJECT_DIR, "dev").workers[0].max_tasks
    assert max_tasks > 3
    # Their own quota; their group's.
    assert targets["worker-us-east-1-workers-ana"] == 2 and targets["worker-us-east-1-workers-cy"] == 3
    assert targets["worker-us-east-1-workers-bo"] == max_tasks  # no quota: the pool's own bound
    assert graph.outputs["userClusters"]["ana"]["pools"]["us-east-1"]["maxTasks"] == 2
    # Each user's scheduler sizes their pools within the same bound, naming the quota that sets it: their scale() or
    # adapt() beyond it is refused with that name (tests/test_users_twin.py runs it).
    for user, quota in (("ana", "maxWorkersPerRegion quota of user ana"),
                        ("cy", "maxWorkersPerRegion quota of cy's group climate"), ("bo", None)):
        task = graph.named(f"client-scheduler-{user}", TASK)
        (container,) = json.loads(task.inputs["containerDefinitions"])
        environment = {e["name"]: e["value"] for e in container["environment"]}
        pool = json.loads(environment[regions_variable("demand.pools")])["pool-us-east-1"]
        assert (pool["max_tasks"], pool.get("quota")) == (targets[f"worker-us-east-1-workers-{user}"], quota)


def test_a_quota_in_the_schedulers_pool_settings_must_be_a_text() -> None:
    from dask_regions.settings import PARSERS

    assert PARSERS["demand.pools"]({"pool-us-east-1": {"max_tasks": 2, "quota": "q"}}, "demand.pools")
    with pytest.raises(ValueError, match=r"pool-us-east-1.quota=3 is not a text \(the quota that sets max-tasks\)"):
        PARSERS["demand.pools"]({"pool-us-east-1": {"quota": 3}}, "demand.pools")


def test_the_users_graph_passes_the_authorization_reference_the_policy_pack_and_the_service_calls() -> None:
    from policy.rules import evaluate_policies
    from stackgraph.permissions import decide, reference_findings, service_calls

    graph = _graph(("ana", "climate"), ("bo", "ops"))
    assert reference_findings(graph) == []
    report = evaluate_policies(graph)
    assert report.violations == []
    calls = service_calls(graph)
    # ECS hands each user's scheduler and workers their own cluster's certificate.
    assert {c.resource for c in calls if c.action == "secretsmanager:GetSecretValue"} >= {
        s.outputs["arn"] for s in graph.of_type(SECRET) if "-ana-" in s.name and "client" not in s.name}
    assert [c for c in calls if not decide(graph, c).allowed] == []
    # The schedule that sets the shares again invokes the broker, and only it.
    broker = graph.named("cluster-broker", "aws:lambda/function:Function").outputs["arn"]
    assert [(c.action, c.resource) for c in calls if c.role == "cluster-broker-schedule-role"] == [
        ("lambda:InvokeFunction", broker)]


def test_plan_reviews_a_stack_with_users_with_every_journey_met_and_no_violation() -> None:
    from plan.review import evaluate
    from stackconfig import parse_stack_config

    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    client = {**raw["client"], "users": [{"name": "ana", "group": "climate"}, {"name": "bo", "group": "ops"}],
              "groups": GROUPS}
    plan = evaluate(_graph(("ana", "climate"), ("bo", "ops")), parse_stack_config({**raw, "client": client},
                                                                                  stack="dev"))
    assert plan.violations == [] and plan.policy_violations == []
    assert plan.cost is not None and plan.cost.errors == [] and set(plan.cost.by_user) == {"ana", "bo", "shared"}
