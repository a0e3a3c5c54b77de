"""The daemons of one tier, called over gRPC (asyncio), with failures turned into errnos.

Every call has a deadline, so a daemon that is down or stopped gives the program an error
instead of a hang; channels retry connecting quickly, so the mount works again as soon as
the daemon is back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from qosfs.errors import RemoteError
from qosfs.jobid import Identity
from tokenbucket_daemon.client import CHANNEL_OPTIONS
from tokenbucket_daemon.convert import caller_to_pb
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.seal import PREFIX, AgentSession, SessionRoute
from tokenbucket_daemon.tls import Tls, secure_channel

log = logging.getLogger(__name__)
T = TypeVar("T")
MiB = 1 << 20

_OPTIONS = [*CHANNEL_OPTIONS,
            # gRPC's default reconnect backoff grows to 2 minutes; a restarted daemon
            # must be usable again within a second or so.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000)]

_STATUS_ERRNO = {
    grpc.StatusCode.NOT_FOUND: errno.ENOENT,
    grpc.StatusCode.ALREADY_EXISTS: errno.EEXIST,
    grpc.StatusCode.PERMISSION_DENIED: errno.EACCES,
    grpc.StatusCode.UNAUTHENTICATED: errno.EACCES,
    grpc.StatusCode.INVALID_ARGUMENT: errno.EINVAL,
    grpc.StatusCode.OUT_OF_RANGE: errno.EINVAL,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errno.ENOSPC,
    grpc.StatusCode.DEADLINE_EXCEEDED: errno.ETIMEDOUT,
    grpc.StatusCode.CANCELLED: errno.EINTR,
    grpc.StatusCode.UNIMPLEMENTED: errno.ENOSYS,
}
# A full queue is transient: wait and retry (until the call's deadline) instead of failing.
_RETRY_PAUSE = (0.005, 0.5)


def errno_of(e: grpc.aio.AioRpcError) -> int:
    """The errno a program should see for a failed call: the daemon's own (trailing
    ``qos-errno``) when the file system gave one, else one per status code; a daemon that
    cannot be reached is EIO, like a hard I/O failure."""
    for key, value in e.trailing_metadata() or ():
        if key == "qos-errno":
            code = getattr(errno, str(value), None)
            if isinstance(code, int):
                return code
    return _STATUS_ERRNO.get(e.code(), errno.EIO)


@dataclass(frozen=True)
class Timeouts:
    meta: float = 15.0      # seconds for a metadata call
    data: float = 120.0     # seconds for one read or write piece (it may wait for tokens)


class TierClient:
    """The daemons serving ``tier``, in the order given (index = daemon number)."""

    def __init__(self, tier: str, addresses: list[str], timeouts: Timeouts | None = None,
                 tls: Tls | None = None) -> None:
        self.tier, self.addresses = tier, list(addresses)
        self.timeouts = timeouts or Timeouts()
        # The node agent's certificate (role agent): the daemons serve DataPlane to it
        # alone, and take the caller it names in each request from it alone.
        self._channels = [secure_channel(a, tls, _OPTIONS, aio=True) for a in addresses]
        self._stubs = [rpc.DataPlaneStub(c) for c in self._channels]
        # With TLS, each daemon's data calls go sealed with a data session to its session
        # port when it has one (docs/auth.md): opened on first use, renewed before it
        # ends, opened again when the daemon forgot it (restarted).
        self._routes = [SessionRoute(a, tls is not None) for a in addresses]
        # Per daemon: the channel to the port of its route's session, and its stub.
        self._data: list[tuple[grpc.aio.Channel, Any] | None] = [None] * len(addresses)
        self._opening = [asyncio.Lock() for _ in addresses]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels),
                             *(d[0].close() for d in self._data if d is not None))

    async def _route(self, d: int) -> tuple[Any, AgentSession | None]:
        """The stub for daemon ``d``'s data calls and the session sealing them (None:
        over TLS)."""
        route = self._routes[d]
        if route.must_open(time.monotonic_ns()):
            async with self._opening[d]:
                if route.must_open(time.monotonic_ns()):    # not opened while we waited
                    await self._open(d)
        session, data = route.sealing, self._data[d]
        if session is None or data is None:
            return self._stubs[d], None
        return data[1], session

    async def _open(self, d: int) -> None:
        route = self._routes[d]
        try:
            r = await self._stubs[d].OpenSession(pb.OpenSessionRequest(),
                                                 timeout=self.timeouts.meta)
        except grpc.aio.AioRpcError as e:
            if route.open_failed(e.code().name):
                log.info("daemon %s (%s) has no session port: data over TLS", d,
                         self.addresses[d])
                return
            raise RemoteError(errno_of(e), f"open a data session on daemon "
                                           f"{self.addresses[d]}: {e.details()}") from None
        moved_to = route.opened(r, time.monotonic_ns())
        if moved_to is not None:
            # The new channel is in place before the old one's close yields, so no call
            # meanwhile pairs the new session with the old port.
            old = self._data[d]
            chan = grpc.aio.insecure_channel(moved_to, options=_OPTIONS)
            self._data[d] = (chan, rpc.DataPlaneStub(chan))
            if old is not None:
                await old[0].close()

    @staticmethod
    def _tag(who: Identity | None) -> pb.JobTag:
        """The request's tag; with the caller's credentials, so the daemon acts as the
        calling process. None: qosfs's own calls (the mount's probe), as the daemon."""
        if who is None:
            return pb.JobTag()
        tag = pb.JobTag(job_id=who.job, user=who.user, account=who.account)
        if who.caller is not None:
            tag.caller.CopyFrom(caller_to_pb(who.caller))
        return tag

    async def _call(self, d: int, what: str, method: str, req: Any,
                    fn: Callable[[Any, Any], Awaitable[T]], deadline: float) -> T:
        """``fn(stub, metadata)`` on daemon ``d``, sealed when it has a session, with the
        retries a full queue or a forgotten session call for."""
        loop = asyncio.get_running_loop()
        pause = _RETRY_PAUSE[0]
        reopened = False
        while True:
            stub, session = await self._route(d)
            md = session.seal(PREFIX + method, req) if session is not None else ()
            try:
                return await fn(stub, md)
            except grpc.aio.AioRpcError as e:
                if self._routes[d].retry(session, e.code().name, e.trailing_metadata(),
                                         reopened):
                    reopened = True     # a daemon still down fails the OpenSession
                    continue
                code = errno_of(e)
                if code == errno.EAGAIN:
                    if loop.time() + pause < deadline:
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, _RETRY_PAUSE[1])
                        continue
                    code = errno.ETIMEDOUT    # programs do not expect EAGAIN from files
                # What programs meet every day (a missing file, a denied one) is not news.
                level = (logging.DEBUG if code in (errno.ENOENT, errno.EEXIST, errno.EACCES,
                                                   errno.EPERM) else logging.WARNING)
                log.log(level, "daemon %s (%s): %s failed: %s %s", d, self.addresses[d], what,
                        e.code().name, e.details())
                raise RemoteError(code, f"{what} on daemon {self.addresses[d]}: "
                                        f"{e.details()}") from None

    def _meta(self, d: int, what: str, method: str, req: Any) -> Awaitable[Any]:
        t = self.timeouts.meta
        return self._call(d, what, method, req,
                          lambda stub, md: getattr(stub, method)(req, timeout=t, metadata=md),
                          asyncio.get_running_loop().time() + t)

    # -- metadata --------------------------------------------------------------------
    async def stat(self, d: int, path: str, who: Identity | None) -> pb.StatReply:
        r: pb.StatReply = await self._meta(d, f"stat {path!r}", "Stat",
                                           pb.StatRequest(tag=self._tag(who), tier=self.tier,
                                                          path=path))
        return r

    async def create(self, d: int, path: str, mode: int, exclusive: bool,
                     who: Identity | None) -> None:
        await self._meta(d, f"create {path!r}", "Create",
                         pb.CreateRequest(tag=self._tag(who), tier=self.tier, path=path,
                                          mode=mode, exclusive=exclusive))

    async def unlink(self, d: int, path: str, who: Identity | None) -> None:
        await self._meta(d, f"unlink {path!r}", "Unlink",
                         pb.UnlinkRequest(tag=self._tag(who), tier=self.tier, path=path))

    async def mkdir(self, d: int, path: str, who: Identity | None, mode: int = 0,
                    parents: bool = False) -> None:
        await self._meta(d, f"mkdir {path!r}", "Mkdir",
                         pb.MkdirRequest(tag=self._tag(who), tier=self.tier, path=path,
                                         mode=mode, parents=parents))

    async def rmdir(self, d: int, path: str, who: Identity | None) -> None:
        await self._meta(d, f"rmdir {path!r}", "Rmdir",
                         pb.RmdirRequest(tag=self._tag(who), tier=self.tier, path=path))

    async def readdir(self, d: int, path: str, who: Identity | None) -> list[pb.DirEntry]:
        """Every entry, page after page (one reply holds about 1 MiB of them)."""
        out: list[pb.DirEntry] = []
        token = ""
        while True:
            r = await self._meta(d, f"readdir {path!r}", "Readdir",
                                 pb.ReaddirRequest(tag=self._tag(who), tier=self.tier,
                                                   path=path, page_token=token))
            out += r.entries
            token = r.next_page_token
            if not token:
                return out

    async def rename(self, d: int, src: str, dst: str, who: Identity | None) -> None:
        await self._meta(d, f"rename {src!r} to {dst!r}", "Rename",
                         pb.RenameRequest(tag=self._tag(who), tier=self.tier, src=src,
                                          dst=dst))

    async def truncate(self, d: int, path: str, size: int, who: Identity | None) -> None:
        await self._meta(d, f"truncate {path!r}", "Truncate",
                         pb.TruncateRequest(tag=self._tag(who), tier=self.tier, path=path,
                                            size=size))

    async def setattr(self, d: int, path: str, who: Identity | None, *,
                      mode: int | None = None, uid: int | None = None,
                      gid: int | None = None, atime_ns: int | None = None,
                      mtime_ns: int | None = None, now: bool = False) -> pb.StatReply:
        """chmod/chown/utimens as ``who``; ``now`` sets both times to now (touch)."""
        req = pb.SetattrRequest(tag=self._tag(who), tier=self.tier, path=path, mode=mode,
                                uid=uid, gid=gid, atime_ns=atime_ns, mtime_ns=mtime_ns,
                                atime_now=now, mtime_now=now)
        r = await self._meta(d, f"setattr {path!r}", "Setattr", req)
        st: pb.StatReply = r.stat
        return st

    async def fsync(self, d: int, path: str, who: Identity | None) -> None:
        await self._meta(d, f"fsync {path!r}", "Fsync",
                         pb.FsyncRequest(tag=self._tag(who), tier=self.tier, path=path))

    async def statfs(self, d: int, who: Identity | None) -> pb.StatfsReply:
        r: pb.StatfsReply = await self._meta(d, "statfs", "Statfs",
                                             pb.StatfsRequest(tag=self._tag(who),
                                                              tier=self.tier))
        return r

    # -- data ------------------------------------------------------------------------
    async def write(self, d: int, path: str, offset: int, data: bytes,
                    who: Identity | None) -> int:
        """Write ``data`` at ``offset``; returns once the daemon says it reached the tier."""
        t = self.timeouts.data
        chunk = pb.WriteChunk(tag=self._tag(who), tier=self.tier, path=path, offset=offset,
                              data=data)

        async def go(stub: Any, md: Any) -> int:
            r = await stub.Write(iter((chunk,)), timeout=t, metadata=md)
            return int(r.bytes_written)
        return await self._call(d, f"write {path!r} at {offset}", "Write", chunk, go,
                                asyncio.get_running_loop().time() + t)

    async def read(self, d: int, path: str, offset: int, length: int,
                   who: Identity | None) -> bytes:
        """Up to ``length`` bytes from ``offset``; shorter at the end of this store's copy."""
        t = self.timeouts.data
        req = pb.ReadRequest(tag=self._tag(who), tier=self.tier, path=path, offset=offset,
                             length=length, chunk_size=min(max(length, 1), 4 * MiB))

        async def go(stub: Any, md: Any) -> bytes:
            parts = [m.data async for m in stub.Read(req, timeout=t, metadata=md)]
            return parts[0] if len(parts) == 1 else b"".join(parts)
        return await self._call(d, f"read {path!r} at {offset}", "Read", req, go,
                                asyncio.get_running_loop().time() + t)
