"""What must be reachable: the services (a port of a security group, and the sites that must reach it) and the
named journeys the platform needs (a connection from a group in one site to a port of another)."""

from __future__ import annotations

from dataclasses import dataclass

from components.ports import DASHBOARD_PORT, HTTPS_PORT, SCHEDULER_PORT
from stackgraph.reachability import INGRESS
from stackgraph.synth import Graph


@dataclass
class Service:
    name: str
    group: str  # logical name of its security group
    port: int
    allowed_from: set[str]  # site names that must reach it (all others must not)


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
    domain = has_domain(graph)
    found = [Journey("notebook -> scheduler", "client", "client-notebook-sg", "client-scheduler-sg", SCHEDULER_PORT),
             Journey("notebook -> dashboard", "client", "client-notebook-sg", "client-scheduler-sg", DASHBOARD_PORT)]
    if domain:  # the S3 catalog is reached through S3's API (NAT, gateway endpoint), not a security group
        found += [Journey("notebook -> catalog", "client", "client-notebook-sg", "client-catalog-sg", HTTPS_PORT),
                  Journey("catalog roles -> catalog", "client", "client-catalog-access-sg", "client-catalog-sg",
                          HTTPS_PORT)]
    for region in regions:
        site, port = f"worker-{region}", _first_worker_port(graph, region)
        found += [Journey(f"workers {region} -> scheduler", site, f"{site}-workers-sg", "client-scheduler-sg",
                          SCHEDULER_PORT),
                  Journey(f"scheduler -> workers {region}", "client", "client-scheduler-sg", f"{site}-workers-sg",
                          port),
                  *([Journey(f"sync {region} -> catalog", site, f"{site}-catalog-sync-sg", "client-catalog-sg",
                             HTTPS_PORT)] if domain else [])]
        found += [Journey(f"workers {other} -> workers {region}", f"worker-{other}", f"worker-{other}-workers-sg",
                          f"{site}-workers-sg", port) for other in regions]
    return found


def has_domain(graph: Graph) -> bool:
    """Whether the catalog is an OpenSearch domain (else the S3 catalog: catalog.kind s3)."""
    return not str(graph.outputs.get("catalogEndpoint", "")).startswith("s3://")


def _first_worker_port(graph: Graph, region: str) -> int:
    group = graph.named(f"worker-{region}-workers-sg", "aws:ec2/securityGroup:SecurityGroup")
    return int(min(r.inputs["fromPort"] for r in graph.of_type(INGRESS) if r.inputs["securityGroupId"] == group.id))


def services(graph: Graph) -> list[Service]:
    sites = set(graph.outputs["vpcIds"])
    found = [Service(f"scheduler {SCHEDULER_PORT}", "client-scheduler-sg", SCHEDULER_PORT, sites),
             *([Service(f"catalog {HTTPS_PORT}", "client-catalog-sg", HTTPS_PORT, sites)] if has_domain(graph) else [])]
    # The team's dashboard (with client.users each user's notebook proxies their own: no load balancer). Internal,
    # it serves the client VPC; allow-listed, it serves the listed networks (operators) only.
    for balancer in graph.of_type("aws:lb/loadBalancer:LoadBalancer"):
        found.append(Service("dashboard 80 (load balancer)", "client-dashboard-sg", 80,
                             {"client"} if balancer.inputs.get("internal") else set()))
    for region, outputs in graph.outputs.get("workerRegions", {}).items():
        site, first = f"worker-{region}", _first_worker_port(graph, region)
        found.append(Service(f"workers {region} {first}", f"{site}-workers-sg", first, sites))
        if outputs.get("fileSystemId"):  # storage `s3`: no file system to reach
            found.append(Service(f"lustre {region} 988", f"{site}-lustre-sg", 988, {site}))
    return found
