"""Regions that offer what the stack asks (issue 35, point 2): from CloudFormation's registry per region (cfn-lint's
data), a stack whose region lacks a resource type it creates, or an instance type it names, is refused naming the
region, what it lacks, and regions or types that would work."""

from __future__ import annotations

from typing import Any

import pytest

from plan import evaluate
from stackconfig import ConfigError, offered, parse_stack_config, raw_stack_config
from stackgraph.synth import PROJECT_DIR
from tests.conftest import cached_graph, shape_config

CLIENT = {"cidr": "10.0.0.0/16"}
WORKER = {"cidr": "10.1.0.0/16", "dataset": "s3://some-data"}


def problems(**overrides: Any) -> list[str]:
    _, raw = raw_stack_config(PROJECT_DIR, "dev", overrides)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="dev")
    return [str(problem) for problem in caught.value.problems]


def loads(**overrides: Any) -> None:
    _, raw = raw_stack_config(PROJECT_DIR, "dev", overrides)
    parse_stack_config(raw, stack="dev")


def test_a_client_region_without_notebooks_is_refused_naming_regions_that_have_them() -> None:
    (problem,) = problems(client={**CLIENT, "region": "me-central-1"})
    assert problem.startswith("client.region: me-central-1 has no SageMaker notebook instances")
    assert "AWS::SageMaker::NotebookInstance" in problem and "e.g. me-south-1" in problem  # its geography first


def test_opensearch_types_a_region_lacks_are_refused_and_the_s3_catalog_needs_none() -> None:
    found = problems(client={**CLIENT, "region": "ap-southeast-6"})
    assert {p.split(":")[0] for p in found} == {"catalog.instanceType", "catalog.masterInstanceType"}
    assert "'r6g.large.search' is not offered in ap-southeast-6" in found[0] and ".large.search" in found[0]
    assert "or catalog.kind 's3'" in found[0]
    loads(client={**CLIENT, "region": "ap-southeast-6"}, catalog={"kind": "s3"})


def test_a_worker_region_without_fsx_or_the_instance_type_is_refused_and_s3_storage_needs_no_fsx() -> None:
    found = problems(workers=[{**WORKER, "region": "ap-southeast-6"}])
    assert found[0].startswith("workers[0].region: ap-southeast-6 has no FSx file systems")
    assert found[1].startswith("workers[0].instanceType: 'm5d.4xlarge' is not offered in ap-southeast-6")
    suggested = found[1].split("e.g. ")[1].rstrip(".").split(", ")
    assert suggested and all(t.endswith(".4xlarge") and not offered.GRAVITON.match(t) for t in suggested)
    with pytest.raises(ConfigError, match=r"spotInstanceTypes\[0\]"):
        loads(workers=[{**WORKER, "region": "ap-southeast-6", "storage": "s3", "instanceType": "m6i.4xlarge",
                        "spotPercent": 50, "spotInstanceTypes": ["m5d.4xlarge"]}])
    loads(workers=[{**WORKER, "region": "ap-southeast-6", "storage": "s3", "instanceType": "m6i.4xlarge"}])


def test_plan_names_the_checks_source_and_every_shipped_stack_passes() -> None:
    review = evaluate(cached_graph("dev"), shape_config("dev"))
    assert review.offered.startswith("CloudFormation's registry per region, as shipped by cfn-lint 1.58.0")
    assert "a proxy for the service APIs" in review.offered and "not checked" not in review.offered
    for stack in ("dev", "lean"):
        loads(**raw_stack_config(PROJECT_DIR, stack)[1])


def test_a_region_outside_cfn_lints_data_is_not_checked_and_plan_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    config, real = shape_config("dev"), offered.resource_types
    monkeypatch.setattr(offered, "resource_types", lambda region: None if region == "us-west-2" else real(region))
    review = evaluate(cached_graph("dev"), config)
    assert review.offered.endswith("not in its data, not checked: us-west-2")
