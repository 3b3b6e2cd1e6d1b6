"""The review of one stack's graph (`evaluate`) and its report (`render`): inventory, reachability matrix, journeys,
violations, the policy pack's results, the estimated deploy time and the diagram."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from plan.cost import Cost, estimate, render_cost
from plan.diagram import diagram
from plan.journeys import journeys, services
from plan.quotas import QuotaUse, quota_use, render_quotas
from plan.timing import critical_path
from plan.zones import cross_zone_paths
from policy.rules import evaluate_policies
from stackconfig import StackConfig, offered
from stackgraph.permissions import reference_findings, service_findings
from stackgraph.reachability import INGRESS, analyse, service_reachability, vpc_label
from stackgraph.synth import Graph, RecordedResource


@dataclass
class Plan:
    stack: str
    inventory: dict[str, dict[str, int]]
    total: int
    matrix: dict[str, dict[str, str]] = field(default_factory=dict)  # service -> site -> "yes via ..." | "no: ..."
    journeys: dict[str, str] = field(default_factory=dict)  # journey -> "yes" | "no: ..."
    violations: list[str] = field(default_factory=list)
    policy_violations: list[str] = field(default_factory=list)
    policy_exemptions: list[str] = field(default_factory=list)
    deploy_minutes: float = 0.0
    critical_path: list[str] = field(default_factory=list)
    diagram_png: str = ""  # what `--png` did: the file written, or why there is none
    diagram: str = ""
    cost: Cost | None = None  # with the stack's config: idle and busy figures (plan/cost.py)
    warnings: list[str] = field(default_factory=list)  # the config's (StackConfig.warnings): right, perhaps
    offered: str = ""  # what the regions were checked against (stackconfig/offered.py), and any not checked
    quotas: list[QuotaUse] = field(default_factory=list)  # default service quotas the graph counts toward


def world_open(graph: Graph) -> list[str]:
    """Ingress from anywhere (config validation never allows it, so it can only come from a code change)."""
    return [f"{rule.name} opens port {int(rule.inputs.get('fromPort', 0))} of {_group_name(graph, rule)} to "
            f"{rule.inputs.get('cidrIpv4') or rule.inputs.get('cidrIpv6')}" for rule in graph.of_type(INGRESS)
            if rule.inputs.get("cidrIpv4") == "0.0.0.0/0" or rule.inputs.get("cidrIpv6") == "::/0"]


def _group_name(graph: Graph, rule: RecordedResource) -> str:
    return next((g.name for g in graph.of_type("aws:ec2/securityGroup:SecurityGroup")
                 if g.id == rule.inputs.get("securityGroupId")), "an unknown group")


def evaluate(graph: Graph, config: StackConfig | None = None) -> Plan:
    inventory: dict[str, dict[str, int]] = defaultdict(dict)
    for (region, kind), count in sorted(Counter((str(r.region), r.type) for r in graph.aws_resources).items()):
        inventory[region][kind] = count
    plan = Plan(stack=graph.stack, inventory=dict(inventory), total=len(graph.aws_resources))
    routes = analyse(graph)
    plan.violations += [f"no route {src} -> {dst}: {why}" for (src, dst), why in sorted(routes.failures.items())]
    plan.violations += routes.foreign_routes
    for service in services(graph):
        row: dict[str, str] = {}
        for site in graph.outputs["vpcIds"]:
            reason = service_reachability(graph, site, service.group, service.port, routes=routes)
            if reason is None:
                hops = routes.paths.get((site, _site_of_group(graph, service.group)), ["within the VPC"])
                row[site] = "yes via " + " > ".join(hops)
                if site not in service.allowed_from:
                    plan.violations.append(f"{service.name} is reachable from {site}, which it must not be")
            else:
                row[site] = f"no: {reason}"
                if site in service.allowed_from:
                    plan.violations.append(f"{service.name} is not reachable from {site}: {reason}")
        plan.matrix[service.name] = row
    for journey in journeys(graph):
        reason = service_reachability(graph, journey.site, journey.target, journey.port, src_group=journey.source,
                                      routes=routes)
        plan.journeys[journey.name] = "yes" if reason is None else f"no: {reason}"
        if reason is not None:
            plan.violations.append(f"journey {journey.name} has no path: {reason}")
    plan.violations += world_open(graph)
    plan.violations += cross_zone_paths(graph)
    plan.violations += [f"IAM: {finding}" for finding in reference_findings(graph)]
    plan.violations += [f"IAM: {finding}" for finding in service_findings(graph)]
    policies = evaluate_policies(graph)
    plan.policy_violations = [f"[{name}] {message}" for name, message in policies.violations]
    plan.policy_exemptions = sorted(f"[{name}] {resource}: {reason}" for name, resource, reason in policies.exemptions)
    plan.deploy_minutes, plan.critical_path = critical_path(graph)
    plan.diagram = diagram(graph)
    plan.quotas = quota_use(graph)
    if config is not None:
        plan.cost = estimate(graph, config)
        plan.warnings = [str(warning) for warning in config.warnings]
        unknown = [region for region in config.regions if offered.resource_types(region) is None]
        plan.offered = offered.source() + (f"; not in its data, not checked: {', '.join(unknown)}" if unknown else "")
    return plan


def _site_of_group(graph: Graph, group: str) -> str:
    sg = graph.named(group, "aws:ec2/securityGroup:SecurityGroup")
    vpc = next(v for v in graph.of_type("aws:ec2/vpc:Vpc") if v.id == sg.inputs.get("vpcId"))
    return vpc_label(graph, vpc)


def render(plan: Plan) -> str:
    out = [f"# Plan for stack {plan.stack}", ""]
    if plan.warnings:
        out += [f"## Config warnings ({len(plan.warnings)})", "", *(f"  - {w}" for w in plan.warnings), ""]
    if plan.offered:
        out += [f"Regions checked for what the stack creates: {plan.offered}.", ""]
    out += [f"## Inventory ({plan.total} AWS resources)", ""]
    for region, kinds in sorted(plan.inventory.items()):
        out.append(f"{region}: {sum(kinds.values())}")
        out += [f"  {count:>4}  {kind}" for kind, count in sorted(kinds.items())]
    out += ["", "## Reachability (routes and security groups)", ""]
    for service, row in plan.matrix.items():
        out.append(service)
        out += [f"  from {site:<20} {verdict}" for site, verdict in row.items()]
    out += ["", "## Journeys", ""]
    out += [f"  {name:<40} {verdict}" for name, verdict in plan.journeys.items()]
    out += ["", f"## Violations ({len(plan.violations)})", ""]
    out += [f"  - {violation}" for violation in plan.violations] or ["  none"]
    out += ["", f"## Policies ({len(plan.policy_violations)} violations)", ""]
    out += [f"  - {violation}" for violation in plan.policy_violations] or ["  every mandatory policy passes"]
    out += [f"  exempt {exemption}" for exemption in plan.policy_exemptions]
    out += ["", f"## Estimated deploy time: {plan.deploy_minutes:.0f} minutes (rough typical creation times, "
            "not measured)", "critical path:"]
    out += [f"  {step}" for step in plan.critical_path]
    if plan.cost is not None:
        out += ["", *render_cost(plan.cost)]
    out += ["", *render_quotas(plan.quotas)]
    out += ["", "## Diagram", "", "```mermaid", plan.diagram, "```"]
    if plan.diagram_png:
        out += ["", plan.diagram_png]
    return "\n".join(out)
