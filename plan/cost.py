"""What a stack costs, read off its declared graph with the price table (plan/prices.json).

Two figures, per resource and per region:
- idle, USD per month: what bills with nobody computing (always-on parts; the worker pools at their minimum; the
  scheduler and notebook not at all when they stop when idle, but the notebook's volume still);
- busy, USD per hour: everything running, each worker region at `maxTasks` split between On-Demand and Spot as
  configured.
Every AWS resource type in the graph is priced, or is listed in the table as usage only or no charge. A type or
region the table lacks is an error naming it, never a zero: the totals are then None.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from platform_facts import SCHEDULER_IDLE_SHUTDOWN_VARIABLE
from stackconfig import StackConfig, WorkerConfig
from stackconfig.schema import USER_TAG
from stackgraph.synth import Graph, RecordedResource

PRICES_FILE = Path(__file__).with_name("prices.json")
# The ECS agent registers a little less memory than the instance has (the OS keeps some): an approximation.
ECS_REGISTERED_MEMORY = 0.96
SPOT_SHARE = "ec2-spot-share-of-on-demand"


class PriceError(Exception):
    """The table cannot price something: a missing price, type or region."""


@dataclass(frozen=True)
class Price:
    usd: float  # the region's figure (the table's us-east-1 figure times the region's factor)
    labels: tuple[str, ...]  # "approximation" and/or "unverified": how far to trust it


@dataclass
class CostLine:
    resource: str
    type: str
    region: str
    idle_usd_per_month: float
    busy_usd_per_hour: float
    how: str
    labels: list[str] = field(default_factory=list)
    user: str | None = None  # the user whose own resource it is (its `user` tag: client.users), else shared


@dataclass
class Cost:
    checked: str  # the price table's date
    idle_usd_per_month: float | None = None
    busy_usd_per_hour: float | None = None
    by_region: dict[str, dict[str, float]] = field(default_factory=dict)
    by_user: dict[str, dict[str, float]] = field(default_factory=dict)  # each user's own resources; "shared": the rest
    by_resource: list[CostLine] = field(default_factory=list)
    usage_only: dict[str, str] = field(default_factory=dict)  # type present in the graph -> what it bills on
    errors: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


class PriceTable:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.hours = float(raw["hours_per_month"])

    @classmethod
    def load(cls, path: Path = PRICES_FILE) -> PriceTable:
        return cls(json.loads(path.read_text()))

    def price(self, key: str, region: str) -> Price:
        entry = self.raw["prices"].get(key)
        if entry is None:
            raise PriceError(f"the price table ({PRICES_FILE.name}) has no price {key!r} (region {region}): add it "
                             "under `prices` with its source")
        regional = self.raw["regions"].get(region)
        if regional is None:
            raise PriceError(f"the price table ({PRICES_FILE.name}) has no region {region!r}: add it under `regions` "
                             "with its factor over us-east-1 and how that factor was found")
        labels = set()
        if "approximation" in entry.get("basis", "") or "approximation" in regional["basis"]:
            labels.add("approximation")
        if self.raw["sources"][entry["source"]].get("read") is None:
            labels.add("unverified")
        return Price(entry["usd"] * regional["factor"], tuple(sorted(labels)))

    def instance(self, instance_type: str) -> dict[str, float]:
        spec = self.raw["instances"].get(instance_type)
        if spec is None:
            raise PriceError(f"the price table ({PRICES_FILE.name}) has no instance type {instance_type!r} under "
                             "`instances` (its vCPUs and memory, for how many worker tasks a host holds)")
        return {key: float(value) for key, value in spec.items()}


@cache
def default_table() -> PriceTable:
    return PriceTable.load()


# ---------------------------------------------------------------------------------------------- pricing
class _Pricing:
    """Prices one graph's resources; each `_<kind>` returns (idle per month, busy per hour, how, labels)."""

    def __init__(self, graph: Graph, config: StackConfig, table: PriceTable) -> None:
        self.graph, self.config, self.table = graph, config, table
        self.labels: set[str] = set()

    def p(self, key: str, region: str) -> float:
        price = self.table.price(key, region)
        self.labels.update(price.labels)
        return price.usd

    def hourly(self, usd_per_hour: float, how: str) -> tuple[float, float, str]:
        return usd_per_hour * self.table.hours, usd_per_hour, how

    def monthly(self, usd_per_month: float, how: str) -> tuple[float, float, str]:
        return usd_per_month, usd_per_month / self.table.hours, how

    # --------------------------------------------------------------------------- per resource type
    def lustre(self, r: RecordedResource) -> tuple[float, float, str]:
        gib = float(r.inputs["storageCapacity"])
        throughput = r.inputs.get("perUnitStorageThroughput")  # none for SCRATCH_2
        tier = str(r.inputs["deploymentType"]) + (f"-{int(float(throughput))}" if throughput else "")
        per_gb = self.p(f"lustre-{tier}-gb-month", str(r.region))
        return self.monthly(gib * per_gb, f"{gib:g} GB {tier} at ${per_gb:.3f}/GB-month")

    def domain(self, r: RecordedResource) -> tuple[float, float, str]:
        region, cluster, ebs = str(r.region), r.inputs["clusterConfig"], r.inputs.get("ebsOptions") or {}
        nodes = int(cluster.get("instanceCount", 1))
        hourly = nodes * self.p(f"opensearch-{cluster['instanceType']}-hour", region)
        how = f"{nodes} x {cluster['instanceType']}"
        if cluster.get("dedicatedMasterEnabled"):
            masters = int(cluster["dedicatedMasterCount"])
            hourly += masters * self.p(f"opensearch-{cluster['dedicatedMasterType']}-hour", region)
            how += f" + {masters} dedicated masters {cluster['dedicatedMasterType']}"
        storage = nodes * float(ebs.get("volumeSize", 0)) * self.p("opensearch-gp3-gb-month", region)
        return hourly * self.table.hours + storage, hourly + storage / self.table.hours, how + ", gp3 volumes"

    def notebook(self, r: RecordedResource) -> tuple[float, float, str]:
        region, instance = str(r.region), str(r.inputs["instanceType"])
        hourly = self.p(f"sagemaker-notebook-{instance}-hour", region)
        storage = float(r.inputs.get("volumeSize", 5)) * self.p("sagemaker-notebook-storage-gb-month", region)
        if self.config.client.notebook_idle_minutes:  # stopped when idle: only its volume bills
            return storage, hourly + storage / self.table.hours, (
                f"{instance} while in service (stops after {self.config.client.notebook_idle_minutes} idle "
                "minutes), its volume always")
        return hourly * self.table.hours + storage, hourly + storage / self.table.hours, f"{instance}, always on"

    def service(self, r: RecordedResource) -> tuple[float, float, str] | None:
        if r.inputs.get("launchType") != "FARGATE":
            return None  # tasks on the worker hosts: priced as the hosts' groups
        task = self._task_definition(r)
        region, vcpu, gib = str(r.region), float(task.inputs["cpu"]) / 1024, float(task.inputs["memory"]) / 1024
        one = vcpu * self.p("fargate-vcpu-hour", region) + gib * self.p("fargate-gb-hour", region)
        hourly = float(r.inputs.get("desiredCount", 1)) * one
        how = f"Fargate {vcpu:g} vCPU / {gib:g} GB"
        if _stops_when_idle(task):  # one task while in use (a user's cluster is declared with none: it starts then)
            return 0.0, max(hourly, one), how + " while a client is connected (stops when idle)"
        return hourly * self.table.hours, hourly, how + ", always on"

    def _task_definition(self, service: RecordedResource) -> RecordedResource:
        family = str(service.inputs["taskDefinition"]).rsplit("/", 1)[-1].split(":")[0]
        return next(t for t in self.graph.of_type("aws:ecs/taskDefinition:TaskDefinition")
                    if t.inputs.get("family") == family)

    def hosts(self, r: RecordedResource) -> tuple[float, float, str]:
        region = str(r.region)
        worker = next(w for w in self.config.workers if w.region == region)
        spot = r.inputs.get("mixedInstancesPolicy") is not None
        instance = (worker.spot_instance_types or (worker.instance_type,))[0] if spot else worker.instance_type
        per_host = _tasks_per_host(self.table.instance(instance), worker)
        on_demand_tasks, spot_tasks = _task_split(worker)
        tasks = spot_tasks if spot else on_demand_tasks
        busy_hosts = min(int(r.inputs.get("maxSize", 0)), math.ceil(tasks / per_host))
        idle_hosts = int(r.inputs.get("minSize", 0))
        host = self.p(f"ec2-{instance}-hour", region) * (self.p(SPOT_SHARE, region) if spot else 1.0)
        host += self._root_volume_gib(r) * self.p("ebs-gp3-gb-month", region) / self.table.hours
        how = (f"{'Spot' if spot else 'On-Demand'} {instance}: {busy_hosts} hosts for {tasks} of {worker.max_tasks} "
               f"tasks at maxTasks ({per_host} a host), {idle_hosts} when idle")
        return idle_hosts * host * self.table.hours, busy_hosts * host, how

    def _root_volume_gib(self, group: RecordedResource) -> float:
        mixed = group.inputs.get("mixedInstancesPolicy")
        template_id = (mixed["launchTemplate"]["launchTemplateSpecification"]["launchTemplateId"] if mixed
                       else group.inputs["launchTemplate"]["id"])
        template = self.graph.by_id(str(template_id))
        mappings = template.inputs.get("blockDeviceMappings") or [] if template else []
        return sum(float(m.get("ebs", {}).get("volumeSize", 0)) for m in mappings)

    def load_balancer(self, r: RecordedResource) -> tuple[float, float, str]:
        region = str(r.region)
        hourly = self.p("alb-hour", region)
        if r.inputs.get("internal"):
            return self.hourly(hourly, "Application Load Balancer (internal)")
        addresses = len(r.inputs.get("subnets") or [])  # one public address per zone
        return self.hourly(hourly + addresses * self.p("public-ipv4-hour", region),
                           f"Application Load Balancer, internet-facing: {addresses} public IPv4 addresses")

    def vpc_endpoint(self, r: RecordedResource) -> tuple[float, float, str] | None:
        if r.inputs.get("vpcEndpointType") == "Gateway":
            return None
        raise PriceError(f"{r.name}: the price table prices no {r.inputs.get('vpcEndpointType')} VPC endpoint: "
                         "add its hourly price per zone to plan/prices.json and to plan/cost.py")


def _stops_when_idle(task: RecordedResource) -> bool:
    """The scheduler stops when idle if its container is given a shutdown time other than 0."""
    containers = json.loads(str(task.inputs.get("containerDefinitions") or "[]"))
    return any(e.get("name") == SCHEDULER_IDLE_SHUTDOWN_VARIABLE and e.get("value") not in ("0", "")
               for c in containers for e in c.get("environment", []))


def _tasks_per_host(spec: dict[str, float], worker: WorkerConfig) -> int:
    return max(1, int(spec["memory_gib"] * 1024 * ECS_REGISTERED_MEMORY // worker.task_memory_mib))


def _task_split(worker: WorkerConfig) -> tuple[int, int]:
    """(On-Demand, Spot) tasks at `maxTasks`: the base on On-Demand, then the Spot share of the rest."""
    base = min(worker.on_demand_base_tasks, worker.max_tasks)
    spot = (worker.max_tasks - base) * worker.spot_percent // 100
    return worker.max_tasks - spot, spot


HOURLY: dict[str, tuple[str, str]] = {  # type -> (price key, what)
    "aws:ec2/natGateway:NatGateway": ("nat-gateway-hour", "NAT gateway"),
    "aws:ec2/eip:Eip": ("public-ipv4-hour", "public IPv4 address"),
    "aws:ec2transitgateway/vpcAttachment:VpcAttachment": ("tgw-attachment-hour", "Transit Gateway VPC attachment"),
    "aws:ec2transitgateway/peeringAttachment:PeeringAttachment": (
        "tgw-peering-side-hour", "Transit Gateway peering, requester's side"),
    "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter": (
        "tgw-peering-side-hour", "Transit Gateway peering, accepter's side"),
}
MONTHLY: dict[str, tuple[str, str]] = {
    "aws:kms/key:Key": ("kms-key-month", "KMS key"),
    "aws:secretsmanager/secret:Secret": ("secret-month", "secret"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("alarm-month", "alarm"),
    "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace": ("hosted-zone-month", "private hosted zone"),
}
PRICED: dict[str, Callable[[_Pricing, RecordedResource], tuple[float, float, str] | None]] = {
    "aws:fsx/lustreFileSystem:LustreFileSystem": _Pricing.lustre,
    "aws:opensearch/domain:Domain": _Pricing.domain,
    "aws:sagemaker/notebookInstance:NotebookInstance": _Pricing.notebook,
    "aws:ecs/service:Service": _Pricing.service,
    "aws:autoscaling/group:Group": _Pricing.hosts,
    "aws:lb/loadBalancer:LoadBalancer": _Pricing.load_balancer,
    "aws:ec2/vpcEndpoint:VpcEndpoint": _Pricing.vpc_endpoint,
}


def priced_types(table: PriceTable | None = None) -> set[str]:
    """Every resource type the model knows: priced, usage only or no charge."""
    table = table or default_table()
    listed = {t.split("+")[0] for t in [*table.raw["usage_only"], *table.raw["no_charge"]]}
    return {*HOURLY, *MONTHLY, *PRICED, *listed}


def _line(pricing: _Pricing, r: RecordedResource) -> CostLine | str | None:
    """A resource's line; a string for usage-only types (what it bills on); None for no charge."""
    table, region = pricing.table.raw, str(r.region)
    pricing.labels = set()
    if r.type in HOURLY:
        key, what = HOURLY[r.type]
        figures: tuple[float, float, str] | None = pricing.hourly(pricing.p(key, region), what)
    elif r.type in MONTHLY:
        key, what = MONTHLY[r.type]
        figures = pricing.monthly(pricing.p(key, region), what)
    elif r.type in PRICED:
        figures = PRICED[r.type](pricing, r)
        if figures is None:
            qualified = f"{r.type}+EC2" if r.type == "aws:ecs/service:Service" else f"{r.type}+Gateway"
            found = table["usage_only"].get(qualified)
            return None if found is None else str(found)
    elif r.type in table["usage_only"]:
        return str(table["usage_only"][r.type])
    elif r.type in table["no_charge"]:
        return None
    else:
        raise PriceError(f"resource type {r.type} ({r.name}) is not in the price table: price it in plan/cost.py "
                         "and plan/prices.json, or list it under `usage_only` or `no_charge` there")
    assert figures is not None
    idle, busy, how = figures
    tags = r.inputs.get("tags")
    user = tags.get(USER_TAG) if isinstance(tags, dict) else None
    return CostLine(r.name, r.type, region, round(idle, 2), round(busy, 4), how, sorted(pricing.labels), user)


def estimate(graph: Graph, config: StackConfig, table: PriceTable | None = None) -> Cost:
    table = table or default_table()
    pricing = _Pricing(graph, config, table)
    cost = Cost(checked=str(table.raw["checked"]))
    for resource in graph.aws_resources:
        try:
            line = _line(pricing, resource)
        except PriceError as error:
            cost.errors.append(str(error))
            continue
        if isinstance(line, CostLine):
            cost.by_resource.append(line)
        elif isinstance(line, str):
            cost.usage_only[resource.type] = line
    cost.by_resource.sort(key=lambda line: (-line.idle_usd_per_month, -line.busy_usd_per_hour, line.resource))
    cost.errors = sorted(set(cost.errors))
    if cost.errors:
        return cost  # no totals: a missing price must not read as a zero
    for line in cost.by_resource:
        region = cost.by_region.setdefault(line.region, {"idle_usd_per_month": 0.0, "busy_usd_per_hour": 0.0})
        region["idle_usd_per_month"] += line.idle_usd_per_month
        region["busy_usd_per_hour"] += line.busy_usd_per_hour
    cost.by_region = {region: {k: round(v, 2) for k, v in figures.items()}
                      for region, figures in sorted(cost.by_region.items())}
    if any(line.user for line in cost.by_resource):  # a stack with client.users: each one's own, and the rest
        for line in cost.by_resource:
            who = cost.by_user.setdefault(line.user or "shared",
                                          {"idle_usd_per_month": 0.0, "busy_usd_per_hour": 0.0})
            who["idle_usd_per_month"] += line.idle_usd_per_month
            who["busy_usd_per_hour"] += line.busy_usd_per_hour
        cost.by_user = {user: {k: round(v, 2) for k, v in figures.items()}
                        for user, figures in sorted(cost.by_user.items())}
    cost.idle_usd_per_month = round(sum(line.idle_usd_per_month for line in cost.by_resource), 2)
    cost.busy_usd_per_hour = round(sum(line.busy_usd_per_hour for line in cost.by_resource), 2)
    cost.labels = {label: text for label, text in LABELS.items()
                   if any(label in line.labels for line in cost.by_resource)}
    return cost


LABELS = {
    "approximation": "derived, not quoted: a regional factor, a tier ratio or a typical Spot level (see "
                     "plan/prices.json for how each was found)",
    "unverified": "a figure recalled from AWS's pricing pages that no dated source read here confirms: check it",
}


def render_cost(cost: Cost, top: int = 12) -> list[str]:
    out = [f"## Cost (list prices checked {cost.checked}, plan/prices.json)", ""]
    if cost.errors:
        out += ["  cannot price this stack:"] + [f"  - {error}" for error in cost.errors]
        return out
    out.append(f"  idle: ${cost.idle_usd_per_month:,.0f} a month (nobody computing)")
    out.append(f"  busy: ${cost.busy_usd_per_hour:,.2f} an hour (every worker region at maxTasks)")
    out += [f"  {region:<16} idle ${figures['idle_usd_per_month']:>9,.2f}/month   busy "
            f"${figures['busy_usd_per_hour']:>7,.2f}/hour" for region, figures in cost.by_region.items()]
    out += [f"  user {user:<11} idle ${figures['idle_usd_per_month']:>9,.2f}/month   busy "
            f"${figures['busy_usd_per_hour']:>7,.2f}/hour" for user, figures in cost.by_user.items()]
    out += ["", "  largest items (idle $/month, busy $/hour):"]
    for line in cost.by_resource[:top]:
        mark = f" [{', '.join(line.labels)}]" if line.labels else ""
        out.append(f"  {line.idle_usd_per_month:>9,.2f} {line.busy_usd_per_hour:>8,.3f}  {line.resource} "
                   f"({line.region}): {line.how}{mark}")
    if len(cost.by_resource) > top:
        out.append(f"  ... and {len(cost.by_resource) - top} more (`--json` lists every one)")
    out += ["", "  usage only (not in the figures): " + "; ".join(
        f"{kind.split(':')[1]}: {what}" for kind, what in sorted(cost.usage_only.items()))]
    out += [f"  [{label}] {text}" for label, text in cost.labels.items()]
    return out
