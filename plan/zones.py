"""Zone alignment: a worker pool must read its region's Lustre file system from the file system's own Availability
Zone. A file system lives in one zone; a host in another zone reads it across zones, billed per GB each way and
slower. Every subnet a pool's hosts or tasks may use is held to the zones of the file systems in its VPC."""

from __future__ import annotations

from stackgraph.synth import Graph, RecordedResource

LUSTRE = "aws:fsx/lustreFileSystem:LustreFileSystem"
SUBNET = "aws:ec2/subnet:Subnet"
# What places pool compute in subnets: the hosts' groups, and the tasks' network configuration (awsvpc).
HOSTS = "aws:autoscaling/group:Group"
SERVICE = "aws:ecs/service:Service"


def _subnet_ids(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value] if isinstance(value, list) else []


def _compute_subnets(resource: RecordedResource) -> list[str]:
    if resource.type == HOSTS:
        return _subnet_ids(resource.inputs.get("vpcZoneIdentifiers"))
    network = resource.inputs.get("networkConfiguration") or {}
    return _subnet_ids(network.get("subnets")) if isinstance(network, dict) else []


def cross_zone_paths(graph: Graph) -> list[str]:
    """One line per pool resource that may run outside the zones of its VPC's Lustre file systems."""
    zone_of: dict[str, tuple[str, str]] = {}  # subnet id -> (vpc id, zone)
    for subnet in graph.of_type(SUBNET):
        zone_of[subnet.id] = (str(subnet.inputs.get("vpcId")), str(subnet.inputs.get("availabilityZone")))
    storage: dict[str, set[str]] = {}  # vpc id -> zones holding a file system
    names: dict[str, list[str]] = {}
    for file_system in graph.of_type(LUSTRE):
        for subnet_id in _subnet_ids(file_system.inputs.get("subnetIds")):
            vpc, zone = zone_of[subnet_id]
            storage.setdefault(vpc, set()).add(zone)
            names.setdefault(vpc, []).append(file_system.name)
    found = []
    for resource in [*graph.of_type(HOSTS), *graph.of_type(SERVICE)]:
        placed = [zone_of[s] for s in _compute_subnets(resource) if s in zone_of]
        for vpc, zone in placed:
            if vpc in storage and zone not in storage[vpc]:
                found.append(f"cross-zone path: {resource.name} may run in {zone}, but "
                             f"{' and '.join(sorted(set(names[vpc])))} is in {', '.join(sorted(storage[vpc]))}: its "
                             "reads would cross zones (billed per GB each way)")
    return sorted(set(found))
