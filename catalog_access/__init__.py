"""Who may do what in the catalog, stated for OpenSearch fine-grained access control (the security plugin), and
the deploy-time function that applies it.

Why not IAM alone: the domain authorises a signed request by its method and path only. Request bodies (`_bulk`
actions naming an index, index creation with `aliases`) and multi-index paths (`DELETE /catalog-us-east-1-x,
catalog-eu-west-1-y`) pass any path-scoped policy, so one region's writer could change another region's
catalog. The security plugin checks every index a request touches against the roles mapped to the caller's IAM
role, so the per-region rule holds whatever the request looks like. IAM still scopes paths (both must allow).

A package of its own, standalone on purpose (standard library, botocore and the shared facts, all in the Lambda
runtime or the zip): the deploy zips it with platform_facts into the function that applies the roles at `pulumi up`.
The program and the policy pack read its roles; the nightly sync does not need it.
"""

from __future__ import annotations

import fnmatch
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from platform_facts import CATALOG_READ_ALIAS

READ_ALIAS = CATALOG_READ_ALIAS  # the alias every reader searches; each region's load indices `catalog-<region>-*`
READER_ROLE = "catalog_reader"
WRITER_ROLE_PREFIX = "catalog_writer_"
SECURITY_API = "_plugins/_security/api"

# The security plugin's built-in action groups that the roles below use (OpenSearch documentation, "Default
# action groups"); the model in `allows` expands them the same way.
ACTION_GROUPS: dict[str, tuple[str, ...]] = {
    "cluster_composite_ops_ro": ("indices:data/read/mget", "indices:data/read/msearch", "indices:data/read/mtv",
                                 "indices:admin/aliases/exists*", "indices:admin/aliases/get*",
                                 "indices:data/read/scroll", "indices:admin/resolve/index"),
    "cluster_composite_ops": ("indices:data/write/bulk", "indices:admin/aliases*", "indices:data/write/reindex",
                              "indices:data/read/mget", "indices:data/read/msearch", "indices:data/read/mtv",
                              "indices:admin/aliases/exists*", "indices:admin/aliases/get*",
                              "indices:data/read/scroll", "indices:admin/resolve/index"),
    "search": ("indices:data/read/search*", "indices:data/read/msearch*", "indices:admin/resolve/index",
               "indices:data/read/suggest*"),
    "get": ("indices:data/read/get*", "indices:data/read/mget*"),
    "crud": ("indices:data/read*", "indices:admin/mappings/fields/get*", "indices:admin/resolve/index",
             "indices:data/write*", "indices:admin/mapping/put"),
    "create_index": ("indices:admin/create", "indices:admin/mapping/put"),
}
# What a region's sync does to its own load indices (catalog_sync/sinks.py): create with a mapping, bulk-load,
# turn refresh back on and refresh, count, look up and add aliases, delete the index it replaced.
WRITER_INDEX_ACTIONS = ("crud", "create_index", "indices:admin/delete", "indices:admin/settings/update",
                        "indices:admin/refresh*", "indices:admin/get", "indices:admin/exists",
                        "indices:admin/aliases", "indices:admin/aliases/get")
# On the read alias itself, a writer may only add (or look up) aliases; which indices it may alias is decided by
# the index patterns above: never another region's.
WRITER_ALIAS_ACTIONS = ("indices:admin/aliases", "indices:admin/aliases/get")
READ_ACTIONS = ("search", "get")


def load_pattern(region: str) -> str:
    return f"{READ_ALIAS}-{region}-*"


def writer_role(region: str) -> str:
    return WRITER_ROLE_PREFIX + region.replace("-", "_")


def security_config(readers: Sequence[str], writers: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The security plugin's roles and role mappings: `readers` (IAM role ARNs) may search the catalog; each
    region's writer (its sync function's IAM role ARN) may change that region's load indices only."""
    roles: dict[str, Any] = {READER_ROLE: {
        "description": "Search the dataset catalog; change nothing",
        "cluster_permissions": ["cluster_composite_ops_ro"],
        "index_permissions": [{"index_patterns": [READ_ALIAS, f"{READ_ALIAS}-*"],
                               "allowed_actions": list(READ_ACTIONS)}]}}
    mappings: dict[str, Any] = {READER_ROLE: {"backend_roles": sorted(readers)}}
    for region, arn in sorted(writers.items()):
        roles[writer_role(region)] = {
            "description": f"The nightly catalog sync of {region}: its own load indices only",
            "cluster_permissions": ["cluster_composite_ops"],
            "index_permissions": [
                {"index_patterns": [load_pattern(region)], "allowed_actions": list(WRITER_INDEX_ACTIONS)},
                {"index_patterns": [READ_ALIAS], "allowed_actions": list(WRITER_ALIAS_ACTIONS)}]}
        mappings[writer_role(region)] = {"backend_roles": [arn]}
    return {"roles": roles, "rolesmapping": mappings}


# ------------------------------------------------------------------------------------------------ the model
def _expand(actions: Iterable[str]) -> list[str]:
    return [expanded for action in actions for expanded in ACTION_GROUPS.get(action, (action,))]


def _roles_of(config: Mapping[str, Any], principal: str) -> list[dict[str, Any]]:
    return [config["roles"][name] for name, mapping in config["rolesmapping"].items()
            if principal in mapping.get("backend_roles", ()) and name in config["roles"]]


def allows(config: Mapping[str, Any], principal: str, action: str, indices: Sequence[str] = ()) -> bool:
    """Whether the security plugin, as documented, lets `principal` run `action` on every one of `indices` (the
    concrete indices and alias names the request touches; none for a cluster-level action). A model for tests and
    the policy pack, not the plugin: it expands action groups and matches names as glob patterns."""
    roles = _roles_of(config, principal)
    if not indices:
        return any(fnmatch.fnmatchcase(action, granted)
                   for role in roles for granted in _expand(role.get("cluster_permissions", ())))
    return all(any(fnmatch.fnmatchcase(index, pattern) and fnmatch.fnmatchcase(action, granted)
                   for role in roles for permission in role.get("index_permissions", ())
                   for pattern in permission["index_patterns"] for granted in _expand(permission["allowed_actions"]))
               for index in indices)


# Changes that must stay within a writer's own region, each as (action, what it touches).
CHANGES = ("indices:admin/create", "indices:admin/delete", "indices:data/write/index", "indices:data/write/delete",
           "indices:data/write/update", "indices:admin/aliases", "indices:admin/settings/update",
           "indices:data/write/delete/byquery")


def principals(config: Mapping[str, Any]) -> tuple[list[str], dict[str, list[str]]]:
    """The readers, and each region's writers, as the role mappings name them."""
    mappings = config.get("rolesmapping", {})
    readers = list(mappings.get(READER_ROLE, {}).get("backend_roles", ()))
    writers = {name.removeprefix(WRITER_ROLE_PREFIX).replace("_", "-"): list(mapping.get("backend_roles", ()))
               for name, mapping in mappings.items() if name.startswith(WRITER_ROLE_PREFIX)}
    return readers, writers


def widenings(config: Mapping[str, Any]) -> list[str]:
    """Where the roles grant more than the catalog's rule: a reader that may change anything, or a writer that may
    change another region's indices or the read alias's own documents. Empty when the rule holds."""
    readers, writers = principals(config)
    found = []
    others = [*writers, "another-region"]
    for reader in readers:
        for action in CHANGES:
            for index in (READ_ALIAS, f"{READ_ALIAS}-{others[0]}-x"):
                if allows(config, reader, action, [index]):
                    found.append(f"the reader {reader} may {action} on {index}")
    for region, arns in writers.items():
        for writer in arns:
            for other in (o for o in others if o != region):
                for action in CHANGES:
                    if allows(config, writer, action, [f"{READ_ALIAS}-{other}-x"]):
                        found.append(f"the writer of {region} ({writer}) may {action} on {other}'s index "
                                     f"{READ_ALIAS}-{other}-x")
            for action in (a for a in CHANGES if a != "indices:admin/aliases"):
                if allows(config, writer, action, [READ_ALIAS]):
                    found.append(f"the writer of {region} ({writer}) may {action} on the read alias {READ_ALIAS}")
    return found


# ---------------------------------------------------------------------------------------- the deploy function
def handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Applies `event["config"]` (security_config's shape) to the domain at `event["endpoint"]` in
    `event["region"]`, signed as this function's role (the domain's master user). Writer roles of regions no
    longer in the stack are deleted. Any refusal fails the invocation, and with it `pulumi up`."""
    endpoint, region, config = str(event["endpoint"]).rstrip("/"), str(event["region"]), event["config"]
    for kind in ("roles", "rolesmapping"):
        for name, body in sorted(config[kind].items()):
            _request(endpoint, region, "PUT", f"{SECURITY_API}/{kind}/{name}", body)
    existing = _request(endpoint, region, "GET", f"{SECURITY_API}/roles") or {}
    stale = sorted(name for name in existing if name.startswith(WRITER_ROLE_PREFIX) and name not in config["roles"])
    for name in stale:
        for kind in ("rolesmapping", "roles"):
            _request(endpoint, region, "DELETE", f"{SECURITY_API}/{kind}/{name}", missing_ok=True)
    return {"applied": sorted(config["roles"]), "deleted": stale}


def _request(endpoint: str, region: str, method: str, path: str, body: Any = None, *,
             missing_ok: bool = False) -> Any:
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    data = json.dumps(body).encode() if body is not None else None
    request = AWSRequest(method=method, url=f"{endpoint}/{path}", data=data,
                         headers={"Content-Type": "application/json"} if data else {})
    credentials = botocore.session.get_session().get_credentials()
    if credentials is None:
        raise RuntimeError("no AWS credentials to sign the catalog's security requests with")
    SigV4Auth(credentials, "es", region).add_auth(request)
    prepared = urllib.request.Request(request.url, data=data, method=method, headers=dict(request.headers))
    try:
        with urllib.request.urlopen(prepared, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        if missing_ok and error.code == 404:
            return None
        raise RuntimeError(f"{method} /{path} was refused ({error.code}): {error.read().decode()[:300]}"
                           ) from None
    return json.loads(text) if text else None
