"""Run the real Pulumi program under mocks and record the whole resource graph.

No AWS account, CLI or provider plugin is needed: `__main__.py` runs in-process against a mock engine that
records every registration (type, name, inputs, mock outputs, provider and its region, parent,
dependencies, options) and the stack outputs. Mocks answer with realistic computed outputs (ids, ARNs,
default route table ids) so that no dependent input silently disappears, and any unmocked invoke fails.

Used by the tests and by operator tooling that inspects a stack without deploying it.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings

from stackconfig import PROJECT_DIR, TOP_LEVEL_KEYS, raw_stack_config

MOCK_ACCOUNT = "123456789012"
AWS_PROVIDER_TYPE = "pulumi:providers:aws"

# Id prefixes AWS uses, so that ids look and compare like real ones.
_ID_PREFIX = {
    "aws:ec2/vpc:Vpc": "vpc",
    "aws:ec2/subnet:Subnet": "subnet",
    "aws:ec2/routeTable:RouteTable": "rtb",
    "aws:ec2/internetGateway:InternetGateway": "igw",
    "aws:ec2/natGateway:NatGateway": "nat",
    "aws:ec2/eip:Eip": "eipalloc",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
    "aws:ec2/flowLog:FlowLog": "fl",
    "aws:ec2/securityGroup:SecurityGroup": "sg",
    "aws:ec2transitgateway/transitGateway:TransitGateway": "tgw",
    "aws:ec2transitgateway/vpcAttachment:VpcAttachment": "tgw-attach",
    "aws:ec2transitgateway/peeringAttachment:PeeringAttachment": "tgw-attach",
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": "pcx",
    "aws:fsx/lustreFileSystem:LustreFileSystem": "fs",
    "aws:fsx/dataRepositoryAssociation:DataRepositoryAssociation": "dra",
}
# Elastic Load Balancing's log-delivery accounts (AWS docs, "Enable access logs"): regions before 2022.
ELB_ACCOUNTS = {"us-east-1": "127311923021", "us-west-2": "797873946194", "eu-west-2": "652711504416",
                "eu-central-1": "054676820928", "ap-southeast-2": "783225319266"}
# Resources whose `name` output AWS (or Pulumi's auto-naming) fills in when the program gives none.
_AUTONAMED = {"aws:iam/role:Role", "aws:iam/policy:Policy", "aws:cloudwatch/logGroup:LogGroup",
               "aws:ecr/repository:Repository", "aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup",
               "aws:ecs/cluster:Cluster", "aws:ecs/service:Service", "aws:ecs/capacityProvider:CapacityProvider",
               "aws:autoscaling/group:Group", "aws:iam/instanceProfile:InstanceProfile"}


class UnmockedInvokeError(Exception):
    """The program called a data source the harness does not know: add a realistic answer for it."""


class DuplicateUrnError(Exception):
    """Two resources with the same URN: the Pulumi engine would reject the program."""


class SynthesisError(Exception):
    """The program failed; `graph` holds what was registered before it did."""

    def __init__(self, message: str, graph: Graph) -> None:
        super().__init__(message)
        self.graph = graph


@dataclass
class RecordedResource:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    provider: str  # provider URN ("" for providers, components and the stack)
    region: str | None  # region of the provider it was created through (or its own `region` input)
    id: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    dependencies: tuple[str, ...]
    property_dependencies: dict[str, tuple[str, ...]]
    ignore_changes: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    project: str
    stack: str
    resources: list[RecordedResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, token: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == token]

    def by_urn(self, urn: str) -> RecordedResource:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise KeyError(urn)

    def by_id(self, resource_id: str) -> RecordedResource | None:
        for resource in self.resources:
            if resource.custom and resource.id == resource_id:
                return resource
        return None

    def named(self, name: str, token: str | None = None) -> RecordedResource:
        matches = [r for r in self.resources if r.name == name and (token is None or r.type == token)]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    @property
    def aws_resources(self) -> list[RecordedResource]:
        return [r for r in self.resources if r.custom and r.type.startswith("aws:")]


def _digest(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("::".join(parts).encode()).hexdigest()[:length]


def _provider_urn(reference: str) -> str:
    """A provider reference is `<provider urn>::<provider id>`."""
    return reference.rpartition("::")[0] if reference else ""


class RealisticMocks(pulumi_mocks.Mocks):
    """Answers resource registrations and invokes the way AWS would, for the fields the program reads."""

    def __init__(self, stack: str) -> None:
        self.stack = stack  # in ids and auto-names, as Pulumi's random suffixes differ between stacks
        self.provider_regions: dict[str, str] = {}  # provider URN -> region, filled by the monitor

    def region_of(self, provider_reference: str) -> str | None:
        return self.provider_regions.get(_provider_urn(provider_reference))

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if not args.custom:
            return "", {}
        if args.typ.startswith("pulumi:providers:"):
            return f"{args.name}-provider-id", dict(args.inputs)
        if args.typ.startswith("tls:"):
            return self._tls(args)
        region = args.inputs.get("region") or self.region_of(args.provider or "") or "unknown-region"
        digest = _digest(self.stack, args.typ, args.name)
        resource_id = f"{_ID_PREFIX.get(args.typ, args.typ.split(':')[-1].lower())}-{digest}"
        module = args.typ.split(":")[1].split("/")[0]
        state: dict[str, Any] = {
            "arn": f"arn:aws:{module}:{region}:{MOCK_ACCOUNT}:{args.typ.split(':')[-1].lower()}/{resource_id}",
        }
        if isinstance(args.inputs.get("tags"), dict):  # auto scaling groups carry a list of tag blocks instead
            state["tagsAll"] = dict(args.inputs["tags"])
        if args.typ in _AUTONAMED and "name" not in args.inputs:
            state["name"] = f"{args.name}-{digest[:7]}"
        if args.typ == "aws:cloudwatch/logGroup:LogGroup":
            name = args.inputs.get("name") or state["name"]
            state["arn"] = f"arn:aws:logs:{region}:{MOCK_ACCOUNT}:log-group:{name}"
        if args.typ.startswith("aws:iam/"):
            state["arn"] = f"arn:aws:iam::{MOCK_ACCOUNT}:role/{args.inputs.get('name') or state.get('name')}"
            state["uniqueId"] = f"AROA{digest.upper()}"
        if args.typ == "aws:ec2transitgateway/peeringAttachmentAccepter:PeeringAttachmentAccepter":
            # The accepter manages the same attachment from the peer side: it has the peering's id.
            resource_id = str(args.inputs.get("transitGatewayAttachmentId", resource_id))
        if args.typ == "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter":
            resource_id = str(args.inputs.get("vpcPeeringConnectionId", resource_id))  # likewise
        state |= self._computed(args.typ, args.inputs, region, digest, state.get("name"), resource_id)
        return resource_id, {**args.inputs, **state}

    def _tls(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        """pulumi-tls computes keys and certificates locally: answer with PEM-shaped placeholders."""
        digest = _digest(self.stack, args.typ, args.name)
        pem = {
            "tls:index/privateKey:PrivateKey": ("privateKeyPem", "PRIVATE KEY"),
            "tls:index/selfSignedCert:SelfSignedCert": ("certPem", "CERTIFICATE"),
            "tls:index/locallySignedCert:LocallySignedCert": ("certPem", "CERTIFICATE"),
            "tls:index/certRequest:CertRequest": ("certRequestPem", "CERTIFICATE REQUEST"),
        }
        if args.typ not in pem:
            raise UnmockedInvokeError(f"{args.typ} is not mocked; add its computed outputs in stackgraph/synth.py")
        field, label = pem[args.typ]
        state = {field: f"-----BEGIN {label}-----\nMOCK{digest}\n-----END {label}-----\n"}
        if args.typ == "tls:index/privateKey:PrivateKey":
            state["publicKeyPem"] = f"-----BEGIN PUBLIC KEY-----\nMOCK{digest}\n-----END PUBLIC KEY-----\n"
        return digest, {**args.inputs, **state}

    @staticmethod
    def _computed(token: str, inputs: dict[str, Any], region: str, digest: str, autoname: str | None,
                  resource_id: str) -> dict[str, Any]:
        """Outputs AWS (or Docker) computes that the program reads, in AWS's formats."""
        name = inputs.get("name") or autoname or f"{token.split(':')[-1].lower()}-{digest[:7]}"
        arn = f"arn:aws:{{service}}:{region}:{MOCK_ACCOUNT}:{{resource}}"
        formats = {
            "aws:lambda/function:Function": ("lambda", f"function:{name}"),
            "aws:sfn/stateMachine:StateMachine": ("states", f"stateMachine:{name}"),
            "aws:sns/topic:Topic": ("sns", name),
            "aws:sqs/queue:Queue": ("sqs", name),
            "aws:fsx/lustreFileSystem:LustreFileSystem": ("fsx", f"file-system/{resource_id}"),
            # Secrets Manager appends six random characters to the name in the ARN.
            "aws:secretsmanager/secret:Secret": ("secretsmanager", f"secret:{name}-{digest[:6]}"),
            # An SSM parameter's ARN carries its name without the leading slash.
            "aws:ssm/parameter:Parameter": ("ssm", f"parameter/{name.lstrip('/')}"),
        }
        if token in formats:
            service, resource = formats[token]
            computed: dict[str, Any] = {"arn": arn.format(service=service, resource=resource), "name": name}
            if token == "aws:sqs/queue:Queue":
                computed["url"] = f"https://sqs.{region}.amazonaws.com/{MOCK_ACCOUNT}/{name}"
            if token == "aws:fsx/lustreFileSystem:LustreFileSystem":
                computed |= {"dnsName": f"{resource_id}.fsx.{region}.amazonaws.com", "mountName": digest[:8]}
                del computed["name"]
            return computed
        if token == "aws:ec2/vpc:Vpc":
            return {"defaultRouteTableId": f"rtb-{digest}d", "mainRouteTableId": f"rtb-{digest}m",
                    "defaultSecurityGroupId": f"sg-{digest}d", "defaultNetworkAclId": f"acl-{digest}d",
                    "ownerId": MOCK_ACCOUNT}
        if token == "aws:ec2transitgateway/transitGateway:TransitGateway":
            return {"associationDefaultRouteTableId": f"tgw-rtb-{digest}",
                    "propagationDefaultRouteTableId": f"tgw-rtb-{digest}", "ownerId": MOCK_ACCOUNT}
        if token == "aws:s3/bucket:Bucket":
            bucket = inputs.get("bucket") or f"bucket-{digest}"
            return {"bucket": bucket, "arn": f"arn:aws:s3:::{bucket}", "bucketRegionalDomainName":
                    f"{bucket}.s3.{region}.amazonaws.com"}
        if token == "aws:kms/key:Key":
            key_id = f"{digest[:8]}-{digest[8:12]}-4{digest[12:15]}-8{digest[15:17]}0-{digest[:12]}"
            return {"keyId": key_id, "arn": f"arn:aws:kms:{region}:{MOCK_ACCOUNT}:key/{key_id}"}
        if token == "aws:ecr/repository:Repository":
            return {"registryId": MOCK_ACCOUNT,
                    "repositoryUrl": f"{MOCK_ACCOUNT}.dkr.ecr.{region}.amazonaws.com/{name}",
                    "arn": f"arn:aws:ecr:{region}:{MOCK_ACCOUNT}:repository/{name}"}
        if token == "aws:lb/loadBalancer:LoadBalancer":
            return {"dnsName": f"{'internal-' if inputs.get('internal') else ''}{name}-{digest[:10]}.{region}"
                               ".elb.amazonaws.com", "arnSuffix": f"app/{name}/{digest[:16]}"}
        if token == "aws:opensearch/domain:Domain":
            domain = inputs.get("domainName")
            return {"endpoint": f"vpc-{domain}-{digest}.{region}.es.amazonaws.com",
                    "domainId": f"{MOCK_ACCOUNT}/{domain}",
                    "arn": f"arn:aws:es:{region}:{MOCK_ACCOUNT}:domain/{domain}"}
        if token == "aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace":
            return {"hostedZone": f"Z{digest.upper()[:13]}", "id": f"ns-{digest[:16]}"}
        if token == "aws:sagemaker/notebookInstance:NotebookInstance":
            return {"url": f"{name}.notebook.{region}.sagemaker.aws"}
        if token == "aws:ec2/launchTemplate:LaunchTemplate":
            return {"latestVersion": 1, "defaultVersion": 1}
        if token == "aws:autoscaling/group:Group":
            return {"arn": f"arn:aws:autoscaling:{region}:{MOCK_ACCOUNT}:autoScalingGroup:{digest}:"
                           f"autoScalingGroupName/{name}"}
        if token == "aws:ecs/taskDefinition:TaskDefinition":
            return {"arn": f"arn:aws:ecs:{region}:{MOCK_ACCOUNT}:task-definition/{inputs.get('family')}:1",
                    "revision": 1}
        if token == "docker:index/image:Image":
            repository, _, tag = str(inputs.get("imageName", "")).rpartition(":")
            return {"repoDigest": f"{repository}@sha256:{_digest(tag, length=64)}"}
        if token == "docker:index/registryImage:RegistryImage":
            # The same image pushed anywhere keeps its digest: derive it from the tag alone.
            tag = str(inputs.get("name", "")).rpartition(":")[2]
            return {"sha256Digest": f"sha256:{_digest(tag, length=64)}"}
        return {}

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        region = self.region_of(args.provider)
        if region is None:
            raise UnmockedInvokeError(f"invoke {args.token} has no explicit regional provider")
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{region}{suffix}" for suffix in "abc"]
            # An empty failure list, not None: the mock monitor iterates it.
            return {"id": region, "names": names, "zoneIds": [f"{region[:3]}-az{i}" for i in (1, 2, 3)],
                    "groupNames": [region], "state": args.args.get("state")}, []
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": MOCK_ACCOUNT, "arn": f"arn:aws:iam::{MOCK_ACCOUNT}:user/deployer",
                    "userId": "AIDAMOCK", "id": MOCK_ACCOUNT}, []
        if args.token == "aws:ssm/getParameter:getParameter":
            if not str(args.args.get("name", "")).startswith("/aws/service/"):
                raise UnmockedInvokeError(f"SSM parameter {args.args.get('name')} is not a public AWS parameter")
            return {"name": args.args["name"], "value": f"ami-{_digest(region, args.args['name'])}", "type": "String",
                    "arn": f"arn:aws:ssm:{region}::parameter{args.args['name']}", "id": args.args["name"],
                    "version": 1, "insecureValue": "", "withDecryption": True}, []
        if args.token == "aws:elb/getServiceAccount:getServiceAccount":
            account = ELB_ACCOUNTS.get(region, "")
            return {"arn": f"arn:aws:iam::{account}:root" if account else "", "id": account, "region": region}, []
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            registry = f"{MOCK_ACCOUNT}.dkr.ecr.{region}.amazonaws.com"
            return {"authorizationToken": "QVdTOm1vY2s=", "proxyEndpoint": f"https://{registry}",
                    "userName": "AWS", "password": "mock", "expiresAt": "2099-01-01T00:00:00Z",
                    "id": region, "registryId": args.args.get("registryId", MOCK_ACCOUNT)}, []
        raise UnmockedInvokeError(f"invoke {args.token} is not mocked; add a realistic answer in stackgraph/synth.py")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, plus a record of every registration and a duplicate-URN check."""

    def __init__(self, mocks: RealisticMocks, graph: Graph) -> None:
        super().__init__(mocks)
        self.realistic = mocks
        self.graph = graph
        self.stack_urn = ""
        self._urns: set[str] = set()
        self._urns_lock = threading.Lock()  # registrations arrive concurrently from executor threads

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        with self._urns_lock:
            if urn in self._urns:
                raise DuplicateUrnError(f"duplicate URN {urn}: resource names must be unique per type and parent")
            self._urns.add(urn)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
            return response
        inputs = rpc.deserialize_properties(request.object)
        outputs = rpc.deserialize_properties(response.object) if response.object else {}
        if request.type == AWS_PROVIDER_TYPE:
            inputs = {key: _json_or_text(value) for key, value in inputs.items()}
            self.realistic.provider_regions[urn] = str(inputs.get("region") or "")
        provider_urn = _provider_urn(request.provider)
        region = inputs.get("region") if request.custom else None
        if request.custom and not region and request.type != AWS_PROVIDER_TYPE:
            region = self.realistic.provider_regions.get(provider_urn)
        self.graph.resources.append(RecordedResource(
            urn=urn, type=request.type, name=request.name, parent=request.parent, custom=bool(request.custom),
            provider=provider_urn, region=region, id=response.id, inputs=inputs, outputs=outputs,
            dependencies=tuple(request.dependencies),
            property_dependencies={k: tuple(v.urns) for k, v in request.propertyDependencies.items()},
            ignore_changes=tuple(request.ignoreChanges),
            options={"protect": request.protect, "deleteBeforeReplace": request.deleteBeforeReplace,
                     "retainOnDelete": request.retainOnDelete,
                     **({"replaceOnChanges": list(request.replaceOnChanges)} if request.replaceOnChanges else {}),
                     **({"aliases": aliases} if (aliases := _aliases(request)) else {})},
        ))
        return response


def _aliases(request: Any) -> list[str]:
    """The earlier names (or URNs) a resource answers to, however the SDK sent them."""
    found = [str(urn) for urn in getattr(request, "aliasURNs", ())]
    for alias in getattr(request, "aliases", ()):
        spec = alias.spec if alias.HasField("spec") else None
        found.append(spec.name if spec is not None and spec.name else str(alias.urn))
    return found


def _json_or_text(value: Any) -> Any:
    """Providers receive structured settings (default tags, assume-role) JSON-encoded as strings."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _config_strings(project: str, raw: Mapping[str, Any]) -> dict[str, str]:
    """Pulumi passes config as strings; structured values travel as JSON."""
    return {f"{project}:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in raw.items()}


def synthesize(stack: str = "dev", overrides: Mapping[str, Any] | None = None, *, stack_file: str | None = None,
               project_dir: Path = PROJECT_DIR) -> Graph:
    """Run `__main__.py` for a stack under mocks and return the recorded graph.

    Config is what `pulumi up` would see: Pulumi.yaml defaults, then `Pulumi.<stack_file or stack>.yaml`,
    then `overrides` (top-level keys, replacing whole values). Raises SynthesisError with the partial graph
    when the program fails (its message is the program's own, e.g. the config validation report).
    """
    project, raw = raw_stack_config(project_dir, stack_file or stack, overrides)
    graph = Graph(project=project, stack=stack)
    # As the Pulumi CLI does before it starts the program: a project key Pulumi.yaml does not declare is refused.
    undeclared = sorted(set(raw) - {key.name for key in TOP_LEVEL_KEYS})
    if undeclared:
        raise SynthesisError(f"validating stack config: Stack {stack!r} uses configuration value "
                             f"'{project}:{undeclared[0]}' which is not defined by the project configuration", graph)
    mocks = RealisticMocks(stack)
    monitor = RecordingMonitor(mocks, graph)

    settings.ROOT.set(None)  # a fresh root stack for every run in this process
    runtime_config.set_all_config(_config_strings(project, raw))
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def run_program() -> pulumi.Output[None]:
        runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")
        root = settings.get_root_resource()
        exported = dict(getattr(root, "outputs", {}))
        return pulumi.Output.from_input(exported).apply(graph.outputs.update)

    try:
        run_program()
    except Exception as error:  # the program's own error, re-raised by the mock runtime
        raise SynthesisError(str(error), graph) from error
    return graph
