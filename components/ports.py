"""Ports of the platform's services, shared by security groups, task definitions and the data plane."""

SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
HTTPS_PORT = 443
HTTP_PORT = 80
LUSTRE_PORTS = ((988, 988), (1018, 1023))  # LNet and the Lustre client ports
