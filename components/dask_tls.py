"""DaskTls: mutual TLS for every Dask connection. A private CA made by the program (pulumi-tls), one
certificate per role (the scheduler's names cover its private DNS name), and each role's key, certificate and
CA stored as one Secrets Manager secret (encrypted with the region's KMS key) in every region whose tasks need
it. ECS hands the secret's fields to the container by ARN; the image's entrypoint writes them to a private
directory and starts Dask with `tls://` and the TLS flags (images/dask/entrypoint.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from components.naming import Naming

CA_VALIDITY_FACTOR = 3  # the CA outlives the certificates it signs, so renewing them never needs a new CA
RENEW_BEFORE_HOURS = 30 * 24  # `pulumi up` replaces a certificate in its last 30 days
SECRET_FIELDS = ("ca", "cert", "key")
# Environment variables the entrypoint reads each field from (ECS `secrets`, never plain `environment`).
SECRET_ENVIRONMENT = {"ca": "DASK_TLS_CA", "cert": "DASK_TLS_CERT", "key": "DASK_TLS_KEY"}
ROLE_USES = {
    # Dask TLS is mutual: schedulers and workers accept connections and also open them to each other.
    "scheduler": ["digital_signature", "key_encipherment", "server_auth", "client_auth"],
    "worker": ["digital_signature", "key_encipherment", "server_auth", "client_auth"],
    "client": ["digital_signature", "key_encipherment", "client_auth"],
}


def container_secrets(secret_arn: str) -> list[dict[str, str]]:
    """The ECS container `secrets` that hand one role's PEMs to the entrypoint: JSON fields of the secret,
    referenced by the secret's full ARN (`<arn>:<json-key>::`)."""
    return [{"name": SECRET_ENVIRONMENT[field], "valueFrom": f"{secret_arn}:{field}::"} for field in SECRET_FIELDS]


def read_secret_statements(secret_arn: str, key_arn: str) -> list[dict[str, Any]]:
    """What an ECS execution role needs to hand a role's secret to its container, and nothing more."""
    via_secrets_manager = f"secretsmanager.{key_arn.split(':')[3]}.amazonaws.com"
    return [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": secret_arn},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
             "Condition": {"StringEquals": {"kms:ViaService": via_secrets_manager}}}]


@dataclass
class DaskTlsArgs:
    scheduler_host: str  # the scheduler's private DNS name: its certificate must cover it
    holders: Mapping[str, Sequence[str]]  # role -> regions whose tasks or notebooks need that role's secret
    providers: Mapping[str, aws.Provider]  # region -> provider
    key_arns: Mapping[str, pulumi.Input[str]]  # region -> KMS key for the secrets there
    naming: Naming
    validity_days: int
    # client.users: name -> tags. Each user's cluster has a CA of its own, so that no other user's certificate is
    # accepted by it: a scheduler certificate (covering `user_hosts[user]`) and a client certificate in
    # `user_region`, a worker certificate in each of `user_worker_regions`.
    users: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    user_region: str | None = None
    user_hosts: Mapping[str, str] = field(default_factory=dict)
    user_worker_regions: Sequence[str] = ()


class DaskTls(pulumi.ComponentResource):
    secret_arns: dict[str, dict[str, pulumi.Output[str]]]  # role -> region -> secret ARN
    user_secret_arns: dict[str, pulumi.Output[str]]  # user -> their client certificate's secret ARN
    user_cluster_secret_arns: dict[str, dict[str, dict[str, pulumi.Output[str]]]]  # user -> role -> region -> ARN

    def __init__(self, name: str, args: DaskTlsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("crossregiondask:index:DaskTls", name, None, opts)
        unknown = set(args.holders) - set(ROLE_USES)
        if unknown:
            raise ValueError(f"DaskTls {name}: unknown roles {sorted(unknown)}; use {sorted(ROLE_USES)}")
        if args.users and (args.user_region is None or set(args.users) - set(args.user_hosts)):
            raise ValueError(f"DaskTls {name}: users need a user_region and a scheduler host each")
        self._args, self._name, self._hours = args, name, args.validity_days * 24
        self.secret_arns = {}
        if args.holders:  # the team's cluster (no client.users)
            ca = self._ca("ca", args.naming.resource("dask-ca"))
            for role, regions in args.holders.items():
                value = self._pems(role, role, ca, host=args.scheduler_host)  # one per role, in each region
                self.secret_arns[role] = {region: self._secret(role, role, value, region) for region in regions}
        # Each user's own client certificate (its subject names the user), in a secret of its own that only the
        # user's role is allowed to read (client_notebook.py); their scheduler's and workers' the same way.
        self.user_secret_arns, self.user_cluster_secret_arns = {}, {}
        for user, tags in args.users.items():
            assert args.user_region is not None
            ca = self._ca(f"{user}-ca", args.naming.resource("dask-ca", user))
            label = f"client-{user}"
            self.user_secret_arns[user] = self._secret(label, "client", self._pems(label, "client", ca, user),
                                                       args.user_region, tags)
            host = args.user_hosts[user]
            scheduler = self._pems(f"scheduler-{user}", "scheduler", ca, user, host)
            worker = self._pems(f"worker-{user}", "worker", ca, user)
            self.user_cluster_secret_arns[user] = {
                "scheduler": {args.user_region: self._secret(f"scheduler-{user}", "scheduler", scheduler,
                                                             args.user_region, tags)},
                "worker": {region: self._secret(f"worker-{user}", "worker", worker, region, tags)
                           for region in args.user_worker_regions}}
        self.register_outputs({"secretArns": self.secret_arns, "userSecretArns": self.user_secret_arns})

    def _ca(self, label: str, common_name: str) -> tuple[tls.PrivateKey, tls.SelfSignedCert]:
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{self._name}-{label}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{self._name}-{label}", private_key_pem=ca_key.private_key_pem, is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name=common_name, organization=self._args.naming.project),
            validity_period_hours=self._hours * CA_VALIDITY_FACTOR, early_renewal_hours=RENEW_BEFORE_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"], opts=child)
        return ca_key, ca

    def _pems(self, label: str, role: str, authority: tuple[tls.PrivateKey, tls.SelfSignedCert],
              user: str | None = None, host: str | None = None) -> pulumi.Output[str]:
        """A key and a certificate for `role` signed by `authority`, with its CA, as the secret's JSON (ca, cert,
        key). A scheduler's covers `host`."""
        args, child, (ca_key, ca) = self._args, pulumi.ResourceOptions(parent=self), authority
        key = tls.PrivateKey(f"{self._name}-{label}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        request = tls.CertRequest(
            f"{self._name}-{label}", private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=f"dask-{role}" + (f"-{user}" if user else ""),
                                               organization=args.naming.project),
            dns_names=[host] if role == "scheduler" and host else None, opts=child)
        certificate = tls.LocallySignedCert(
            f"{self._name}-{label}", cert_request_pem=request.cert_request_pem,
            ca_private_key_pem=ca_key.private_key_pem, ca_cert_pem=ca.cert_pem, validity_period_hours=self._hours,
            early_renewal_hours=RENEW_BEFORE_HOURS, allowed_uses=ROLE_USES[role], opts=child)
        pems = pulumi.Output.all(ca.cert_pem, certificate.cert_pem, key.private_key_pem)
        return pulumi.Output.secret(pems.apply(lambda v: json.dumps(dict(zip(SECRET_FIELDS, v, strict=True)))))

    def _secret(self, label: str, role: str, value: pulumi.Output[str], region: str,
                tags: Mapping[str, str] | None = None) -> pulumi.Output[str]:
        args = self._args
        regional = pulumi.ResourceOptions(parent=self, provider=args.providers[region])
        secret = aws.secretsmanager.Secret(
            f"{self._name}-{label}-{region}", name=args.naming.resource(region, "dask-tls", label, max_length=256),
            description=f"Dask TLS {role} certificate, key and CA (PEM fields ca, cert, key)",
            kms_key_id=args.key_arns[region], recovery_window_in_days=7, tags=dict(tags) if tags else None,
            opts=regional)
        version = aws.secretsmanager.SecretVersion(f"{self._name}-{label}-{region}", secret_id=secret.id,
                                                   secret_string=value, opts=regional)
        # The ARN as users see it, resolved only once the value is stored: a task defined with it never starts
        # before its certificate exists.
        return pulumi.Output.all(secret.arn, version.id).apply(lambda v: str(v[0]))
