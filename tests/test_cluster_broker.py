"""The cluster broker (issue 33, points 2 and 3): each user's cluster started and stopped within their group's
quotas, a region shared fairly between groups, the caller known from the function URL's IAM authorisation, and a
fault never stopping another user's cluster. Against moto's ECS and Application Auto Scaling (in-process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from cluster_broker import (
    Broker,
    RegionPools,
    Settings,
    UserEntry,
    handle,
    region_shares,
    settings_json,
    water_fill,
)

HOME, REGIONS = "eu-west-2", ("us-east-1", "us-west-2")
USERS = {"ana": "climate", "bo": "climate", "cy": "climate", "di": "ops"}


def settings(max_clusters: int | None = 2, group_workers: int | None = 6, ana_workers: int | None = None,
             capacity: int = 8) -> Settings:
    return Settings(
        region=HOME, cluster="schedulers",
        users={name: UserEntry(group=group, role=f"notebook-{name}-role", service=f"scheduler-{name}",
                               max_workers_per_region=ana_workers if name == "ana" else None)
               for name, group in USERS.items()},
        groups={"climate": {"maxClusters": max_clusters, "maxWorkersPerRegion": group_workers},
                "ops": {"maxClusters": None, "maxWorkersPerRegion": None}},
        pools={region: RegionPools(cluster=f"pools-{region}", capacity=capacity, min_tasks=0,
                                   services={name: f"workers-{name}" for name in USERS}) for region in REGIONS})


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        ecs = boto3.client("ecs", region_name=HOME)
        ecs.create_cluster(clusterName="schedulers")
        for name in USERS:
            ecs.create_service(cluster="schedulers", serviceName=f"scheduler-{name}", desiredCount=0)
        for region in REGIONS:
            regional = boto3.client("ecs", region_name=region)
            regional.create_cluster(clusterName=f"pools-{region}")
            for name in USERS:
                regional.create_service(cluster=f"pools-{region}", serviceName=f"workers-{name}", desiredCount=0)
                boto3.client("application-autoscaling", region_name=region).register_scalable_target(
                    ServiceNamespace="ecs", ResourceId=f"service/pools-{region}/workers-{name}",
                    ScalableDimension="ecs:service:DesiredCount", MinCapacity=0, MaxCapacity=8)
        yield


def desired(user: str) -> int:
    (service,) = boto3.client("ecs", region_name=HOME).describe_services(
        cluster="schedulers", services=[f"scheduler-{user}"])["services"]
    return int(service["desiredCount"])


def maxima(region: str) -> dict[str, int]:
    targets = boto3.client("application-autoscaling", region_name=region).describe_scalable_targets(
        ServiceNamespace="ecs")["ScalableTargets"]
    return {t["ResourceId"].rsplit("-", 1)[1]: t["MaxCapacity"] for t in targets}


def request(user: str | None, action: Any) -> dict[str, Any]:
    context = {"authorizer": {"iam": {"userArn": f"arn:aws:sts::123456789012:assumed-role/notebook-{user}-role/"
                                                 "SageMaker"}}} if user else {}
    return {"requestContext": context, "body": json.dumps({"action": action})}


def test_water_fill_shares_evenly_and_gives_what_a_capped_member_leaves_to_the_others() -> None:
    assert water_fill(8, {"a": 8, "b": 8}) == {"a": 4, "b": 4}
    assert water_fill(9, {"a": 2, "b": 8, "c": 8}) == {"a": 2, "b": 4, "c": 3}
    assert water_fill(3, {"a": 8, "b": 8}) == {"a": 2, "b": 1}
    assert water_fill(20, {"a": 2, "b": 3}) == {"a": 2, "b": 3}  # more than all caps: each gets its cap


def test_a_region_is_shared_between_groups_then_among_a_groups_clusters() -> None:
    # climate may take 6 of 8; ops none of its own: both want all, so 4 each; climate's 4 split between two users.
    assert region_shares(settings(), "us-east-1", ["ana", "bo", "di"]) == {"ana": 2, "bo": 2, "di": 4}
    # Alone, a group takes up to its quota; a user up to their own.
    assert region_shares(settings(), "us-east-1", ["ana"]) == {"ana": 6}
    assert region_shares(settings(ana_workers=2), "us-east-1", ["ana", "bo"]) == {"ana": 2, "bo": 4}
    # What climate cannot use (its quota) goes to ops.
    assert region_shares(settings(group_workers=2), "us-east-1", ["ana", "di"]) == {"ana": 2, "di": 6}


@pytest.mark.usefixtures("aws")
def test_a_users_connect_starts_their_cluster_and_a_second_returns_it_running() -> None:
    broker = Broker(settings())
    started = json.loads(handle(request("ana", "start"), broker)["body"])
    assert started == {"user": "ana", "cluster": "starting", "started": True, "warnings": []}
    assert desired("ana") == 1 and desired("bo") == 0
    assert maxima("us-east-1")["ana"] == 6 and maxima("us-west-2")["ana"] == 6  # climate's quota, alone
    again = json.loads(handle(request("ana", "start"), broker)["body"])
    assert again["cluster"] == "running" and not again["started"]
    assert json.loads(handle(request("ana", "status"), broker)["body"])["cluster"] == "running"


@pytest.mark.usefixtures("aws")
def test_a_cluster_over_the_groups_quota_is_refused_naming_it_and_another_group_still_starts() -> None:
    broker = Broker(settings())
    for user in ("ana", "bo"):
        assert handle(request(user, "start"), broker)["statusCode"] == 200
    assert maxima("us-east-1")["ana"] == maxima("us-east-1")["bo"] == 3  # climate's 6, shared
    refused = handle(request("cy", "start"), broker)
    assert refused["statusCode"] == 429 and desired("cy") == 0
    assert json.loads(refused["body"])["error"].startswith(
        "group 'climate' already runs 2 cluster(s) (ana, bo), its maxClusters quota is 2. Fix:")
    assert handle(request("di", "start"), broker)["statusCode"] == 200  # ops: no quota of its own
    assert maxima("us-east-1") == {"ana": 2, "bo": 2, "cy": 8, "di": 4}  # cy's untouched: not running
    # Stopping one frees the quota and its share.
    assert handle(request("bo", "stop"), broker)["statusCode"] == 200 and desired("bo") == 0
    assert handle(request("cy", "start"), broker)["statusCode"] == 200


@pytest.mark.usefixtures("aws")
def test_the_caller_is_known_from_the_url_authorisation_and_bad_requests_are_named() -> None:
    broker = Broker(settings())
    stranger = handle({"requestContext": {"authorizer": {"iam": {
        "userArn": "arn:aws:sts::123456789012:assumed-role/someone-else/x"}}}, "body": '{"action": "start"}'}, broker)
    assert stranger["statusCode"] == 403 and "someone-else" in json.loads(stranger["body"])["error"]
    assert handle(request(None, "start"), broker)["statusCode"] == 403
    bad = handle(request("ana", "delete"), broker)
    assert bad["statusCode"] == 400 and "action 'delete' is not one of start, stop, status" in bad["body"]
    assert desired("ana") == 0


@pytest.mark.usefixtures("aws")
def test_a_fault_setting_another_users_pool_does_not_stop_their_cluster() -> None:
    broker = Broker(settings())
    handle(request("di", "start"), broker)

    def clients(service: str, region: str) -> Any:
        client = boto3.client(service, region_name=region)
        if service == "application-autoscaling" and region == "us-west-2":
            def refuse(**kwargs: Any) -> None:
                if kwargs["ResourceId"].endswith("workers-di"):
                    raise RuntimeError("throttled")
            client.register_scalable_target = refuse
        return client

    started = json.loads(handle(request("ana", "start"), Broker(settings(), clients))["body"])
    assert started["started"] and started["warnings"] == [
        "di's pool in us-west-2 (workers-di) keeps its maximum: throttled"]
    assert desired("di") == 1 and desired("ana") == 1  # di's cluster goes on


def test_the_settings_the_program_writes_are_what_the_function_reads() -> None:
    assert Settings.from_json(settings_json(settings())) == settings()


def test_every_call_the_deployed_broker_makes_is_allowed_to_its_role_and_users_may_only_ask_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The broker as the users graph declares it (its settings from the function's environment), against moto
    resources of the declared names, each call recorded and decided against the graph's policies."""
    from moto import mock_aws

    from cluster_broker import SETTINGS_VARIABLE
    from stackgraph.permissions import Call, decide
    from tests.aws_calls import AwsCalls
    from tests.test_users import _graph

    graph = _graph(("ana", "climate"), ("bo", "ops"))
    function = graph.named("cluster-broker", "aws:lambda/function:Function")
    declared = Settings.from_json(function.inputs["environment"]["variables"][SETTINGS_VARIABLE])
    roles = {r.outputs["name"]: r.name for r in graph.of_type("aws:iam/role:Role")}
    assert {roles[entry.role] for entry in declared.users.values()} == {"client-notebook-ana-role",
                                                                        "client-notebook-bo-role"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    calls = AwsCalls()
    with mock_aws():
        ecs = boto3.client("ecs", region_name=declared.region)
        ecs.create_cluster(clusterName=declared.cluster)
        for entry in declared.users.values():
            ecs.create_service(cluster=declared.cluster, serviceName=entry.service, desiredCount=0)
        for region, pools in declared.pools.items():
            boto3.client("ecs", region_name=region).create_cluster(clusterName=pools.cluster)
            for service in pools.services.values():
                boto3.client("ecs", region_name=region).create_service(cluster=pools.cluster, serviceName=service)
        broker = Broker(declared, lambda service, region: calls.watch(boto3.client(service, region_name=region)))
        with calls.acting_as("cluster-broker-role"):
            assert broker.start("ana")["warnings"] == [] and broker.start("bo")["started"]
            broker.stop("ana")
    assert {c.action for c in calls.calls} == {"ecs:DescribeServices", "ecs:UpdateService",
                                               "application-autoscaling:RegisterScalableTarget"}
    assert [d.message() for d in (decide(graph, c) for c in calls.calls) if not d.allowed] == []
    # A user asks the broker; they cannot set their scheduler's service themselves, nor anyone's.
    service = graph.outputs["userClusters"]["ana"]["schedulerService"]
    arn = f"arn:aws:ecs:{service['region']}:123456789012:service/{service['cluster']}/{service['service']}"
    assert decide(graph, Call("client-notebook-ana-role", "lambda:InvokeFunctionUrl", function.outputs["arn"],
                              {"lambda:FunctionUrlAuthType": "AWS_IAM"})).allowed
    assert not decide(graph, Call("client-notebook-ana-role", "ecs:UpdateService", arn)).allowed
    assert decide(graph, Call("client-notebook-ana-role", "ecs:DescribeServices", arn)).allowed
    assert not decide(graph, Call("client-notebook-bo-role", "ecs:DescribeServices", arn)).allowed


@pytest.mark.usefixtures("aws")
def test_connect_asks_the_broker_signed_as_the_user_and_a_refusal_names_the_quota(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """dask_regions' side, over HTTP: the request is SigV4-signed for Lambda in the broker's region; a function URL
    stand-in knows the caller from the signature's key (AWS knows them from the role), as the broker reads it."""
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from dask_regions.errors import ConnectError
    from dask_regions.idle import SchedulerService, start_scheduler

    broker = Broker(settings(max_clusters=1))
    seen: list[str] = []
    throttled = [0]  # requests Lambda answers 429 before the function runs (its reserved concurrency is one)

    class FunctionUrl(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            signed = re.fullmatch(r"AWS4-HMAC-SHA256 Credential=key-(\w+)/\d{8}/(\S+)/lambda/aws4_request, .*",
                                  self.headers["Authorization"])
            assert signed is not None and signed.group(2) == HOME, self.headers["Authorization"]
            seen.append(signed.group(1))
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            if throttled[0]:
                throttled[0] -= 1
                answer = {"statusCode": 429, "body": json.dumps({
                    "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "message": "Rate Exceeded."})}
            else:
                answer = handle(request(signed.group(1), json.loads(body)["action"]), broker)
            self.send_response(answer["statusCode"])
            self.end_headers()
            self.wfile.write(answer["body"].encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), FunctionUrl)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(SchedulerService, "broker_url", lambda self, session: f"http://127.0.0.1:{server.server_port}/")
    try:
        def service(user: str) -> SchedulerService:
            return SchedulerService.from_mapping({"region": HOME, "cluster": "schedulers",
                                                  "service": f"scheduler-{user}", "broker": "x-dev-cluster-broker"})

        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-ana")
        ana = service("ana")
        assert ana is not None and ana.broker == "x-dev-cluster-broker"
        said: list[str] = []
        waited = start_scheduler(ana, lambda: desired("ana") == 1, timeout=10, report=said.append, sleep=lambda _: None)
        assert seen == ["ana"] and waited < 10 and said[0].startswith("The scheduler is stopped")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-bo")  # bo: climate's one cluster is ana's
        bo = service("bo")
        assert bo is not None
        with pytest.raises(ConnectError, match=r"the cluster broker refused to start your cluster: group 'climate' "
                                               r"already runs 1 cluster\(s\) \(ana\), its maxClusters quota is 1"):
            start_scheduler(bo, lambda: False, timeout=10, report=said.append, sleep=lambda _: None)
        assert desired("bo") == 0 and desired("ana") == 1
        # Lambda throttling a request (two at one moment) is asked again; a broker that stays throttled is named.
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-di")
        di = service("di")
        assert di is not None
        throttled[0], seen[:] = 1, []
        assert di.ask_broker("start", sleep=lambda _: None)["started"] and seen == ["di", "di"]
        throttled[0] = 5
        with pytest.raises(ConnectError, match=r"the cluster broker x-dev-cluster-broker is busy: Lambda throttled all "
                                               r"3 requests to stop your cluster. Fix: connect again in a moment"):
            di.ask_broker("stop", sleep=lambda _: None)
        assert desired("di") == 1
    finally:
        server.shutdown()


@pytest.mark.usefixtures("aws")
def test_the_schedule_sets_the_shares_again_and_a_user_cannot_ask_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster_broker import REBALANCE, SETTINGS_VARIABLE, handler

    monkeypatch.setenv(SETTINGS_VARIABLE, settings_json(settings()))
    for user in ("ana", "bo"):
        handler(request(user, "start"), None)
    assert maxima("us-east-1")["ana"] == 3
    # bo's scheduler stops itself when idle (not through the broker): the schedule gives ana the group's share.
    boto3.client("ecs", region_name=HOME).update_service(cluster="schedulers", service="scheduler-bo", desiredCount=0)
    assert handler(dict(REBALANCE), None) == {"warnings": []}
    assert maxima("us-east-1")["ana"] == maxima("us-west-2")["ana"] == 6
    asked = handler(request("ana", "rebalance"), None)  # through the URL: not an action a user has
    assert asked["statusCode"] == 400
