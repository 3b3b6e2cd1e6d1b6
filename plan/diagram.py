"""The stack's picture: regions, VPCs, Transit Gateways and peerings (or VPC peering connections), as Mermaid (in
the report) and as Graphviz DOT (a PNG where Graphviz is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stackgraph.reachability import vpc_label
from stackgraph.synth import Graph

TGW = "aws:ec2transitgateway/transitGateway:TransitGateway"
TGW_PEERING = "aws:ec2transitgateway/peeringAttachment:PeeringAttachment"
VPC_PEERING = "aws:ec2/vpcPeeringConnection:VpcPeeringConnection"


def _picture(graph: Graph) -> tuple[dict[str, tuple[str | None, list[tuple[str, str]]]], list[tuple[str, str, str]]]:
    """Per region: its Transit Gateway's node name (None with a peering backbone) and its VPCs (node, label); then
    the links between nodes: Transit Gateway peerings, and VPC peering connections between VPCs."""
    tgw_of_region = {str(t.region): t for t in graph.of_type(TGW)}
    vpcs = {v.id: v for v in graph.of_type("aws:ec2/vpc:Vpc")}
    regions: dict[str, tuple[str | None, list[tuple[str, str]]]] = {}
    for region in sorted({str(v.region) for v in vpcs.values()}):
        tgw = tgw_of_region.get(region)
        members = [(vpc_label(graph, v), f"{vpc_label(graph, v)} {v.inputs['cidrBlock']}")
                   for v in vpcs.values() if v.region == region]
        regions[region] = (tgw.name if tgw else None, sorted(members))
    names = {t.id: t.name for t in tgw_of_region.values()}
    links = [(names[p.inputs["transitGatewayId"]], names[p.inputs["peerTransitGatewayId"]], "peering")
             for p in sorted(graph.of_type(TGW_PEERING), key=lambda p: p.name)]
    links += [(vpc_label(graph, vpcs[str(p.inputs["vpcId"])]), vpc_label(graph, vpcs[str(p.inputs["peerVpcId"])]),
               "VPC peering") for p in sorted(graph.of_type(VPC_PEERING), key=lambda p: p.name)]
    return regions, links


def diagram(graph: Graph) -> str:
    def node(name: str) -> str:
        return name.replace("-", "_")

    lines = ["flowchart LR"]
    regions, links = _picture(graph)
    for region, (tgw, members) in regions.items():
        lines.append(f'  subgraph {region}["{region}"]')
        if tgw:
            lines.append(f'    {node(tgw)}(("TGW"))')
        for name, label in members:
            lines.append(f'    {node(name)}["{label}"]' + (f" --- {node(tgw)}" if tgw else ""))
        lines.append("  end")
    lines += [f"  {node(a)} <-- {label} --> {node(b)}" for a, b, label in links]
    return "\n".join(lines)


def diagram_dot(graph: Graph) -> str:
    """The same picture as `diagram`, in Graphviz's DOT language (for a PNG when Graphviz is installed)."""
    lines = ["graph platform {", "  rankdir=LR; node [fontname=Helvetica]; edge [fontname=Helvetica];"]
    regions, links = _picture(graph)
    for index, (region, (tgw, members)) in enumerate(regions.items()):
        lines += [f"  subgraph cluster_{index} {{", f'    label="{region}"; style=rounded;']
        if tgw:
            lines.append(f'    "{tgw}" [label="TGW", shape=circle];')
        for name, label in members:
            lines.append(f'    "{name}" [label="{label.replace(" ", chr(92) + "n", 1)}", shape=box];')
            if tgw:
                lines.append(f'    "{name}" -- "{tgw}";')
        lines.append("  }")
    lines += [f'  "{a}" -- "{b}" [label="{label}", style=dashed];' for a, b, label in links]
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
