"""Container health. Schedulers: their HTTP server answers the platform's health path with 200 only while the
router and the demand plugin both run (dask_regions.startup; DASK_HEALTH_URL overrides the URL).
Workers run without dashboards: DASK_HEALTH_TCP=host:port checks that the first worker accepts connections."""

import os
import socket
import sys
import urllib.request

from platform_facts import DASHBOARD_PORT, PLATFORM_HEALTH_PATH  # installed with the data plane's wheel

TCP = os.environ.get("DASK_HEALTH_TCP")
URL = os.environ.get("DASK_HEALTH_URL", f"http://127.0.0.1:{DASHBOARD_PORT}{PLATFORM_HEALTH_PATH}")

try:
    if TCP:
        host, _, port = TCP.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=3):
            sys.exit(0)
    with urllib.request.urlopen(URL, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
