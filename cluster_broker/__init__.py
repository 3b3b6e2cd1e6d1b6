"""The cluster broker: starts and stops each user's own Dask cluster (client.users), within their group's quotas, and
shares each worker region among the running clusters.

A user's notebook calls it (`dr.connect()`, through the function URL, signed with the notebook's role); the broker
knows the caller from the URL's IAM authorisation, never from the request, so a user can start or stop only their
own cluster. Starting:
- a cluster already running (or starting) is returned as it is: a second `connect()` gets the running cluster;
- a group already running `maxClusters` clusters is refused, naming the quota and the clusters that hold it;
- otherwise the user's scheduler service is set to one task, and each worker region's pool maxima are set again:
  the region's capacity (its pool's `maxTasks`) is shared fairly between the groups with running clusters (each
  up to its `maxWorkersPerRegion`, what one group leaves goes to the others), and a group's share among its running
  clusters (each up to its user's own quota).
A fault while setting another user's pool maximum is reported and left for the next call: the broker never
stops or shrinks another user's scheduler, so its faults cannot stop another user's cluster. A schedule sets the
shares again every few minutes (a cluster stops itself when idle without calling the broker).

A package of its own, standalone on purpose (standard library and boto3, both in the Lambda runtime): the deploy
zips it alone into the function. The program declares its settings (`settings_json`), the data plane calls it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

SETTINGS_VARIABLE = "CLUSTER_BROKER_SETTINGS"  # the function's environment: the JSON of `Settings`
ACTIONS = ("start", "stop", "status")


class BrokerError(Exception):
    """A request the broker refuses: its message names what is wrong and the fix; `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UserEntry:
    group: str
    role: str  # the name of the user's notebook role: who calls
    service: str  # their scheduler's ECS service (in Settings.cluster)
    max_workers_per_region: int | None = None


@dataclass(frozen=True)
class RegionPools:
    cluster: str  # the region's ECS cluster (every user's pool's)
    capacity: int  # the region's pool maxTasks: what its hosts are sized for
    min_tasks: int
    services: dict[str, str] = field(default_factory=dict)  # user -> their pool's service


@dataclass(frozen=True)
class Settings:
    region: str  # the client region: the schedulers'
    cluster: str  # the schedulers' ECS cluster
    users: dict[str, UserEntry]
    groups: dict[str, dict[str, int | None]]  # group -> {"maxClusters", "maxWorkersPerRegion"}
    pools: dict[str, RegionPools]  # worker region -> its pools

    @classmethod
    def from_json(cls, text: str) -> Settings:
        raw = json.loads(text)
        return cls(region=raw["region"], cluster=raw["cluster"],
                   users={name: UserEntry(**entry) for name, entry in raw["users"].items()},
                   groups=raw["groups"],
                   pools={region: RegionPools(**pools) for region, pools in raw["pools"].items()})

    def user_of_role(self, role: str) -> str | None:
        return next((name for name, entry in self.users.items() if entry.role == role), None)


def settings_json(settings: Settings) -> str:
    """What the program puts in the function's environment."""
    return json.dumps({
        "region": settings.region, "cluster": settings.cluster,
        "users": {name: vars(entry) for name, entry in settings.users.items()}, "groups": settings.groups,
        "pools": {region: vars(pools) for region, pools in settings.pools.items()}}, sort_keys=True)


# ------------------------------------------------------------------------------------------ fair shares
def water_fill(total: int, caps: Mapping[str, int]) -> dict[str, int]:
    """`total` shared as evenly as whole numbers allow among `caps`' members, none above its cap; what a capped
    member cannot take goes to the others (max-min fairness). Members in name order take any remainder first."""
    shares = {name: 0 for name in caps}
    remaining = total
    while remaining > 0:
        open_members = sorted(name for name in caps if shares[name] < caps[name])
        if not open_members:
            break
        even, extra = divmod(remaining, len(open_members))
        for i, name in enumerate(open_members):
            give = min(even + (1 if i < extra else 0), caps[name] - shares[name])
            shares[name] += give
            remaining -= give
    return shares


def region_shares(settings: Settings, region: str, running: list[str]) -> dict[str, int]:
    """Each running user's pool maximum in `region`: the region's capacity shared between the groups with running
    clusters, each group's among its running users."""
    pools = settings.pools[region]
    by_group: dict[str, list[str]] = {}
    for user in running:
        by_group.setdefault(settings.users[user].group, []).append(user)

    def user_cap(user: str) -> int:
        own = settings.users[user].max_workers_per_region
        return min(own, pools.capacity) if own is not None else pools.capacity

    group_caps = {}
    for group, users in by_group.items():
        quota = settings.groups.get(group, {}).get("maxWorkersPerRegion")
        wanted = sum(user_cap(user) for user in users)
        group_caps[group] = min(quota, wanted) if quota is not None else wanted
    shares: dict[str, int] = {}
    for group, share in water_fill(pools.capacity, group_caps).items():
        shares |= water_fill(share, {user: user_cap(user) for user in by_group[group]})
    # A pool keeps at least its minimum (the quotas are checked against it at config time).
    return {user: max(share, pools.min_tasks) for user, share in shares.items()}


# ------------------------------------------------------------------------------------------ the broker
class Broker:
    def __init__(self, settings: Settings, clients: Any = None) -> None:
        self.settings = settings
        self._clients = clients or _boto3_client

    def _ecs(self, region: str) -> Any:
        return self._clients("ecs", region)

    def desired(self, users: list[str]) -> dict[str, int]:
        """Each user's scheduler's desired count (a running or starting cluster: 1)."""
        found: dict[str, int] = {}
        services = {self.settings.users[user].service: user for user in users}
        names = sorted(services)
        for first in range(0, len(names), 10):  # DescribeServices takes at most 10
            described = self._ecs(self.settings.region).describe_services(
                cluster=self.settings.cluster, services=names[first:first + 10])
            for service in described.get("services", []):
                if service.get("serviceName") in services:
                    found[services[service["serviceName"]]] = int(service.get("desiredCount", 0))
        return {user: found.get(user, 0) for user in users}

    def status(self, user: str) -> dict[str, Any]:
        running = self.desired([user])[user] > 0
        return {"user": user, "cluster": "running" if running else "stopped"}

    def start(self, user: str) -> dict[str, Any]:
        settings = self.settings
        group = settings.users[user].group
        members = sorted(name for name, entry in settings.users.items() if entry.group == group)
        counts = self.desired(members)
        if counts[user] > 0:
            return {"user": user, "cluster": "running", "started": False, "warnings": []}
        running = [name for name in members if counts[name] > 0]
        limit = settings.groups.get(group, {}).get("maxClusters")
        if limit is not None and len(running) >= limit:
            raise BrokerError(
                f"group {group!r} already runs {len(running)} cluster(s) ({', '.join(running)}), its maxClusters "
                f"quota is {limit}. Fix: wait for one of them to stop (clusters stop when unused), or ask your "
                "platform team to raise client.groups[].maxClusters", status=429)
        self._ecs(settings.region).update_service(cluster=settings.cluster, service=settings.users[user].service,
                                                  desiredCount=1)
        logger.info("started %s's cluster (%s)", user, settings.users[user].service)
        return {"user": user, "cluster": "starting", "started": True, "warnings": self.rebalance()}

    def stop(self, user: str) -> dict[str, Any]:
        self._ecs(self.settings.region).update_service(
            cluster=self.settings.cluster, service=self.settings.users[user].service, desiredCount=0)
        return {"user": user, "cluster": "stopping", "warnings": self.rebalance()}

    def rebalance(self) -> list[str]:
        """Every running cluster's pool maximum in every region, shared again. A pool that cannot be set is
        reported and left as it was (the next start or stop sets it again)."""
        counts = self.desired(sorted(self.settings.users))
        running = [user for user, count in counts.items() if count > 0]
        warnings = []
        for region, pools in sorted(self.settings.pools.items()):
            autoscaling = self._clients("application-autoscaling", region)
            for user, maximum in sorted(region_shares(self.settings, region, running).items()):
                service = pools.services[user]
                try:
                    autoscaling.register_scalable_target(
                        ServiceNamespace="ecs", ResourceId=f"service/{pools.cluster}/{service}",
                        ScalableDimension="ecs:service:DesiredCount", MinCapacity=pools.min_tasks,
                        MaxCapacity=maximum)
                except Exception as error:  # one pool's fault must not stop the others
                    warnings.append(f"{user}'s pool in {region} ({service}) keeps its maximum: {error}")
                    logger.warning("%s", warnings[-1])
        return warnings


def _boto3_client(service: str, region: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(service, region_name=region, config=Config(
        connect_timeout=5, read_timeout=15, retries={"mode": "standard", "max_attempts": 3}))


# ------------------------------------------------------------------------------------------ the function URL
def caller_role(event: Mapping[str, Any]) -> str | None:
    """The IAM role name of a function URL's caller (AWS_IAM auth): `arn:aws:sts::<account>:assumed-role/<role>/
    <session>`."""
    arn = (((event.get("requestContext") or {}).get("authorizer") or {}).get("iam") or {}).get("userArn") or ""
    parts = arn.split(":", 5)
    if len(parts) == 6 and parts[5].startswith("assumed-role/"):
        return parts[5].split("/")[1]
    return None


def handle(event: Mapping[str, Any], broker: Broker) -> dict[str, Any]:
    """A function URL request: `{"action": "start" | "stop" | "status"}` from a user's role."""
    try:
        role = caller_role(event)
        user = broker.settings.user_of_role(role) if role else None
        if user is None:
            raise BrokerError(f"the caller ({role or 'no IAM role'}) is not a user of this platform. Fix: call from "
                              "your own notebook, whose role is yours", status=403)
        try:
            action = json.loads(event.get("body") or "{}").get("action")
        except (ValueError, AttributeError):
            action = None
        if action not in ACTIONS:
            raise BrokerError(f"action {action!r} is not one of {', '.join(ACTIONS)}. Fix: send "
                              '{"action": "start"}')
        result = getattr(broker, action)(user)
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(result)}
    except BrokerError as error:
        return {"statusCode": error.status, "headers": {"content-type": "application/json"},
                "body": json.dumps({"error": str(error)})}


REBALANCE = {"action": "rebalance"}  # what the platform's schedule sends (no caller: not a user's request)


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:  # the Lambda entry point
    """A user's request through the function URL, or the schedule's: every few minutes the shares are set again,
    so that a cluster that stopped itself when idle leaves its share to the others (only the schedule's role may
    invoke the function directly; a user's role may call its URL alone)."""
    broker = Broker(Settings.from_json(os.environ[SETTINGS_VARIABLE]))
    if "requestContext" not in event and dict(event) == REBALANCE:
        return {"warnings": broker.rebalance()}
    return handle(event, broker)
