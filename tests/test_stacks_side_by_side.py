"""Two teams' stacks of this project in one account and overlapping regions never share a physical name."""

from __future__ import annotations

from components.naming import LOG_GROUP_NAME_MAX, Naming
from stackgraph.synth import synthesize
from tests.conftest import workers
from tests.graph_checks import physical_name_collisions, physical_names

TEAM_A = {"team": "a", "workers": workers(["us-east-1", "eu-west-2"])}
TEAM_B = {"team": "b", "workers": workers(["us-east-1", "us-west-2"])}


def test_two_stacks_with_overlapping_regions_do_not_collide() -> None:
    team_a = synthesize("team-a", TEAM_A, stack_file="dev")
    team_b = synthesize("team-b", TEAM_B, stack_file="dev")
    names_a, names_b = physical_names(team_a), physical_names(team_b)
    assert names_a and names_b  # the check has something to compare
    assert {scope for scope, *_ in names_a} & {scope for scope, *_ in names_b} >= {"eu-west-2", "us-east-1"}
    assert physical_name_collisions([team_a, team_b]) == []


def test_the_collision_check_catches_the_same_stack_deployed_twice() -> None:
    once = synthesize("team-a", TEAM_A, stack_file="dev")
    twice = synthesize("team-a", TEAM_A, stack_file="dev")
    collisions = physical_name_collisions([once, twice])
    assert collisions and all("team-a:" in c for c in collisions)


def test_physical_names_stay_within_aws_limits() -> None:
    naming = Naming("cross-region-dask", "a-very-long-stack-name-for-an-experiment-" * 3)
    short = naming.resource("worker-ap-southeast-2", "catalog-sync", max_length=64)
    assert len(short) == 64 and short != naming.resource("worker-ap-southeast-1", "catalog-sync", max_length=64)
    assert len(naming.log_group("x" * 600)) == LOG_GROUP_NAME_MAX
    assert Naming("cross-region-dask", "Team A").resource("eu-west-2") == "cross-region-dask-team-a-eu-west-2"
