"""The nightly sync in AWS, on the recorded graph: schedule, workflow, Lambda in the VPC, least-privilege
roles, alarms. The workflow definition itself is executed (a small interpreter of the ASL it uses) against
the real Lambda handler, so the definition and the handler cannot drift apart."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from catalog_sync import handlers
from catalog_sync.sinks import SQLiteSink
from components.nightly_sync import IMPORT_MAX_POLLS, workflow_definition
from stackconfig import PROJECT_DIR
from stackgraph.synth import Graph
from tests.catalog_fixtures import CMIP6_PREFIX, cmip6_keys, s3_client
from tests.conftest import cached_graph
from tests.test_catalog_sync import LambdaContext, stubbed_fsx

SHAPES = ["dev", "four-regions", "three-workers"]


@pytest.fixture(params=SHAPES)
def stack(request: pytest.FixtureRequest) -> Graph:
    return cached_graph(request.param)


def in_region(graph: Graph, token: str, region: str) -> list[Any]:
    return [r for r in graph.of_type(token) if r.region == region]


def policy_of(graph: Graph, role_name: str) -> list[dict[str, Any]]:
    role = graph.named(role_name, "aws:iam/role:Role")
    (policy,) = [p for p in graph.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.id]
    return list(json.loads(policy.inputs["policy"])["Statement"])


def nightly(stack: Graph) -> list[Any]:
    return [s for s in stack.of_type("aws:scheduler/schedule:Schedule") if not s.name.endswith("-first-sync")]


def test_one_schedule_per_worker_region_in_utc_with_retries_and_a_dead_letter_queue(stack: Graph) -> None:
    schedules = stack.of_type("aws:scheduler/schedule:Schedule")
    assert sorted(str(s.region) for s in nightly(stack)) == sorted(stack.outputs["workerRegions"])
    for schedule in schedules:
        first = schedule.name.endswith("-first-sync")
        assert first or schedule.inputs["scheduleExpression"] == "cron(0 0 * * ? *)"
        assert schedule.inputs["scheduleExpressionTimezone"] == "UTC"
        target = schedule.inputs["target"]
        assert target["arn"] == stack.outputs["workerRegions"][schedule.region]["syncStateMachineArn"]
        assert target["retryPolicy"] == {"maximumRetryAttempts": 3, "maximumEventAgeInSeconds": 3600}
        queue = next(q for q in in_region(stack, "aws:sqs/queue:Queue", str(schedule.region))
                     if q.outputs["arn"] == target["deadLetterConfig"]["arn"])
        assert queue.inputs["kmsMasterKeyId"].startswith(f"arn:aws:kms:{schedule.region}:")
        role = next(r for r in stack.of_type("aws:iam/role:Role") if r.outputs["arn"] == target["roleArn"])
        assert "scheduler.amazonaws.com" in role.inputs["assumeRolePolicy"]


def test_schedule_follows_config() -> None:
    from stackgraph.synth import synthesize

    graph = synthesize("dev", {"syncSchedule": "cron(30 2 ? * MON-FRI *)"})
    assert {s.inputs["scheduleExpression"] for s in nightly(graph)} == {"cron(30 2 ? * MON-FRI *)"}


def test_a_first_sync_runs_at_deploy_and_again_for_a_new_association(stack: Graph) -> None:
    """The catalog is filled minutes after `pulumi up`, not at the first midnight; a replaced association (its id
    is in the description) replaces the one-time schedule; other updates leave its time alone."""

    firsts = [s for s in stack.of_type("aws:scheduler/schedule:Schedule") if s.name.endswith("-first-sync")]
    assert sorted(str(s.region) for s in firsts) == sorted(stack.outputs["workerRegions"])
    for first in firsts:
        twin = next(s for s in nightly(stack) if s.region == first.region)
        assert first.inputs["target"] == twin.inputs["target"]  # the same workflow, role, retries, dead letters
        association = next(a for a in in_region(stack, "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation",
                                                str(first.region)))
        assert first.inputs["description"].endswith(association.id)
        assert "scheduleExpression" in first.ignore_changes
        assert first.options.get("replaceOnChanges") == ["description"]


def test_the_first_sync_is_timed_minutes_after_the_deploy_reaches_it() -> None:
    from datetime import UTC, datetime, timedelta

    from stackgraph.synth import synthesize

    started = datetime.now(UTC)
    graph = synthesize("dev")  # a fresh run: the shared graphs were recorded earlier in the session
    for first in (s for s in graph.of_type("aws:scheduler/schedule:Schedule") if s.name.endswith("-first-sync")):
        when = datetime.strptime(first.inputs["scheduleExpression"], "at(%Y-%m-%dT%H:%M:%S)").replace(tzinfo=UTC)
        assert started + timedelta(minutes=4) < when <= datetime.now(UTC) + timedelta(minutes=5)


def test_lambda_runs_the_sync_image_in_the_worker_vpc(stack: Graph) -> None:
    syncs = [f for f in stack.of_type("aws:lambda/function:Function") if f.name.endswith("-catalog-sync-function")]
    assert len(syncs) == len(stack.outputs["workerRegions"])
    for function in syncs:
        region = str(function.region)
        inputs = function.inputs
        assert inputs["packageType"] == "Image" and "@sha256:" in inputs["imageUri"]
        assert f".dkr.ecr.{region}." in inputs["imageUri"]
        assert inputs["reservedConcurrentExecutions"] == 1 and inputs["timeout"] == 900
        private = {s.id for s in stack.of_type("aws:ec2/subnet:Subnet")
                   if s.inputs["tags"]["tier"] == "private" and s.region == region}
        assert set(inputs["vpcConfig"]["subnetIds"]) <= private and inputs["vpcConfig"]["subnetIds"]
        environment = inputs["environment"]["variables"]
        site = stack.outputs["workerRegions"][region]
        assert environment["FILE_SYSTEM_ID"] == site["fileSystemId"]
        assert environment["CATALOG_ENDPOINT"] == stack.outputs["catalogEndpoint"]
        assert environment["CATALOG_REGION"] == "eu-west-2"  # SigV4 for the DOMAIN's region
        assert environment["MAX_DROP"] == "0.5"
        (group,) = [g for g in stack.of_type("aws:ec2/securityGroup:SecurityGroup")
                    if g.id in inputs["vpcConfig"]["securityGroupIds"]]
        ingress = [r for r in stack.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
                   if r.inputs["securityGroupId"] == group.id]
        egress = [(r.inputs["fromPort"], r.inputs["toPort"]) for r in stack.of_type(
            "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule") if r.inputs["securityGroupId"] == group.id]
        assert ingress == [] and egress == [(443, 443)]


def test_function_role_is_scoped_to_its_file_system_bucket_prefix_and_domain(stack: Graph) -> None:
    domain = stack.of_type("aws:opensearch/domain:Domain")[0].outputs["arn"]
    for region, site in stack.outputs["workerRegions"].items():
        statements = policy_of(stack, f"worker-{region}-catalog-sync-function-role")
        by_action = {a: s for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
        file_system = stack.by_id(site["fileSystemId"])
        assert file_system is not None
        assert by_action["fsx:CreateDataRepositoryTask"]["Resource"] == [
            file_system.outputs["arn"], f"arn:aws:fsx:{region}:123456789012:task/*"]
        association = next(a for a in stack.of_type("aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation")
                           if a.region == region)
        bucket, _, prefix = association.inputs["dataRepositoryPath"].removeprefix("s3://").partition("/")
        references = stack.named(f"worker-{region}-references", "aws:s3/bucket:Bucket").outputs["arn"]
        storage = sorted((sorted([s["Action"]] if isinstance(s["Action"], str) else s["Action"]), s["Resource"],
                          s.get("Condition")) for s in statements if "s3:" in json.dumps(s["Action"]))
        dataset_objects = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
        # The dataset: listed (under its prefix) and read (each netCDF file's metadata, for its references); the
        # region's references bucket: pieces and sets written and read back. Nothing else in S3.
        assert storage == sorted([
            (["s3:ListBucket"], f"arn:aws:s3:::{bucket}",
             {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}} if prefix else None),
            (["s3:GetObject"], dataset_objects, None),
            (["s3:GetObject", "s3:PutObject"], f"{references}/*", None),
            (["s3:ListBucket"], references, None)])
        assert by_action["kms:GenerateDataKey"]["Resource"] == stack.by_id(site["fileSystemId"]).inputs["kmsKeyId"]
        assert by_action["es:ESHttpPut"]["Resource"] == f"{domain}/catalog-{region}-*"  # its own indices only
        for statement in statements:  # a wildcard only with its reason in the Sid
            if statement["Resource"] == "*":
                assert statement.get("Sid", "").endswith("HaveNoResourceScoping") or statement.get(
                    "Sid", "").endswith("HasNoResourceScoping"), statement


def test_the_catalog_access_policy_names_every_regions_sync_role_as_writer(stack: Graph) -> None:
    (policy,) = stack.of_type("aws:opensearch/domainPolicy:DomainPolicy")
    writers = [s for s in json.loads(policy.inputs["accessPolicies"])["Statement"] if s["Sid"].startswith("Writer")]
    roles = {stack.named(f"worker-{region}-catalog-sync-function-role", "aws:iam/role:Role").outputs["arn"]
             for region in stack.outputs["workerRegions"]}
    assert {s["Principal"]["AWS"] for s in writers} == roles


def test_workflow_definition_and_role(stack: Graph) -> None:
    for machine in stack.of_type("aws:sfn/stateMachine:StateMachine"):
        definition = json.loads(machine.inputs["definition"])
        (function,) = [f.outputs["arn"] for f in in_region(stack, "aws:lambda/function:Function", str(machine.region))
                       if f.name.endswith("-catalog-sync-function")]
        tasks = [s for s in definition["States"].values() if s["Type"] == "Task"]
        assert {t["Parameters"]["FunctionName"] for t in tasks} == {function}
        assert machine.inputs["type"] == "STANDARD" and machine.inputs["loggingConfiguration"]["level"] == "ERROR"
        role = next(r for r in stack.of_type("aws:iam/role:Role") if r.outputs["arn"] == machine.inputs["roleArn"])
        invoke = next(s for s in policy_of(stack, role.name) if s["Action"] == "lambda:InvokeFunction")
        assert invoke["Resource"] == [function, f"{function}:*"]


def test_failures_alarm_to_an_encrypted_topic(stack: Graph) -> None:
    for region, site in stack.outputs["workerRegions"].items():
        alarms = [a for a in in_region(stack, "aws:cloudwatch/metricAlarm:MetricAlarm", region)
                  if "catalog-sync" in a.name]  # the region's other alarm drives its scaling (test_scaling.py)
        metrics = {a.inputs["metricName"] for a in alarms}
        assert metrics == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted",
                           "ApproximateNumberOfMessagesVisible"}
        assert all(a.inputs["alarmActions"] == [site["alarmTopicArn"]] for a in alarms)
        topics = in_region(stack, "aws:sns/topic:Topic", region)
        topic = next(t for t in topics if t.outputs["arn"] == site["alarmTopicArn"])
        assert topic.inputs["kmsMasterKeyId"].startswith(f"arn:aws:kms:{region}:")
    for key in stack.of_type("aws:kms/key:Key"):  # CloudWatch may use the key to publish to encrypted topics
        policy = json.loads(key.inputs["policy"])
        assert any(s["Principal"] == {"Service": "cloudwatch.amazonaws.com"} for s in policy["Statement"])
        assert key.inputs["enableKeyRotation"] is True


# --------------------------------------------------------------- the definition, executed for real
def _path(document: Any, path: str) -> Any:
    for part in path.removeprefix("$").strip(".").split("."):
        if part:
            document = document[part]
    return document


def _set(document: dict[str, Any], path: str | None, value: Any) -> dict[str, Any]:
    if path is None:
        return document
    if path == "$":
        return dict(value)
    result = copy.deepcopy(document)
    node = result
    parts = path.removeprefix("$.").split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return result


def _parameters(template: Any, state: dict[str, Any]) -> Any:
    if isinstance(template, dict):
        return {k.removesuffix(".$"): (_path(state, v) if k.endswith(".$") else _parameters(v, state))
                for k, v in template.items()}
    return template


def _choose(choice: dict[str, Any], state: dict[str, Any]) -> bool:
    if "And" in choice:
        return all(_choose(c, state) for c in choice["And"])
    value = _path(state, choice["Variable"])
    if "BooleanEquals" in choice:
        return bool(value is choice["BooleanEquals"])
    return bool(value >= choice["NumericGreaterThanEquals"])


def run_workflow(definition: dict[str, Any], invoke: Any, limit: int = 500) -> tuple[str, list[str]]:
    """Execute Task/Wait/Pass/Choice/Succeed/Fail states; returns the end state and the states visited."""
    state: dict[str, Any] = {"region": "us-west-2"}
    name, visited = definition["StartAt"], []
    for _ in range(limit):
        visited.append(name)
        spec = definition["States"][name]
        kind = spec["Type"]
        if kind in ("Succeed", "Fail"):
            return name, visited
        if kind == "Wait":
            name = spec["Next"]
        elif kind == "Pass":
            state, name = _set(state, spec.get("ResultPath", "$"), spec["Result"]), spec["Next"]
        elif kind == "Choice":
            name = next((c["Next"] for c in spec["Choices"] if _choose(c, state)), spec["Default"])
        else:
            try:
                payload = invoke(_parameters(spec["Parameters"]["Payload"], state))
                result = _parameters(spec["ResultSelector"], {"Payload": payload})
                state, name = _set(state, spec["ResultPath"], result), spec["Next"]
            except Exception as error:  # Catch States.ALL
                catch = spec["Catch"][0]
                state, name = _set(state, catch["ResultPath"], {"Error": type(error).__name__}), catch["Next"]
    raise AssertionError(f"the workflow did not end within {limit} states")


@pytest.fixture
def sync_environment(moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    s3 = s3_client(moto_endpoint)
    bucket = f"wf-{tmp_path.name[-12:].lower().replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    for key in cmip6_keys(chunks=2):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    for key, value in {"AWS_REGION": "us-west-2", "FILE_SYSTEM_ID": "fs-0123456789abcdef0",
                       "DATASET": f"s3://{bucket}/{CMIP6_PREFIX}", "FSX_PATH": f"/us-west-2/{CMIP6_PREFIX}",
                       "CATALOG_ENDPOINT": f"sqlite:///{tmp_path}/catalog.db", "MAX_DROP": "0.5"}.items():
        monkeypatch.setenv(key, value)
    return {"s3": s3, "bucket": bucket, "sink": SQLiteSink(tmp_path / "catalog.db")}


def test_the_deployed_workflow_runs_the_handler_to_a_swapped_catalog(sync_environment: dict[str, Any],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fsx = stubbed_fsx("EXECUTING", "SUCCEEDED")
    monkeypatch.setattr(handlers.boto3, "client", lambda service, **_: {"fsx": fsx, "s3": sync_environment["s3"]}[
        service])
    end, visited = run_workflow(workflow_definition("arn:aws:lambda:us-west-2:1:function:f"),
                                lambda payload: handlers.handle(payload, LambdaContext(0)))
    assert end == "Done"
    assert visited.count("PollImport") == 2 and visited.count("Index") >= 4
    assert sync_environment["sink"].serving_count("us-west-2") == 5


def test_a_failed_import_ends_the_workflow_before_the_catalog(sync_environment: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fsx = stubbed_fsx("FAILED")
    monkeypatch.setattr(handlers.boto3, "client", lambda service, **_: {"fsx": fsx, "s3": sync_environment["s3"]}[
        service])
    end, visited = run_workflow(workflow_definition("f"), lambda payload: handlers.handle(payload, LambdaContext(0)))
    assert end == "ImportFailed" and "Index" not in visited


def test_an_index_failure_drops_the_load_and_keeps_the_catalog(sync_environment: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sink = sync_environment["sink"]
    first = sink.begin("us-west-2", "d")
    first.add([])
    assert sink.serving_count("us-west-2") == 0

    class S3FailsAfterAFewPages:
        def __init__(self) -> None:
            self.calls = 0

        def get_paginator(self, name: str) -> Any:
            self.calls += 1
            if self.calls > 2:
                raise ConnectionError("S3 went away")
            return sync_environment["s3"].get_paginator(name)

    broken = S3FailsAfterAFewPages()
    fsx = stubbed_fsx("SUCCEEDED")
    monkeypatch.setattr(handlers.boto3, "client", lambda service, **_: {"fsx": fsx, "s3": broken}[service])
    end, visited = run_workflow(workflow_definition("f"), lambda payload: handlers.handle(payload, LambdaContext(0)))
    assert end == "SyncFailed" and "Abort" in visited and "Swap" not in visited
    with sink.connect() as db:
        assert db.execute("SELECT load_id FROM loads").fetchall() == [(first.load_id,)]  # only the unrelated one


def test_import_polling_is_capped_in_the_definition() -> None:
    choices = workflow_definition("f")["States"]["ImportFinished?"]["Choices"]
    cap = next(c for c in choices if c.get("Variable") == "$.import.result.polls")
    assert (cap["NumericGreaterThanEquals"], cap["Next"]) == (IMPORT_MAX_POLLS, "ImportFailed")


def test_the_functions_environment_is_declared_once(stack: Graph) -> None:
    """catalog_sync/environment.py names every variable: the program writes exactly those, and neither the handler nor
    the program nor the modules reading one spell a name themselves."""
    import ast

    from catalog_sync import environment

    names = {value for key, value in vars(environment).items() if key.isupper() and isinstance(value, str)}
    functions = [function for function in stack.of_type("aws:lambda/function:Function")
                 if "catalog_sync.handlers.handle" in str(function.inputs.get("imageConfig"))]
    assert functions and all(set(function.inputs["environment"]["variables"]) == names for function in functions)
    root = PROJECT_DIR
    for module in ("catalog_sync/handlers.py", "catalog_sync/published.py", "catalog_sync/references.py",
                   "components/nightly_sync.py"):
        literals = {node.value for node in ast.walk(ast.parse((root / module).read_text()))
                    if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        assert literals & names == set(), module
