"""ClientRegion's SageMaker notebook: its assets (the examples, the data plane's wheel and its constraints), its
role, and the start script (notebook_start.sh, a template) that builds the "Dask platform" kernel and gives the Jupyter
server the dashboard proxy and JupyterLab's Dask sidebar."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from string import Template
from typing import Any

import pulumi
import pulumi_aws as aws

from components.buckets import secure_bucket
from components.client_part import ClientPart
from components.iam import catalog_reader_statements, s3_catalog_reader_statements
from components.kernel import KERNEL
from components.ports import DASHBOARD_PORT, HTTPS_PORT, SCHEDULER_PORT
from stackconfig import PROJECT_DIR, UserConfig
from wheel_build import constraints, pin, wheel

# Installed in SageMaker's Jupyter server environment (not the kernel's), at requirements.txt's pin: the version
# the tests run a Jupyter server with.
JUPYTER_SERVER_PROXY = pin("jupyter-server-proxy")
# The start script's step that merges a setting (argv[2], JSON) into a Jupyter config file (argv[1]).
MERGE_SETTING = """import json, pathlib, sys
path, setting = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
config = json.loads(path.read_text()) if path.exists() else {}
for section, values in setting.items():
    config.setdefault(section, {}).update(values)
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text(json.dumps(config, indent=1))
"""
# The notebook's user's home, and the systemd drop-in that gives SageMaker's Jupyter server its environment.
NOTEBOOK_HOME = "/home/ec2-user"
SERVER_DROP_IN = "/etc/systemd/system/jupyter-server.service.d/dask-platform.conf"
# Dask formats it with the scheduler's host and dashboard port: a path on the notebook's own origin.
DASHBOARD_LINK = "/proxy/{host}:{port}/status"


class NotebookPart(ClientPart):
    notebook_name: pulumi.Output[str] | None  # the team's notebook (no client.users), else None
    notebook_url: pulumi.Output[str] | None
    notebook_role_arns: list[pulumi.Output[str]]  # every notebook's role (the catalog's readers)
    notebooks: dict[str, dict[str, pulumi.Output[str]]]  # user -> their notebook's name, url and role (client.users)
    log_groups: dict[str, dict[str, str]]  # process -> {region, group}: where `dr.connect().get_logs()` reads
    user_log_groups: dict[str, dict[str, dict[str, str]]]  # client.users: user -> their cluster's log_groups

    def _notebook(self, log_bucket: aws.s3.Bucket) -> None:
        """The team's notebook, or with `client.users` one per user, each with its own role and certificate."""
        args = self._args
        assets = secure_bucket(f"{self._name}-notebook-assets", self._child, kms_key_arn=args.key_arn,
                               access_log_bucket=log_bucket)
        aws.s3.BucketObjectv2(f"{self._name}-notebook-constraints", bucket=assets.id,
                              key="notebook-env/requirements.txt",
                              source=pulumi.FileAsset(str(constraints())), opts=self._child)
        # The data plane's one wheel, as the images install it; the kernel takes its `notebook` extra.
        aws.s3.BucketObjectv2(f"{self._name}-notebook-wheel", bucket=assets.id, key=f"notebook-env/{wheel().name}",
                              source=pulumi.FileAsset(str(wheel())), opts=self._child)
        for path in sorted((PROJECT_DIR / "notebooks").glob("*.ipynb")):
            aws.s3.BucketObjectv2(f"{self._name}-notebook-{path.stem}", bucket=assets.id, key=f"notebooks/{path.name}",
                                  source=pulumi.FileAsset(str(path)), opts=self._child)
        self.log_groups = self._log_groups(None)
        self.user_log_groups = {user.name: self._log_groups(user) for user in args.config.users}
        notebook_sg = self._security_group("notebook", "SageMaker notebook")
        # The dashboard in the notebook: the notebook server's proxy reaches the scheduler's dashboard directly.
        self._ingress(self._scheduler_sg, "dashboard-from-notebook", DASHBOARD_PORT, source=notebook_sg)
        self._egress(notebook_sg, "notebook-to-scheduler", SCHEDULER_PORT, cidr=args.vpc.cidr,
                     to_port=DASHBOARD_PORT)
        self._egress(notebook_sg, "notebook-to-https", HTTPS_PORT, cidr="0.0.0.0/0")  # catalog, S3, PyPI via NAT
        self.notebook_name = self.notebook_url = None
        self.notebook_role_arns, self.notebooks = [], {}
        if not args.config.users:
            assert args.client_tls_secret_arn is not None, "the team's notebook needs the client certificate"
            notebook = self._one_notebook(None, args.client_tls_secret_arn, assets, notebook_sg)
            self.notebook_name, self.notebook_url = notebook["name"], notebook["url"]
            self.notebook_role_arns = [notebook["roleArn"]]
            return
        for user in args.config.users:
            self.notebooks[user.name] = self._one_notebook(user, args.user_tls_secret_arns[user.name], assets,
                                                           notebook_sg)
            self.notebook_role_arns.append(self.notebooks[user.name]["roleArn"])

    def _log_groups(self, user: UserConfig | None) -> dict[str, dict[str, str]]:
        """The servers' logs, which `dr.connect().get_logs()` reads: the scheduler's here, each pool's in its region;
        a user's cluster's own (their role may read those and no other user's)."""
        naming, region, suffix = self._args.naming, self._region, f"-{user.name}" if user else ""
        return {"scheduler": {"region": region, "group": naming.log_group(region, "client", f"scheduler{suffix}")},
                **{f"workers-{w.region}": {"region": w.region, "group": naming.log_group(w.region, f"workers{suffix}")}
                   for w in self._args.workers}}

    def _one_notebook(self, user: UserConfig | None, tls_secret_arn: pulumi.Input[str], assets: aws.s3.Bucket,
                      notebook_sg: aws.ec2.SecurityGroup) -> dict[str, pulumi.Output[str]]:
        """A notebook instance, its role (which may read this certificate's secret and no other) and its start
        script. `user`: whose (their name is in every resource's); None: the team's, named as before users."""
        config, args, region = self._args.config, self._args, self._region
        suffix = f"-{user.name}" if user else ""
        name = args.naming.resource("notebook", *([user.name] if user else []), max_length=63)
        tags = user.tags if user else None  # the user's and group's, for cost allocation
        stops_itself = config.notebook_idle_minutes > 0  # the idle stop (notebook_idle.py): this instance, no other
        # connect() starts the scheduler stopped when idle (a user's own cluster's is always on demand)
        on_demand = config.idle_shutdown_minutes > 0 or user is not None
        scheduler: dict[str, Any] = (self.user_schedulers[user.name] if user else
                                     {"address": self.scheduler_address, "service": self.scheduler_service,
                                      "serviceArn": self.scheduler_service_arn})
        log_groups = self._log_groups(user)
        broker = self.broker_function_name
        role = self._role(f"notebook{suffix}", "sagemaker.amazonaws.com", tags=tags, statements=pulumi.Output.all(
            self.catalog_arn, assets.arn, args.key_arn, self._identity.account_id,
            tls_secret_arn, scheduler["serviceArn"]).apply(lambda v: [
                *([{"Effect": "Allow", "Action": "sagemaker:StopNotebookInstance",
                    "Resource": f"arn:aws:sagemaker:{region}:{v[3]}:notebook-instance/{name.lower()}"}]
                  if stops_itself else []),
                *([{"Effect": "Allow", "Action": ["ecs:DescribeServices", "ecs:UpdateService"], "Resource": v[5]}]
                  if on_demand and not user else []),
                # A user's cluster starts through the broker, which holds their group's quotas: their role may
                # watch their scheduler, and ask the broker, not set the service itself.
                *([{"Effect": "Allow", "Action": "ecs:DescribeServices", "Resource": v[5]},
                   {"Effect": "Allow", "Action": ["lambda:InvokeFunctionUrl", "lambda:GetFunctionUrlConfig"],
                    "Resource": f"arn:aws:lambda:{region}:{v[3]}:function:{broker}"}] if user else []),
                *(catalog_reader_statements(v[0]) if args.catalog.on_opensearch else
                  s3_catalog_reader_statements(v[0], v[2])),
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": v[1]},
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{v[1]}/*"},
                {"Effect": "Allow", "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": v[2]},
                {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": f"arn:aws:logs:{region}:{v[3]}:log-group:/aws/sagemaker/NotebookInstances:*"},
                {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": v[4]},
                {"Effect": "Allow", "Action": "logs:FilterLogEvents", "Resource": [
                    f"arn:aws:logs:{where['region']}:{v[3]}:log-group:{where['group']}"
                    for where in log_groups.values()]}]))
        on_start = pulumi.Output.all(assets.bucket, self.catalog_endpoint, tls_secret_arn,
                                     scheduler["service"]["cluster"]).apply(
            lambda v: base64.b64encode(_notebook_start_script(
                v[0], scheduler["address"], v[1], v[2], region, log_groups,
                idle=(name, config.notebook_idle_minutes),
                scheduler_service={**scheduler["service"], "cluster": v[3], **({"broker": broker} if user else {})}
                if on_demand else None,
            ).encode()).decode())
        lifecycle = aws.sagemaker.NotebookInstanceLifecycleConfiguration(
            f"{self._name}-notebook{suffix}", name=name, on_start=on_start, tags=tags, opts=self._child)
        notebook = aws.sagemaker.NotebookInstance(
            f"{self._name}-notebook{suffix}", name=name,
            instance_type=config.notebook_instance_type, volume_size=config.notebook_volume_gib, role_arn=role.arn,
            subnet_id=args.vpc.private_subnet_ids[0], security_groups=[notebook_sg.id],
            direct_internet_access="Disabled", root_access="Disabled", kms_key_id=args.key_arn,
            lifecycle_config_name=lifecycle.name, tags=tags, opts=self._child)
        return {"name": notebook.name, "url": pulumi.Output.concat("https://", notebook.url), "roleArn": role.arn,
                "roleName": role.name}


def _notebook_start_script(bucket: str, scheduler_address: str, catalog_endpoint: str, tls_secret_arn: str,
                           region: str, log_groups: Mapping[str, Any] | None = None,
                           idle: tuple[str, int] = ("", 0),
                           scheduler_service: Mapping[str, str] | None = None) -> str:
    """Runs at every notebook start: the example notebooks, the client certificate (fetched from Secrets
    Manager at each start into a 0700 directory, never stored in the bucket), and a kernel with the data plane's
    wheel and its `notebook` extra, pinned as the images are, whose environment points at this stack's scheduler,
    catalog and certificate. The install runs in the background because lifecycle scripts must finish within
    five minutes. `idle`: the instance's name and its idle minutes before it stops itself (0: never).
    `scheduler_service`: the scheduler's service, when it stops when idle (the kernel's connect() starts it)."""
    tls = "$HOME/.dask-platform-tls"
    environment = KERNEL.environment(scheduler_address, catalog_endpoint, tls, dashboard_link=DASHBOARD_LINK,
                                     log_groups=log_groups, scheduler_service=scheduler_service)
    server_environment = KERNEL.lab_environment({name: value.replace("$HOME", NOTEBOOK_HOME)
                                                 for name, value in environment.items()})
    host = scheduler_address.split("://", 1)[-1].rsplit(":", 1)[0]
    proxy = json.dumps({"ServerProxy": {"host_allowlist": [host]}})
    dist = f"{NOTEBOOK_HOME}/.dask-platform-dist/{wheel().name}"
    return _StartScript((Path(__file__).with_name("notebook_start.sh")).read_text()).substitute(
        jupyter_server_proxy=JUPYTER_SERVER_PROXY, merge_setting=MERGE_SETTING, proxy=proxy, home=NOTEBOOK_HOME,
        drop_in=SERVER_DROP_IN, drop_in_dir=SERVER_DROP_IN.rsplit("/", 1)[0],
        server_environment=_systemd_environment(server_environment), bucket=bucket, wheel=wheel().name, tls=tls,
        region=region, tls_secret_arn=tls_secret_arn, kernel_extra=KERNEL.extra, kernel_name=KERNEL.name,
        kernel_display_name=KERNEL.display_name, kernel_environment=KERNEL.shell_environment(environment),
        dist=dist, lab_extra=KERNEL.lab_extra, notebook_name=idle[0], idle_minutes=idle[1],
        idle_script=Path(__file__).with_name("notebook_idle.py").read_text())


class _StartScript(Template):
    """`@{name}` placeholders: the script's own `$` and braces are bash's."""

    delimiter = "@"


def _systemd_environment(environment: Mapping[str, str]) -> str:
    """`Environment='NAME=value'` lines of a systemd unit (single quotes keep the value whole; `%` is systemd's
    specifier character, so it is doubled)."""
    lines = []
    for name, value in environment.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"{name}: a Jupyter server setting cannot hold a single quote or a line break")
        lines.append(f"Environment='{name}={value.replace('%', '%%')}'")
    return "\n".join(lines)
