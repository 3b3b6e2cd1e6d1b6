"""What each region offers, from CloudFormation's registry as cfn-lint ships it per region (its resource types, and
the instance-type enums of EC2 and OpenSearch): a stack asking a region for something it lacks would fail in the
middle of `pulumi up`, so the config refuses it first, naming what would work.

The registry is a proxy for the service APIs, not proof: it says what CloudFormation can create in a region. A
region missing from cfn-lint's data is not checked (and `plan` says so)."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import metadata
from pathlib import Path

# What the platform creates that a region may lack, by what needs it.
NOTEBOOK = "AWS::SageMaker::NotebookInstance"
OPENSEARCH = "AWS::OpenSearchService::Domain"
LUSTRE = "AWS::FSx::FileSystem"
WHAT = {NOTEBOOK: "SageMaker notebook instances", OPENSEARCH: "OpenSearch domains", LUSTRE: "FSx file systems"}
CHECKED_ON = "2026-12-07"  # when this check was built against the pinned cfn-lint's data
SHOWN = 5  # alternatives named in a message


def source() -> str:
    """What the check reads, for `plan` and the docs."""
    return (f"CloudFormation's registry per region, as shipped by cfn-lint {metadata.version('cfn-lint')} "
            f"(pinned in requirements.txt; checked against it on {CHECKED_ON}): a proxy for the service APIs")


def _extensions() -> Path:
    import cfnlint

    return Path(cfnlint.__file__).parent / "data" / "schemas" / "extensions"


@cache
def resource_types(region: str) -> frozenset[str] | None:
    """The resource types CloudFormation offers in `region`; None when cfn-lint has no data for it."""
    from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

    try:
        return frozenset(PROVIDER_SCHEMA_MANAGER.get_resource_types(region))
    except Exception:  # cfn-lint knows no such region
        return None


@cache
def _enums(path: str) -> dict[str, frozenset[str]]:
    data = json.loads((_extensions() / path).read_text())
    # {region: {"enum": [...]}} beside a "description" (cfn-lint derives these from AWS's price lists)
    return {region: frozenset(entry.get("enum", [])) for region, entry in data.items() if isinstance(entry, dict)}


def ec2_types(region: str) -> frozenset[str] | None:
    return _enums("aws_ec2_instance/instancetype_enum.json").get(region)


def opensearch_types(region: str) -> frozenset[str] | None:
    return _enums("aws_opensearchservice_domain/clusterconfig_instancetype_enum.json").get(region)


def regions_offering(resource_type: str, near: str, candidates: frozenset[str]) -> list[str]:
    """Regions among `candidates` that offer `resource_type`, those of `near`'s geography (its first word) first."""
    offering = sorted(r for r in candidates if (types := resource_types(r)) is not None and resource_type in types)
    home = near.split("-")[0]
    return sorted(offering, key=lambda r: (r.split("-")[0] != home, r))[:SHOWN]


GRAVITON = re.compile(r"[a-z]+\d+g[a-z]*\.")  # m6g, m7gd, c7g: Arm, which the worker hosts' x86-64 AMI cannot run


def alike(wanted: str, offered: frozenset[str], *, x86: bool = False) -> list[str]:
    """Types of `wanted`'s size offered (`m5d.4xlarge`: other `*.4xlarge`; `r6g.large.search`: `*.large.search`),
    those of its family letter first; with `x86`, no Graviton (Arm) type."""
    family, _, size = wanted.partition(".")
    same_size = [t for t in offered if t.partition(".")[2] == size and not (x86 and GRAVITON.match(t))]
    return sorted(same_size, key=lambda t: (t[:1] != family[:1], t))[:SHOWN]
