"""Permissions proven before deploy (stackgraph/permissions.py): every policy of every stack shape against AWS's
authorization reference, and every AWS call the data plane makes, recorded in real runs against moto, Stubber
and osmem, evaluated against the policies of the role that makes it in AWS. Each check is shown to fail on a
seeded mistake."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.stub import ANY, Stubber

from stackgraph.permissions import Call, Decision, decide, reference_findings, service_calls
from stackgraph.synth import MOCK_ACCOUNT, Graph
from tests.aws_calls import AwsCalls, recording_signed_requests
from tests.conftest import SHAPES, cached_graph

IMPORT = "IMPORT_METADATA_FROM_REPOSITORY"


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("storage", ["lustre", "s3"])
def test_every_policy_matches_the_authorization_reference(shape: str, storage: str) -> None:
    assert reference_findings(cached_graph(shape, worker_storage=storage)) == []


# ------------------------------------------------------------------------------ seeded mistakes: the reference
def _seed(graph: Graph, role_policy: str, statement: dict[str, Any]) -> Graph:
    policy = graph.named(role_policy, "aws:iam/rolePolicy:RolePolicy")
    document = json.loads(policy.inputs["policy"])
    document["Statement"].append(statement)
    for recorded in (policy.inputs, policy.outputs):  # the mock engine echoes inputs as outputs
        if "policy" in recorded:
            recorded["policy"] = json.dumps(document)
    return graph


@pytest.mark.parametrize(("statement", "finding"), [
    ({"Effect": "Allow", "Action": "fsx:DescribeDataRepositoryTasks",
      "Resource": "arn:aws:fsx:us-east-1:123456789012:file-system/fs-1"},
     "fsx:DescribeDataRepositoryTasks supports no resource-level permissions"),
    ({"Effect": "Allow", "Action": "fsx:DescribeDataRepositoryTask", "Resource": "*"},
     "fsx:DescribeDataRepositoryTask is no action in AWS's authorization reference"),
    ({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::era5-pds"},
     "s3:GetObject is granted on none of its resource types"),
    ({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::era5-pds",
      "Condition": {"StringLike": {"s3:prefixes": ["x"]}}},
     "condition key s3:prefixes (StringLike) does not exist for s3:ListBucket"),
], ids=["no-resource-level-permissions", "unknown-action", "wrong-resource-type", "unknown-condition-key"])
def test_the_reference_check_fails_on_a_seeded_mistake(statement: dict[str, Any], finding: str) -> None:
    graph = _seed(cached_graph("dev"), "worker-us-east-1-catalog-sync-function-policy", statement)
    assert any(finding in text for text in reference_findings(graph)), reference_findings(graph)


def test_findings_fail_plan_and_the_policy_pack() -> None:
    from plan import evaluate
    from policy.rules import evaluate_policies

    graph = _seed(cached_graph("dev"), "worker-us-east-1-catalog-sync-function-policy",
                  {"Effect": "Allow", "Action": "fsx:DescribeDataRepositoryTasks",
                   "Resource": "arn:aws:fsx:us-east-1:123456789012:file-system/fs-1"})
    plan = evaluate(graph)
    assert any("supports no resource-level permissions" in v for v in plan.violations)
    report = evaluate_policies(graph)
    assert any(policy == "ours-iam-authorization-reference" for policy, _ in report.violations)
    assert not any(policy == "ours-iam-authorization-reference" for policy, _ in
                   evaluate_policies(cached_graph("dev")).violations)


# ------------------------------------------------------------------------------ the calls the code makes
def denied(graph: Graph, calls: list[Call]) -> list[str]:
    return [d.message() for d in (decide(graph, call) for call in calls) if not d.allowed]


def lambda_environment(graph: Graph, region: str) -> dict[str, str]:
    (function,) = [f for f in graph.of_type("aws:lambda/function:Function")
                   if f.region == region and f.name.endswith("-catalog-sync-function")]
    return dict(function.inputs["environment"]["variables"])


def domain_arn(graph: Graph) -> str:
    (domain,) = graph.of_type("aws:opensearch/domain:Domain")
    return str(domain.outputs["arn"])


def stubbed_fsx(region: str, file_system_id: str) -> Any:
    client = boto3.client("fsx", region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    task = {"TaskId": "task-0123456789abcdef0", "Type": IMPORT, "FileSystemId": file_system_id,
            "CreationTime": "2026-11-26T00:00:00Z"}
    stubber.add_response("create_data_repository_task", {"DataRepositoryTask": {**task, "Lifecycle": "PENDING"}},
                         {"Type": IMPORT, "FileSystemId": file_system_id, "Report": {"Enabled": False},
                          "ClientRequestToken": ANY})
    stubber.add_response("describe_data_repository_tasks", {"DataRepositoryTasks": [{
        **task, "Lifecycle": "SUCCEEDED", "Status": {"TotalCount": 1, "SucceededCount": 1, "FailedCount": 0}}]},
        {"TaskIds": ANY})
    stubber.activate()
    return client


@pytest.fixture
def sync_calls(moto_endpoint: str, osmem_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[
        tuple[Graph, AwsCalls]]:
    """The us-west-2 nightly sync, run as the deployed workflow runs it: the recorded state machine definition
    driving the Lambda handler with the function's declared environment (the catalog endpoint and the S3 endpoint
    pointed at osmem and moto), every call recorded as the sync function's role."""
    yield record_sync(cached_graph("dev"), moto_endpoint, osmem_url, monkeypatch, tmp_path)


def record_sync(graph: Graph, moto_endpoint: str, osmem_url: str, monkeypatch: pytest.MonkeyPatch,
                tmp_path: Path) -> tuple[Graph, AwsCalls]:
    from catalog_sync import handlers
    from local_platform.data import write_era5_like
    from tests.catalog_fixtures import cmip6_keys, s3_client
    from tests.test_nightly_sync import LambdaContext, run_workflow

    environment = lambda_environment(graph, "us-west-2")
    on_s3 = environment["CATALOG_ENDPOINT"].startswith("s3://")  # catalog.kind s3: the declared bucket, in moto
    for key, value in {**environment, "AWS_REGION": "us-west-2",
                       **({} if on_s3 else {"CATALOG_ENDPOINT": osmem_url})}.items():
        monkeypatch.setenv(key, value)
    bucket, _, prefix = environment["DATASET"].removeprefix("s3://").partition("/")
    s3 = s3_client(moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    if on_s3:
        catalog_bucket = environment["CATALOG_ENDPOINT"].removeprefix("s3://").split("/")[0]
        s3.create_bucket(Bucket=catalog_bucket)
        s3.put_bucket_versioning(Bucket=catalog_bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in cmip6_keys(chunks=1):
        s3.put_object(Bucket=bucket, Key=key.replace("CMIP6/ScenarioMIP/MOHC", prefix), Body=b"x")
    # ... and a collection of netCDF files, whose metadata the sync reads to write its reference set
    write_era5_like(tmp_path, months=2, steps=2, lat=4, lon=8)
    for path in sorted(tmp_path.rglob("*.nc")):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(tmp_path)}")
    s3.create_bucket(Bucket=environment["REFERENCES"].removeprefix("s3://").split("/")[0])  # as `pulumi up` does
    ssm = boto3.client("ssm", region_name="us-west-2", endpoint_url=moto_endpoint)
    ssm.put_parameter(Name=environment["PUBLISHED_COUNT_PARAMETER"], Value="none", Type="String", Overwrite=True)
    calls = AwsCalls(None if on_s3 else domain_arn(graph))
    clients = {"s3": calls.watch(s3), "ssm": calls.watch(ssm)}
    if "FILE_SYSTEM_ID" in environment:  # storage `s3`: no file system, no import
        clients["fsx"] = calls.watch(stubbed_fsx("us-west-2", environment["FILE_SYSTEM_ID"]))
    monkeypatch.setattr(handlers.boto3, "client", lambda service, **_: clients[service])
    (machine,) = [m for m in graph.of_type("aws:sfn/stateMachine:StateMachine") if m.region == "us-west-2"]
    with calls.acting_as("worker-us-west-2-catalog-sync-function-role"), recording_signed_requests(calls):
        end, _ = run_workflow(json.loads(machine.inputs["definition"]),
                              lambda payload: handlers.handle(payload, LambdaContext(0)))
    assert end == "Done"
    return graph, calls


@pytest.mark.processes
def test_every_call_of_the_nightly_sync_is_allowed_to_its_role(sync_calls: tuple[Graph, AwsCalls]) -> None:
    graph, calls = sync_calls
    actions = {call.action for call in calls.calls}
    assert {"fsx:CreateDataRepositoryTask", "fsx:DescribeDataRepositoryTasks", "s3:ListBucket", "es:ESHttpPut",
            "es:ESHttpPost", "ssm:GetParameter", "ssm:PutParameter", "s3:GetObject", "s3:PutObject"} <= actions, actions
    assert denied(graph, calls.calls) == []
    # S3 encrypts what the sync writes, and decrypts what it reads back, with the region's key, as the sync's role.
    references = lambda_environment(graph, "us-west-2")["REFERENCES"].removeprefix("s3://").split("/")[0]
    key = bucket_key(graph, references)
    via = {"kms:ViaService": "s3.us-west-2.amazonaws.com"}
    role = "worker-us-west-2-catalog-sync-function-role"
    assert denied(graph, [Call(role, "kms:GenerateDataKey", key, via), Call(role, "kms:Decrypt", key, via)]) == []


def bucket_key(graph: Graph, bucket: str) -> str:
    """The KMS key a bucket's objects are encrypted with."""
    (encryption,) = [e for e in graph.of_type(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
        if e.inputs["bucket"] == bucket]
    return str(encryption.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"])


def test_workers_may_read_their_regions_reference_sets_and_nothing_else(moto_endpoint: str) -> None:
    """What dask_regions.references.read_set calls (recorded against moto), as the workers' task role."""
    from dask_regions.references import read_set
    from tests.catalog_fixtures import s3_client

    graph = cached_graph("dev")
    location = lambda_environment(graph, "us-east-1")["REFERENCES"]
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    s3 = s3_client(moto_endpoint)
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/us-east-1/load/era5-netcdf.t2m.json", Body=b'{"refs": {}}')
    calls = AwsCalls()
    read_set.cache_clear()
    with calls.acting_as("worker-us-east-1-workers-task-role"), mock.patch("boto3.client",
                                                                           lambda service: calls.watch(s3)):
        assert read_set(f"{location}/us-east-1/load/era5-netcdf.t2m.json") == {"refs": {}}
    read_set.cache_clear()
    assert [c.action for c in calls.calls] == ["s3:GetObject"]
    key, via = bucket_key(graph, bucket), {"kms:ViaService": "s3.us-east-1.amazonaws.com"}
    role = "worker-us-east-1-workers-task-role"
    assert denied(graph, [*calls.calls, Call(role, "kms:Decrypt", key, via)]) == []
    arn = f"arn:aws:s3:::{bucket}/{prefix}/x.json"
    other = next(b.outputs["bucket"] for b in graph.of_type("aws:s3/bucket:Bucket")
                 if b.region == "us-west-2" and b.name.endswith("-references"))
    assert len(denied(graph, [Call(role, "s3:PutObject", arn),  # read only,
                              Call(role, "s3:GetObject", f"arn:aws:s3:::{other}/x.json")])) == 2  # own region only


@pytest.mark.processes
def test_a_call_the_role_may_not_make_fails_naming_the_call_role_and_statement(
        sync_calls: tuple[Graph, AwsCalls]) -> None:
    graph, calls = sync_calls
    policy = graph.named("worker-us-west-2-catalog-sync-function-policy", "aws:iam/rolePolicy:RolePolicy")
    document = json.loads(policy.inputs["policy"])  # the mistake this issue found: Describe on ARNs only
    for statement in document["Statement"]:
        if "fsx:DescribeDataRepositoryTasks" in statement["Action"]:
            statement["Resource"] = ["arn:aws:fsx:us-west-2:123456789012:file-system/fs-1"]
    policy.inputs["policy"] = json.dumps(document)
    (message,) = denied(graph, [c for c in calls.calls if c.action == "fsx:DescribeDataRepositoryTasks"][:1])
    assert message.startswith("DENIED: fsx:DescribeDataRepositoryTasks on * by "
                              "worker-us-west-2-catalog-sync-function-role (fsx DescribeDataRepositoryTasks)")
    assert 'add {"Effect": "Allow", "Action": "fsx:DescribeDataRepositoryTasks", "Resource": "*"}' in message


def test_the_notebooks_catalog_queries_are_allowed_and_it_cannot_write(osmem_url: str) -> None:
    from catalog_sync.catalogs import open_sink
    from catalog_sync.grouping import DatasetGrouper
    from catalog_sync.records import Association
    from dask_regions import Catalog
    from tests.catalog_fixtures import era5_keys, objects

    graph = cached_graph("dev")
    grouper = DatasetGrouper(Association("us-east-1", "era5-pds", "", "/us-east-1/era5-pds"))
    load = open_sink(osmem_url).begin("us-east-1", "s3://era5-pds")
    load.add([r for item in objects(era5_keys()) for r in grouper.add(item)] + grouper.finish())
    load.commit()
    calls = AwsCalls(domain_arn(graph))
    with calls.acting_as("client-notebook-role"), recording_signed_requests(calls):
        catalog = Catalog.open(osmem_url, domain_region="eu-west-2")
        assert catalog.find(variable="air_temperature_at_2_metres")
    assert calls.calls and denied(graph, calls.calls) == []
    writes = [Call("client-notebook-role", "es:ESHttpDelete", f"{domain_arn(graph)}/catalog-us-east-1-x")]
    assert len(denied(graph, writes)) == 1


def test_the_schedulers_demand_metric_is_allowed(moto_endpoint: str) -> None:
    from dask_regions.demand import CloudWatchPublisher, PoolFigure

    graph = cached_graph("dev")
    environment = {e["name"]: e["value"] for e in _container(graph, "scheduler")["environment"]}
    calls = AwsCalls()
    publisher = CloudWatchPublisher(stack=environment["DASK_DASK_REGIONS__DEMAND__STACK"],
                                    namespace=environment["DASK_DASK_REGIONS__DEMAND__NAMESPACE"],
                                    client_factory=lambda region: calls.watch(boto3.client(
                                        "cloudwatch", region_name=region, endpoint_url=moto_endpoint)))
    figure = PoolFigure("pool-us-east-1", "us-east-1", 1, 1.0, 1, 2, 1, 1, 1, 0, 4, 0.0, False, True)
    with calls.acting_as("client-scheduler-task-role"):
        publisher.publish([figure])
    assert publisher.failures == 0 and [c.action for c in calls.calls] == ["cloudwatch:PutMetricData"]
    assert denied(graph, calls.calls) == []
    other = Call("client-scheduler-task-role", "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Other"})
    assert denied(graph, [other])  # the condition is evaluated, not ignored


def _container(graph: Graph, family_part: str) -> dict[str, Any]:
    definition = next(t for t in graph.of_type("aws:ecs/taskDefinition:TaskDefinition") if family_part in t.name)
    return dict(json.loads(definition.inputs["containerDefinitions"])[0])


def test_a_busy_workers_task_protection_is_allowed(tmp_path: Path) -> None:
    """The worker asks the ECS agent, which calls UpdateTaskProtection with the task role's credentials."""
    from dask_regions.protection import PROTECTION_PATH, protect

    requests: list[str] = []

    class Agent(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            requests.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert protect(f"http://127.0.0.1:{server.server_address[1]}", 3)
    finally:
        server.shutdown()
    assert requests == [PROTECTION_PATH]
    graph = cached_graph("dev")
    (cluster,) = [c for c in graph.of_type("aws:ecs/cluster:Cluster") if c.region == "us-east-1"]
    task = f"arn:aws:ecs:us-east-1:{MOCK_ACCOUNT}:task/{cluster.outputs['name']}/0123456789abcdef"
    calls = [Call("worker-us-east-1-workers-task-role", "ecs:UpdateTaskProtection", task, {}, "the worker's ECS agent")]
    assert denied(graph, calls) == []
    elsewhere = Call("worker-us-east-1-workers-task-role", "ecs:UpdateTaskProtection",
                     f"arn:aws:ecs:us-east-1:{MOCK_ACCOUNT}:task/another-cluster/0123")
    assert denied(graph, [elsewhere])


# ------------------------------------------------------------------------------ calls AWS services make for us
@pytest.mark.parametrize("storage", ["lustre", "s3"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_what_aws_services_do_for_us_is_allowed(shape: str, storage: str) -> None:
    graph = cached_graph(shape, worker_storage=storage)
    calls = service_calls(graph)
    assert {c.action for c in calls} >= {"states:StartExecution", "lambda:InvokeFunction", "ecr:BatchGetImage",
                                         "secretsmanager:GetSecretValue", "kms:Decrypt"}
    assert denied(graph, calls) == []


def test_a_key_policy_that_does_not_delegate_to_iam_denies_the_secret() -> None:
    graph = cached_graph("dev")
    key = next(k for k in graph.of_type("aws:kms/key:Key") if k.region == "us-east-1")
    policy = json.loads(key.inputs["policy"])
    policy["Statement"] = [s for s in policy["Statement"] if "root" not in json.dumps(s.get("Principal"))]
    key.inputs["policy"] = json.dumps(policy)
    decryption = [c for c in service_calls(graph) if c.action == "kms:Decrypt" and ":us-east-1:" in c.resource]
    assert decryption and all(not decide(graph, c).allowed for c in decryption)


def test_decisions_report_an_explicit_deny() -> None:
    graph = cached_graph("dev")
    graph = _seed(graph, "client-notebook-policy", {"Sid": "NoSearch", "Effect": "Deny", "Action": "es:ESHttpPost",
                                                    "Resource": "*"})
    decision: Decision = decide(graph, Call("client-notebook-role", "es:ESHttpPost",
                                            f"{domain_arn(graph)}/catalog/_search"))
    assert not decision.allowed and "explicitly denied by NoSearch" in decision.message()


# ------------------------------------------------------------------------------ least privilege on the catalog
READS = ["GET catalog", "GET catalog/_doc/x", "POST catalog/_search", "POST catalog/_msearch", "POST catalog/_mget"]
NOT_FOR_READERS = ["POST _aliases", "POST _bulk", "POST catalog/_delete_by_query", "PUT catalog-us-east-1-x",
                   "DELETE catalog-us-west-2-x", "POST catalog-us-east-1-x/_bulk", "POST _msearch"]


def es_call(graph: Graph, role: str, request: str) -> Call:
    method, path = request.split(" ", 1)
    return Call(role, f"es:ESHttp{method.capitalize()}", f"{domain_arn(graph)}/{path}")


@pytest.mark.parametrize("shape", ["dev", "four-regions"])
def test_catalog_readers_may_only_search(shape: str) -> None:
    graph = cached_graph(shape)
    assert denied(graph, [es_call(graph, "client-notebook-role", r) for r in READS]) == []
    for request in NOT_FOR_READERS:
        assert denied(graph, [es_call(graph, "client-notebook-role", request)]), request


@pytest.mark.parametrize("shape", ["dev", "four-regions"])
def test_each_regions_writer_touches_only_its_own_indices_and_aliases(shape: str) -> None:
    graph = cached_graph(shape)
    regions = sorted(graph.outputs["workerRegions"])
    for region in regions:
        role = f"worker-{region}-catalog-sync-function-role"
        own = [f"PUT catalog-{region}-load", f"POST catalog-{region}-load/_bulk",
               f"PUT catalog-{region}-load/_alias/catalog", f"DELETE catalog-{region}-old",
               f"GET catalog-{region}-*/_alias/catalog", f"HEAD catalog-{region}-load",
               f"POST catalog-{region}-load/_count"]
        assert denied(graph, [es_call(graph, role, r) for r in own]) == []
        for other in (r for r in regions if r != region):
            for request in (f"DELETE catalog-{other}-load", f"PUT catalog-{other}-load/_alias/catalog",
                            f"POST catalog-{other}-load/_bulk"):
                assert denied(graph, [es_call(graph, role, request)]), request
        for request in ("POST _aliases", "POST _bulk", "POST catalog/_delete_by_query", "DELETE catalog"):
            assert denied(graph, [es_call(graph, role, request)]), request


def test_the_catalog_names_in_the_policies_are_the_ones_the_sync_writes_and_the_notebook_reads() -> None:
    from catalog_access import READ_ALIAS
    from dask_regions.catalog import _OpenSearch

    assert _OpenSearch.ALIAS == READ_ALIAS  # the Dask image ships dask_regions alone


def test_plan_fails_when_an_aws_service_would_be_denied() -> None:
    from plan import evaluate

    graph = cached_graph("dev")
    policy = graph.named("worker-us-east-1-catalog-sync-workflow-policy", "aws:iam/rolePolicy:RolePolicy")
    document = json.loads(policy.inputs["policy"])
    document["Statement"] = [s for s in document["Statement"] if s["Action"] != "lambda:InvokeFunction"]
    policy.inputs["policy"] = json.dumps(document)
    violations = evaluate(graph).violations
    assert any(v.startswith("IAM: DENIED: lambda:InvokeFunction on arn:aws:lambda:us-east-1:") for v in violations)
    assert not [v for v in evaluate(cached_graph("dev")).violations if v.startswith("IAM:")]
