"""How a regional VPC's CIDR is carved into subnets. Pure: used by validation and by the VPC component.

Layout for a VPC CIDR of prefix /p and n availability zones (2 <= n <= 3):
- private subnet i  = quarter i of the CIDR (/p+2), one per AZ: workloads live here;
- the last quarter holds the public subnets (/p+5 each, NAT gateway and load balancers) from its start
  and the Transit Gateway attachment subnets (/28 each) from its end, so they never overlap.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

MAX_AZS = 3
MIN_AZS = 2
# AWS accepts VPC CIDRs from /16 to /28; our layout needs /p+5 public subnets of at least /27 (a load
# balancer needs 8 free addresses) next to /28 attachment subnets, so /22 is the smallest we can carve.
LARGEST_VPC_PREFIX = 16
SMALLEST_VPC_PREFIX = 22
ATTACHMENT_PREFIX = 28


@dataclass(frozen=True)
class SubnetPlan:
    private: tuple[str, ...]
    public: tuple[str, ...]
    attachment: tuple[str, ...]


def plan_subnets(cidr: str, az_count: int) -> SubnetPlan:
    """Split `cidr` into private, public and attachment subnets for `az_count` AZs.

    Raises ValueError if the CIDR cannot hold them (validation reports that before we get here).
    """
    if not MIN_AZS <= az_count <= MAX_AZS:
        raise ValueError(f"az_count must be {MIN_AZS}..{MAX_AZS}, got {az_count}")
    network = ipaddress.IPv4Network(cidr, strict=True)
    if not LARGEST_VPC_PREFIX <= network.prefixlen <= SMALLEST_VPC_PREFIX:
        raise ValueError(f"{cidr}: VPC prefix must be /{LARGEST_VPC_PREFIX}../{SMALLEST_VPC_PREFIX}")
    quarters = list(network.subnets(new_prefix=network.prefixlen + 2))
    shared_quarter = quarters[3]
    public = list(shared_quarter.subnets(new_prefix=network.prefixlen + 5))[:az_count]
    attachment = list(shared_quarter.subnets(new_prefix=ATTACHMENT_PREFIX))[-az_count:]
    return SubnetPlan(
        private=tuple(str(n) for n in quarters[:az_count]),
        public=tuple(str(n) for n in public),
        attachment=tuple(str(n) for n in reversed(attachment)),
    )
