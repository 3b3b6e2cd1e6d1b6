"""The cost model (plan/cost.py) and its price table (plan/prices.json): every type priced or listed, no silent
zeros, and the figures traced to the graph and the config."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from plan.cost import LABELS, PRICES_FILE, PriceTable, default_table, estimate, priced_types
from stackconfig import ConfigError, parse_stack_config, raw_stack_config
from stackgraph.synth import PROJECT_DIR, Graph, RecordedResource, synthesize
from tests.conftest import SHAPES, cached_graph, shape_config

HOURS = default_table().hours


def table_without(section: str, key: str) -> PriceTable:
    raw = copy.deepcopy(default_table().raw)
    del raw[section][key]
    return PriceTable(raw)


def line(cost: Any, name: str) -> Any:
    return next(entry for entry in cost.by_resource if entry.resource == name)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_is_priced_with_no_type_left_out(shape: str) -> None:
    graph, config = cached_graph(shape), shape_config(shape)
    assert {r.type for r in graph.aws_resources} <= priced_types()
    cost = estimate(graph, config)
    assert cost.errors == []
    assert cost.idle_usd_per_month is not None and cost.idle_usd_per_month > 0
    assert cost.busy_usd_per_hour is not None and cost.busy_usd_per_hour > cost.idle_usd_per_month / HOURS
    assert set(cost.by_region) == set(config.regions)
    assert sum(r["idle_usd_per_month"] for r in cost.by_region.values()) == pytest.approx(cost.idle_usd_per_month,
                                                                                           abs=0.05)


def test_the_table_is_dated_sourced_and_has_no_zero_prices() -> None:
    raw = json.loads(PRICES_FILE.read_text())
    assert raw["checked"] and raw["hours_per_month"] == 730
    for key, entry in raw["prices"].items():
        assert entry["usd"] > 0, key
        assert entry["source"] in raw["sources"], key
    for source in raw["sources"].values():
        assert source["url"] and source["says"]
        assert source["read"] is None or source["read"] == raw["checked"]
    for region in raw["regions"].values():
        assert region["factor"] >= 1.0 and region["basis"]


def test_a_missing_price_is_an_error_naming_it_and_leaves_no_totals() -> None:
    cost = estimate(cached_graph("dev"), shape_config("dev"), table_without("prices", "kms-key-month"))
    assert cost.idle_usd_per_month is None and cost.busy_usd_per_hour is None
    assert any("no price 'kms-key-month'" in error for error in cost.errors)


def test_a_region_missing_from_the_table_is_an_error_naming_it() -> None:
    cost = estimate(cached_graph("dev"), shape_config("dev"), table_without("regions", "us-west-2"))
    assert cost.idle_usd_per_month is None
    assert any("no region 'us-west-2'" in error for error in cost.errors)


def test_a_type_the_table_does_not_know_is_an_error_naming_it() -> None:
    graph: Graph = cached_graph("dev")
    graph.resources.append(RecordedResource(
        urn="urn:pulumi:dev::cross-region-dask::aws:rds/instance:Instance::db", type="aws:rds/instance:Instance",
        name="db", parent="", custom=True, provider="", region="eu-west-2", id="db-1", inputs={}, outputs={},
        dependencies=(), property_dependencies={}, ignore_changes=()))
    cost = estimate(graph, shape_config("dev"))
    assert cost.idle_usd_per_month is None
    assert any("aws:rds/instance:Instance (db) is not in the price table" in error for error in cost.errors)


def test_the_dev_stacks_figures_trace_to_the_graph_and_the_prices() -> None:
    table, cost = default_table(), estimate(cached_graph("dev"), shape_config("dev"))
    lustre = line(cost, "worker-us-east-1-lustre")
    assert lustre.idle_usd_per_month == pytest.approx(1200 * table.price("lustre-PERSISTENT_2-1000-gb-month",
                                                                         "us-east-1").usd)
    assert lustre.labels == ["approximation"]  # a tier ratio, not a quote
    scheduler = line(cost, "client-scheduler")  # 2 vCPU / 4 GB, stopped when idle by default
    hourly = 2 * table.price("fargate-vcpu-hour", "eu-west-2").usd + 4 * table.price("fargate-gb-hour",
                                                                                        "eu-west-2").usd
    assert scheduler.idle_usd_per_month == 0 and scheduler.busy_usd_per_hour == pytest.approx(hourly, abs=1e-4)
    always_on = line(estimate(*overridden(idleShutdownMinutes=0)), "client-scheduler")
    assert always_on.idle_usd_per_month == pytest.approx(hourly * HOURS, abs=0.01)
    notebook = line(cost, "client-notebook")  # stops after 60 idle minutes by default: only its volume idles
    assert notebook.idle_usd_per_month == pytest.approx(
        50 * table.price("sagemaker-notebook-storage-gb-month", "eu-west-2").usd, abs=0.01)
    assert "unverified" in notebook.labels and set(cost.labels) == set(LABELS)
    hosts = line(cost, "worker-us-east-1-hosts")  # 16 tasks of 25,000 MiB, 2 on a 64 GiB host: 8 hosts
    assert hosts.idle_usd_per_month == 0 and "8 hosts for 16 of 16 tasks" in hosts.how


def overridden(**client: Any) -> tuple[Graph, Any]:
    overrides = {"client": {"region": "eu-west-2", "cidr": "10.0.0.0/16", **client}}
    project, raw = raw_stack_config(PROJECT_DIR, "dev", overrides)
    return synthesize("dev", overrides), parse_stack_config(raw, stack="dev", project=project)


def test_an_always_on_notebook_bills_its_instance_when_idle() -> None:
    cost = estimate(*overridden(notebookIdleMinutes=0))
    notebook = line(cost, "client-notebook")
    assert notebook.idle_usd_per_month == pytest.approx(notebook.busy_usd_per_hour * HOURS, abs=0.1)
    assert "always on" in notebook.how


def test_spot_shares_split_the_busy_hosts_as_configured() -> None:
    workers = [{"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds", "maxTasks": 20,
                "onDemandBaseTasks": 2, "spotPercent": 50, "minInstances": 1}]
    project, raw = raw_stack_config(PROJECT_DIR, "dev", {"workers": workers})
    config = parse_stack_config(raw, stack="dev", project=project)
    cost = estimate(synthesize("dev", {"workers": workers}), config)
    on_demand, spot = line(cost, "worker-us-east-1-hosts"), line(cost, "worker-us-east-1-spot-hosts")
    assert "6 hosts for 11 of 20 tasks" in on_demand.how and "5 hosts for 9 of 20 tasks" in spot.how
    table = default_table()
    host = table.price("ec2-m5d.4xlarge-hour", "us-east-1").usd
    assert on_demand.idle_usd_per_month > 0 and spot.idle_usd_per_month == 0  # minInstances holds on-demand hosts
    assert spot.busy_usd_per_hour < 5 * host  # Spot's share of On-Demand


@pytest.mark.parametrize(("key", "value", "message"), [
    ("idleShutdownMinutes", -5, "client.idleShutdownMinutes"),
    ("idleShutdownMinutes", 100000, "client.idleShutdownMinutes"),
    ("notebookIdleMinutes", 2000, "client.notebookIdleMinutes"),
    ("notebookIdleMinutes", "soon", "client.notebookIdleMinutes"),
])
def test_absurd_idle_minutes_are_refused_naming_the_key(key: str, value: Any, message: str) -> None:
    project, raw = raw_stack_config(PROJECT_DIR, "dev", {
        "client": {"region": "eu-west-2", "cidr": "10.0.0.0/16", key: value}})
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="dev", project=project)
    assert [p.path for p in caught.value.problems] == [message]


def _figures(row: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"\$([\d,]+(?:\.\d+)?)", row)]


def test_the_readmes_figures_are_what_plan_computes() -> None:
    from stackconfig import PROJECT_DIR as ROOT

    rows = {line.split("|")[1].strip(): line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| now |") or line.startswith("| before the scheduler")}
    now = estimate(cached_graph("dev"), shape_config("dev"))
    before = estimate(*overridden(notebookIdleMinutes=0, idleShutdownMinutes=0, schedulerCpu=16384,
                                  schedulerMemoryMiB=32768))
    for label, cost in (("now", now), ("before the scheduler and notebook stopped when idle (16-vCPU scheduler)",
                                       before)):
        assert _figures(rows[label]) == [round(cost.idle_usd_per_month or 0), cost.busy_usd_per_hour], label


def test_the_operators_sample_is_the_dev_stacks_cost_section() -> None:
    from plan.cost import render_cost
    from stackconfig import PROJECT_DIR as ROOT

    text = (ROOT / "docs" / "operators.md").read_text()
    sample = text.split("<!-- plan cost: dev -->\n```\n", 1)[1].split("\n```\n<!-- end of plan cost -->", 1)[0]
    assert sample == "\n".join(render_cost(estimate(cached_graph("dev"), shape_config("dev"))))


def test_the_operators_lean_figures_are_what_plan_computes() -> None:
    from stackconfig import PROJECT_DIR as ROOT

    _, raw = raw_stack_config(PROJECT_DIR, "dev")
    scratch = [{**worker, "lustreDeploymentType": "SCRATCH_2"} for worker in raw["workers"]]
    figures = []
    for overrides in ({"workers": scratch}, {"workers": scratch, "backbone": "vpc-peering"}):
        project, stack = raw_stack_config(PROJECT_DIR, "dev", overrides)
        cost = estimate(synthesize("dev", overrides), parse_stack_config(stack, stack="dev", project=project))
        figures.append(f"${cost.idle_usd_per_month:,.0f}")
    text = " ".join((ROOT / "docs" / "operators.md").read_text().split())
    assert (f"both worker regions idles at {figures[0]} a month, and with `backbone: vpc-peering` as well at "
            f"{figures[1]}") in text


def test_the_lean_stack_idles_under_150_dollars_a_month_and_the_readme_says_what_plan_and_the_benchmark_do() -> None:
    """Issue 32, point 4: Pulumi.lean.yaml by `plan`; its README row and dev's, against plan and the committed WAN
    benchmark of each storage option."""
    from stackconfig import PROJECT_DIR as ROOT
    from stackconfig import load_stack_file

    lean = estimate(synthesize("lean"), load_stack_file(ROOT, "lean"))
    assert lean.errors == [] and lean.idle_usd_per_month is not None and lean.idle_usd_per_month <= 150
    dev = estimate(cached_graph("dev"), shape_config("dev"))
    rows = {line.split("|")[1].split(":")[0].strip(): line for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith(("| dev: ", "| lean: "))}
    for name, cost in (("dev", dev), ("lean", lean)):
        bench = json.loads((ROOT / "bench" / "results" / f"wan-storage-{'lustre' if name == 'dev' else 's3'}.json"
                            ).read_text())
        assert bench["stack"] == name
        pinned = bench["modes"]["pinned"]
        cells = [cell.strip() for cell in rows[name].split("|")[2:6]]
        assert cells == [f"${round(cost.idle_usd_per_month or 0):,} a month", f"${cost.busy_usd_per_hour} an hour",
                         f"{pinned['wall']['median']:.1f} s", f"{pinned['phases']['open']['median']:.2f} s"], name
