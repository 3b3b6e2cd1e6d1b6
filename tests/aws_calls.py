"""Recording the AWS calls the data plane makes, as IAM sees them, for stackgraph.permissions.decide.

botocore's event hooks on the clients the tests create (moto, Stubber) see every API call with its parameters
(`before-parameter-build`); signed OpenSearch requests are recorded where they are signed, as
`es:ESHttp<Method>` on the domain path. Each call is tagged with the role it runs as in AWS (`acting_as`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from stackgraph.permissions import Call
from stackgraph.synth import MOCK_ACCOUNT

# (service, operation) -> (IAM action, resource ARN, condition context) from the call's parameters and region, or a
# list of them (a call IAM authorises once per resource it names).
Decision = tuple[str, str, dict[str, Any]]
Mapping = Callable[[dict[str, Any], str], Decision | list[Decision]]
OPERATIONS: dict[tuple[str, str], Mapping] = {
    ("s3", "ListObjectsV2"): lambda p, _: ("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}",
                                           {"s3:prefix": p.get("Prefix", "")}),
    ("s3", "GetObject"): lambda p, _: ("s3:GetObjectVersion" if p.get("VersionId") else "s3:GetObject",
                                       f"arn:aws:s3:::{p['Bucket']}/{p['Key']}", {}),
    ("s3", "DeleteObject"): lambda p, _: ("s3:DeleteObject", f"arn:aws:s3:::{p['Bucket']}/{p['Key']}", {}),
    ("s3", "ListObjectVersions"): lambda p, _: ("s3:ListBucketVersions", f"arn:aws:s3:::{p['Bucket']}",
                                                {"s3:prefix": p.get("Prefix", "")}),
    ("s3", "HeadObject"): lambda p, _: ("s3:GetObject", f"arn:aws:s3:::{p['Bucket']}/{p['Key']}", {}),
    ("s3", "PutObject"): lambda p, _: ("s3:PutObject", f"arn:aws:s3:::{p['Bucket']}/{p['Key']}", {}),
    ("fsx", "CreateDataRepositoryTask"): lambda p, region: (
        "fsx:CreateDataRepositoryTask", f"arn:aws:fsx:{region}:{MOCK_ACCOUNT}:file-system/{p['FileSystemId']}", {}),
    ("fsx", "DescribeDataRepositoryTasks"): lambda p, _: ("fsx:DescribeDataRepositoryTasks", "*", {}),
    ("ssm", "GetParameter"): lambda p, region: (
        "ssm:GetParameter", f"arn:aws:ssm:{region}:{MOCK_ACCOUNT}:parameter/{p['Name'].lstrip('/')}", {}),
    ("ssm", "PutParameter"): lambda p, region: (
        "ssm:PutParameter", f"arn:aws:ssm:{region}:{MOCK_ACCOUNT}:parameter/{p['Name'].lstrip('/')}", {}),
    ("cloudwatch", "PutMetricData"): lambda p, _: ("cloudwatch:PutMetricData", "*",
                                                   {"cloudwatch:namespace": p["Namespace"]}),
    ("ecs", "UpdateService"): lambda p, region: (
        "ecs:UpdateService", f"arn:aws:ecs:{region}:{MOCK_ACCOUNT}:service/{p['cluster']}/{p['service']}", {}),
    # One call, one decision per service named (IAM authorises DescribeServices on each).
    ("ecs", "DescribeServices"): lambda p, region: [
        ("ecs:DescribeServices", f"arn:aws:ecs:{region}:{MOCK_ACCOUNT}:service/{p['cluster']}/{service}", {})
        for service in p["services"]],
    ("application-autoscaling", "RegisterScalableTarget"): lambda p, _: (
        "application-autoscaling:RegisterScalableTarget", "*", {}),
    ("application-autoscaling", "DescribeScalableTargets"): lambda p, _: (
        "application-autoscaling:DescribeScalableTargets", "*", {}),
}


class UnmappedCallError(AssertionError):
    """A call the permission check does not know how to authorise yet: add it to OPERATIONS."""


class AwsCalls:
    def __init__(self, domain_arn: str | None = None) -> None:
        self.calls: list[Call] = []
        self.domain_arn = domain_arn
        self.role: str | None = None

    @contextlib.contextmanager
    def acting_as(self, role: str) -> Iterator[None]:
        previous, self.role = self.role, role
        try:
            yield
        finally:
            self.role = previous

    def watch(self, client: Any) -> Any:
        """Record every API call `client` makes (a botocore event hook); returns the client."""
        service = client.meta.service_model.service_name
        region = client.meta.region_name

        def record(params: dict[str, Any], model: Any, **_: Any) -> None:
            mapping = OPERATIONS.get((service, model.name))
            if mapping is None:
                raise UnmappedCallError(f"{service} {model.name}: not in tests/aws_calls.OPERATIONS")
            found = mapping(params, region)
            for action, resource, context in found if isinstance(found, list) else [found]:
                self._add(action, resource, context, f"{service} {model.name}")

        client.meta.events.register(f"before-parameter-build.{client.meta.service_model.service_id.hyphenize()}",
                                    record)
        return client

    def signed(self, method: str, url: str) -> None:
        """A SigV4-signed OpenSearch request (service `es`)."""
        assert self.domain_arn, "give AwsCalls the catalog domain's ARN to record OpenSearch requests"
        path = urlsplit(url).path or "/"
        self._add(f"es:ESHttp{method.capitalize()}", f"{self.domain_arn}{path}", {}, f"OpenSearch {method} {path}")

    def _add(self, action: str, resource: str, context: dict[str, Any], what: str) -> None:
        if self.role is None:
            raise AssertionError(f"{what}: made outside acting_as(role); say which role makes it in AWS")
        self.calls.append(Call(self.role, action, resource, context, what))


@contextlib.contextmanager
def recording_signed_requests(calls: AwsCalls) -> Iterator[None]:
    """Record every request opensearch-py signs with SigV4 while inside."""
    from opensearchpy import AWSV4SignerAuth

    original = AWSV4SignerAuth.__call__

    def sign(self: Any, request: Any) -> Any:
        calls.signed(request.method, request.url)
        return original(self, request)

    AWSV4SignerAuth.__call__ = sign  # type: ignore[method-assign]
    try:
        yield
    finally:
        AWSV4SignerAuth.__call__ = original  # type: ignore[method-assign]
