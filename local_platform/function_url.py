"""The cluster broker on this machine (client.users): its function URL and its rate() schedule, as Lambda and
EventBridge Scheduler run them, served by the local agent against the regions' AWS emulations.

- `GET /2021-10-31/functions/<name>/url`: Lambda's GetFunctionUrlConfig, the URL `dr.connect()` looks up (a user's
  kernel reaches Lambda here through AWS_ENDPOINT_URL_LAMBDA, `python -m local_platform env --user`).
- `POST /lambda-url/<name>/`: the function URL. AWS knows the caller from the request's SigV4 signature (AWS_IAM
  auth); there is no IAM here, so the signature's access key stands in for the caller's role: each user's
  environment signs with their notebook role's name as its key. The request reaches the broker's own handler
  (`cluster_broker.handle`) with the declared settings, as the deployed function gets it.
- One request at a time, as the deployed function's reserved concurrency of one: a second request meanwhile is
  answered 429 as Lambda throttles (`dr.connect()` asks again).
- `rate(N minutes)`: the declared schedule's input (the rebalance) every N minutes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster_broker import REBALANCE, Broker, Settings, handle
from local_platform.emulation import emulation_client

URL_CONFIG = re.compile(r"^/2021-10-31/functions/([^/]+)/url$")
FUNCTION_URL = re.compile(r"^/lambda-url/([^/]+)/?$")
SIGNED_KEY = re.compile(r"^AWS4-HMAC-SHA256 Credential=([^/]+)/\d{8}/([^/]+)/lambda/aws4_request,")
RATE = re.compile(r"^rate\((\d+) minutes?\)$")
THROTTLED = {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "Message": "Rate Exceeded."}


@dataclass
class LocalBroker:
    name: str  # the function's name
    region: str
    settings: str  # its declared CLUSTER_BROKER_SETTINGS
    endpoints: dict[str, str]  # region -> its AWS emulation
    every: float | None = None  # seconds between the schedule's rebalances (None: no schedule)
    _busy: threading.Lock = field(default_factory=threading.Lock)
    _next: float = 0.0

    def broker(self) -> Broker:
        return Broker(Settings.from_json(self.settings),
                      lambda service, region: emulation_client(service, region, self.endpoints[region]))

    def url_config(self, name: str, base: str) -> tuple[int, dict[str, Any]]:
        if name != self.name:
            return 404, {"Type": "ResourceNotFoundException", "Message": f"Function not found: {name}"}
        return 200, {"FunctionUrl": f"{base}/lambda-url/{name}/", "FunctionArn": name, "AuthType": "AWS_IAM"}

    def request(self, name: str, headers: Mapping[str, str], body: str) -> tuple[int, str]:
        """A function URL request: the broker's answer (status, body), or Lambda's own 403 or 429."""
        signed = SIGNED_KEY.match(headers.get("Authorization", ""))
        if name != self.name or signed is None or signed.group(2) != self.region:
            return 403, '{"Message": "Forbidden"}'  # what a function URL with AWS_IAM auth answers unsigned calls
        if not self._busy.acquire(blocking=False):
            return 429, json.dumps(THROTTLED)
        try:
            event = {"requestContext": {"authorizer": {"iam": {
                "userArn": f"arn:aws:sts::000000000000:assumed-role/{signed.group(1)}/local"}}}, "body": body}
            answer = handle(event, self.broker())
        finally:
            self._busy.release()
        return int(answer["statusCode"]), str(answer["body"])

    def fire_due(self, now: float | None = None) -> list[str] | None:
        """The schedule's rebalance when it is due (its warnings), else None."""
        now = time.monotonic() if now is None else now
        if self.every is None or now < self._next:
            return None
        self._next = now + self.every
        with self._busy:
            return self.broker().rebalance()


def local_broker(spec: Mapping[str, Any] | None) -> LocalBroker | None:
    """The twin's `broker` entry (written by `up`), or None on a stack without client.users."""
    if not spec:
        return None
    every = None
    for schedule in spec["schedules"]:
        rate = RATE.match(schedule["expression"])
        if rate is None or schedule["input"] != REBALANCE:
            raise ValueError(f"schedule {schedule['name']} ({schedule['expression']}, {schedule['input']}): the twin "
                             "fires the broker's rebalance on rate(N minutes) only")
        every = 60.0 * int(rate.group(1))
    broker = LocalBroker(spec["name"], spec["region"], spec["settings"], dict(spec["endpoints"]), every)
    broker._next = time.monotonic() + (every or 0.0)  # the first is fired one period after the start, as AWS does
    return broker
