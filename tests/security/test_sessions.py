"""The session port of a real daemon: plaintext, but a call gets through only with a
seal of a data session an agent's certificate opened over TLS, once, for the very call
it was made for (docs/auth.md)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tokenbucket_daemon.client import AdminClient, DataClient
from tokenbucket_daemon.core.policy import Tag
from tokenbucket_daemon.local import LocalDaemon, free_ports, local_pki
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.seal import AgentSession, data_address, session_state
from tokenbucket_daemon.tls import Tls

STAT = "/qos.v1.DataPlane/Stat"
UNAUTH = grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDaemon]:
    d = LocalDaemon(tmp_path_factory.mktemp("sessions"), "s0").start()
    try:
        yield d
    finally:
        d.stop()


def agent_tls(roles: tuple[str, ...] = ("agent",)) -> Tls:
    i = local_pki().issue(roles, "node9")
    return Tls.from_files(i.ca, i.cert, i.key)


def open_session(d: LocalDaemon, tls: Tls | None = None) -> AgentSession:
    ch = grpc.secure_channel(d.address, (tls or agent_tls()).channel_credentials())
    r = rpc.DataPlaneStub(ch).OpenSession(pb.OpenSessionRequest(), timeout=10)
    ch.close()
    return AgentSession.from_reply(r)


def plain(d: LocalDaemon, s: AgentSession) -> grpc.Channel:
    return grpc.insecure_channel(data_address(d.address, s.data_port))


def code(fn: object) -> grpc.StatusCode:
    try:
        fn()  # type: ignore[operator]
    except grpc.RpcError as e:
        return e.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_the_client_library_moves_data_on_the_session_port(daemon: LocalDaemon) -> None:
    c = DataClient(daemon.address, Tag(job="31"))
    try:
        data = os.urandom(3 * (1 << 20) + 5)
        assert c.write("ram", "s.dat", data) == len(data)
        assert c.read("ram", "s.dat") == data
        session = c._route.sealing
        assert session is not None        # it really went sealed, not over TLS
        port = session.data_port
        assert port and data_address(daemon.address, port) != daemon.address
    finally:
        c.close()
    st = {(s.tag, s.tier): s for s in daemon.admin().stats(job="31").classes}
    assert st[("31", "ram")].bytes_written == len(data)
    assert st[("31", "ram")].bytes_read == len(data)


def test_no_seal_or_a_made_up_one_is_unauthenticated(daemon: LocalDaemon) -> None:
    s = open_session(daemon)
    stub = rpc.DataPlaneStub(plain(daemon, s))
    req = pb.StatRequest(tier="ram", path="")
    assert code(lambda: stub.Stat(req, timeout=5)) == UNAUTH
    made_up = f"{os.urandom(16).hex()}.1.{os.urandom(16).hex()}"
    assert code(lambda: stub.Stat(req, metadata=(("qos-seal", made_up),), timeout=5)) == UNAUTH
    # A real session id with a mac of another key.
    forged = f"{s.session_id.hex()}.1.{os.urandom(16).hex()}"
    assert code(lambda: stub.Stat(req, metadata=(("qos-seal", forged),), timeout=5)) == UNAUTH
    health = health_pb2_grpc.HealthStub(plain(daemon, s))
    assert code(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5)) == UNAUTH
    # The session is still good for its own calls after all that.
    assert code(lambda: stub.Stat(req, metadata=s.seal(STAT, req), timeout=5)) == \
        grpc.StatusCode.OK


def test_a_seal_is_good_once_and_for_its_own_call_only(daemon: LocalDaemon) -> None:
    s = open_session(daemon)
    stub = rpc.DataPlaneStub(plain(daemon, s))
    req = pb.StatRequest(tier="ram", path="")
    md = s.seal(STAT, req)
    assert code(lambda: stub.Stat(req, metadata=md, timeout=5)) == grpc.StatusCode.OK
    assert code(lambda: stub.Stat(req, metadata=md, timeout=5)) == UNAUTH     # replayed
    # Who asks, and what, are covered: a caller changed to root, another path.
    md = s.seal(STAT, req)
    as_root = pb.StatRequest(tier="ram", path="")
    as_root.tag.caller.uid = 0
    assert code(lambda: stub.Stat(as_root, metadata=md, timeout=5)) == UNAUTH
    md = s.seal(STAT, req)
    assert code(lambda: stub.Stat(pb.StatRequest(tier="ram", path="s.dat"), metadata=md,
                                  timeout=5)) == UNAUTH
    # A seal for Stat does not open Unlink.
    md = s.seal(STAT, req)
    assert code(lambda: stub.Unlink(pb.UnlinkRequest(tier="ram", path=""), metadata=md,
                                    timeout=5)) == UNAUTH


def test_a_sealed_write_stream_is_bound_to_its_first_chunk(daemon: LocalDaemon) -> None:
    s = open_session(daemon)
    stub = rpc.DataPlaneStub(plain(daemon, s))
    first = pb.WriteChunk(tag=pb.JobTag(job_id="32"), tier="ram", path="w.dat", data=b"a" * 10)
    md = s.seal("/qos.v1.DataPlane/Write", first)
    moved = pb.WriteChunk(tag=pb.JobTag(job_id="32"), tier="ram", path="other.dat",
                          data=b"a" * 10)
    assert code(lambda: stub.Write(iter([moved]), metadata=md, timeout=5)) == UNAUTH
    assert not (daemon.base / "ram" / "other.dat").exists()
    md = s.seal("/qos.v1.DataPlane/Write", first)
    r = stub.Write(iter([first, pb.WriteChunk(data=b"b" * 5)]), metadata=md, timeout=5)
    assert r.bytes_written == 15
    assert (daemon.base / "ram" / "w.dat").read_bytes() == b"a" * 10 + b"b" * 5


def test_the_session_port_opens_no_other_service(daemon: LocalDaemon) -> None:
    s = open_session(daemon)
    ch = plain(daemon, s)
    admin, peer = rpc.AdminServiceStub(ch), rpc.PeerServiceStub(ch)
    auth = ("authorization", f"Bearer {daemon.token}")
    lp = pb.ListPoliciesRequest()
    # Unsealed: no credential at all.
    assert code(lambda: admin.ListPolicies(lp, metadata=(auth,), timeout=5)) == UNAUTH
    # Sealed with a good session: still not an administrator, nor a daemon.
    md = s.seal("/qos.v1.AdminService/ListPolicies", lp)
    assert code(lambda: admin.ListPolicies(lp, metadata=(auth, *md), timeout=5)) == \
        grpc.StatusCode.PERMISSION_DENIED
    lpr = pb.ListPeersRequest()
    md = s.seal("/qos.v1.PeerService/ListPeers", lpr)
    assert code(lambda: peer.ListPeers(lpr, metadata=md, timeout=5)) == \
        grpc.StatusCode.PERMISSION_DENIED
    # Nor can a session open another one: that takes the certificate.
    req = pb.OpenSessionRequest()
    md = s.seal("/qos.v1.DataPlane/OpenSession", req)
    assert code(lambda: rpc.DataPlaneStub(ch).OpenSession(req, metadata=md, timeout=5)) == \
        grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("roles", [("admin",), ("daemon",)])
def test_only_an_agents_certificate_opens_a_session(daemon: LocalDaemon,
                                                    roles: tuple[str, ...]) -> None:
    with pytest.raises(grpc.RpcError) as e:
        open_session(daemon, agent_tls(roles))
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_restarted_daemon_forgets_sessions_and_says_so(tmp_path: Path) -> None:
    d = LocalDaemon(tmp_path, "s1").start()
    try:
        s = open_session(d)
        d.stop()
        d.start()
        s2 = open_session(d)
        stub = rpc.DataPlaneStub(plain(d, s2))     # its new session port
        req = pb.StatRequest(tier="ram", path="")
        with pytest.raises(grpc.RpcError) as e:
            stub.Stat(req, metadata=s.seal(STAT, req), timeout=5)
        assert e.value.code() == UNAUTH
        assert session_state(e.value.trailing_metadata()) == "unknown"
        assert stub.Stat(req, metadata=s2.seal(STAT, req), timeout=5).is_dir
    finally:
        d.stop()


def test_a_daemon_without_a_session_port_is_spoken_to_over_tls(tmp_path: Path) -> None:
    d = LocalDaemon(tmp_path, "s2", sessions=False).start()
    try:
        assert "sessions" not in d.banner
        with pytest.raises(grpc.RpcError) as e:
            open_session(d)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "session_listen" in (e.value.details() or "")
        c = DataClient(d.address, Tag(job="33"))
        try:
            assert c.write("ram", "t.dat", b"z" * 1000) == 1000
            assert c._route.sealing is None
        finally:
            c.close()
        assert AdminClient(d.address, d.token).stats(job="33").classes[0].bytes_written == 1000
    finally:
        d.stop()


def test_made_up_seals_hold_nothing_while_the_agent_works(daemon: LocalDaemon) -> None:
    """Anyone can reach the session port: Write streams with seal-shaped headers of no
    live session that never send a chunk are refused at once (the session is looked up
    before anything of the call is read), so they take none of the stream slots the
    node's agent shares with every process of its host (256 by default)."""
    import asyncio

    s = open_session(daemon)
    target = data_address(daemon.address, s.data_port)
    made_up = f"{os.urandom(16).hex()}.1.{os.urandom(16).hex()}"

    async def go() -> tuple[list[object], int]:
        never = asyncio.Event()

        async def silent() -> object:
            await never.wait()
            yield pb.WriteChunk()

        async with grpc.aio.insecure_channel(target) as ch:
            stub = rpc.DataPlaneStub(ch)
            calls = [stub.Write(silent(), metadata=(("qos-seal", made_up),), timeout=20)
                     for _ in range(300)]
            done, pending = await asyncio.wait([asyncio.ensure_future(c) for c in calls],
                                               timeout=5)
            codes = [f.exception().code() if isinstance(f.exception(), grpc.aio.AioRpcError)
                     else f.exception() for f in done]
            # The agent's own sealed write beside them.
            first = pb.WriteChunk(tier="ram", path="beside.dat", data=b"k" * 100)
            r = await stub.Write(iter([first]), metadata=s.seal("/qos.v1.DataPlane/Write",
                                                                first), timeout=10)
            for c in calls:
                c.cancel()
            return codes + ["pending"] * len(pending), r.bytes_written

    codes, wrote = asyncio.run(go())
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 300
    assert wrote == 100


def restartable(base: Path, name: str, keep_session_port: bool) -> LocalDaemon:
    """A daemon that comes back on its TLS port when restarted (its agents' address), and
    on its session port too if ``keep_session_port``, else on a new one."""
    tls_port, session_port = free_ports(2)
    d = LocalDaemon(base, name, port=tls_port)
    if keep_session_port:
        cfg = base / "d.toml"
        cfg.write_text(cfg.read_text().replace('session_listen = "127.0.0.1:0"',
                                               f'session_listen = "127.0.0.1:{session_port}"'))
    return d.start()


def restart(d: LocalDaemon) -> None:
    address = d.address
    d.stop()
    d.start()
    assert d.address == address


# Kept: the old session's seal reaches the new daemon, which does not know it
# (UNAUTHENTICATED, "unknown"). Moved: the old session port is closed (UNAVAILABLE).
PORTS = pytest.mark.parametrize("keep_session_port", [True, False], ids=["kept", "moved"])


@PORTS
def test_a_call_after_a_daemon_restart_is_made_again_with_a_new_session(
        tmp_path: Path, keep_session_port: bool) -> None:
    d = restartable(tmp_path, "s3", keep_session_port)
    c = DataClient(d.address, Tag(job="34"))
    try:
        c.mkdir("ram", "r")
        old = c._route.sealing
        restart(d)
        assert c.stat("ram", "r").is_dir
        new = c._route.sealing
        assert old is not None and new is not None and new.session_id != old.session_id
        # Writes of bytes and reads can be made again too.
        restart(d)
        assert c.write("ram", "r/a.dat", b"a" * 3000, chunk=1000) == 3000
        restart(d)
        assert c.read("ram", "r/a.dat") == b"a" * 3000
        assert c._route.sealing is not None      # still sealed, not over TLS
    finally:
        c.close()
        d.stop()


@PORTS
def test_a_write_of_a_generator_fails_after_a_restart_and_the_next_call_works(
        tmp_path: Path, keep_session_port: bool) -> None:
    d = restartable(tmp_path, "s4", keep_session_port)
    c = DataClient(d.address, Tag(job="35"))
    try:
        assert c.write_chunks("ram", "g.dat", (b"g" * 10 for _ in range(3))) == 30
        restart(d)
        with pytest.raises(grpc.RpcError) as e:
            c.write_chunks("ram", "g.dat", (b"h" * 10 for _ in range(3)))
        assert e.value.code() == (UNAUTH if keep_session_port
                                  else grpc.StatusCode.UNAVAILABLE)
        assert c.write_chunks("ram", "g.dat", (b"i" * 10 for _ in range(3))) == 30
        assert (d.base / "ram" / "g.dat").read_bytes() == b"i" * 30
    finally:
        c.close()
        d.stop()


class CountingOpens:
    """A DataPlane stub whose OpenSession is counted and slow, so that two threads
    needing a session at once both get to ask for one unless something stops them."""

    def __init__(self, stub: Any) -> None:
        self._stub, self.opens = stub, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)

    def OpenSession(self, *args: Any, **kw: Any) -> Any:
        self.opens += 1
        time.sleep(0.3)
        return self._stub.OpenSession(*args, **kw)


def test_threads_sharing_a_client_open_one_session_between_them(daemon: LocalDaemon) -> None:
    c = DataClient(daemon.address, Tag(job="36"))
    counting = CountingOpens(c._tls_stub)
    c._tls_stub = counting
    start = threading.Barrier(2)
    failed: list[BaseException] = []

    def stat() -> None:
        start.wait()
        try:
            c.stat("ram", "")
        except BaseException as e:   # noqa: BLE001 - reported by the test's thread
            failed.append(e)
    try:
        threads = [threading.Thread(target=stat) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not failed
        assert counting.opens == 1
        assert c._route.sealing is not None
    finally:
        c.close()
