"""The stack config model: every kind of bad input gets a message naming the key, the value and the fix."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackconfig import (
    CLIENT_KEYS,
    TOP_LEVEL_KEYS,
    WORKER_KEYS,
    ConfigError,
    describe_keys,
    load_stack_file,
    parse_stack_config,
    raw_stack_config,
    schedule_problem,
)
from stackconfig import PROJECT_DIR as ROOT
from stackconfig.addressing import plan_subnets


def valid() -> dict[str, Any]:
    return {
        "client": {"region": "eu-west-2", "cidr": "10.0.0.0/16"},
        "workers": [
            {"region": "us-east-1", "cidr": "10.1.0.0/16", "dataset": "s3://era5-pds"},
            {"region": "us-west-2", "cidr": "10.2.0.0/16", "dataset": "s3://cmip6-pds/CMIP6/ScenarioMIP/MOHC"},
        ],
    }


def problems_of(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="test")
    return [str(p) for p in caught.value.problems]


def test_dev_stack_is_the_reference_deployment() -> None:
    config = load_stack_file(ROOT, "dev")
    assert (config.client.region, config.client.cidr) == ("eu-west-2", "10.0.0.0/16")
    assert [(w.region, w.cidr, w.dataset.uri, w.lustre_file_system_path) for w in config.workers] == [
        ("us-east-1", "10.1.0.0/16", "s3://era5-pds", "era5-pds"),
        ("us-west-2", "10.2.0.0/16", "s3://cmip6-pds/CMIP6/ScenarioMIP/MOHC", "CMIP6/ScenarioMIP/MOHC"),
    ]
    assert config.workers[1].fsx_path == "/us-west-2/CMIP6/ScenarioMIP/MOHC"
    assert config.workers[0].pool_name == "pool-us-east-1"
    assert config.sync_schedule == "cron(0 0 * * ? *)"
    assert config.regions == ("eu-west-2", "us-east-1", "us-west-2")


def test_defaults_fill_every_optional_key() -> None:
    config = parse_stack_config(valid(), stack="test")
    worker = config.workers[0]
    assert (worker.instance_type, worker.min_instances, worker.max_instances) == ("m5d.4xlarge", 0, 12)
    assert (worker.min_tasks, worker.max_tasks, worker.workers_per_task, worker.threads_per_worker) == (0, 16, 10, 3)
    assert (worker.scale_on, worker.idle_timeout_minutes, worker.spot_percent, worker.on_demand_base_tasks,
            worker.spot_instance_types) == ("demand", 30, 0, 0, ())
    assert (worker.lustre_storage_gib, worker.lustre_throughput_per_tib) == (1200, 1000)
    assert worker.lustre_file_system_path == "era5-pds"  # the bucket when the URI has no prefix
    assert config.workers[1].lustre_file_system_path == "CMIP6/ScenarioMIP/MOHC"  # else the prefix
    assert (config.team, config.availability_zones, config.log_retention_days) == ("platform", 2, 30)


def test_worker_may_share_the_client_region() -> None:
    raw = valid()
    raw["workers"][0]["region"] = "eu-west-2"
    config = parse_stack_config(raw, stack="test")
    assert config.regions == ("eu-west-2", "us-west-2")
    assert [s.name for s in config.sites] == ["client", "worker-eu-west-2", "worker-us-west-2"]


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set (or with value ... delete) a dotted path like 'workers.0.cidr' in a copy of raw."""
    raw = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node: Any = raw
    for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    key: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return raw


# (mutation path, value, expected key in the message, expected words)
BAD_INPUTS = [
    ("client", ..., "client", "required but missing"),
    ("workers", ..., "workers", "required but missing"),
    ("workers", [], "workers", "is empty"),
    ("client.region", ..., "client.region", "required but missing"),
    ("colour", "blue", "colour", "not a known key"),
    ("workers.0.treads", 3, "workers[0].treads", "did you mean 'threadsPerWorker'"),
    ("client.regoin", "eu-west-2", "client.regoin", "did you mean 'region'"),
    ("client", "eu-west-2", "client", "must be an object"),
    ("workers.0.minTasks", "2", "workers[0].minTasks", "must be an integer"),
    ("workers.0.maxTasks", True, "workers[0].maxTasks", "must be an integer"),
    ("team", 7, "team", "must be a string"),
    ("availabilityZones", 1.5, "availabilityZones", "must be an integer"),
    ("client.region", "eu-west-9", "client.region", "not an AWS region"),
    ("workers.1.region", "us-wset-2", "workers[1].region", "did you mean 'us-west-2'"),
    ("client.cidr", "10.0.0/16", "client.cidr", "not a CIDR block"),
    ("client.cidr", "10.0.0.1/16", "client.cidr", "use the network address: '10.0.0.0/16'"),
    ("workers.0.cidr", "8.8.0.0/16", "workers[0].cidr", "not a private (RFC 1918) range"),
    ("workers.0.cidr", "10.1.0.0/24", "workers[0].cidr", "too small to hold the subnets"),
    ("client.cidr", "10.0.0.0/12", "client.cidr", "larger than AWS allows"),
    ("workers.0.cidr", "10.0.128.0/17", "workers[0].cidr", "overlaps client.cidr"),
    ("workers.1.cidr", "10.1.0.0/16", "workers[1].cidr", "overlaps workers[0].cidr"),
    ("workers.1.region", "us-east-1", "workers[1].region", "is already workers[0].region"),
    ("workers.0.dataset", "era5-pds", "workers[0].dataset", "not an s3:// URI"),
    ("workers.0.dataset", "s3://Era5_PDS", "workers[0].dataset", "not a valid S3 bucket name"),
    ("workers.0.dataset", "s3://era5-pds/a/../b", "workers[0].dataset", "'..' segments"),
    ("workers.0.lustreFileSystemPath", "/fsx/era5", "workers[0].lustreFileSystemPath", "is absolute"),
    ("workers.0.lustreFileSystemPath", "era5/../../etc", "workers[0].lustreFileSystemPath", "'..' segments"),
    ("workers.0.minInstances", 13, "workers[0].minInstances", "greater than workers[0].maxInstances (12)"),
    ("workers.0.minTasks", 20, "workers[0].minTasks", "greater than workers[0].maxTasks (16)"),
    ("workers.0.maxTasks", 0, "workers[0].maxTasks", "must be at least 1"),
    ("workers.0.lustreStorageGiB", 2000, "workers[0].lustreStorageGiB", "not a size FSx accepts for Lustre"),
    ("workers.0.lustreStorageGiB", 3600, "workers[0].lustreStorageGiB", "multiple of 2400"),
    ("workers.0.lustreThroughputPerTiB", 200, "workers[0].lustreThroughputPerTiB", "125, 250, 500, 1000"),
    ("workers.0.taskMemoryMiB", 4096, "workers[0].taskMemoryMiB", "less than 1024 MiB"),
    ("workers.0.cpuTargetPercent", 0, "workers[0].cpuTargetPercent", "between 1 and 100"),
    ("workers.0.instanceType", "M5D 4XLARGE", "workers[0].instanceType", "not an EC2 instance type name"),
    ("syncSchedule", "cron(0 0 * * * *)", "syncSchedule", "exactly one of day-of-month and day-of-week"),
    ("syncSchedule", "daily at midnight", "syncSchedule", "must be cron(...), rate(...) or at(...)"),
    ("syncSchedule", "cron(0 24 * * ? *)", "syncSchedule", "outside 0-23"),
    ("client.dashboardAllowedCidrs", ["203.0.113.0/24", "0.0.0.0/0"], "client.dashboardAllowedCidrs[1]",
     "opens it to the whole internet"),
    ("client.dashboardAllowedCidrs", ["::/0"], "client.dashboardAllowedCidrs[0]", "whole internet"),
    ("client.schedulerMemoryMiB", 32768, "client.schedulerMemoryMiB", "CPU 2048 takes memory 4096 to 16384"),
    ("client.schedulerCpu", 3000, "client.schedulerCpu", "not a Fargate size"),
    ("catalog.instanceType", "r6g.large", "catalog.instanceType", "not an OpenSearch instance type"),
    ("catalog.masterInstanceType", "m6g.large.elasticsearch", "catalog.masterInstanceType",
     "ending in '.search'"),
    ("catalog.instanceCount", 3, "catalog.instanceCount", "cannot be spread evenly over 2 AZs"),
    ("catalog.kind", "dynamodb", "catalog.kind", "'opensearch', 's3'"),
    ("catalog.volumeGiB", 5, "catalog.volumeGiB", "between 10 and 16384"),
    # The catalog's keys moved out of `client` (issue 32): the old names are refused, naming the new ones.
    ("client.catalogInstanceType", "r6g.large.search", "client.catalogInstanceType",
     "has moved to catalog.instanceType"),
    ("client.catalogVolumeGiB", 30, "client.catalogVolumeGiB", "catalog: {volumeGiB: 30}"),
    ("client.notebookInstanceType", "t3.2xlarge", "client.notebookInstanceType", "not a SageMaker instance type"),
    ("client.dashboardCertificateArn", "arn:aws:acm:us-east-1:123456789012:certificate/"
     "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", "client.dashboardCertificateArn", "only use one from its own region"),
    ("client.dashboardCertificateArn", "my-cert", "client.dashboardCertificateArn", "not an ACM certificate ARN"),
    ("createOpenSearchServiceLinkedRole", "yes", "createOpenSearchServiceLinkedRole", "must be a boolean"),
    ("client.schedulerExec", "yes", "client.schedulerExec", "must be a boolean"),
    ("availabilityZones", 4, "availabilityZones", "between 2 and 3"),
    ("logRetentionDays", 31, "logRetentionDays", "nearest: 30"),
    ("tags", {"stack": "x"}, "tags.stack", "set by the platform"),
    ("tags", {"aws:owner": "x"}, "tags.aws:owner", "not an allowed tag key"),
    # Config that cannot deploy is refused, never a traceback (issue 21)
    ("client.region", "cn-north-1", "client.region", "a region of the aws-cn partition"),
    ("workers.0.region", "us-gov-west-1", "workers[0].region", "a region of the aws-us-gov partition"),
    ("client.region", "aws-global", "client.region", "not an AWS region botocore knows"),
    ("syncSchedule", "at(2025-13-45T99:99:99)", "syncSchedule", "2025-13-45T99:99:99 is not a date and time"),
    ("team", "t" * 300, "team", "is 300 characters; tag values take at most 256"),
    ("team", "ops;drop", "team", "has characters tags do not allow"),
    ("tags", {1: "x"}, "tags.1", "the tag key 1 is not text"),
    ("tags", {"cost<centre>": "x"}, "tags.cost<centre>", "not an allowed tag key"),
    ("tags", {"owner": "v" * 257}, "tags.owner", "tag values take at most 256"),
    ("client.dashboardAllowedCidrs", ["0.0.0.0/1", "128.0.0.0/1"], "client.dashboardAllowedCidrs",
     "more than a /8"),
    ("client.dashboardAllowedCidrs", ["2001:db8::/32"], "client.dashboardAllowedCidrs[0]", "is IPv6"),
    # a pool that could never start (issue 17)
    ("workers.0.scaleOn", "cpu", "workers[0].minTasks", "is 0 with workers[0].scaleOn 'cpu'"),
]


@pytest.mark.parametrize(("path", "value", "key", "words"), BAD_INPUTS, ids=[f"{p}={v!r}" for p, v, *_ in BAD_INPUTS])
def test_bad_input_names_key_value_and_fix(path: str, value: Any, key: str, words: str) -> None:
    problems = problems_of(_set(valid(), path, value))
    matching = [p for p in problems if p.startswith(f"{key}:")]
    assert matching, f"no problem for {key}: {problems}"
    assert any(words in p for p in matching), matching
    assert all(" Fix: " in p for p in problems)


def test_a_legitimate_allow_list_is_accepted() -> None:
    raw = _set(valid(), "client.dashboardAllowedCidrs", ["203.0.113.0/24", "198.51.100.0/22", "10.200.0.0/16"])
    assert parse_stack_config(raw, stack="test").client.dashboard_allowed_cidrs == (
        "203.0.113.0/24", "198.51.100.0/22", "10.200.0.0/16")


def test_the_number_of_worker_regions_is_bounded() -> None:
    from stackconfig import MAX_WORKER_REGIONS
    from tests.conftest import WORKER_REGIONS, workers

    regions = [*WORKER_REGIONS, "us-east-2", "ap-south-1", "eu-west-3"][:MAX_WORKER_REGIONS + 1]
    raw = {**valid(), "workers": workers(regions)}
    problems = problems_of(raw)
    assert any(p.startswith(f"workers: lists {MAX_WORKER_REGIONS + 1} worker regions; the platform supports at "
                            f"most {MAX_WORKER_REGIONS}") for p in problems), problems
    assert parse_stack_config({**valid(), "workers": workers(regions[:MAX_WORKER_REGIONS])}, stack="test")


def test_plan_handles_the_most_worker_regions_allowed() -> None:
    """`plan` at MAX_WORKER_REGIONS (the README gives its measured time; no timed assertion here)."""
    from plan import evaluate
    from stackconfig import MAX_WORKER_REGIONS
    from stackgraph.synth import synthesize
    from tests.conftest import WORKER_REGIONS, workers

    regions = [*WORKER_REGIONS, "us-east-2", "ap-south-1"][:MAX_WORKER_REGIONS]
    plan = evaluate(synthesize("dev", {"workers": workers(regions)}))
    assert plan.violations == [] and len(plan.matrix) > 0


def test_a_yaml_alias_bomb_is_refused_with_a_short_message(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    bomb = "config:\n  cross-region-dask:team: *i\n" + "\n".join("x" + line for line in levels)
    (tmp_path / "Pulumi.bomb.yaml").write_text("\n".join(levels) + "\n" + bomb.split("\n", 1)[0] + "\n"
                                               + "  cross-region-dask:team: *i\n")
    assert len((tmp_path / "Pulumi.bomb.yaml").read_bytes()) < 2048
    with pytest.raises(ConfigError) as caught:
        load_stack_file(tmp_path, "bomb")
    assert "expands to more than 100,000 values" in str(caught.value) and len(str(caught.value)) < 1000


def test_a_huge_bad_value_is_shown_short() -> None:
    problems = problems_of(_set(valid(), "team", [["x" * 1000] * 1000] * 1000))
    (team,) = [p for p in problems if p.startswith("team:")]
    assert "must be a string" in team and len(team) < 400


def test_every_problem_is_reported_at_once() -> None:
    raw = valid()
    raw["client"]["region"] = "mars-1"
    raw["workers"][0]["cidr"] = "10.0.0.0/16"  # overlaps the client
    raw["workers"][1]["dataset"] = "https://example.com"
    raw["syncSchedule"] = "sometimes"
    raw["unknown"] = 1
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack="test")
    keys = {p.path for p in caught.value.problems}
    assert keys == {"client.region", "workers[0].cidr", "workers[1].dataset", "syncSchedule", "unknown"}
    message = str(caught.value)
    assert message.startswith("stack 'test' has 5 problems; nothing was deployed:")
    assert "Traceback" not in message


@pytest.mark.parametrize("expression", ["cron(0 0 * * ? *)", "cron(0/15 * ? * MON-FRI *)", "cron(30 2 L * ? *)",
                                        "cron(0 0 ? * 2#1 *)", "rate(1 hour)", "rate(12 hours)",
                                        "at(2026-12-01T00:00:00)"])
def test_valid_schedules(expression: str) -> None:
    assert schedule_problem(expression) is None


@pytest.mark.parametrize("expression", ["cron(0 0 * * ?)", "cron(60 0 * * ? *)", "cron(0 0 ? * 8 *)",
                                        "cron(0 0 ? * ? *)", "rate(0 hours)", "rate(1 hours)", "rate(2 weeks)"])
def test_invalid_schedules(expression: str) -> None:
    assert schedule_problem(expression)


def test_missing_stack_file_and_bad_yaml_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    with pytest.raises(ConfigError, match=r"Pulumi.prod.yaml: does not exist"):
        load_stack_file(tmp_path, "prod")
    (tmp_path / "Pulumi.prod.yaml").write_text("config:\n  cross-region-dask:client: [unclosed\n")
    with pytest.raises(ConfigError, match=r"Pulumi.prod.yaml: is not valid YAML at line 3"):
        load_stack_file(tmp_path, "prod")


def test_precedence_is_project_defaults_then_stack_file_then_overrides(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    stack = {"config": {"cross-region-dask:logRetentionDays": 90, "cross-region-dask:team": "a",
                        "aws:region": "us-east-1", **{f"cross-region-dask:{k}": v for k, v in valid().items()}}}
    (tmp_path / "Pulumi.s.yaml").write_text(yaml.safe_dump(stack))
    _, raw = raw_stack_config(tmp_path, "s", {"team": "b"})
    assert raw["availabilityZones"] == 2  # Pulumi.yaml default
    assert raw["logRetentionDays"] == 90  # stack file
    assert raw["team"] == "b"  # override
    assert "region" not in raw  # other namespaces are not ours


def test_pulumi_yaml_declares_every_top_level_key_with_its_type_and_default() -> None:
    schema = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert set(schema) == {k.name for k in TOP_LEVEL_KEYS}
    for key in TOP_LEVEL_KEYS:
        declared = schema[key.name]
        assert declared["type"] == key.kind and declared["description"]
        if key.required:
            assert "default" not in declared, key.name
        else:
            assert declared["default"] == key.default, key.name


def test_the_configuration_doc_documents_every_key_and_default() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    for path, key in describe_keys():
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{path}`")), None)
        assert row is not None, f"docs/configuration.md has no row for {path}"
        if not key.required and key.default is not None:
            assert f"`{json.dumps(key.default) if not isinstance(key.default, str) else key.default}`" in row, row


def test_key_tables_have_no_duplicates() -> None:
    for keys in (TOP_LEVEL_KEYS, CLIENT_KEYS, WORKER_KEYS):
        names = [k.name for k in keys]
        assert len(names) == len(set(names))
        assert all(re.fullmatch(r"[a-z][A-Za-z0-9]*", n) for n in names)  # camelCase, as in the stack file


@pytest.mark.parametrize("prefix", range(16, 23))
@pytest.mark.parametrize("zones", [2, 3])
def test_subnet_plan_fits_inside_the_vpc_without_overlap(prefix: int, zones: int) -> None:
    import ipaddress

    vpc = ipaddress.ip_network(f"10.0.0.0/{prefix}")
    plan = plan_subnets(str(vpc), zones)
    subnets = [ipaddress.ip_network(c) for c in (*plan.private, *plan.public, *plan.attachment)]
    assert len(plan.private) == len(plan.public) == len(plan.attachment) == zones
    assert all(s.subnet_of(vpc) for s in subnets)  # type: ignore[arg-type]
    assert all(not a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])
    assert all(s.prefixlen <= 28 for s in subnets)  # AWS's smallest subnet


# ------------------------------------------------------------------------- generated from the declarations
def test_pulumi_yaml_the_json_schema_and_the_config_doc_table_are_generated_from_the_keys() -> None:
    from stackconfig.generate import generated

    for path, text in generated().items():
        assert path.read_text() == text, f"{path.name} drifted: run `python -m stackconfig.generate`"


def test_a_changed_declaration_shows_as_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from stackconfig import generate, schema

    changed = tuple(dataclasses.replace(k, default=3) if k.name == "availabilityZones" else k
                    for k in schema.TOP_LEVEL_KEYS)
    monkeypatch.setattr(generate, "TOP_LEVEL_KEYS", changed)
    monkeypatch.setattr(schema, "TOP_LEVEL_KEYS", changed)
    drifted = [path.name for path, text in generate.generated().items() if path.read_text() != text]
    assert drifted == ["Pulumi.yaml", "stack.schema.json", "configuration.md"]


def test_the_json_schema_accepts_the_shipped_stacks_and_names_a_mistake() -> None:
    import jsonschema
    import yaml

    from stackconfig.generate import json_schema

    validator = jsonschema.Draft202012Validator(json_schema())
    for stack in ROOT.glob("Pulumi.*.yaml"):
        assert list(validator.iter_errors(yaml.safe_load(stack.read_text()))) == [], stack.name
    bad = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    bad["config"]["cross-region-dask:workers"][0]["treads"] = 4
    (error,) = validator.iter_errors(bad)
    assert "'treads' was unexpected" in error.message
    del bad["config"]["cross-region-dask:workers"][0]["treads"]
    bad["config"]["cross-region-dask:availabilityZones"] = 4  # the declared bound, as the checks hold it
    (error,) = validator.iter_errors(bad)
    assert error.message == "4 is greater than the maximum of 3"
    checked = " ".join(problems_of(_set(valid(), "availabilityZones", 4)))
    assert "availabilityZones: is 4, must be between 2 and 3." in checked


def test_the_models_defaults_are_the_declared_ones() -> None:
    """Pulumi.yaml is generated from the declarations; the typed model's own defaults are held to them here."""
    import dataclasses
    import re as regex

    from stackconfig import CATALOG_KEYS, CatalogConfig, ClientConfig, StackConfig, WorkerConfig

    def snake(name: str) -> str:
        return regex.sub(r"(?<!^)(?=[A-Z])", "_", regex.sub(r"([MGT])iB", r"\1ib", name)).lower()

    def same(a: Any, b: Any) -> bool:
        if dataclasses.is_dataclass(a) and b == {}:  # a section whose every key takes its own default
            return bool(a == type(a)())
        return (tuple(a) == tuple(b)) if isinstance(a, list | tuple) and isinstance(b, list | tuple) else a == b

    compared = 0
    for model, keys in ((StackConfig, TOP_LEVEL_KEYS), (ClientConfig, CLIENT_KEYS), (WorkerConfig, WORKER_KEYS),
                        (CatalogConfig, CATALOG_KEYS)):
        fields = {f.name: f for f in dataclasses.fields(model)}
        for key in keys:
            field = fields.get(snake(key.name))
            if key.required or field is None or key.default is None:
                continue
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default  # type: ignore[misc]
            assert same(default, key.default), (model.__name__, key.name, default, key.default)
            compared += 1
    assert compared >= 30


# ------------------------------------------------------------------------------------------------- users
def with_users(users: Any, groups: Any) -> dict[str, Any]:
    raw = valid()
    raw["client"] |= {"users": users, "groups": groups}
    return raw


def test_users_belong_to_declared_groups_and_default_to_none() -> None:
    from stackconfig.schema import GroupConfig, UserConfig

    assert parse_stack_config(valid(), stack="test").client.users == ()
    config = parse_stack_config(with_users([{"name": "ana", "group": "climate"}, {"name": "bo-2", "group": "ops"}],
                                           [{"name": "climate"}, {"name": "ops"}]), stack="test")
    assert config.client.users == (UserConfig("ana", "climate"), UserConfig("bo-2", "ops"))
    assert [g.name for g in config.client.groups] == ["climate", "ops"]
    assert config.client.group("ops") == GroupConfig("ops")  # no quotas of its own


def test_every_bad_user_and_group_is_named_with_its_fix_at_once() -> None:
    found = problems_of(with_users(
        [{"name": "ana", "group": "climate"}, {"name": "Ana B", "group": "climate"}, {"name": "ana", "group": "ops"},
         {"name": "cy", "group": "science"}, {"name": "di"}, "ed"],
        [{"name": "climate"}, {"name": "ops", "maxWorkers": 3}, {"name": "climate"}]))
    assert found == [
        "client.groups[1].maxWorkers: is not a known key. Fix: did you mean 'maxWorkersPerRegion'? Remove or rename "
        "it.",
        "client.groups[2].name: group 'climate' is given twice (also client.groups[0]). Fix: give each group once.",
        "client.users[1].name: 'Ana B' is not a valid user name: it names resources. Fix: use 1-20 lowercase "
        "letters, digits and hyphens, starting with a letter.",
        "client.users[2].name: user 'ana' is given twice (also client.users[0]). Fix: give each user once.",
        "client.users[4].group: is required but missing. Fix: set client.users[4].group (The user's group: a name in "
        "`client.groups`.)",
        "client.users[5]: must be a mapping of keys to values, got 'ed'. Fix: write it as an object with keys name, "
        "group, maxWorkersPerRegion.",
        "client.users[3].group: 'science' (user 'cy') is not a group in client.groups (climate, ops). Fix: declare "
        "it in client.groups, or give the user one of the groups there."]
    assert problems_of(with_users("ana", [])) == [
        "client.users: must be an array, got 'ana' (str). Fix: give client.users an array value."]


def test_quotas_are_read_per_group_and_user() -> None:
    from stackconfig.schema import GroupConfig, UserConfig

    client = parse_stack_config(with_users(
        [{"name": "ana", "group": "climate", "maxWorkersPerRegion": 2}, {"name": "bo", "group": "climate"}],
        [{"name": "climate", "maxClusters": 1, "maxWorkersPerRegion": 4, "maxTaskMemoryMiB": 32768}]),
        stack="test").client
    assert client.groups == (GroupConfig("climate", 1, 4, 32768),)
    assert client.users == (UserConfig("ana", "climate", 2), UserConfig("bo", "climate"))


def test_quotas_a_pool_could_not_live_within_are_named_with_the_user_or_group_and_the_key() -> None:
    raw = with_users([{"name": "ana", "group": "climate", "maxWorkersPerRegion": 5},
                      {"name": "bo", "group": "ops", "maxWorkersPerRegion": 1}],
                     [{"name": "climate", "maxWorkersPerRegion": 4, "maxClusters": 0},
                      {"name": "ops", "maxWorkersPerRegion": 1, "maxTaskMemoryMiB": 16384}])
    raw["workers"][1] |= {"minTasks": 2}
    assert problems_of(raw) == [
        "client.groups[0].maxClusters: is 0, must be between 1 and 1000. Fix: set client.groups[0].maxClusters to a "
        "value between 1 and 1000.",
        "client.users[0].maxWorkersPerRegion: is 5 (user 'ana'), above its group 'climate''s 4. Fix: set it to at "
        "most 4, or raise client.groups' maxWorkersPerRegion for the group."]
    raw["client"]["groups"][0]["maxClusters"] = 2
    raw["client"]["users"][0]["maxWorkersPerRegion"] = 3
    assert problems_of(raw) == [
        "client.groups[1].maxTaskMemoryMiB: is 16384 (group 'ops'), but us-east-1's worker task is 25000 MiB "
        "(workers[0].taskMemoryMiB): the group could not run there. Fix: set it to at least 25000, or lower "
        "workers[0].taskMemoryMiB.",
        "client.groups[1].maxWorkersPerRegion: is 1 (group 'ops'), below workers[1].minTasks 2 (us-west-2): each "
        "cluster's pool keeps that many running. Fix: set it to at least 2, or lower workers[1].minTasks.",
        "client.groups[1].maxTaskMemoryMiB: is 16384 (group 'ops'), but us-west-2's worker task is 25000 MiB "
        "(workers[1].taskMemoryMiB): the group could not run there. Fix: set it to at least 25000, or lower "
        "workers[1].taskMemoryMiB.",
        "client.users[1].maxWorkersPerRegion: is 1 (user 'bo'), below workers[1].minTasks 2 (us-west-2): each "
        "cluster's pool keeps that many running. Fix: set it to at least 2, or lower workers[1].minTasks."]
