"""Default service quotas in `plan` (issue 35, point 4): what a stack's graph counts toward the quotas it is most
likely to hit, per region or Transit Gateway, against their defaults (sourced, or labelled unverified), warned at
80%."""

from __future__ import annotations

import copy
from dataclasses import replace

from plan import evaluate
from plan.quotas import QUOTAS, UNVERIFIED, WARN_SHARE, quota_use, render_quotas
from stackconfig import raw_stack_config
from stackgraph.synth import PROJECT_DIR, synthesize
from tests.conftest import cached_graph


def used(uses: list, quota: str) -> dict[str, int]:
    return {use.scope: use.used for use in uses if use.quota == quota}


def test_the_dev_stack_counts_what_it_declares_and_approaches_nothing() -> None:
    graph = cached_graph("dev")
    uses = quota_use(graph)
    regions = {"eu-west-2", "us-east-1", "us-west-2"}
    assert used(uses, "VPCs per region") == dict.fromkeys(regions, 1)
    assert used(uses, "Elastic IP addresses per region") == dict.fromkeys(regions, 1)  # each VPC's NAT address
    assert used(uses, "FSx for Lustre storage per region, GiB") == {"us-east-1": 1200, "us-west-2": 1200}
    assert used(uses, "Fargate On-Demand vCPUs per region") == {"eu-west-2": 2}  # the 2-vCPU scheduler
    gateways = used(uses, "Peering attachments per transit gateway")
    assert sorted(gateways.values()) == [2, 2, 2]  # a full mesh of three: two peerings each
    assert not any(use.warn for use in uses)
    assert evaluate(graph).quotas == uses


def test_a_stack_at_80_percent_of_a_default_is_warned_naming_the_quota_and_its_scope() -> None:
    graph = cached_graph("dev")
    vpc = next(r for r in graph.resources if r.type == "aws:ec2/vpc:Vpc" and r.region == "eu-west-2")
    graph.resources += [replace(copy.deepcopy(vpc), urn=f"{vpc.urn}-{i}") for i in range(3)]  # 4 of 5
    (warned,) = [use for use in quota_use(graph) if use.warn]
    assert (warned.quota, warned.scope, warned.used, warned.default) == ("VPCs per region", "eu-west-2", 4, 5)
    assert warned.share >= WARN_SHARE and "amazon-vpc-limits" in warned.source
    text = "\n".join(render_quotas(quota_use(graph)))
    assert "1 at 80% or more" in text and "WARN       4 of       5  VPCs per region (eu-west-2)" in text


def test_a_large_scheduler_passes_the_fargate_default_labelled_unverified() -> None:
    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    graph = synthesize("dev", {"client": {**raw["client"], "schedulerCpu": 8192, "schedulerMemoryMiB": 16384}})
    (fargate,) = [use for use in quota_use(graph) if use.quota.startswith("Fargate")]
    assert (fargate.used, fargate.warn, fargate.labels) == (8, True, [UNVERIFIED])


def test_every_default_names_its_source_or_says_it_is_unverified() -> None:
    for quota in QUOTAS:
        assert quota.default > 0
        assert ("read 2026-12-07" in quota.source) != (UNVERIFIED in quota.labels), quota.name
