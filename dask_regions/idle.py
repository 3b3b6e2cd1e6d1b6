"""The scheduler on demand: it stops its own ECS service when nobody uses it, and `connect()` starts it again.

`dask scheduler --preload dask_regions.idle`, with `dask-regions.idle-shutdown.after` set (the stack's
`client.idleShutdownMinutes`): once no client has been connected for that long, nothing is queued or running, and
every pool is down to its minimum (its warm worker gone: a worker left running would wait for a scheduler that is
not there, and bill), the plugin sets its service's desired count to zero. ECS then stops the task; the scheduler's
name leaves DNS with it. Nothing else changes: the pools, their scaling (no demand figure while the scheduler is
down: no change) and the name stay as they are, and the next scheduler task takes the same name.

`start_scheduler()` is the other half, used by `dask_regions.connect()` when the scheduler does not answer: it sets
the desired count back to one and waits, saying so, for the task to answer, within `dask-regions.start-timeout`.
Both talk to ECS through boto3 (the scheduler's task role may update its own service; the notebook's role may
update that service, and nothing else). A user's own cluster (client.users) is started through the cluster broker
instead (cluster_broker/), which holds their group's quotas: their role may call it, not set the service."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import SchedulerPlugin

from dask_regions import settings
from dask_regions.demand import DemandSettings
from dask_regions.errors import ConnectError
from dask_regions.startup import start_preload
from platform_facts import SCHEDULER_SERVICE_VARIABLE, is_pool

if TYPE_CHECKING:
    from distributed import Scheduler

logger = logging.getLogger("dask_regions.idle")
FIRE_AND_FORGET = "fire-and-forget"  # the scheduler's own client entry, always there
# The name of a client that only looks (JupyterLab's Dask sidebar): it does not count as a user.
OBSERVER = "platform-observer"
REPORT_EVERY = 15.0  # seconds between the messages of a wait
BROKER_ATTEMPTS = 3  # calls of the cluster broker while Lambda throttles (it takes one request at a time)
THROTTLED = 429


@dataclass(frozen=True)
class SchedulerService:
    """The scheduler's ECS service: where `connect()` and the plugin find it."""

    region: str
    cluster: str
    service: str
    broker: str | None = None  # a user's own cluster (client.users): the broker function that starts it

    @classmethod
    def from_environment(cls) -> SchedulerService | None:
        """The kernel's handle (set by the notebook's start script and `python -m local_platform env`)."""
        text = os.environ.get(SCHEDULER_SERVICE_VARIABLE)
        if not text:
            return None
        try:
            found = json.loads(text)
        except ValueError:
            found = None
        service = cls.from_mapping(found) if isinstance(found, dict) else None
        if service is None:
            raise ConnectError(f"{SCHEDULER_SERVICE_VARIABLE} is not the scheduler service's JSON (region, cluster, "
                               "service). Fix: restart the notebook (its start script sets it) or unset it")
        return service

    @classmethod
    def from_mapping(cls, found: Mapping[str, Any]) -> SchedulerService | None:
        """From the stack output `schedulerService` (or its JSON in the kernel); None without all three."""
        values = [found.get(key) for key in ("region", "cluster", "service")]
        if not all(values):
            return None
        region, cluster, service = map(str, values)
        broker = found.get("broker")
        return cls(region, cluster, service, broker=str(broker) if broker else None)

    @classmethod
    def from_settings(cls) -> SchedulerService | None:
        values = [settings.get(f"idle-shutdown.{key}") for key in ("region", "cluster", "service")]
        return cls(*map(str, values)) if all(values) else None

    def _ecs(self) -> Any:
        import boto3
        from botocore.config import Config

        # Bounded calls: connect()'s wait and the plugin's check both go on after a slow answer.
        return boto3.client("ecs", region_name=self.region, config=Config(
            connect_timeout=5, read_timeout=15, retries={"mode": "standard", "max_attempts": 3}))

    def desired_and_running(self) -> tuple[int, int]:
        described = self._ecs().describe_services(cluster=self.cluster, services=[self.service])
        if not described.get("services"):
            raise ConnectError(f"ECS has no service {self.service} in cluster {self.cluster} ({self.region}). Fix: "
                               "deploy the stack, or check the notebook's scheduler service setting")
        found = described["services"][0]
        return int(found.get("desiredCount", 0)), int(found.get("runningCount", 0))

    def set_desired(self, count: int) -> None:
        if self.broker and count:  # a user's own cluster: the broker starts it, within their group's quotas
            self.ask_broker("start")
            return
        self._ecs().update_service(cluster=self.cluster, service=self.service, desiredCount=count)

    def broker_url(self, session: Any) -> str:
        return str(session.client("lambda").get_function_url_config(FunctionName=self.broker)["FunctionUrl"])

    def ask_broker(self, action: str, attempts: int = BROKER_ATTEMPTS,
                   sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """Call the cluster broker's function URL, signed with this process's credentials (the notebook's role:
        the broker knows the user from it). A refusal (a quota) is a ConnectError with the broker's words. The
        broker takes one request at a time (its quota decisions), so Lambda may throttle a second one at the same
        moment: that is asked again, `attempts` times in all, a second apart, then named."""
        import urllib.error

        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 1
        while True:
            try:
                return self._post_to_broker(action)
            except urllib.error.HTTPError as error:
                try:
                    said = json.loads(error.read()).get("error")
                except ValueError:
                    said = None
                if said is not None or error.code != THROTTLED:  # the broker's own answer: not asked again
                    raise ConnectError(f"the cluster broker refused to {action} your cluster: "
                                       f"{said or error.reason}") from None
                if attempt == attempts:  # Lambda's answer, each time
                    raise ConnectError(f"the cluster broker {self.broker} is busy: Lambda throttled all {attempts} "
                                       f"requests to {action} your cluster. Fix: connect again in a moment") from None
                sleep(float(attempt))
                attempt += 1
            except (BotoCoreError, ClientError, OSError, ValueError) as error:
                raise ConnectError(f"cannot reach the cluster broker {self.broker} ({self.region}): {error}. Fix: "
                                   "use your notebook's role (it may call the broker), or ask your platform "
                                   "team") from None

    def _post_to_broker(self, action: str) -> dict[str, Any]:
        import urllib.request

        import boto3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        session = boto3.Session(region_name=self.region)
        request = AWSRequest(method="POST", url=self.broker_url(session), data=json.dumps({"action": action}),
                             headers={"content-type": "application/json"})
        SigV4Auth(session.get_credentials(), "lambda", self.region).add_auth(request)
        prepared = request.prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        with urllib.request.urlopen(urllib.request.Request(prepared.url, data=body, headers=dict(prepared.headers),
                                                           method="POST"), timeout=30) as response:
            return dict(json.loads(response.read()))

    def __str__(self) -> str:
        return f"{self.cluster}/{self.service} ({self.region})"


# ------------------------------------------------------------------------------------------ the plugin
class IdleShutdown(SchedulerPlugin):
    """Scheduler plugin: counts quiet time (no client, no task) and stops the service when it has lasted `after`
    seconds and the pools are at their minimum. A failed stop is logged and tried again at the next check."""

    name = "dask-regions-idle-shutdown"

    def __init__(self, after: float, interval: float, service: SchedulerService, demand: DemandSettings,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.after, self.interval, self.service, self.demand, self.clock = after, interval, service, demand, clock
        self.quiet_since = clock()
        self.stopping = False
        self.waiting_for: str = ""  # the last reason it did not stop, once logged
        self.scheduler: Any = None
        self._callback: Any = None
        self._stop_task: asyncio.Task[None] | None = None

    async def start(self, scheduler: Scheduler) -> None:
        from tornado.ioloop import PeriodicCallback

        self.scheduler = scheduler
        self._callback = PeriodicCallback(self.check, self.interval * 1000)
        self._callback.start()
        logger.info("the scheduler stops its service %s after %.0f s without clients", self.service, self.after)

    async def close(self) -> None:
        if self._callback is not None:
            self._callback.stop()

    # The quiet time runs from the moment the last user leaves, not from the last check that saw one.
    def add_client(self, scheduler: Scheduler, client: str) -> None:
        self.quiet_since = self.clock()

    def remove_client(self, scheduler: Scheduler, client: str) -> None:
        self.quiet_since = self.clock()

    def busy(self) -> str:
        """Why the scheduler is in use now ("" when it is not)."""
        clients = [c for c in self.scheduler.clients if c != FIRE_AND_FORGET and f"-{OBSERVER}-" not in c]
        if clients:
            return f"{len(clients)} client(s) connected"
        if self.scheduler.tasks:
            return f"{len(self.scheduler.tasks)} task(s) held"
        return ""

    def pools_above_minimum(self) -> list[str]:
        counts: dict[str, int] = {}
        for worker in self.scheduler.workers.values():
            for resource in worker.resources:
                if is_pool(resource):
                    counts[resource] = counts.get(resource, 0) + 1
        above = []
        for pool, workers in sorted(counts.items()):
            sizing = self.demand.pools.get(pool)
            floor = sizing.min_tasks * sizing.workers_per_task if sizing else 0
            if workers > floor:
                above.append(f"{pool} has {workers} worker(s), its minimum {floor}")
        return above

    def check(self) -> None:
        if self.stopping:
            return
        now = self.clock()
        if self.busy():
            self.quiet_since, self.waiting_for = now, ""
            return
        if now - self.quiet_since < self.after:
            return
        above = self.pools_above_minimum()
        if above:
            self._note("quiet, waiting for the pools to shrink first: " + "; ".join(above))
            return
        if self._stop_task is None or self._stop_task.done():
            self._stop_task = asyncio.ensure_future(self._stop(now - self.quiet_since))

    def _note(self, reason: str) -> None:
        if reason != self.waiting_for:
            logger.info("idle shutdown: %s", reason)
            self.waiting_for = reason

    async def _stop(self, quiet: float) -> None:
        try:  # boto3 blocks: off the event loop
            await asyncio.to_thread(self.service.set_desired, 0)
        except Exception as error:
            logger.warning("idle shutdown: could not set %s to 0 tasks (%s); trying again in %.0f s", self.service,
                           error, self.interval)
            return
        self.stopping = True
        logger.warning("idle shutdown: no client for %.0f minutes; %s set to 0 tasks, ECS stops this scheduler "
                       "(dask_regions.connect() starts it again)", quiet / 60, self.service)


def dask_setup(scheduler: Scheduler) -> None:
    """Entry point for `dask scheduler --preload dask_regions.idle`."""
    start_preload("dask_regions.idle", lambda: _setup(scheduler))


def _setup(scheduler: Scheduler) -> None:
    after = settings.get("idle-shutdown.after")
    if after is None:
        return  # always on
    service = SchedulerService.from_settings()
    if service is None:
        raise ValueError(f"{settings.name('idle-shutdown.after')} is set, but not the service to stop: set "
                         f"{settings.name('idle-shutdown.region')}, {settings.name('idle-shutdown.cluster')} and "
                         f"{settings.name('idle-shutdown.service')}")
    scheduler.add_plugin(IdleShutdown(settings.seconds("idle-shutdown.after"),
                                      settings.seconds("idle-shutdown.interval"), service,
                                      DemandSettings.from_config()))


# ------------------------------------------------------------------------------------- the other half
def start_scheduler(service: SchedulerService, answers: Callable[[], bool], *, timeout: float | None = None,
                    report: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> float:
    """Start a stopped scheduler and wait until `answers()`; returns the seconds waited. Says what it does, and at
    least every REPORT_EVERY seconds what ECS reports; past `timeout` (default `dask-regions.start-timeout`), a
    ConnectError naming what is missing."""
    timeout = settings.seconds("start-timeout") if timeout is None else timeout
    started = clock()
    desired, running = service.desired_and_running()
    if desired == 0:
        report(f"The scheduler is stopped (no one used it for a while); starting it: {service} ...")
        service.set_desired(1)
    else:
        report(f"The scheduler is starting ({running} of {desired} task(s) running): waiting for it ...")
    last_report = started
    while not answers():
        now = clock()
        if now - started > timeout:
            desired, running = service.desired_and_running()
            raise ConnectError(
                f"the scheduler did not answer within {timeout:.0f} s of being started: ECS reports {running} of "
                f"{desired} task(s) running for {service}. Fix: read the service's events (`aws ecs "
                f"describe-services --cluster {service.cluster} --services {service.service} --region "
                f"{service.region}`) and the scheduler's log (`Platform.get_logs()` once it runs)")
        if now - last_report >= REPORT_EVERY:
            desired, running = service.desired_and_running()
            report(f"  still starting after {now - started:.0f} s: {running} of {desired} task(s) running")
            last_report = now
        sleep(1.0)
    waited = clock() - started
    report(f"The scheduler answers, after {waited:.0f} s.")
    return waited
