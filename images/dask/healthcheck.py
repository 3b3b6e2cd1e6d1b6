"""Container health: the Dask process's HTTP server answers /health (DASK_HEALTH_URL overrides the URL)."""

import os
import sys
import urllib.request

URL = os.environ.get("DASK_HEALTH_URL", "http://127.0.0.1:8787/health")

try:
    with urllib.request.urlopen(URL, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
