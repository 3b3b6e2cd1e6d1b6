"""Physical names derived from project, stack and region, so two stacks never collide in one account.

Only resources whose names people read (log groups, for instance) get explicit names; everything else is
auto-named by Pulumi (logical name plus a random suffix).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

LOG_GROUP_NAME_MAX = 512


def _shorten(text: str, max_length: int, separator: str) -> str:
    """Keep `text` within `max_length`, replacing the tail by a hash of the whole so it stays unique."""
    if len(text) <= max_length:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return text[: max_length - len(digest) - 1].rstrip(separator) + separator + digest


@dataclass(frozen=True)
class Naming:
    project: str
    stack: str

    def resource(self, *parts: str, max_length: int = 63) -> str:
        """`project-stack-part...`: lower case letters, digits and hyphens (S3, OpenSearch, ECS, IAM-safe)."""
        raw = "-".join((self.project, self.stack, *parts)).lower()
        clean = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", raw)).strip("-")
        return _shorten(clean, max_length, "-")

    def short(self, *parts: str, max_length: int) -> str:
        """For tight limits (OpenSearch domains: 28): `stack-part...-hash`, the hash of project, stack and
        parts keeping it unique when the readable part is cut."""
        digest = hashlib.sha256("/".join((self.project, self.stack, *parts)).encode()).hexdigest()[:8]
        readable = re.sub(r"[^a-z0-9-]", "-", "-".join((self.stack, *parts)).lower())
        readable = re.sub(r"-{2,}", "-", readable)[: max_length - len(digest) - 1].strip("-")
        return f"{readable}-{digest}" if readable[:1].isalpha() else f"d{readable}-{digest}"[:max_length]

    def log_group(self, *parts: str) -> str:
        """`/project/stack/part/...` for CloudWatch log groups."""
        raw = "/" + "/".join((self.project, self.stack, *parts))
        return _shorten(re.sub(r"[^A-Za-z0-9._/#-]", "-", raw), LOG_GROUP_NAME_MAX, "/")


def dns_label(text: str) -> str:
    """Lower-case letters, digits and hyphens: one DNS label."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:63]


def private_dns_namespace(naming: Naming) -> str:
    """The stack's private DNS zone, resolvable from every VPC of the stack: `<stack>.<project>.internal`."""
    return f"{dns_label(naming.stack)}.{dns_label(naming.project)}.internal"


def scheduler_host(naming: Naming, user: str | None = None) -> str:
    """The scheduler's private DNS name; with `user`, that user's own cluster's scheduler's."""
    return f"scheduler{'-' + user if user else ''}.{private_dns_namespace(naming)}"


def broker_function_name(naming: Naming, region: str) -> str:
    """The cluster broker's function (client.users): fixed, so that each user's notebook may call it by name."""
    return naming.resource(region, "cluster-broker", max_length=64)
