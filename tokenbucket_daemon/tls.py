"""Mutual TLS for every channel to and from tokenbucketd.

A caller's identity is its certificate (see :mod:`tokenbucket_daemon.pki` for the names
and roles). Clients find theirs in ``--ca/--cert/--key`` options or, by default, in the
environment: ``QOS_TLS_CA``, ``QOS_TLS_CERT``, ``QOS_TLS_KEY``. Without any, a client
speaks plaintext, which a daemon refuses unless it was explicitly started ``insecure``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from tokenbucket_daemon.errors import DaemonError

ENV = ("QOS_TLS_CA", "QOS_TLS_CERT", "QOS_TLS_KEY")


class TlsError(DaemonError):
    """A CA, certificate or key file is missing or unreadable."""


@dataclass(frozen=True)
class Tls:
    """The PEM bytes of one identity and the CA it trusts."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def from_files(cls, ca: str | Path, cert: str | Path, key: str | Path) -> Tls:
        out = []
        for what, p in (("CA", ca), ("certificate", cert), ("key", key)):
            try:
                out.append(Path(p).read_bytes())
            except OSError as e:
                raise TlsError(f"cannot read the TLS {what} file ({e.strerror})", str(p),
                               "check the path and that this user may read it") from None
        return cls(*out)

    def channel_credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(root_certificates=self.ca,
                                            private_key=self.key, certificate_chain=self.cert)

    def server_credentials(self) -> grpc.ServerCredentials:
        # require_client_auth: a caller without a certificate of our CA gets no
        # connection at all, whatever service it wanted.
        return grpc.ssl_server_credentials([(self.key, self.cert)], root_certificates=self.ca,
                                           require_client_auth=True)


def from_env(env: Mapping[str, str] | None = None) -> Tls | None:
    """The identity named by ``QOS_TLS_*``, or None when none is set."""
    env = os.environ if env is None else env
    vals = [env.get(k, "") for k in ENV]
    if not any(vals):
        return None
    missing = [k for k, v in zip(ENV, vals, strict=True) if not v]
    if missing:
        raise TlsError("incomplete TLS identity in the environment", missing[0],
                       f"set all of {', '.join(ENV)}")
    return Tls.from_files(*vals)


def env_of(ca: str | Path, cert: str | Path, key: str | Path) -> dict[str, str]:
    """The environment that makes clients use this identity."""
    return dict(zip(ENV, (str(ca), str(cert), str(key)), strict=True))


def secure_channel(address: str, tls: Tls | None, options: list[tuple[str, int]],
                   aio: bool = False) -> grpc.Channel | grpc.aio.Channel:
    if tls is None:
        return (grpc.aio.insecure_channel(address, options=options) if aio
                else grpc.insecure_channel(address, options=options))
    creds = tls.channel_credentials()
    return (grpc.aio.secure_channel(address, creds, options=options) if aio
            else grpc.secure_channel(address, creds, options=options))
