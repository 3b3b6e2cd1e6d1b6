"""`python -m plan --stack dev`: what a stack would deploy, without an AWS account.

Runs the program under the same mocks as the tests, then prints the inventory per region and type, a
reachability matrix (for every VPC and service port: reachable or not, and through which hops), any
violation (reachable where it must not be, unreachable where it must be, ingress open to the world), the
security policy pack's results (policy/rules.py) with its exemptions, an
estimated deploy time with its critical path, and a Mermaid diagram of regions, VPCs, Transit Gateways and
peerings. Exits 2 on config errors, 1 on violations; `--json` for machines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.ports import DASHBOARD_PORT, HTTPS_PORT, SCHEDULER_PORT
from policy.rules import evaluate_policies
from stackconfig import ConfigError, load_stack_file
from stackgraph.permissions import reference_findings, service_findings
from stackgraph.reachability import INGRESS, analyse, service_reachability, vpc_label
from stackgraph.synth import PROJECT_DIR, Graph, RecordedResource, SynthesisError, synthesize

# Rough creation times, minutes: typical values reported for these services (OpenSearch domains and FSx
# file systems take tens of minutes, networking a few, IAM and S3 seconds). Not measured here.
CREATION_MINUTES = {
    "aws:opensearch/domain:Domain": 25, "aws:fsx/lustreFileSystem:LustreFileSystem": 15,
    "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation": 8,
    "aws:ec2transitgateway/transitGateway:TransitGateway": 5,
    "aws:ec2transitgateway/vpcAttachment:VpcAttachment": 3,
    "aws:ec2transitgateway/peeringAttachment:PeeringAttachment": 4,
    "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter": 2,
    "aws:sagemaker/notebookInstance:NotebookInstance": 7, "aws:ec2/natGateway:NatGateway": 2,
    "aws:lb/loadBalancer:LoadBalancer": 3, "aws:ecs/service:Service": 2,
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": 2, "aws:route53/zoneAssociation:ZoneAssociation": 1,
    "docker:index/image:Image": 8, "docker:index/registryImage:RegistryImage": 2,
    "aws:lambda/function:Function": 1, "aws:autoscaling/group:Group": 1,
}
DEFAULT_MINUTES = 0.2


@dataclass
class Service:
    name: str
    group: str  # logical name of its security group
    port: int
    allowed_from: set[str]  # site names that must reach it (all others must not)


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


@dataclass(frozen=True)
class Journey:
    """A connection the platform needs to work: from a security group in a site to a port of another group."""

    name: str
    site: str  # where it starts
    source: str  # the security group it leaves through
    target: str  # the security group it reaches
    port: int


def journeys(graph: Graph) -> list[Journey]:
    """The named journeys: the notebook to the scheduler, the dashboard (through the notebook server's proxy)
    and the catalog; every region's workers to the scheduler and back, every worker to every worker, each sync to
    the catalog, and the deploy function that applies the catalog's roles."""
    regions = sorted(graph.outputs.get("workerRegions", {}))
    found = [Journey("notebook -> scheduler", "client", "client-notebook-sg", "client-scheduler-sg", SCHEDULER_PORT),
             Journey("notebook -> dashboard", "client", "client-notebook-sg", "client-scheduler-sg", DASHBOARD_PORT),
             Journey("notebook -> catalog", "client", "client-notebook-sg", "client-catalog-sg", HTTPS_PORT),
             Journey("catalog roles -> catalog", "client", "client-catalog-access-sg", "client-catalog-sg",
                     HTTPS_PORT)]
    for region in regions:
        site, port = f"worker-{region}", _first_worker_port(graph, region)
        found += [Journey(f"workers {region} -> scheduler", site, f"{site}-workers-sg", "client-scheduler-sg",
                          SCHEDULER_PORT),
                  Journey(f"scheduler -> workers {region}", "client", "client-scheduler-sg", f"{site}-workers-sg",
                          port),
                  Journey(f"sync {region} -> catalog", site, f"{site}-catalog-sync-sg", "client-catalog-sg",
                          HTTPS_PORT)]
        found += [Journey(f"workers {other} -> workers {region}", f"worker-{other}", f"worker-{other}-workers-sg",
                          f"{site}-workers-sg", port) for other in regions]
    return found


def _first_worker_port(graph: Graph, region: str) -> int:
    group = graph.named(f"worker-{region}-workers-sg", "aws:ec2/securityGroup:SecurityGroup")
    return int(min(r.inputs["fromPort"] for r in graph.of_type(INGRESS) if r.inputs["securityGroupId"] == group.id))


def services(graph: Graph) -> list[Service]:
    sites = set(graph.outputs["vpcIds"])
    found = [Service(f"scheduler {SCHEDULER_PORT}", "client-scheduler-sg", SCHEDULER_PORT, sites),
             Service(f"catalog {HTTPS_PORT}", "client-catalog-sg", HTTPS_PORT, sites),
             # Internal, it serves the client VPC; allow-listed, it serves the listed networks (operators) only.
             Service("dashboard 80 (load balancer)", "client-dashboard-sg", 80,
                     {"client"} if graph.named("client-dashboard", "aws:lb/loadBalancer:LoadBalancer").inputs.get(
                         "internal") else set())]
    for region in graph.outputs.get("workerRegions", {}):
        site, first = f"worker-{region}", _first_worker_port(graph, region)
        found.append(Service(f"workers {region} {first}", f"{site}-workers-sg", first, sites))
        found.append(Service(f"lustre {region} 988", f"{site}-lustre-sg", 988, {site}))
    return found


def world_open(graph: Graph) -> list[str]:
    """Ingress from anywhere (config validation never allows it, so it can only come from a code change)."""
    return [f"{rule.name} opens port {int(rule.inputs.get('fromPort', 0))} of {_group_name(graph, rule)} to "
            f"{rule.inputs.get('cidrIpv4') or rule.inputs.get('cidrIpv6')}" for rule in graph.of_type(INGRESS)
            if rule.inputs.get("cidrIpv4") == "0.0.0.0/0" or rule.inputs.get("cidrIpv6") == "::/0"]


def _group_name(graph: Graph, rule: RecordedResource) -> str:
    return next((g.name for g in graph.of_type("aws:ec2/securityGroup:SecurityGroup")
                 if g.id == rule.inputs.get("securityGroupId")), "an unknown group")


def critical_path(graph: Graph) -> tuple[float, list[str]]:
    """Longest chain of creation times through the dependency graph (a component stands for its resources)."""
    custom = {r.urn: r for r in graph.resources if r.custom}
    children: dict[str, list[str]] = defaultdict(list)
    for resource in graph.resources:
        if resource.parent:
            children[resource.parent].append(resource.urn)

    def expand(urn: str) -> list[str]:
        if urn in custom:
            return [urn]
        return [leaf for child in children.get(urn, []) for leaf in expand(child)]

    finish: dict[str, tuple[float, list[str]]] = {}

    def done(urn: str) -> tuple[float, list[str]]:
        if urn not in finish:
            finish[urn] = (0.0, [])  # guards against cycles
            before = max((done(dep) for d in custom[urn].dependencies for dep in expand(d) if dep != urn),
                         default=(0.0, []), key=lambda item: (item[0], item[1]))  # ties: by name, stable
            minutes = CREATION_MINUTES.get(custom[urn].type, DEFAULT_MINUTES)
            finish[urn] = (before[0] + minutes, [*before[1], f"{custom[urn].name} ({minutes:g} min)"])
        return finish[urn]

    return max((done(urn) for urn in custom), default=(0.0, []), key=lambda item: (item[0], item[1]))


def diagram(graph: Graph) -> str:
    lines = ["flowchart LR"]
    tgw_of_region = {t.region: t for t in graph.of_type("aws:ec2transitgateway/transitGateway:TransitGateway")}
    for region, tgw in sorted(tgw_of_region.items(), key=lambda item: str(item[0])):
        lines.append(f'  subgraph {region}["{region}"]')
        lines.append(f'    {tgw.name.replace("-", "_")}(("TGW"))')
        for vpc in graph.of_type("aws:ec2/vpc:Vpc"):
            if vpc.region == region:
                label = vpc_label(graph, vpc)
                lines.append(f'    {label.replace("-", "_")}["{label} {vpc.inputs["cidrBlock"]}"] --- '
                             f'{tgw.name.replace("-", "_")}')
        lines.append("  end")
    names = {t.id: t.name.replace("-", "_") for t in tgw_of_region.values()}
    for peering in sorted(graph.of_type("aws:ec2transitgateway/peeringAttachment:PeeringAttachment"),
                          key=lambda p: p.name):
        lines.append(f'  {names[peering.inputs["transitGatewayId"]]} <-- peering --> '
                     f'{names[peering.inputs["peerTransitGatewayId"]]}')
    return "\n".join(lines)


def diagram_dot(graph: Graph) -> str:
    """The same picture as `diagram`, in Graphviz's DOT language (for a PNG when Graphviz is installed)."""
    lines = ["graph platform {", "  rankdir=LR; node [fontname=Helvetica]; edge [fontname=Helvetica];"]
    tgw_of_region = {t.region: t for t in graph.of_type("aws:ec2transitgateway/transitGateway:TransitGateway")}
    for index, (region, tgw) in enumerate(sorted(tgw_of_region.items(), key=lambda item: str(item[0]))):
        lines += [f"  subgraph cluster_{index} {{", f'    label="{region}"; style=rounded;',
                  f'    "{tgw.name}" [label="TGW", shape=circle];']
        for vpc in graph.of_type("aws:ec2/vpc:Vpc"):
            if vpc.region == region:
                label = vpc_label(graph, vpc)
                lines += [f'    "{label}" [label="{label}\\n{vpc.inputs["cidrBlock"]}", shape=box];',
                          f'    "{label}" -- "{tgw.name}";']
        lines.append("  }")
    names = {t.id: t.name for t in tgw_of_region.values()}
    for peering in sorted(graph.of_type("aws:ec2transitgateway/peeringAttachment:PeeringAttachment"),
                          key=lambda p: p.name):
        lines.append(f'  "{names[peering.inputs["transitGatewayId"]]}" -- '
                     f'"{names[peering.inputs["peerTransitGatewayId"]]}" [label="peering", style=dashed];')
    lines.append("}")
    return "\n".join(lines)


def render_png(graph: Graph, path: Path) -> str:
    """Draw the diagram with Graphviz's `dot`; returns what happened, for the report."""
    dot = shutil.which("dot")
    if dot is None:
        return "no PNG: Graphviz (`dot`) is not installed; the Mermaid diagram above renders on GitHub"
    result = subprocess.run([dot, "-Tpng", "-o", str(path)], input=diagram_dot(graph), text=True,
                            capture_output=True, check=False, timeout=60)
    if result.returncode != 0:
        return f"no PNG: dot failed: {result.stderr.strip()}"
    return f"PNG diagram: {path}"


def evaluate(graph: Graph) -> Plan:
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
    plan.violations += [f"IAM: {finding}" for finding in reference_findings(graph)]
    plan.violations += [f"IAM: {finding}" for finding in service_findings(graph)]
    policies = evaluate_policies(graph)
    plan.policy_violations = [f"[{name}] {message}" for name, message in policies.violations]
    plan.policy_exemptions = sorted(f"[{name}] {resource}: {reason}" for name, resource, reason in policies.exemptions)
    plan.deploy_minutes, plan.critical_path = critical_path(graph)
    plan.diagram = diagram(graph)
    return plan


def _site_of_group(graph: Graph, group: str) -> str:
    sg = graph.named(group, "aws:ec2/securityGroup:SecurityGroup")
    vpc = next(v for v in graph.of_type("aws:ec2/vpc:Vpc") if v.id == sg.inputs.get("vpcId"))
    return vpc_label(graph, vpc)


def render(plan: Plan) -> str:
    out = [f"# Plan for stack {plan.stack}", "", f"## Inventory ({plan.total} AWS resources)", ""]
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
    out += ["", "## Diagram", "", "```mermaid", plan.diagram, "```"]
    if plan.diagram_png:
        out += ["", plan.diagram_png]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="use Pulumi.<stack>.yaml")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--png", type=Path, metavar="FILE",
                        help="also draw the diagram as a PNG (needs Graphviz's `dot`; skipped with a note without it)")
    args = parser.parse_args(argv)
    try:
        load_stack_file(PROJECT_DIR, args.stack)
        graph = synthesize(args.stack)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except SynthesisError as error:
        print(f"the program failed: {error}", file=sys.stderr)
        return 2
    plan = evaluate(graph)
    if args.png is not None:
        plan.diagram_png = render_png(graph, args.png)
    print(json.dumps(asdict(plan), indent=2) if args.json else render(plan))
    return 1 if plan.violations or plan.policy_violations else 0

