"""Clients of a region's AWS emulation (moto) for the local control plane: the agent, and the cluster broker it
serves."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def emulation_client(service: str, region: str, endpoint: str) -> Any:
    """One client of a region's AWS emulation for the agent's whole life (it asks every step), with short bounds: a
    slow answer must not hold up the loop that keeps every service running."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, region_name=region, endpoint_url=endpoint, aws_access_key_id="local",
                        aws_secret_access_key="local",
                        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
