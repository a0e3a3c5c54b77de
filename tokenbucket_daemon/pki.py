"""A small certificate authority for a group of daemons and their callers.

Every service of tokenbucketd is reached over mutual TLS; the certificate a caller shows
says who it is and what it may do. The subject's common name is ``ROLES:NAME``, roles
from :data:`ROLES` separated by commas: ``daemon:d0`` (PeerService), ``agent:node1``
(DataPlane: qosfs on a compute node), ``admin:qosctl`` (AdminService). A site with its
own PKI issues the same names; ``deploy/local`` and the tests make theirs with this
module (EC P-256 keys, one year, serverAuth and clientAuth, SANs for the addresses a
daemon is reached at).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLES = ("daemon", "agent", "admin")
VALID = dt.timedelta(days=365)


class PkiError(ValueError):
    """A certificate could not be made as asked."""


@dataclass(frozen=True)
class Issued:
    """The files of one identity: the CA to trust, its certificate and its key."""

    ca: Path
    cert: Path
    key: Path


def common_name(roles: tuple[str, ...], name: str) -> str:
    bad = [r for r in roles if r not in ROLES]
    if not roles or bad:
        raise PkiError(f"roles {roles!r}: give one or more of {', '.join(ROLES)}")
    if not name or ":" in name or "," in name:
        raise PkiError(f"name {name!r}: give a non-empty name without ':' or ','")
    return f"{','.join(roles)}:{name}"


def parse_common_name(cn: str) -> tuple[frozenset[str], str]:
    """The roles and name in a certificate's common name; no roles when malformed."""
    roles, sep, name = cn.partition(":")
    if not sep or not name:
        return frozenset(), ""
    got = frozenset(roles.split(","))
    return (got if got <= set(ROLES) else frozenset()), name


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: not an EC private key")
    return key


class Authority:
    """A CA kept in ``directory`` (``ca.pem`` readable by all, ``ca.key`` by root only),
    made on first use."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = directory / "ca.pem"
        self._key_path = directory / "ca.key"
        if not self.ca.exists():
            self._make()

    def _make(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qos local CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALID)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                             crl_sign=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        _write_key(self._key_path, key)
        self.ca.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.ca.chmod(0o644)

    def issue(self, roles: tuple[str, ...], name: str, hosts: tuple[str, ...] = (),
              stem: str | None = None) -> Issued:
        """A certificate and key for ``ROLES:NAME`` in this CA's directory (key mode
        0600); ``hosts`` (IP addresses or DNS names) go into its SANs, for a server."""
        cn = common_name(roles, name)
        ca_key = _load_key(self._key_path)
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(ca_cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + VALID)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]),
                                  critical=False))
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        stem = stem or f"{'-'.join(roles)}-{name}"
        out = Issued(self.ca, self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        _write_key(out.key, key)
        out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out.cert.chmod(0o644)
        return out
