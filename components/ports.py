"""Ports of the platform's services, shared by security groups and task definitions (Dask's own ports are shared
facts: platform_facts)."""

from platform_facts import DASHBOARD_PORT, SCHEDULER_PORT

__all__ = ["DASHBOARD_PORT", "HTTPS_PORT", "HTTP_PORT", "LUSTRE_PORTS", "SCHEDULER_PORT"]

HTTPS_PORT = 443
HTTP_PORT = 80
LUSTRE_PORTS = ((988, 988), (1018, 1023))  # LNet and the Lustre client ports
