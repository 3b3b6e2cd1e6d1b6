"""Stops this SageMaker notebook instance when nobody has used it for `--minutes` (`client.notebookIdleMinutes`).

Not a component: the start script (notebook_start.sh) installs this file on the instance and runs it every five
minutes from cron, with the instance's own python3 (standard library only, Python 3.7 and later). Idle means: the
Jupyter server's last activity (API requests, kernel messages, terminals: what `/api/status` reports, which does
not count its own reading) is older than the limit, and no kernel is busy (a long computation sends no messages
while it runs). Then it asks SageMaker to stop the instance; the volume keeps the user's files, and a start runs the
start script again.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

JUPYTER_URL = "https://localhost:8443"  # where a notebook instance's Jupyter server listens (its own certificate)
REQUEST_SECONDS = 10


def verdict(status: Mapping[str, Any], kernels: Sequence[Mapping[str, Any]] | None, now: datetime,
            minutes: int) -> tuple[bool, str]:
    """(stop?, why). `kernels` is read only once the server has been quiet long enough (reading it counts as
    activity): None until then."""
    last = datetime.fromisoformat(str(status["last_activity"]).replace("Z", "+00:00"))
    quiet = now - last
    if quiet < timedelta(minutes=minutes):
        return False, f"active {quiet.total_seconds() / 60:.0f} minutes ago (limit {minutes})"
    if kernels is None:
        return False, "quiet: the kernels' states are needed"
    busy = [k.get("name", "?") for k in kernels if k.get("execution_state") == "busy"]
    if busy:
        return False, f"a kernel is busy ({', '.join(busy)}): a computation is running"
    return True, f"no activity for {quiet.total_seconds() / 60:.0f} minutes and no kernel busy (limit {minutes})"


def _get(url: str) -> Any:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # localhost, the server's own certificate
    with urllib.request.urlopen(url, timeout=REQUEST_SECONDS, context=context) as response:
        return json.load(response)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, required=True, help="idle minutes before the instance stops")
    parser.add_argument("--name", required=True, help="this notebook instance's name")
    parser.add_argument("--region", required=True)
    parser.add_argument("--url", default=JUPYTER_URL, help="the Jupyter server")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        print("idle stop is off (--minutes 0)")
        return 0
    now = datetime.now(timezone.utc)  # noqa: UP017 (python3 there may be older than 3.11)
    try:
        status = _get(f"{args.url}/api/status")
        stop, why = verdict(status, None, now, args.minutes)
        if not stop and why.startswith("quiet"):
            stop, why = verdict(status, _get(f"{args.url}/api/kernels"), now, args.minutes)
    except (OSError, ValueError, KeyError) as error:  # the server restarting, say: try again at the next run
        print(f"{now:%Y-%m-%dT%H:%M:%SZ} cannot read the Jupyter server at {args.url}: {error}; not stopping")
        return 0
    print(f"{now:%Y-%m-%dT%H:%M:%SZ} {'stopping' if stop else 'keeping'} {args.name}: {why}", flush=True)
    if not stop:
        return 0
    return subprocess.run(["aws", "sagemaker", "stop-notebook-instance", "--region", args.region,
                           "--notebook-instance-name", args.name], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
