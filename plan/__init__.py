"""`python -m plan --stack dev`: what a stack would deploy, without an AWS account.

Runs the program under the same mocks as the tests, then prints the inventory per region and type, a
reachability matrix (for every VPC and service port: reachable or not, and through which hops), any
violation (reachable where it must not be, unreachable where it must be, ingress open to the world), the
security policy pack's results (policy/rules.py) with its exemptions, an
estimated deploy time with its critical path, what the stack costs idle (a month) and busy (an hour) by the price
table plan/prices.json (plan/cost.py), and a Mermaid diagram of regions, VPCs, Transit Gateways and
peerings. Exits 2 on config errors, 1 on violations; `--json` for machines.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from plan.diagram import diagram, diagram_dot, render_png
from plan.journeys import Journey, Service, journeys, services
from plan.review import Plan, evaluate, render, world_open
from plan.timing import CREATION_MINUTES, critical_path
from stackconfig import PROJECT_DIR, ConfigError, load_stack_file
from stackgraph.synth import SynthesisError, synthesize

__all__ = ["CREATION_MINUTES", "Journey", "Plan", "Service", "critical_path", "diagram", "diagram_dot", "evaluate",
           "journeys", "main", "render", "render_png", "services", "world_open"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="dev", help="use Pulumi.<stack>.yaml")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--png", type=Path, metavar="FILE",
                        help="also draw the diagram as a PNG (needs Graphviz's `dot`; skipped with a note without it)")
    args = parser.parse_args(argv)
    try:
        config = load_stack_file(PROJECT_DIR, args.stack)
        graph = synthesize(args.stack)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except SynthesisError as error:
        print(f"the program failed: {error}", file=sys.stderr)
        return 2
    plan = evaluate(graph, config)
    if plan.cost is not None and plan.cost.errors:
        print("cannot price this stack:\n" + "\n".join(f"  - {e}" for e in plan.cost.errors), file=sys.stderr)
    if args.png is not None:
        plan.diagram_png = render_png(graph, args.png)
    print(json.dumps(asdict(plan), indent=2) if args.json else render(plan))
    return 1 if plan.violations or plan.policy_violations else 0

