"""The mock harness itself: it runs the real program, records faithfully, and fails loudly."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from stackgraph.synth import PROJECT_DIR, SynthesisError, synthesize
from tests.conftest import workers


def tiny_project(tmp_path: Path, program: str) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: tiny\nruntime: python\n")
    (tmp_path / "Pulumi.t.yaml").write_text("config: {}\n")
    (tmp_path / "__main__.py").write_text(textwrap.dedent(program))
    return tmp_path


def test_bad_config_fails_before_any_resource_with_every_problem() -> None:
    with pytest.raises(SynthesisError) as caught:
        synthesize("dev", {"workers": workers(["us-east-1", "us-east-1"]), "availabilityZones": 4})
    message = str(caught.value)
    assert "stack 'dev' has 2 problems; nothing was deployed:" in message
    assert "availabilityZones: is 4, must be between 2 and 3." in message
    assert "workers[1].region: 'us-east-1' is already workers[0].region." in message
    assert "Traceback" not in message
    assert caught.value.graph.resources == []


def test_an_undeclared_project_key_is_refused_before_the_program_runs_as_the_cli_does() -> None:
    """The program reads its config through pulumi.Config, key by declared key; like the Pulumi CLI, the mock
    engine refuses a stack that sets a project key Pulumi.yaml does not declare (`plan` and the local platform,
    which read stack files, name it with a suggestion: tests/test_config.py)."""
    with pytest.raises(SynthesisError) as caught:
        synthesize("dev", {"colour": "blue"})
    assert str(caught.value) == ("validating stack config: Stack 'dev' uses configuration value "
                                 "'cross-region-dask:colour' which is not defined by the project configuration")
    assert caught.value.graph.resources == []


def test_config_reaches_the_program_as_pulumi_would_pass_it() -> None:
    graph = synthesize("dev", {"team": "hydrology"})
    tags = graph.of_type("pulumi:providers:aws")[0].inputs["defaultTags"]["tags"]
    assert tags["team"] == "hydrology"  # override wins over Pulumi.dev.yaml's climate-research
    assert graph.outputs["regions"] == ["eu-west-2", "us-east-1", "us-west-2"]


def test_outputs_operators_need_are_exported(dev_graph: object) -> None:
    graph = synthesize("dev")
    assert set(graph.outputs) >= {"regions", "vpcIds", "vpcCidrs", "transitGatewayIds", "peeringAttachmentIds",
                                  "workerPools"}
    assert graph.outputs["workerPools"] == {"us-east-1": "pool-us-east-1", "us-west-2": "pool-us-west-2"}
    assert all(v.startswith("vpc-") for v in graph.outputs["vpcIds"].values())


def test_mocks_return_the_computed_outputs_dependents_read() -> None:
    graph = synthesize("dev")
    for route in graph.of_type("aws:ec2transitgateway/route:Route"):
        assert route.inputs["transitGatewayRouteTableId"].startswith("tgw-rtb-")  # did not silently vanish
    for policy in graph.of_type("aws:iam/rolePolicy:RolePolicy"):
        assert policy.inputs["policy"] and policy.inputs["role"]
    for vpc in graph.of_type("aws:ec2/vpc:Vpc"):
        assert vpc.outputs["defaultRouteTableId"].startswith("rtb-")


def test_duplicate_urns_are_rejected(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, """
        import pulumi_aws as aws
        p = aws.Provider("p", region="eu-west-2")
        import pulumi
        aws.ec2.Vpc("same", cidr_block="10.0.0.0/16", opts=pulumi.ResourceOptions(provider=p))
        aws.ec2.Vpc("same", cidr_block="10.1.0.0/16", opts=pulumi.ResourceOptions(provider=p))
    """)
    with pytest.raises(SynthesisError, match="duplicate URN"):
        synthesize("t", project_dir=project)


def test_unmocked_invokes_fail_loudly(tmp_path: Path) -> None:
    project = tiny_project(tmp_path, """
        import pulumi, pulumi_aws as aws
        p = aws.Provider("p", region="eu-west-2")
        found = aws.s3.get_bucket_output(bucket="somebody-elses", opts=pulumi.InvokeOutputOptions(provider=p))
        pulumi.export("arn", found.arn)
    """)
    with pytest.raises(SynthesisError, match="getBucket is not mocked"):
        synthesize("t", project_dir=project)


def test_a_resource_on_the_default_provider_is_reported_unpinned(tmp_path: Path) -> None:
    from tests.graph_checks import unpinned_resources

    project = tiny_project(tmp_path, """
        import pulumi_aws as aws
        aws.ec2.Vpc("ambient", cidr_block="10.0.0.0/16")
    """)
    graph = synthesize("t", project_dir=project)
    assert unpinned_resources(graph) == ["aws:ec2/vpc:Vpc ambient has no explicit regional provider"]


def test_the_harness_runs_many_stacks_in_one_process() -> None:
    first = synthesize("dev")
    second = synthesize("dev", {"workers": workers(["us-east-1"])})
    third = synthesize("dev")
    assert len(second.resources) < len(first.resources) == len(third.resources)
    assert PROJECT_DIR.joinpath("__main__.py").exists()
