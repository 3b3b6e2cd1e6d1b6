"""The cross-region Dask platform: read the stack config, compose the components, export what operators need."""

import pulumi

from components.backbone import BackboneNetwork, BackboneNetworkArgs
from components.config import ConfigError, load_from_pulumi
from components.naming import Naming
from components.network import RegionalVpc, RegionalVpcArgs
from components.providers import regional_providers

try:
    config = load_from_pulumi()
except ConfigError as error:
    # RunError ends the program with the message alone: no traceback, nothing declared.
    raise pulumi.RunError(str(error)) from None

naming = Naming(config.project, config.stack)
providers = regional_providers(config)

vpcs = [
    RegionalVpc(
        site.name,
        RegionalVpcArgs(site=site, availability_zones=config.availability_zones,
                        log_retention_days=config.log_retention_days, naming=naming),
        opts=pulumi.ResourceOptions(provider=providers[site.region]),
    )
    for site in config.sites
]
backbone = BackboneNetwork("backbone", BackboneNetworkArgs(vpcs=vpcs, providers=providers))

pulumi.export("regions", list(config.regions))
pulumi.export("vpcIds", {vpc.site.name: vpc.vpc_id for vpc in vpcs})
pulumi.export("vpcCidrs", {site.name: site.cidr for site in config.sites})
pulumi.export("transitGatewayIds", backbone.transit_gateway_ids)
pulumi.export("peeringAttachmentIds", backbone.peering_attachment_ids)
pulumi.export("workerPools", {worker.region: worker.pool_name for worker in config.workers})
