"""Client library for tokenbucketd: data operations carrying a job tag, and admin calls.

    data = DataClient("127.0.0.1:50051", Tag(job="42", user="ana"))
    data.write("tmpfs", "run/out.dat", b"..." * 1000)
    as_ana = DataClient("127.0.0.1:50051", Tag(job="42", user="ana"),
                        caller=Caller(uid=1000, gid=1000, groups=(1000,)))
    admin = AdminClient("127.0.0.1:50051", token=open(token_file).read().strip())
    admin.set_policy(Policy(Selector(Kind.JOB, "42"), limit_bps=200 * MiB))
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import grpc

from tokenbucket_daemon.caller import Caller
from tokenbucket_daemon.convert import caller_to_pb, policy_from_pb, policy_to_pb
from tokenbucket_daemon.core.policy import Kind, Policy, Selector, Tag
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.seal import SealedStub, SessionRoute
from tokenbucket_daemon.tls import Tls, from_env, secure_channel

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
    with that uid/gid/groups (without, as the daemon's own user)."""

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

    @property
    def stub(self) -> Any:
        """The stub data calls go through: sealed on the session port, or over TLS."""
        if self._route.must_open(time.monotonic_ns()):
            self._open_session()
        session = self._route.sealing
        return self._tls_stub if session is None else SealedStub(self._data_stub, session)

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

    def _pbtag(self) -> pb.JobTag:
        t = pb.JobTag(job_id=self.tag.job, user=self.tag.user, account=self.tag.account)
        if self.caller is not None:
            t.caller.CopyFrom(caller_to_pb(self.caller))
        return t

    def write_chunks(self, tier: str, path: str, chunks: Iterable[bytes], offset: int = 0,
                     fsync: bool = False) -> int:
        """Stream ``chunks`` to ``path`` from ``offset``; returns bytes the tier holds."""
        def gen() -> Iterator[pb.WriteChunk]:
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
        return int(self.stub.Write(gen()).bytes_written)

    def write(self, tier: str, path: str, data: bytes, chunk: int = MiB, offset: int = 0,
              fsync: bool = False) -> int:
        view = memoryview(data)
        return self.write_chunks(tier, path, (bytes(view[i:i + chunk])
                                              for i in range(0, len(data), chunk)),
                                 offset, fsync)

    def read_chunks(self, tier: str, path: str, offset: int = 0, length: int = -1,
                    chunk: int = MiB) -> Iterator[bytes]:
        req = pb.ReadRequest(tag=self._pbtag(), tier=tier, path=path, offset=offset,
                             length=max(length, 0), chunk_size=chunk)
        for m in self.stub.Read(req):
            yield m.data

    def read(self, tier: str, path: str, offset: int = 0, length: int = -1,
             chunk: int = MiB) -> bytes:
        return b"".join(self.read_chunks(tier, path, offset, length, chunk))

    def stat(self, tier: str, path: str) -> pb.StatReply:
        return self.stub.Stat(pb.StatRequest(tag=self._pbtag(), tier=tier, path=path))

    def mkdir(self, tier: str, path: str, parents: bool = False) -> None:
        self.stub.Mkdir(pb.MkdirRequest(tag=self._pbtag(), tier=tier, path=path,
                                        parents=parents))

    def readdir(self, tier: str, path: str = "") -> list[tuple[str, bool, int]]:
        """Every entry as (name, is_dir, size), page after page."""
        out: list[tuple[str, bool, int]] = []
        token = ""
        while True:
            r = self.stub.Readdir(pb.ReaddirRequest(tag=self._pbtag(), tier=tier, path=path,
                                                    page_token=token))
            out += [(e.name, e.is_dir, e.size) for e in r.entries]
            token = r.next_page_token
            if not token:
                return out

    def unlink(self, tier: str, path: str) -> None:
        self.stub.Unlink(pb.UnlinkRequest(tag=self._pbtag(), tier=tier, path=path))

    def create(self, tier: str, path: str, mode: int = 0o644, exclusive: bool = False) -> None:
        self.stub.Create(pb.CreateRequest(tag=self._pbtag(), tier=tier, path=path, mode=mode,
                                          exclusive=exclusive))

    def setattr(self, tier: str, path: str, *, mode: int | None = None,
                uid: int | None = None, gid: int | None = None,
                atime_ns: int | None = None, mtime_ns: int | None = None) -> pb.StatReply:
        """chmod/chown/utimens as this client's caller; returns the attributes after."""
        req = pb.SetattrRequest(tag=self._pbtag(), tier=tier, path=path, mode=mode, uid=uid,
                                gid=gid, atime_ns=atime_ns, mtime_ns=mtime_ns)
        return self.stub.Setattr(req).stat

    def close(self) -> None:
        self._chan.close()
        if self._data_chan is not None:
            self._data_chan.close()


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
