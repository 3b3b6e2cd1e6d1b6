"""The stack's picture: regions, VPCs, Transit Gateways and peerings, as Mermaid (in the report) and as Graphviz DOT
(a PNG where Graphviz is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stackgraph.reachability import vpc_label
from stackgraph.synth import Graph


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
