"""`python -m plan`: inventory, reachability matrix, violations, deploy estimate, diagram."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plan import diagram_dot, evaluate
from plan.zones import cross_zone_paths
from stackconfig import PROJECT_DIR as ROOT
from stackgraph.synth import Graph
from tests.conftest import cached_graph


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "plan", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.processes
def test_plan_of_the_dev_stack_prints_the_matrix_and_exits_0() -> None:
    result = run("--stack", "dev")
    assert result.returncode == 0, result.stderr
    assert "## Reachability (routes and security groups)" in result.stdout and "## Violations (0)" in result.stdout
    assert "from worker-us-east-1     yes via worker-us-east-1-private-rt > backbone-tgw-us-east-1" in result.stdout
    assert "lustre us-east-1 988" in result.stdout and "```mermaid" in result.stdout
    assert "## Cost (list prices checked" in result.stdout and "  idle: $" in result.stdout


@pytest.mark.processes
def test_plan_json_has_inventory_matrix_estimate_and_diagram() -> None:
    result = run("--stack", "dev", "--json")
    plan = json.loads(result.stdout)
    assert plan["total"] == sum(sum(kinds.values()) for kinds in plan["inventory"].values())
    assert set(plan["inventory"]) == {"eu-west-2", "us-east-1", "us-west-2"}
    assert plan["matrix"]["scheduler 8786"]["worker-us-west-2"].startswith("yes via")
    assert plan["matrix"]["lustre us-west-2 988"]["client"].startswith("no:")
    assert plan["deploy_minutes"] >= 25 and any("client-catalog" in step for step in plan["critical_path"])
    assert "peering" in plan["diagram"] and plan["violations"] == []
    cost = plan["cost"]
    assert cost["idle_usd_per_month"] > 1000 and cost["busy_usd_per_hour"] > 10 and cost["errors"] == []
    assert {line["resource"] for line in cost["by_resource"]} >= {"client-scheduler", "worker-us-east-1-lustre"}


def test_a_world_open_port_fails_the_plan_naming_the_rule_and_group() -> None:
    graph = cached_graph("dev")
    rule = next(r for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                if r.name == "worker-us-east-1-workers-from-client")
    rule.inputs["cidrIpv4"] = "0.0.0.0/0"
    violations = evaluate(graph).violations
    assert "worker-us-east-1-workers-from-client opens port 9000 of worker-us-east-1-workers-sg to 0.0.0.0/0" in (
        violations)


def test_reachable_where_it_must_not_be_and_unreachable_where_it_must_be_are_violations() -> None:
    graph = cached_graph("dev")
    rule = next(r for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                if r.name == "worker-us-east-1-lustre-988-988-from-vpc")
    rule.inputs["cidrIpv4"] = "10.0.0.0/8"  # widened: now the client VPC reaches Lustre
    graph.resources.remove(graph.named("backbone-accept-eu-west-2-us-west-2"))
    violations = evaluate(graph).violations
    assert "lustre us-east-1 988 is reachable from client, which it must not be" in violations
    assert any(v.startswith("scheduler 8786 is not reachable from worker-us-west-2: no route") for v in violations)


@pytest.mark.processes
def test_a_bad_stack_file_gets_the_same_messages_as_pulumi_up(tmp_path: Path) -> None:
    path = ROOT / "Pulumi.plan-broken.yaml"
    path.write_text("config:\n  cross-region-dask:client: {region: eu-west-2, cidr: 10.0.0.0/12}\n"
                    "  cross-region-dask:workers: []\n")
    try:
        result = run("--stack", "plan-broken")
    finally:
        path.unlink()
    assert result.returncode == 2
    assert "stack 'plan-broken' has 2 problems; nothing was deployed:" in result.stderr
    assert "client.cidr: '10.0.0.0/12' is larger than AWS allows" in result.stderr


@pytest.mark.processes
def test_plan_reports_policy_results_and_fails_on_a_policy_violation() -> None:
    result = run("--stack", "dev")
    assert "## Policies (0 violations)" in result.stdout and "every mandatory policy passes" in result.stdout
    assert "exempt [awssolutions-s1-server-access-logs] client-access-logs:" in result.stdout
    graph = cached_graph("dev")
    key = next(r for r in graph.of_type("aws:kms/key:Key"))
    key.inputs["enableKeyRotation"] = key.outputs["enableKeyRotation"] = False
    plan = evaluate(graph)
    assert plan.policy_violations == [f"[awssolutions-kms5-key-rotation] {key.name}: key rotation is off"]


def test_the_dot_diagram_has_every_region_vpc_and_peering() -> None:
    graph = cached_graph("four-regions")
    dot = diagram_dot(graph)
    assert dot.count("subgraph cluster_") == 4 and dot.count('[label="peering"') == 6  # full mesh of 4
    for site, cidr in graph.outputs["vpcCidrs"].items():
        assert f'"{site}" [label="{site}\\n{cidr}"' in dot


@pytest.mark.processes
@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed on this machine")
def test_plan_draws_a_png_with_graphviz(tmp_path: Path) -> None:
    result = run("--stack", "dev", "--png", str(tmp_path / "plan.png"))
    assert result.returncode == 0 and f"PNG diagram: {tmp_path / 'plan.png'}" in result.stdout
    assert (tmp_path / "plan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.processes
def test_without_graphviz_the_plan_says_so_and_still_succeeds(tmp_path: Path) -> None:
    bare = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # the venv only: no `dot`
    result = subprocess.run([sys.executable, "-m", "plan", "--stack", "dev", "--png",
                             str(tmp_path / "plan.png")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env=bare, check=False)
    assert result.returncode == 0, result.stderr
    assert "no PNG: Graphviz (`dot`) is not installed" in result.stdout and not (tmp_path / "plan.png").exists()


# ---------------------------------------------------------------------------------------------- journeys
@pytest.mark.parametrize("shape", ["dev", "one-worker-in-client-region", "four-regions"])
def test_every_named_journey_has_a_path(shape: str) -> None:
    from plan import journeys

    graph = cached_graph(shape)
    plan = evaluate(graph)
    regions = sorted(graph.outputs["workerRegions"])
    assert len(plan.journeys) == len(journeys(graph)) == 4 + 3 * len(regions) + len(regions) ** 2
    assert {"notebook -> scheduler", "notebook -> dashboard", "notebook -> catalog"} <= set(plan.journeys)
    assert {name: verdict for name, verdict in plan.journeys.items() if verdict != "yes"} == {}
    assert plan.violations == []


@pytest.mark.parametrize(("rule", "journey", "why"), [
    ("client-dashboard-from-notebook", "notebook -> dashboard",
     "client-scheduler-sg does not admit client-notebook-sg on port 8787"),
    ("worker-us-east-1-catalog-sync-to-https", "sync us-east-1 -> catalog",
     "worker-us-east-1-catalog-sync-sg may not send to 10.0.0.0/16 on port 443"),
    ("worker-us-west-2-workers-to-worker-us-east-1", "workers us-west-2 -> workers us-east-1",
     "worker-us-west-2-workers-sg may not send to 10.1.0.0/16 on port 9000"),
    ("client-scheduler-to-worker-us-west-2", "scheduler -> workers us-west-2",
     "client-scheduler-sg may not send to 10.2.0.0/16 on port 9000"),
])
def test_a_journey_without_a_path_fails_the_plan_naming_it(rule: str, journey: str, why: str) -> None:
    graph = cached_graph("dev")
    graph.resources.remove(next(r for r in graph.resources if r.name == rule))
    assert f"journey {journey} has no path: {why}" in evaluate(graph).violations


def test_a_legitimate_dashboard_allow_list_is_no_violation() -> None:
    from stackgraph.synth import synthesize

    graph = synthesize("dev", {"client": {"region": "eu-west-2", "cidr": "10.0.0.0/16",
                               "dashboardAllowedCidrs": ["203.0.113.0/24"]}})
    plan = evaluate(graph)
    assert plan.violations == [] and plan.policy_violations == []
    assert any(r.inputs.get("cidrIpv4") == "203.0.113.0/24"
               for r in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"))


def test_every_pool_reads_its_lustre_file_system_in_the_file_systems_zone(graph: Graph) -> None:
    file_systems = graph.of_type("aws:fsx/lustreFileSystem:LustreFileSystem")
    assert file_systems and cross_zone_paths(graph) == []


@pytest.mark.parametrize(("kind", "type_"), [("hosts", "aws:autoscaling/group:Group"),
                                             ("workers", "aws:ecs/service:Service")])
def test_a_pool_placed_in_a_second_zone_is_a_cross_zone_violation(kind: str, type_: str) -> None:
    graph = cached_graph("dev")
    other_zone = graph.named("worker-us-east-1-private-1", "aws:ec2/subnet:Subnet")
    pool = graph.named(f"worker-us-east-1-{kind}", type_)
    if kind == "hosts":
        pool.inputs["vpcZoneIdentifiers"] = [*pool.inputs["vpcZoneIdentifiers"], other_zone.id]
    else:
        pool.inputs["networkConfiguration"]["subnets"].append(other_zone.id)
    assert (f"cross-zone path: worker-us-east-1-{kind} may run in us-east-1b, but worker-us-east-1-lustre is in "
            "us-east-1a: its reads would cross zones (billed per GB each way)") in evaluate(graph).violations
