"""The cross-region Dask platform: read the stack config, compose the components, export what operators need."""

import pulumi

from components.backbone import BackboneNetwork, BackboneNetworkArgs
from components.client_region import CatalogAccess, ClientRegion, ClientRegionArgs
from components.cluster_broker import ClusterBroker, ClusterBrokerArgs
from components.dask_tls import DaskTls, DaskTlsArgs
from components.image import CATALOG_SYNC_IMAGE, DASK_IMAGE, RegionalImage, RegionalImageArgs
from components.kms import RegionalKeys, RegionalKeysArgs
from components.naming import Naming, scheduler_host
from components.network import RegionalVpc, RegionalVpcArgs
from components.peering_backbone import PeeringBackbone, PeeringBackboneArgs
from components.providers import regional_providers
from components.worker_region import CatalogTarget, UserPool, WorkerRegion, WorkerRegionArgs
from stackconfig import CLIENT_SITE, ConfigError, load_from_pulumi

try:
    config = load_from_pulumi()
except ConfigError as error:
    # RunError ends the program with the message alone: no traceback, nothing declared.
    raise pulumi.RunError(str(error)) from None
for warning in config.warnings:  # right by every check here, but worth a look before `pulumi up` goes on
    pulumi.log.warn(str(warning))

naming = Naming(config.project, config.stack)
providers = regional_providers(config)
home = config.client.region

vpcs = {
    site.name: RegionalVpc(
        site.name,
        RegionalVpcArgs(region=site.region, cidr=site.cidr, availability_zones=config.availability_zones,
                        log_retention_days=config.log_retention_days, naming=naming),
        opts=pulumi.ResourceOptions(provider=providers[site.region]),
    )
    for site in config.sites
}
# The backbone joining every VPC: Transit Gateways (hourly per attachment), or VPC peering (no hourly charge).
if config.backbone == "vpc-peering":
    peerings = PeeringBackbone("backbone", PeeringBackboneArgs(vpcs=list(vpcs.values()), providers=providers))
    transit_gateway_ids, peering_attachment_ids, peering_connection_ids = {}, {}, peerings.peering_connection_ids
else:
    backbone = BackboneNetwork("backbone", BackboneNetworkArgs(vpcs=list(vpcs.values()), providers=providers))
    transit_gateway_ids, peering_attachment_ids = backbone.transit_gateway_ids, backbone.peering_attachment_ids
    peering_connection_ids = {}
keys = RegionalKeys("keys", RegionalKeysArgs(providers=providers, naming=naming))
image = RegionalImage("dask-image", RegionalImageArgs(spec=DASK_IMAGE, home_region=home, providers=providers,
                                                      key_arns=keys.key_arns))
# Mutual TLS for every Dask connection: the scheduler and notebook certificates in the client region, the
# workers' in every worker region.
# With client.users: no team cluster; each user's own cluster has a CA and certificates of its own.
users = config.client.users
worker_regions_list = list(dict.fromkeys(w.region for w in config.workers))
dask_tls = DaskTls("dask-tls", DaskTlsArgs(
    scheduler_host=scheduler_host(naming),
    holders={} if users else {"scheduler": [home], "worker": worker_regions_list, "client": [home]},
    providers=providers, key_arns=keys.key_arns, naming=naming, validity_days=config.dask_tls_validity_days,
    users={user.name: user.tags for user in users}, user_region=home,
    user_hosts={user.name: scheduler_host(naming, user.name) for user in users},
    user_worker_regions=worker_regions_list))

client = ClientRegion(
    "client",
    ClientRegionArgs(
        config=config.client, vpc=vpcs[CLIENT_SITE], worker_vpcs=[vpcs[w.site_name] for w in config.workers],
        providers=providers, peers=config.peers(CLIENT_SITE),
        image=image.references[home], repository_arn=image.repository_arns[home], key_arn=keys.key_arns[home],
        scheduler_tls_secret_arn=None if users else dask_tls.secret_arns["scheduler"][home],
        client_tls_secret_arn=None if users else dask_tls.secret_arns["client"][home],
        user_tls_secret_arns=dask_tls.user_secret_arns,
        user_scheduler_tls_secret_arns={user: secrets["scheduler"][home]
                                        for user, secrets in dask_tls.user_cluster_secret_arns.items()},
        naming=naming, log_retention_days=config.log_retention_days, workers=config.workers,
        create_opensearch_service_linked_role=config.create_opensearch_service_linked_role,
        catalog=config.catalog,
    ),
    opts=pulumi.ResourceOptions(provider=providers[home]),
)
worker_region_providers = {worker.region: providers[worker.region] for worker in config.workers}
sync_image = RegionalImage("catalog-sync-image", RegionalImageArgs(
    spec=CATALOG_SYNC_IMAGE, home_region=config.workers[0].region, providers=worker_region_providers,
    key_arns=keys.key_arns))
worker_regions = {
    worker.region: WorkerRegion(
        worker.site_name,
        WorkerRegionArgs(
            config=worker, vpc=vpcs[worker.site_name], peers=config.peers(worker.site_name),
            scheduler_address=None if users else client.scheduler_address, image=image.references[worker.region],
            repository_arn=image.repository_arns[worker.region], key_arn=keys.key_arns[worker.region],
            tls_secret_arn=None if users else dask_tls.secret_arns["worker"][worker.region],
            user_pools=[UserPool(user, client.user_schedulers[user.name]["address"],
                                 dask_tls.user_cluster_secret_arns[user.name]["worker"][worker.region],
                                 config.client.user_max_tasks(user, worker.max_tasks)) for user in users],
            naming=naming, log_retention_days=config.log_retention_days,
            catalog=CatalogTarget(
                endpoint=client.catalog_endpoint, arn=client.catalog_arn, domain_region=home, kind=config.catalog.kind,
                key_arn=keys.key_arns[home],
                sync_image=sync_image.references[worker.region], schedule=config.sync_schedule,
                max_drop_percent=config.sync_max_drop_percent),
        ),
        opts=pulumi.ResourceOptions(provider=providers[worker.region]),
    )
    for worker in config.workers
}
# With client.users: the broker that starts each user's cluster within their group's quotas.
broker = ClusterBroker("cluster-broker", ClusterBrokerArgs(
    config=config.client, naming=naming, function_name=client.broker_function_name,
    scheduler_cluster=client.scheduler_cluster.name,
    scheduler_services={user.name: client.user_schedulers[user.name]["service"]["service"] for user in users},
    notebook_roles={user.name: client.notebooks[user.name]["roleName"] for user in users},
    pools={worker.region: (worker_regions[worker.region].cluster_name, worker.max_tasks, worker.min_tasks,
                           worker_regions[worker.region].user_service_names) for worker in config.workers},
    log_retention_days=config.log_retention_days), opts=pulumi.ResourceOptions(provider=providers[home])) \
    if users else None
# Who may use the domain (the S3 catalog's readers and writers carry their own statements: no CatalogAccess).
access = client.catalog_access_args({name: region.catalog_sync_role_arn for name, region in worker_regions.items()})
if access is not None:
    CatalogAccess("catalog-access", access, opts=pulumi.ResourceOptions(provider=providers[home]))

pulumi.export("regions", list(config.regions))
pulumi.export("vpcIds", {name: vpc.vpc_id for name, vpc in vpcs.items()})
pulumi.export("vpcCidrs", {site.name: site.cidr for site in config.sites})
pulumi.export("backbone", config.backbone)
pulumi.export("transitGatewayIds", transit_gateway_ids)
pulumi.export("peeringAttachmentIds", peering_attachment_ids)
pulumi.export("peeringConnectionIds", peering_connection_ids)
pulumi.export("workerPools", {worker.region: worker.pool_name for worker in config.workers})
if not users:  # the team's cluster
    pulumi.export("schedulerAddress", client.scheduler_address)
    pulumi.export("dashboardUrl", client.dashboard_url)
    pulumi.export("schedulerService", client.scheduler_service)
pulumi.export("catalogEndpoint", client.catalog_endpoint)
if users:  # a notebook, a role, a client certificate and a cluster of their own per user
    pulumi.export("userNotebooks", client.notebooks)
    pulumi.export("userTlsSecrets", {user: {"arn": arn, "region": home}
                                     for user, arn in dask_tls.user_secret_arns.items()})
    # What `dr.connect(outputs, user=...)` reads: the user's scheduler (started on demand), pools and logs.
    pulumi.export("userClusters", {user.name: {
        "schedulerAddress": client.user_schedulers[user.name]["address"],
        # Started through the broker (its quotas), which connect() calls by name.
        "schedulerService": {**client.user_schedulers[user.name]["service"],
                             "broker": client.broker_function_name},
        "pools": {worker.region: {"clusterName": worker_regions[worker.region].cluster_name,
                                  "serviceName": worker_regions[worker.region].user_service_names[user.name],
                                  "maxTasks": config.client.user_max_tasks(user, worker.max_tasks)}
                  for worker in config.workers},
        "logGroups": client.user_log_groups[user.name], "tlsSecret": {"arn": dask_tls.user_secret_arns[user.name],
                                                                      "region": home}}
        for user in users})
    if broker is not None:
        pulumi.export("clusterBroker", {"function": broker.function_name, "region": home, "url": broker.function_url})
else:
    pulumi.export("notebookName", client.notebook_name)
    pulumi.export("notebookUrl", client.notebook_url)
pulumi.export("dnsZoneId", client.dns_zone_id)
if not users:
    pulumi.export("logGroups", client.log_groups)
# The notebook's client certificate (a Secrets Manager secret): `dr.connect(outputs)` fetches it when no
# certificate is configured; reading it needs secretsmanager:GetSecretValue on it.
if not config.client.users:
    pulumi.export("clientTlsSecret", {"arn": dask_tls.secret_arns["client"][home], "region": home})
pulumi.export("imageDigest", image.digest)
pulumi.export("imageReferences", image.references)
config_of = {worker.region: worker for worker in config.workers}
pulumi.export("workerRegions", {
    name: {
        "storage": config_of[name].storage,  # lustre, or s3: no file system (the next four are null)
        "fileSystemId": region.file_system_id, "fileSystemDnsName": region.file_system_dns_name,
        "mountName": region.mount_name, "associationId": region.association_id,
        "clusterName": region.cluster_name, "serviceName": region.service_name, "poolName": region.pool_name,
        "syncStateMachineArn": region.sync_state_machine_arn, "alarmTopicArn": region.alarm_topic_arn,
    }
    for name, region in worker_regions.items()
})
