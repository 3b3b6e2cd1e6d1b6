"""The notebook kernel, declared once as data: its name, the data plane's extra it installs, and its environment.
The SageMaker start script (client_region.py) and the local platform (`python -m local_platform kernel`) both build
it from this declaration."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from platform_facts import (
    CLIENT_PRELOAD_VARIABLE,
    CLIENT_PRELOADS,
    JUPYTERLAB_FACTORY,
    LOG_DIR_VARIABLE,
    LOG_GROUPS_VARIABLE,
    SCHEDULER_SERVICE_VARIABLE,
    TLS_ENVIRONMENT,
)


@dataclass(frozen=True)
class Kernel:
    name: str = "dask-platform"
    display_name: str = "Dask platform"
    extra: str = "notebook"  # the data plane's extra (pyproject.toml) the kernel installs with the wheel
    lab_extra: str = "lab"  # the extra the Jupyter server's environment installs: dask-labextension's factory

    def environment(self, scheduler_address: str, catalog_endpoint: str, tls_dir: str, *,
                    dashboard_link: str | None = None, log_groups: Mapping[str, object] | None = None,
                    log_dir: str | None = None, scheduler_service: Mapping[str, str] | None = None
                    ) -> dict[str, str]:
        """What the kernel's processes see: where the scheduler and catalog are, the client certificate (files in
        `tls_dir`), where the dashboard is linked, where the servers' logs are and the scheduler's service (when it
        stops when idle)."""
        environment = {"DASK_SCHEDULER_ADDRESS": scheduler_address, "CATALOG_ENDPOINT": catalog_endpoint,
                       "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
                       CLIENT_PRELOAD_VARIABLE: json.dumps(list(CLIENT_PRELOADS)),
                       **{variable: f"{tls_dir}/{name}.pem" for name, variable in TLS_ENVIRONMENT.items()}}
        if dashboard_link:
            environment["DASK_DISTRIBUTED__DASHBOARD__LINK"] = dashboard_link
        if log_groups:
            environment[LOG_GROUPS_VARIABLE] = json.dumps(dict(log_groups), separators=(",", ":"), sort_keys=True)
        if log_dir:
            environment[LOG_DIR_VARIABLE] = log_dir
        if scheduler_service:  # a scheduler that stops when idle: connect() starts it (dask_regions.idle)
            environment[SCHEDULER_SERVICE_VARIABLE] = json.dumps(dict(scheduler_service), separators=(",", ":"),
                                                                 sort_keys=True)
        return environment

    def lab_environment(self, environment: Mapping[str, str]) -> dict[str, str]:
        """What the Jupyter server sees so that dask-labextension lists the platform in JupyterLab's Dask sidebar:
        the kernel's `environment` (the platform's address and certificate) and the extension's cluster factory,
        started once as the server starts."""
        module, factory = JUPYTERLAB_FACTORY
        return {**environment, "DASK_LABEXTENSION__FACTORY__MODULE": module,
                "DASK_LABEXTENSION__FACTORY__CLASS": factory,
                "DASK_LABEXTENSION__INITIAL": json.dumps([{"name": self.display_name}])}

    def install_arguments(self, environment: Mapping[str, str]) -> list[str]:
        """`python -m ipykernel install` arguments for this kernel with `environment`."""
        arguments = ["--name", self.name, "--display-name", self.display_name]
        for variable, value in environment.items():
            arguments += ["--env", variable, value]
        return arguments

    def shell_environment(self, environment: Mapping[str, str]) -> str:
        """`--env NAME "value"` words for a shell (values may name $HOME; no single quotes: the start script runs
        them inside a single-quoted command)."""
        words = []
        for variable, value in environment.items():
            if "'" in value:
                raise ValueError(f"{variable}: a kernel setting cannot hold a single quote")
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            words.append(f'--env {variable} "{escaped}"')
        return " ".join(words)


KERNEL = Kernel()
