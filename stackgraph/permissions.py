"""Permissions proven before deploy, from the recorded resource graph.

Two checks, both offline:
1. **Every policy against AWS's service authorization reference** (shipped in the pinned `policy_sentry`
   package): role policies, trust policies and resource policies (the OpenSearch domain, buckets, KMS keys,
   queues, topics, the log resource policy). Every action exists; an Allow's resources match one of the action's
   resource types, and an action without resource-level permissions is granted on `*` (AWS authorises it
   against `*` only: a grant on specific ARNs is denied); every condition key exists for its action (or is a
   global `aws:` key). Findings fail `plan` and the policy pack; exemptions are written below, each with its
   reason.
2. **A call evaluated against the role that makes it** (`decide`): a small evaluator, enough for our policies:
   Allow by action and resource match, explicit Deny wins, conditions evaluated from what the call knows (a
   condition on a key the call cannot tell is reported and does not match, as in AWS). The resource's own
   policy counts where it has one: same-account principals need an Allow in either, KMS keys need their key
   policy (directly, or delegating to IAM through the account root).

Mocks, moto and Stubber evaluate no IAM; this is the offline substitute. What it cannot prove (SCPs,
permission boundaries, VPC endpoint policies, the public datasets' own bucket policies) needs an account: the
IAM policy simulator or Access Analyzer (README).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from policy_sentry.querying.actions import get_action_data, get_actions_for_service

from stackgraph.synth import MOCK_ACCOUNT, Graph, RecordedResource

# (recorded resource name pattern, action) -> why a finding there is accepted. Empty: nothing is exempt.
EXEMPTIONS: dict[tuple[str, str], str] = {}

# Where each kind of policy document sits in the recorded graph: type -> (input holding it, kind).
POLICY_INPUTS: dict[str, tuple[str, str]] = {
    "aws:iam/rolePolicy:RolePolicy": ("policy", "identity"),
    "aws:iam/policy:Policy": ("policy", "identity"),
    "aws:iam/role:Role": ("assumeRolePolicy", "trust"),
    "aws:s3/bucketPolicy:BucketPolicy": ("policy", "resource"),
    "aws:opensearch/domainPolicy:DomainPolicy": ("accessPolicies", "resource"),
    "aws:kms/key:Key": ("policy", "resource"),
    "aws:sqs/queuePolicy:QueuePolicy": ("policy", "resource"),
    "aws:sns/topicPolicy:TopicPolicy": ("policy", "resource"),
    "aws:cloudwatch/logResourcePolicy:LogResourcePolicy": ("policyDocument", "resource"),
}


@dataclass(frozen=True)
class Policy:
    owner: RecordedResource  # the recorded resource holding the document
    kind: str  # identity | trust | resource
    document: dict[str, Any]

    @property
    def statements(self) -> list[dict[str, Any]]:
        found = self.document.get("Statement", [])
        return list(found) if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def policies(graph: Graph) -> list[Policy]:
    found = []
    for resource in graph.aws_resources:
        where = POLICY_INPUTS.get(resource.type)
        if where is None or not resource.inputs.get(where[0]):
            continue
        document = resource.inputs[where[0]]
        found.append(Policy(resource, where[1], json.loads(document) if isinstance(document, str) else document))
    return found


# ------------------------------------------------------------------------------------- the reference
@cache
def action_rows(action: str) -> tuple[dict[str, Any], ...]:
    """The reference's rows for one action (one per resource type it takes), or () if AWS has no such action."""
    service, _, name = action.partition(":")
    try:
        data = get_action_data(service.lower(), name)
    except Exception:  # an unknown service
        return ()
    return tuple(data.get(service.lower(), []) if isinstance(data, dict) else [])


@cache
def expand(pattern: str) -> tuple[str, ...]:
    """The actions a pattern such as `s3:Get*` names (a plain action: itself, if it exists)."""
    service, _, name = pattern.partition(":")
    if "*" not in name and "?" not in name:
        return (pattern,) if action_rows(pattern) else ()
    try:
        actions = get_actions_for_service(service.lower())
    except Exception:
        return ()
    return tuple(a for a in actions if fnmatch.fnmatch(a.lower(), pattern.lower()))


_VARIABLE = re.compile(r"(\$\{[^}]+\})")
_FIXED = {"Partition": r"aws[a-z-]*", "Region": r"[a-z0-9-]*", "Account": r"[0-9]*", "BucketName": r"[^/]+"}


@cache
def arn_format(template: str) -> re.Pattern[str]:
    parts = [(_FIXED.get(p[2:-1], r".+") if p.startswith("${") else re.escape(p)) for p in _VARIABLE.split(template)]
    return re.compile("".join(parts))


def matches_format(arn: str, template: str) -> bool:
    """Whether a policy's resource ARN can name a resource of the reference's ARN format. A wildcard may stand
    for any text, so it is tried as a plain word and as each of the format's own separators between words
    (`log-group:/name:*` names the format's `log-group:${LogGroupName}:log-stream:${LogStreamName}`)."""
    separators = [p for p in _VARIABLE.split(template)[1:] if p and not p.startswith("${")]
    fillers = ["x", *(f"x{separator}x" for separator in separators)]
    pattern = arn_format(template)
    return any(pattern.fullmatch(arn.replace("*", filler).replace("?", "x")) for filler in fillers)


def condition_key_exists(key: str, rows: Iterable[dict[str, Any]]) -> bool:
    if key.lower().startswith("aws:"):
        return True  # global condition keys apply to every action
    for row in rows:
        for template in row.get("condition_keys", []):
            pattern = "^" + _VARIABLE.sub(".+", re.escape(template).replace(r"\$\{", "${").replace(r"\}", "}")) + "$"
            if re.match(pattern, key, re.IGNORECASE) or template.lower() == key.lower():
                return True
    return False


def _exempt(owner: str, action: str) -> bool:
    return any(fnmatch.fnmatch(owner, name) and fnmatch.fnmatch(action, wanted)
               for (name, wanted) in EXEMPTIONS)


def statement_findings(policy: Policy, index: int, statement: dict[str, Any]) -> list[str]:
    owner = policy.owner.name
    where = f"{owner} statement {statement.get('Sid') or index}"
    findings = []
    patterns = as_list(statement.get("Action")) + as_list(statement.get("NotAction"))
    resources = as_list(statement.get("Resource"))
    typed: dict[str, list[dict[str, Any]]] = {}  # the statement's plain actions and their reference rows
    for pattern in patterns:
        actions = expand(pattern)
        if not actions:
            findings.append(f"{where}: {pattern} is no action in AWS's authorization reference")
            continue
        rows = [row for action in actions for row in action_rows(action)]
        for operator, block in (statement.get("Condition") or {}).items():
            for key in block:
                if not condition_key_exists(key, rows):
                    findings.append(f"{where}: condition key {key} ({operator}) does not exist for {pattern}")
        if "*" not in pattern and "?" not in pattern:
            typed[pattern] = rows
    if policy.kind != "trust" and statement.get("Effect") == "Allow" and resources and "NotAction" not in statement:
        findings += _resource_findings(where, typed, resources)
    return [f for f in findings if not any(_exempt(owner, p) for p in patterns if p in f)]


def _resource_findings(where: str, typed: dict[str, list[dict[str, Any]]], resources: list[str]) -> list[str]:
    """Each action granted on a resource of one of its types (or on "*" when it has none), and each resource of
    a type one of the statement's actions takes."""
    findings, used = [], set()
    for action, rows in typed.items():
        formats = sorted({row["resource_arn_format"] for row in rows} - {"*"})
        if not formats:
            if "*" not in resources:
                keys = sorted({key for row in rows for key in row.get("condition_keys", [])})
                narrowed = f", narrowed by a condition ({', '.join(keys)})" if keys else ""
                findings.append(f"{where}: {action} supports no resource-level permissions: AWS authorises it "
                                f"against \"*\" only, so the grant on {', '.join(resources)} is denied; grant it on "
                                f"\"*\"{narrowed}")
            continue
        fitting = {arn for arn in resources if arn == "*" or any(matches_format(arn, f) for f in formats)}
        used |= fitting
        if not fitting:
            findings.append(f"{where}: {action} is granted on none of its resource types ({', '.join(formats)})")
    if typed and all(any(row["resource_arn_format"] != "*" for row in rows) for rows in typed.values()):
        findings += [f"{where}: {arn} is of no resource type that {', '.join(typed)} take"
                     for arn in resources if arn not in used and arn != "*"]
    return findings


def reference_findings_by_owner(graph: Graph) -> list[tuple[str, str]]:
    """(the recorded resource holding the policy, what is wrong) for every statement that does not match AWS's
    authorization reference."""
    return [(policy.owner.name, finding) for policy in policies(graph)
            for index, statement in enumerate(policy.statements)
            for finding in statement_findings(policy, index, statement)]


def reference_findings(graph: Graph) -> list[str]:
    return [finding for _, finding in reference_findings_by_owner(graph)]


# ------------------------------------------------------------------------------------- the evaluator
@dataclass(frozen=True)
class Call:
    """One AWS API call, as IAM authorises it."""

    role: str  # the role's recorded resource name, e.g. worker-us-east-1-catalog-sync-function-role
    action: str  # e.g. fsx:DescribeDataRepositoryTasks
    resource: str  # an ARN, or * for actions without resource-level permissions
    context: Mapping[str, Any] = field(default_factory=dict)  # condition keys the request carries
    what: str = ""  # where it comes from, for the message


@dataclass
class Decision:
    allowed: bool
    call: Call
    reasons: list[str] = field(default_factory=list)  # what allowed or denied it
    unevaluated: list[str] = field(default_factory=list)  # conditions on keys the call could not tell

    def message(self) -> str:
        verdict = "allowed" if self.allowed else "DENIED"
        text = f"{verdict}: {self.call.action} on {self.call.resource} by {self.call.role}"
        if self.call.what:
            text += f" ({self.call.what})"
        if self.reasons:
            text += "; " + "; ".join(self.reasons)
        if self.unevaluated:
            text += "; conditions it could not tell: " + ", ".join(self.unevaluated)
        return text


def _matches(patterns: list[str], value: str, case: bool = True) -> bool:
    if case:
        return any(fnmatch.fnmatchcase(value, p) for p in patterns)
    return any(fnmatch.fnmatch(value.lower(), p.lower()) for p in patterns)


def _applies(statement: dict[str, Any], call: Call, unevaluated: list[str]) -> bool:
    if "Action" in statement and not _matches(as_list(statement["Action"]), call.action, case=False):
        return False
    if "NotAction" in statement and _matches(as_list(statement["NotAction"]), call.action, case=False):
        return False
    if "Resource" in statement and not _matches(as_list(statement["Resource"]), call.resource):
        return False
    if "NotResource" in statement and _matches(as_list(statement["NotResource"]), call.resource):
        return False
    return all(_condition(operator, key, as_list(wanted), call, unevaluated)
               for operator, block in (statement.get("Condition") or {}).items() for key, wanted in block.items())


def _condition(operator: str, key: str, wanted: list[Any], call: Call, unevaluated: list[str]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if key not in call.context:
        if if_exists:
            return True
        unevaluated.append(f"{operator} {key}")
        return False
    values = [str(v) for v in as_list(call.context[key])]
    wanted_text = [str(w) for w in wanted]
    if base in ("StringEquals", "ArnEquals", "Bool"):
        return any(v in wanted_text for v in values)
    if base in ("StringLike", "ArnLike"):
        return any(fnmatch.fnmatchcase(v, w) for v in values for w in wanted_text)
    if base == "StringNotEquals":
        return all(v not in wanted_text for v in values)
    unevaluated.append(f"{operator} {key} (operator not evaluated offline)")
    return False


def _role(graph: Graph, name: str) -> RecordedResource:
    roles = [r for r in graph.of_type("aws:iam/role:Role") if r.name == name]
    if len(roles) != 1:
        raise KeyError(f"no role named {name} in the recorded graph (roles: "
                       f"{', '.join(sorted(r.name for r in graph.of_type('aws:iam/role:Role')))})")
    return roles[0]


def _identity_statements(graph: Graph, role: RecordedResource) -> list[dict[str, Any]]:
    names = {role.id, role.outputs.get("name"), role.outputs.get("id")}
    attached = {r.inputs.get("policyArn") for r in graph.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if r.inputs.get("role") in names}
    found = []
    for policy in policies(graph):
        if policy.kind != "identity":
            continue
        if policy.owner.inputs.get("role") in names or policy.owner.outputs.get("arn") in attached:
            found += policy.statements
    return found


def _principal_matches(statement: dict[str, Any], role_arn: str) -> bool:
    principal = statement.get("Principal")
    if principal == "*":
        return True
    arns = as_list(principal.get("AWS")) if isinstance(principal, dict) else []
    return any(p in ("*", role_arn, f"arn:aws:iam::{MOCK_ACCOUNT}:root", MOCK_ACCOUNT) for p in arns)


def _protected(graph: Graph, policy: Policy) -> list[str]:
    """ARN patterns of what a resource policy protects (it has a say only on calls to those)."""
    owner = policy.owner

    def find(token: str, key: str, value: Any) -> RecordedResource | None:
        return next((r for r in graph.of_type(token) if value in (r.id, r.outputs.get(key), r.inputs.get(key))), None)

    if owner.type == "aws:kms/key:Key":
        return [str(owner.outputs.get("arn"))]
    if owner.type == "aws:opensearch/domainPolicy:DomainPolicy":
        domain = find("aws:opensearch/domain:Domain", "domainName", owner.inputs.get("domainName"))
        return [str(domain.outputs["arn"]), f"{domain.outputs['arn']}/*"] if domain else []
    if owner.type == "aws:s3/bucketPolicy:BucketPolicy":
        bucket = find("aws:s3/bucket:Bucket", "bucket", owner.inputs.get("bucket"))
        name = bucket.outputs.get("bucket") if bucket else owner.inputs.get("bucket")
        return [f"arn:aws:s3:::{name}", f"arn:aws:s3:::{name}/*"]
    if owner.type == "aws:sqs/queuePolicy:QueuePolicy":
        queue = find("aws:sqs/queue:Queue", "url", owner.inputs.get("queueUrl"))
        return [str(queue.outputs["arn"])] if queue else []
    if owner.type == "aws:sns/topicPolicy:TopicPolicy":
        return [str(owner.inputs.get("arn"))]
    return []  # the log resource policy: for service principals only


def _resource_policies(graph: Graph, resource: str) -> list[Policy]:
    """The resource policies that protect `resource`."""
    return [p for p in policies(graph) if p.kind == "resource" and _matches(_protected(graph, p), resource)]


def decide(graph: Graph, call: Call) -> Decision:
    role = _role(graph, call.role)
    role_arn = str(role.outputs.get("arn"))
    decision = Decision(False, call)
    identity = [s for s in _identity_statements(graph, role) if _applies(s, call, decision.unevaluated)]
    guards = _resource_policies(graph, call.resource)
    granted_by_resource = []
    for policy in guards:
        for statement in policy.statements:
            if _principal_matches(statement, role_arn) and _applies(statement, call, decision.unevaluated):
                granted_by_resource.append((policy, statement))
    denies = [s for s in identity if s.get("Effect") == "Deny"] + [
        s for _, s in granted_by_resource if s.get("Effect") == "Deny"]
    if denies:
        decision.reasons.append(f"explicitly denied by {denies[0].get('Sid') or denies[0]}")
        return decision
    allow_identity = [s for s in identity if s.get("Effect") == "Allow"]
    allow_resource = [(p, s) for p, s in granted_by_resource if s.get("Effect") == "Allow"]
    key_policy = next((p for p in guards if p.owner.type == "aws:kms/key:Key"), None)
    if key_policy is not None:  # a KMS key policy must allow: itself, or by delegating to IAM (account root)
        delegated = any(_principal_matches(s, f"arn:aws:iam::{MOCK_ACCOUNT}:root") and
                        as_list((s.get("Principal") or {}).get("AWS")) and s.get("Effect") == "Allow"
                        for _, s in allow_resource)
        decision.allowed = bool(allow_resource) and (bool(allow_identity) or not delegated or any(
            role_arn in as_list((s.get("Principal") or {}).get("AWS")) for _, s in allow_resource))
    else:
        decision.allowed = bool(allow_identity or allow_resource)
    if allow_identity:
        decision.reasons.append(f"allowed by {role.name}'s policy")
    if allow_resource:
        decision.reasons.append(f"allowed by {allow_resource[0][0].owner.name}")
    if not decision.allowed:
        missing = {"Effect": "Allow", "Action": call.action, "Resource": call.resource}
        decision.reasons.append(f"no statement allows it: add {json.dumps(missing)} to {role.name}'s policy"
                                + (f" and to {key_policy.owner.name}" if key_policy is not None else ""))
    return decision


# ------------------------------------------------------------------------------------- calls AWS makes for us
def service_calls(graph: Graph) -> list[Call]:
    """The calls AWS services make with the roles we give them, derived from the graph: EventBridge Scheduler
    starting the state machine (and its dead-letter queue) or invoking a function, Step Functions invoking the
    Lambda, ECS pulling each image, writing its logs, reading its secrets and decrypting them."""
    roles = {r.outputs["arn"]: r.name for r in graph.of_type("aws:iam/role:Role")}
    calls = []
    for schedule in graph.of_type("aws:scheduler/schedule:Schedule"):
        target = schedule.inputs["target"]
        # Its target: a state machine (the nightly sync) or a function (the cluster broker's rebalance).
        action = "lambda:InvokeFunction" if ":lambda:" in str(target["arn"]) else "states:StartExecution"
        calls.append(Call(roles[target["roleArn"]], action, target["arn"], {}, "Scheduler"))
        if "deadLetterConfig" in target:
            calls.append(Call(roles[target["roleArn"]], "sqs:SendMessage", target["deadLetterConfig"]["arn"], {},
                              "Scheduler's dead letters"))
    for machine in graph.of_type("aws:sfn/stateMachine:StateMachine"):
        for state in json.loads(machine.inputs["definition"])["States"].values():
            if state["Type"] == "Task":
                calls.append(Call(roles[machine.inputs["roleArn"]], "lambda:InvokeFunction",
                                  state["Parameters"]["FunctionName"], {}, "Step Functions"))
    for definition in graph.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        role, region = roles[definition.inputs["executionRoleArn"]], definition.region
        for container in json.loads(definition.inputs["containerDefinitions"]):
            registry, _, repository = container["image"].split("@")[0].partition("/")
            repository_arn = f"arn:aws:ecr:{registry.split('.')[3]}:{registry.split('.')[0]}:repository/{repository}"
            calls += [Call(role, "ecr:GetAuthorizationToken", "*", {}, "ECS image pull"),
                      Call(role, "ecr:BatchGetImage", repository_arn, {}, "ECS image pull")]
            group = container["logConfiguration"]["options"]["awslogs-group"]
            stream = f"arn:aws:logs:{region}:{MOCK_ACCOUNT}:log-group:{group}:log-stream:task"
            calls += [Call(role, "logs:CreateLogStream", stream, {}, "ECS logs"),
                      Call(role, "logs:PutLogEvents", stream, {}, "ECS logs")]
            for secret in container.get("secrets", []):
                arn = secret["valueFrom"].split(":", 7)
                secret_arn = ":".join(arn[:7])
                calls.append(Call(role, "secretsmanager:GetSecretValue", secret_arn, {},
                                  f"ECS secret {secret['name']}"))
                via = {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}
                calls.append(Call(role, "kms:Decrypt", _secret_key(graph, secret_arn), via, "ECS secret decryption"))
    return calls


def _secret_key(graph: Graph, secret_arn: str) -> str:
    secret = next(s for s in graph.of_type("aws:secretsmanager/secret:Secret") if s.outputs["arn"] == secret_arn)
    return str(secret.inputs["kmsKeyId"])



def service_findings(graph: Graph) -> list[str]:
    """Every call AWS services make for us that the roles' policies would deny (run by `plan`)."""
    return [d.message() for d in (decide(graph, call) for call in service_calls(graph)) if not d.allowed]
