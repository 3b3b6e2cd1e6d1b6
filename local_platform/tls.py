"""A private CA and Dask certificates for one run of the local platform (cryptography), the local twin of
components/dask_tls.py: same roles, same key type, mutual TLS, nothing reused between runs."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from platform_facts import TLS_ENVIRONMENT

if TYPE_CHECKING:
    from distributed.security import Security

ROLES = ("scheduler", "worker", "client")
VALIDITY = datetime.timedelta(days=7)  # a run's certificates outlive the run, not much more


@dataclass(frozen=True)
class RoleFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class LocalTls:
    ca: Path
    roles: dict[str, RoleFiles]

    def flags(self, role: str) -> list[str]:
        """`dask scheduler|worker` flags for a role."""
        files = self.roles[role]
        return ["--tls-ca-file", str(self.ca), "--tls-cert", str(files.cert), "--tls-key", str(files.key)]

    def client_environment(self) -> dict[str, str]:
        """Dask config (as environment) that makes `Client(address)` present the client certificate."""
        files = self.roles["client"]
        return {TLS_ENVIRONMENT["ca"]: str(self.ca), TLS_ENVIRONMENT["cert"]: str(files.cert),
                TLS_ENVIRONMENT["key"]: str(files.key),
                "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}

    def security(self) -> Security:
        """A `distributed.Security` for clients in this process."""
        from distributed.security import Security

        files = self.roles["client"]
        return Security(tls_ca_file=str(self.ca), tls_client_cert=str(files.cert),  # type: ignore[no-untyped-call]
                        tls_client_key=str(files.key), require_encryption=True)


def load_local_tls(directory: Path) -> LocalTls:
    """The files `create_local_tls` wrote in `directory`."""
    if not (directory / "ca.pem").exists():
        raise FileNotFoundError(f"no local CA in {directory}: start the platform with `python -m local_platform up`")
    return LocalTls(directory / "ca.pem",
                    {role: RoleFiles(directory / f"{role}.pem", directory / f"{role}-key.pem") for role in ROLES})


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cross-region-dask local platform"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_local_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> LocalTls:
    """A fresh CA and one certificate per role in `directory` (0700; keys 0600). Server names cover `hosts`."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder().subject_name(_name("dask local CA")).issuer_name(_name("dask local CA"))
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    roles = {}
    for role in ROLES:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] + ([] if role == "client" else [ExtendedKeyUsageOID.SERVER_AUTH])
        builder = (x509.CertificateBuilder().subject_name(_name(f"dask-{role}")).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if role != "client":
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        files = RoleFiles(directory / f"{role}.pem", directory / f"{role}-key.pem")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(files.key, _key_pem(key))
        roles[role] = files
    return LocalTls(ca_path, roles)
