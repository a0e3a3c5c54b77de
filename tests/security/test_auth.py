"""Every service authenticates its caller by certificate, and each role reaches only its
own service: DataPlane the node agents, PeerService the daemons, AdminService the
administrators. Real daemons, real TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenbucket_daemon.client import AdminClient, DataClient
from tokenbucket_daemon.core.policy import Tag
from tokenbucket_daemon.local import LocalDaemon, local_pki
from tokenbucket_daemon.pki import Authority
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.tls import Tls

DENIED = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDaemon]:
    d = LocalDaemon(tmp_path_factory.mktemp("auth"), "a0").start()
    try:
        yield d
    finally:
        d.stop()


def identity(roles: tuple[str, ...], name: str, ca: Authority | None = None) -> Tls:
    i = (ca or local_pki()).issue(roles, name)
    return Tls.from_files(i.ca, i.cert, i.key)


def chan(d: LocalDaemon, tls: Tls | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(d.address)
    return grpc.secure_channel(d.address, tls.channel_credentials())


def data_call(d: LocalDaemon, tls: Tls | None) -> grpc.StatusCode:
    return _code(lambda: rpc.DataPlaneStub(chan(d, tls)).Stat(
        pb.StatRequest(tier="ram", path=""), timeout=5))


def admin_call(d: LocalDaemon, tls: Tls | None) -> grpc.StatusCode:
    return _code(lambda: rpc.AdminServiceStub(chan(d, tls)).ListPolicies(
        pb.ListPoliciesRequest(), metadata=[("authorization", f"Bearer {d.token}")],
        timeout=5))


def peer_call(d: LocalDaemon, tls: Tls | None) -> grpc.StatusCode:
    return _code(lambda: rpc.PeerServiceStub(chan(d, tls)).ListPeers(
        pb.ListPeersRequest(), timeout=5))


def health_call(d: LocalDaemon, tls: Tls | None) -> grpc.StatusCode:
    return _code(lambda: health_pb2_grpc.HealthStub(chan(d, tls)).Check(
        health_pb2.HealthCheckRequest(), timeout=5))


def _code(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


CALLS = {"DataPlane": data_call, "AdminService": admin_call, "PeerService": peer_call}


@pytest.mark.parametrize("roles, allowed", [
    (("agent",), {"DataPlane"}),
    (("admin",), {"AdminService"}),
    (("daemon",), {"PeerService"}),
    (("agent", "admin"), {"DataPlane", "AdminService"}),
])
def test_each_role_reaches_its_own_service_only(daemon: LocalDaemon, roles: tuple[str, ...],
                                                allowed: set[str]) -> None:
    tls = identity(roles, "-".join(roles))
    for service, call in CALLS.items():
        want = grpc.StatusCode.OK if service in allowed else DENIED
        assert call(daemon, tls) == want, (roles, service)
    assert health_call(daemon, tls) == grpc.StatusCode.OK


def test_no_certificate_or_a_foreign_one_gets_no_service_at_all(daemon: LocalDaemon,
                                                                 tmp_path: Path) -> None:
    foreign = identity(("agent", "admin", "daemon"), "mallory", Authority(tmp_path / "ca"))
    no_cert = Tls(ca=local_pki().ca.read_bytes(), cert=b"", key=b"")
    for tls in (None, foreign):
        for call in (*CALLS.values(), health_call):
            assert call(daemon, tls) == grpc.StatusCode.UNAVAILABLE, (tls, call)
    # TLS to the right CA but no client certificate: the handshake fails.
    c = grpc.secure_channel(daemon.address, grpc.ssl_channel_credentials(no_cert.ca))
    assert _code(lambda: rpc.DataPlaneStub(c).Stat(pb.StatRequest(tier="ram"), timeout=5)) \
        == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_without_known_roles_is_refused_everywhere(daemon: LocalDaemon,
                                                                 tmp_path: Path) -> None:
    # Signed by the right CA but named without our ROLES:NAME form.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca = local_pki()
    ca_key = serialization.load_pem_private_key((ca.dir / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    import datetime as dt
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "superuser")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    tls = Tls(ca.ca.read_bytes(), cert.public_bytes(serialization.Encoding.PEM),
              key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    for service, call in CALLS.items():
        assert call(daemon, tls) == DENIED, service


def test_the_client_library_speaks_tls_with_the_environments_identity(
        daemon: LocalDaemon) -> None:
    # local_pki() put an agent+admin identity into QOS_TLS_*: the defaults use it.
    d = DataClient(daemon.address, Tag("7"))
    d.write("ram", "tls-probe", b"x" * 10)
    assert d.read("ram", "tls-probe") == b"x" * 10
    d.close()
    a = AdminClient(daemon.address, daemon.token)
    assert any(k.tag == "7" for k in a.stats().classes)
    a.close()
    plain = AdminClient(daemon.address, daemon.token, tls=None)
    with pytest.raises(grpc.RpcError) as e:
        plain.list_policies()
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    plain.close()


def test_a_daemon_without_tls_refuses_to_start_unless_told_insecure(tmp_path: Path) -> None:
    from tokenbucket_daemon.errors import InvalidArgument
    from tokenbucket_daemon.server.config import config_from_dict

    (tmp_path / "t").mkdir()
    base = {"state_dir": str(tmp_path / "s"), "tiers": {"t": str(tmp_path / "t")}}
    with pytest.raises(InvalidArgument, match=r"no \[tls\]"):
        config_from_dict(base)
    assert config_from_dict({**base, "insecure": True}).tls is None
    with pytest.raises(InvalidArgument, match="needs ca, cert and key"):
        config_from_dict({**base, "tls": {"ca": "a"}})
    tls = {"ca": "a", "cert": "b", "key": "c"}
    with pytest.raises(InvalidArgument, match="needs ca, cert and key"):
        config_from_dict({**base, "tls": {**tls, "session_port": 1}})
    for bad in ("50061", "host:", "h:99999", "h:٥٠"):
        with pytest.raises(InvalidArgument, match="session_listen must be HOST:PORT"):
            config_from_dict({**base, "tls": {**tls, "session_listen": bad}})
    for life in (10, 1e9, True, "1h"):
        with pytest.raises(InvalidArgument, match="session_lifetime must be 60 to 86400"):
            config_from_dict({**base, "tls": {**tls, "session_lifetime": life}})
    cfg = config_from_dict({**base, "tls": {**tls, "session_listen": "0.0.0.0:50061"}})
    assert (cfg.session_listen, cfg.session_lifetime) == ("0.0.0.0:50061", 3600.0)
    with pytest.raises(InvalidArgument, match="both"):
        config_from_dict({**base, "insecure": True,
                          "tls": {"ca": "a", "cert": "b", "key": "c"}})
