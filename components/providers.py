"""One explicit AWS provider per region: no resource may rely on an ambient region."""

from __future__ import annotations

import pulumi_aws as aws

from stackconfig import StackConfig


def regional_providers(config: StackConfig) -> dict[str, aws.Provider]:
    """A provider for every distinct region of the stack, each tagging everything it creates."""
    return {
        region: aws.Provider(
            f"aws-{region}",
            region=region,
            default_tags=aws.ProviderDefaultTagsArgs(tags=config.default_tags),
        )
        for region in config.regions
    }
