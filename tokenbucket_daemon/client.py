"""Client library for tokenbucketd: data operations carrying a job tag, and admin calls.

    data = DataClient("127.0.0.1:50051", Tag(job="42", user="ana"))
    data.write("tmpfs", "run/out.dat", b"..." * 1000)
    as_ana = DataClient("127.0.0.1:50051", Tag(job="42", user="ana"),
                        caller=Caller(uid=1000, gid=1000, groups=(1000,)))
    admin = AdminClient("127.0.0.1:50051", token=open(token_file).read().strip())
    admin.set_policy(Policy(Selector(Kind.JOB, "42"), limit_bps=200 * MiB))
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

import grpc

from tokenbucket_daemon.caller import Caller
from tokenbucket_daemon.convert import caller_to_pb, policy_from_pb, policy_to_pb
from tokenbucket_daemon.core.policy import Kind, Policy, Selector, Tag
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.seal import AgentSession, SealedStub, SessionRoute
from tokenbucket_daemon.tls import Tls, from_env, secure_channel

T = TypeVar("T")
MiB = 1 << 20
# Room for the daemon's largest request (64 MiB by default) in either direction.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 80 * MiB),
                   ("grpc.max_send_message_length", 80 * MiB)]


FROM_ENV = "env"
TlsChoice = Tls | None | Literal["env"]


def channel(address: str, tls: TlsChoice = FROM_ENV) -> grpc.Channel:
    """A channel with this identity: ``"env"`` (the default) takes it from ``QOS_TLS_*``
    (plaintext when none is set), None is plaintext."""
    chosen = from_env() if tls == FROM_ENV else tls
    ch = secure_channel(address, chosen if isinstance(chosen, Tls) else None,
                        CHANNEL_OPTIONS)
    assert isinstance(ch, grpc.Channel)
    return ch


def is_address(text: str) -> bool:
    """``text`` is ``HOST:PORT`` with a port in 1..65535."""
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


class DataClient:
    """Data-plane calls tagged with ``tag``; with a ``caller``, the daemon serves them
    with that uid/gid/groups (without, as the daemon's own user). Threads may share one.

    A call refused because the daemon no longer knows its session (it restarted) is made
    once more with a new session, except a write of chunks that cannot be iterated again
    (see :meth:`write_chunks`)."""

    def __init__(self, address: str, tag: Tag | None = None,
                 chan: grpc.Channel | None = None, caller: Caller | None = None,
                 tls: TlsChoice = FROM_ENV, sessions: bool = True) -> None:
        self.address = address
        self.tag = tag or Tag()
        self.caller = caller
        chosen = (from_env() if tls == FROM_ENV else tls) if chan is None else None
        self._chan = chan or channel(address, chosen)
        self._tls_stub = rpc.DataPlaneStub(self._chan)
        # With TLS and sessions, data calls go sealed to the daemon's session port
        # (docs/auth.md), opened on first use and renewed before they end; a daemon
        # without one is spoken to over TLS.
        self._route = SessionRoute(address, sessions and isinstance(chosen, Tls))
        self._data_chan: grpc.Channel | None = None
        self._data_stub: Any = None     # on the session port of the route's session
        self._opening = threading.Lock()   # opening a session; the session and its stub

    @property
    def stub(self) -> Any:
        """The stub data calls go through: sealed on the session port, or over TLS.
        Calls made on it directly are not made again after a daemon restart."""
        return self._stub_and_session()[0]

    def _stub_and_session(self) -> tuple[Any, AgentSession | None]:
        """The stub for the next data call and the session sealing it (None: over TLS)."""
        # Under the lock: threads that find no session open one between them, and a
        # session is never paired with the stub of the port another thread is replacing.
        with self._opening:
            if self._route.must_open(time.monotonic_ns()):
                self._open_session()
            session, data_stub = self._route.sealing, self._data_stub
        if session is None:
            return self._tls_stub, None
        return SealedStub(data_stub, session), session

    def _open_session(self) -> None:
        try:
            r = self._tls_stub.OpenSession(pb.OpenSessionRequest(), timeout=10)
        except grpc.RpcError as e:
            if self._route.open_failed(e.code().name):
                return
            raise
        moved_to = self._route.opened(r, time.monotonic_ns())
        if moved_to is not None:
            if self._data_chan is not None:
                self._data_chan.close()
            self._data_chan = grpc.insecure_channel(moved_to, options=CHANNEL_OPTIONS)
            self._data_stub = rpc.DataPlaneStub(self._data_chan)

    def _call(self, fn: Callable[[Any], T], replayable: bool = True) -> T:
        """``fn(stub)``; when it fails because the daemon restarted or forgot its session,
        the session is forgotten and, if ``replayable``, ``fn`` is called once more with a
        new one (a daemon still down then fails the OpenSession)."""
        retried = False
        while True:
            stub, session = self._stub_and_session()
            try:
                return fn(stub)
            except grpc.RpcError as e:
                if not (self._route.retry(session, e.code().name, e.trailing_metadata(),
                                          retried) and replayable):
                    raise
                retried = True

    def _pbtag(self) -> pb.JobTag:
        t = pb.JobTag(job_id=self.tag.job, user=self.tag.user, account=self.tag.account)
        if self.caller is not None:
            t.caller.CopyFrom(caller_to_pb(self.caller))
        return t

    def write_chunks(self, tier: str, path: str, chunks: Iterable[bytes], offset: int = 0,
                     fsync: bool = False) -> int:
        """Stream ``chunks`` to ``path`` from ``offset``; returns bytes the tier holds.

        After a daemon restart the write is made again with a new session only if
        ``chunks`` can be iterated again (a list, not a generator): what gRPC took from a
        generator is gone, and keeping it to send again would hold the whole write in
        memory until the daemon answers. Otherwise the error is raised, and the next
        call opens a new session."""
        def stream() -> Iterator[pb.WriteChunk]:
            first = True
            for c in chunks:
                if first:
                    yield pb.WriteChunk(tag=self._pbtag(), tier=tier, path=path, offset=offset,
                                        data=c)
                    first = False
                else:
                    yield pb.WriteChunk(data=c)
            if first:
                yield pb.WriteChunk(tag=self._pbtag(), tier=tier, path=path, offset=offset)
            if fsync:
                yield pb.WriteChunk(fsync=True)
        return self._call(lambda stub: int(stub.Write(stream()).bytes_written),
                          replayable=iter(chunks) is not chunks)

    def write(self, tier: str, path: str, data: bytes, chunk: int = MiB, offset: int = 0,
              fsync: bool = False) -> int:
        return self.write_chunks(tier, path, _Pieces(data, chunk), offset, fsync)

    def read_chunks(self, tier: str, path: str, offset: int = 0, length: int = -1,
                    chunk: int = MiB) -> Iterator[bytes]:
        """The bytes from ``offset``, a message at a time. After a daemon restart the call
        is made again only if no message came yet: a new call would repeat them."""
        req = pb.ReadRequest(tag=self._pbtag(), tier=tier, path=path, offset=offset,
                             length=max(length, 0), chunk_size=chunk)

        def start(stub: Any) -> tuple[Iterator[pb.ReadChunk], pb.ReadChunk | None]:
            replies = stub.Read(req)
            return replies, next(replies, None)
        replies, first = self._call(start)
        if first is not None:
            yield first.data
            for m in replies:
                yield m.data

    def read(self, tier: str, path: str, offset: int = 0, length: int = -1,
             chunk: int = MiB) -> bytes:
        return b"".join(self.read_chunks(tier, path, offset, length, chunk))

    def stat(self, tier: str, path: str) -> pb.StatReply:
        req = pb.StatRequest(tag=self._pbtag(), tier=tier, path=path)
        return self._call(lambda stub: stub.Stat(req))

    def mkdir(self, tier: str, path: str, parents: bool = False) -> None:
        req = pb.MkdirRequest(tag=self._pbtag(), tier=tier, path=path, parents=parents)
        self._call(lambda stub: stub.Mkdir(req))

    def readdir(self, tier: str, path: str = "") -> list[tuple[str, bool, int]]:
        """Every entry as (name, is_dir, size), page after page."""
        out: list[tuple[str, bool, int]] = []
        token = ""
        while True:
            req = pb.ReaddirRequest(tag=self._pbtag(), tier=tier, path=path, page_token=token)
            # Called before the loop moves on, so this page's request.
            r = self._call(lambda stub: stub.Readdir(req))  # noqa: B023
            out += [(e.name, e.is_dir, e.size) for e in r.entries]
            token = r.next_page_token
            if not token:
                return out

    def unlink(self, tier: str, path: str) -> None:
        req = pb.UnlinkRequest(tag=self._pbtag(), tier=tier, path=path)
        self._call(lambda stub: stub.Unlink(req))

    def create(self, tier: str, path: str, mode: int = 0o644, exclusive: bool = False) -> None:
        req = pb.CreateRequest(tag=self._pbtag(), tier=tier, path=path, mode=mode,
                               exclusive=exclusive)
        self._call(lambda stub: stub.Create(req))

    def setattr(self, tier: str, path: str, *, mode: int | None = None,
                uid: int | None = None, gid: int | None = None,
                atime_ns: int | None = None, mtime_ns: int | None = None) -> pb.StatReply:
        """chmod/chown/utimens as this client's caller; returns the attributes after."""
        req = pb.SetattrRequest(tag=self._pbtag(), tier=tier, path=path, mode=mode, uid=uid,
                                gid=gid, atime_ns=atime_ns, mtime_ns=mtime_ns)
        return self._call(lambda stub: stub.Setattr(req).stat)

    def close(self) -> None:
        self._chan.close()
        if self._data_chan is not None:
            self._data_chan.close()


class _Pieces:
    """``data`` in pieces of ``size`` bytes, each time it is iterated: a write of it can
    be made again without a copy of the whole."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def __iter__(self) -> Iterator[bytes]:
        view = memoryview(self.data)
        for i in range(0, len(view), self.size):
            yield bytes(view[i:i + self.size])


class AdminClient:
    def __init__(self, address: str, token: str | None = None,
                 chan: grpc.Channel | None = None, tls: TlsChoice = FROM_ENV) -> None:
        self.address = address
        self._md = [("authorization", f"Bearer {token}")] if token else []
        self._chan = chan or channel(address, tls)
        self.stub = rpc.AdminServiceStub(self._chan)

    def _call(self, name: str, req: Any) -> Any:
        return getattr(self.stub, name)(req, metadata=self._md, timeout=10)

    def set_policy(self, p: Policy) -> Policy:
        return policy_from_pb(self._call("SetPolicy", pb.SetPolicyRequest(policy=policy_to_pb(p))))

    def delete_policy(self, selector: Selector, tier: str = "") -> bool:
        sel = policy_to_pb(Policy(selector)).selector
        return bool(self._call("DeletePolicy",
                               pb.DeletePolicyRequest(selector=sel, tier=tier)).deleted)

    def list_policies(self) -> list[Policy]:
        return [policy_from_pb(m)
                for m in self._call("ListPolicies", pb.ListPoliciesRequest()).policies]

    def reserve(self, job: str, bandwidth_bps: float, tier: str = "", limit_bps: float = 0.0,
                user: str = "", account: str = "") -> Policy:
        r = self._call("Reserve", pb.ReserveRequest(job_id=job, user=user, account=account,
                                                    tier=tier, bandwidth_bps=bandwidth_bps,
                                                    limit_bps=limit_bps))
        return policy_from_pb(r.policy)

    def release(self, job: str) -> int:
        return int(self._call("Release", pb.ReleaseRequest(job_id=job)).released)

    def set_enforcement(self, enabled: bool) -> int:
        """Switch this daemon's enforcement; returns how many waiting requests switching
        it off released."""
        return int(self._call("SetEnforcement",
                              pb.SetEnforcementRequest(enabled=enabled)).released)

    def stats(self, job: str = "", tier: str = "") -> pb.StatsReply:
        return self._call("GetStats", pb.StatsRequest(job_id=job, tier=tier))

    def watch_stats(self, job: str = "", interval_ms: int = 1000) -> Iterator[pb.StatsReply]:
        """A stats snapshot every ``interval_ms``; closing the iterator ends the stream."""
        call = self.stub.WatchStats(pb.WatchStatsRequest(interval_ms=interval_ms, job_id=job),
                                    metadata=self._md)
        try:
            yield from call
        finally:
            call.cancel()

    def close(self) -> None:
        self._chan.close()


__all__ = ["CHANNEL_OPTIONS", "AdminClient", "Caller", "DataClient", "Kind", "Policy",
           "Selector", "Tag", "channel", "is_address"]
