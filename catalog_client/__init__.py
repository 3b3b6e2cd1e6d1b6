"""The catalog's client, shared by the nightly sync (which writes) and dask_regions (which reads): signed with SigV4
for `es` in the domain's region in AWS, plain for the local stand-ins. In the wheel; boto3 and opensearch-py are
imported when a client is made."""

from __future__ import annotations

from typing import Any


def opensearch_client(endpoint: str, region: str | None = None, *, timeout: int = 60, retries: int = 3) -> Any:
    """A client for a catalog domain. With `region` (the DOMAIN's region), every request is signed with SigV4 for
    the service `es`, with the environment's AWS credentials; without, it is a plain client (local stand-ins).
    A request that gets no answer is tried `retries` more times, each waiting `timeout` seconds."""
    import boto3
    from opensearchpy import AWSV4SignerAuth, OpenSearch, RequestsHttpConnection

    options: dict[str, Any] = {"hosts": [endpoint], "timeout": timeout, "max_retries": retries,
                               "retry_on_timeout": True}
    if region:
        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise PermissionError("no AWS credentials to sign catalog requests with")
        options |= {"http_auth": AWSV4SignerAuth(credentials, region, "es"), "connection_class": RequestsHttpConnection,
                    "use_ssl": endpoint.startswith("https"), "verify_certs": True}
    return OpenSearch(**options)
