"""Container health. Schedulers: their HTTP server answers /health (DASK_HEALTH_URL overrides the URL).
Workers run without dashboards: DASK_HEALTH_TCP=host:port checks that the first worker accepts connections."""

import os
import socket
import sys
import urllib.request

from platform_facts import DASHBOARD_PORT  # installed with the data plane's wheel

TCP = os.environ.get("DASK_HEALTH_TCP")
URL = os.environ.get("DASK_HEALTH_URL", f"http://127.0.0.1:{DASHBOARD_PORT}/health")

try:
    if TCP:
        host, _, port = TCP.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=3):
            sys.exit(0)
    with urllib.request.urlopen(URL, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
