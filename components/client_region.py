"""ClientRegion: where data scientists work. The one Dask scheduler every worker region joins (Fargate, under a
private DNS name every worker VPC resolves), its dashboard behind a load balancer, the OpenSearch catalog domain, and
a SageMaker notebook with the platform's pinned client environment. Each concern is a part of its own module:
client_scheduler.py, client_catalog.py, client_notebook.py (with client_part.py, what they share)."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from components.client_catalog import CatalogAccess, CatalogAccessArgs, CatalogPart
from components.client_notebook import NotebookPart
from components.client_part import ClientRegionArgs
from components.client_scheduler import SchedulerPart
from components.naming import broker_function_name
from components.ports import DASHBOARD_PORT, HTTPS_PORT, SCHEDULER_PORT

__all__ = ["CatalogAccess", "CatalogAccessArgs", "ClientRegion", "ClientRegionArgs"]


class ClientRegion(SchedulerPart, CatalogPart, NotebookPart):
    dns_zone_id: pulumi.Output[str]
    dashboard_url: pulumi.Output[str] | None  # the team's dashboard (no client.users)

    def __init__(self, name: str, args: ClientRegionArgs, opts: pulumi.ResourceOptions) -> None:
        super().__init__("crossregiondask:index:ClientRegion", name, args.vpc.vpc_id, opts)
        missing = sorted({vpc.region for vpc in args.worker_vpcs} - set(args.providers))
        if missing:
            raise ValueError(f"ClientRegion {name}: no provider for region(s) {', '.join(missing)}")
        self._args = args
        self._region = args.config.region
        self._identity = aws.get_caller_identity_output(opts=self._invoke)
        # Every site's clients and workers dial the scheduler and the catalog; the scheduler talks back to them.
        sites = {args.vpc.site_name: args.vpc.cidr, **args.peers}

        scheduler_sg = self._scheduler_sg = self._security_group("scheduler", "Dask scheduler")
        for site, cidr in sites.items():
            self._ingress(scheduler_sg, f"scheduler-from-{site}", SCHEDULER_PORT, cidr=cidr,
                          formerly=f"scheduler-from-{cidr}")
        for site, cidr in sites.items():
            self._egress(scheduler_sg, f"scheduler-to-{site}", 0, cidr=cidr, to_port=65535,
                         formerly=f"scheduler-to-{cidr}")
        self._egress(scheduler_sg, "scheduler-to-aws-apis", HTTPS_PORT, cidr="0.0.0.0/0")  # ECR, logs via NAT

        self.dns_zone_id, namespace = self._private_dns(args)
        log_bucket = self._access_log_bucket()
        self.dashboard_url = None
        self.user_schedulers = {}
        self.broker_function_name = broker_function_name(args.naming, self._region)  # made only with client.users
        if not args.config.users:  # the team's scheduler, its dashboard behind a load balancer
            assert args.scheduler_tls_secret_arn is not None, "the team's scheduler needs its certificate"
            dashboard_sg = self._security_group("dashboard", "Dask dashboard load balancer")
            self._ingress(scheduler_sg, "dashboard-from-alb", DASHBOARD_PORT, source=dashboard_sg)
            self._egress(dashboard_sg, "alb-to-scheduler", DASHBOARD_PORT, source=scheduler_sg)
            dashboard = self._dashboard(dashboard_sg, log_bucket)
            self.scheduler_cluster = self._ecs_cluster()
            team = self._scheduler(scheduler_sg, self._discovery(namespace, None), args.scheduler_tls_secret_arn,
                                   dashboard=dashboard)
            self.scheduler_address, self.scheduler_service = team["address"], team["service"]
            self.scheduler_service_arn = team["serviceArn"]
        else:
            self.scheduler_cluster = self._ecs_cluster()
        for user in args.config.users:  # each user's own cluster's scheduler (their notebook proxies its dashboard)
            self.user_schedulers[user.name] = self._scheduler(
                scheduler_sg, self._discovery(namespace, user), args.user_scheduler_tls_secret_arns[user.name], user)
        self._catalog(sites, log_bucket)
        self._notebook(log_bucket)

        self.register_outputs({
            "schedulerAddress": None if args.config.users else self.scheduler_address,
            "dashboardUrl": self.dashboard_url,
            "catalogEndpoint": self.catalog_endpoint,
            "notebookName": self.notebook_name,
            "notebookUrl": self.notebook_url,
            "notebooks": self.notebooks,
            "dnsZoneId": self.dns_zone_id,
        })

    def catalog_access_args(self, writer_role_arns: Mapping[str, pulumi.Input[str]]) -> CatalogAccessArgs | None:
        """What CatalogAccess needs to state who may use the domain; None for the S3 catalog, whose readers' and
        writers' roles carry their own statements."""
        if (self.catalog_domain_name is None or self.catalog_access_function_name is None
                or self.catalog_admin_role_arn is None):
            return None
        return CatalogAccessArgs(domain_name=self.catalog_domain_name, domain_arn=self.catalog_arn,
                                 endpoint=self.catalog_endpoint, region=self._region,
                                 function_name=self.catalog_access_function_name,
                                 admin_role_arn=self.catalog_admin_role_arn, reader_role_arns=self.notebook_role_arns,
                                 writer_role_arns=writer_role_arns)
