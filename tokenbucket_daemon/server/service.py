"""gRPC servicers: thin adapters from the wire to the gate, the backend and the
policy table. They raise DaemonErrors; the server's error interceptor
(:mod:`tokenbucket_daemon.server.interceptors`) turns each into its status code with a
one-line message.

Every data-plane call is bounded before it opens anything (:mod:`.limits`): its tag's
fields, the streams its client has open, the descriptors left; a stream whose caller
stops sending (or taking) is ended after ``stream_idle_seconds``.

A data-plane request whose tag carries a caller has every file system call it makes run
with the caller's file system identity (``Node.run``/``Node.io`` with ``caller``), on the
I/O thread or, for inline memory tiers, on the event loop, switched back before anything
else runs there. Without a caller the daemon acts as its own user, as it always did: what
legacy clients (qos-ior, the client library's default) get until DataPlane callers are
authenticated.

On a tier with an emulated device (``[emulated_device]``, :mod:`..core.device`) each read
and write, once it reaches the tier, waits on the event loop until the device would have
finished it, whether enforcement is on or off; its slot stays taken meanwhile, as the
request is still at the device.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, TypeVar

import grpc

from tokenbucket_daemon.caller import Caller
from tokenbucket_daemon.convert import caller_from_pb, policy_from_pb, policy_to_pb
from tokenbucket_daemon.core.device import DeviceClock
from tokenbucket_daemon.core.policy import Kind, Policy, PolicyTable, Selector, Tag, check_name
from tokenbucket_daemon.core.session import RANDOM_BYTES, SessionTable
from tokenbucket_daemon.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.server.auth import caller_roles
from tokenbucket_daemon.server.backend import TierBackend, TierWriter
from tokenbucket_daemon.server.fsid import FsIdentity
from tokenbucket_daemon.server.gate import Gate
from tokenbucket_daemon.server.iopool import IoPool
from tokenbucket_daemon.server.limits import Admission, IdleWatch, Limits
from tokenbucket_daemon.server.replication import PolicyWriter
from tokenbucket_daemon.tls import Tls

log = logging.getLogger(__name__)
T = TypeVar("T")
MiB = 1 << 20
# Writes of one stream in flight at once: the next chunk is received and admitted while
# earlier ones are still being written, which hides the hand-off to the I/O threads.
WRITE_DEPTH = 4


# Classes GetStats sends when the request names no number, and at most.
STATS_CLASSES = 1000
MAX_STATS_CLASSES = 10_000
# Readdir entries per page when the request names no number.
READDIR_PAGE = 4096


def _tag(t: pb.JobTag) -> Tag:
    return Tag(t.job_id, t.user, t.account).checked()


def _stat_pb(st: dict[str, int | bool]) -> pb.StatReply:
    return pb.StatReply(size=int(st["size"]), mode=int(st["mode"]),
                        mtime_ns=int(st["mtime_ns"]), is_dir=bool(st["is_dir"]),
                        nlink=int(st["nlink"]), uid=int(st["uid"]), gid=int(st["gid"]),
                        atime_ns=int(st["atime_ns"]), ctime_ns=int(st["ctime_ns"]))


class TierCounters:
    def __init__(self) -> None:
        self.bytes_read = 0
        self.bytes_written = 0
        self.requests = 0


class Node:
    """The state one daemon's servicers share."""

    def __init__(self, daemon_id: str, tiers: dict[str, TierBackend], gate: Gate,
                 policies: PolicyTable, max_request: int, workers: int = 4) -> None:
        self.daemon_id = daemon_id
        self.tls: Tls | None = None     # this daemon's identity, for its calls to peers
        self.tiers = tiers
        self.gate = gate
        self.policies = policies
        # Where admin calls send policy changes: etcd for a group, SQLite alone
        # (server/replication.py); what is in force comes back from there.
        self.policy_writer: PolicyWriter
        self.max_request = max_request
        self.pool = IoPool(workers)
        self.fsid = FsIdentity()          # acts as a request's caller on any thread
        self.inline: set[str] = set()     # tiers whose I/O runs on the event loop
        self.counters = {name: TierCounters() for name in tiers}
        self.limits = Limits()
        self.admission = Admission(self.limits)
        # Data sessions (core/session.py) and the port their sealed calls come to; None
        # and 0 when the daemon has no session port.
        self.sessions: SessionTable | None = None
        self.session_port = 0
        self.devices: dict[str, DeviceClock] = {}    # tiers with an emulated device

    def to_device(self, tier: str, size: int) -> float | None:
        """Hand ``size`` bytes to ``tier``'s emulated device: when it is done with them
        (None: the tier has no emulated device)."""
        dev = self.devices.get(tier)
        return None if dev is None else dev.admit(size, self.gate.now())

    async def device_done(self, done_at: float | None) -> None:
        """Wait, without holding a thread, until the emulated device is done."""
        if done_at is not None:
            delay = done_at - self.gate.now()
            if delay > 0:
                await asyncio.sleep(delay)

    def set_limits(self, limits: Limits) -> None:
        """Hold this node to ``limits`` (the config's [limits]), its tiers included."""
        self.limits = limits
        self.admission = Admission(limits)
        for t in self.tiers.values():
            t.max_depth = limits.max_path_depth

    def health_problem(self) -> str:
        """Why the daemon cannot serve data now, or "" when it can: every I/O thread
        stuck in one call for io_stall_seconds (a hung tier), or fewer descriptors free
        than the reserve."""
        stall = self.limits.io_stall_seconds
        if self.pool.stalled(stall):
            return (f"every I/O thread has been in one call for {stall:g} s or more "
                    f"(the oldest {self.pool.oldest_call():.0f} s): a tier hangs")
        if self.admission.fds_short():
            return (f"{self.admission.fds.free()} file descriptors free, fewer than the "
                    f"reserve of {self.limits.fd_reserve}")
        return ""

    def tier(self, name: str) -> TierBackend:
        t = self.tiers.get(name)
        if t is None:
            raise NotFound("unknown tier", name,
                           f"use one of {', '.join(sorted(self.tiers))}")
        return t

    async def run(self, fn: Callable[..., T], *args: Any, caller: Caller | None = None,
                  refuse_when_stalled: bool = True) -> T:
        """Run ``fn`` in the I/O pool, as ``caller`` (None: as the daemon). While every
        I/O thread is stuck, refused at once (UNAVAILABLE) rather than queued behind them
        until the caller times out; closing what a call opened is never refused."""
        if refuse_when_stalled and self.pool.stalled(self.limits.io_stall_seconds):
            raise Unavailable("every I/O thread of the daemon is stuck in a call", None,
                              "a tier hangs; retry later or ask the storage node's operator")
        return await self.pool.run(self.fsid.run, caller, fn, *args)

    async def io(self, tier: str, fn: Callable[..., T], *args: Any,
                 caller: Caller | None = None) -> T:
        """Run ``fn`` for ``tier`` as ``caller``: on the loop for in-memory tiers
        (``inline``), where a 64 KiB write costs less than the hand-off to a thread, else
        in the I/O pool."""
        if tier in self.inline:
            return self.fsid.run(caller, fn, *args)
        return await self.pool.run(self.fsid.run, caller, fn, *args)


# ---------------------------------------------------------------------------- data


class DataPlane(rpc.DataPlaneServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def OpenSession(self, request: pb.OpenSessionRequest,
                          context: grpc.aio.ServicerContext) -> pb.OpenSessionReply:
        # The role interceptor let only an agent's certificate through: the session is
        # that agent's, named by its certificate.
        node = self.node
        if node.sessions is None or not node.session_port:
            raise FailedPrecondition("this daemon has no session port", node.daemon_id,
                                     "send data-plane calls over TLS, or set "
                                     "[tls] session_listen in its config")
        agent = caller_roles(context)[1]
        s = node.sessions.open(agent, time.time_ns(), os.urandom(RANDOM_BYTES))
        log.info("data session for %s (%s), %d open", agent, context.peer(),
                 len(node.sessions))
        return pb.OpenSessionReply(session_id=s.session_id, key=s.key,
                                   expires_ns=s.expires_ns, data_port=node.session_port,
                                   window=node.sessions.window,
                                   lifetime_seconds=node.sessions.lifetime_ns // 10**9)

    async def Write(self, request_iterator: AsyncIterator[pb.WriteChunk],
                    context: grpc.aio.ServicerContext) -> pb.WriteReply:
        with self.node.admission.stream(context.peer()):
            return await self._write(request_iterator)

    async def _write(self, request_iterator: AsyncIterator[pb.WriteChunk]) -> pb.WriteReply:
        node = self.node
        writer = None
        total = 0
        # Oldest first: a stream's writes finish in about the order they started, and
        # awaiting one future is much cheaper than asyncio.wait over all of them.
        pending: deque[asyncio.Future[int]] = deque()
        idle = IdleWatch(node.limits.stream_idle_seconds)
        chunks = request_iterator.__aiter__()
        path = ""
        try:
            first = True
            tag, tier_name, sync, inline = Tag(), "", False, False
            caller: Caller | None = None
            while True:
                idle.arm()
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    idle.disarm()
                if first:
                    first = False
                    tag, tier_name, path = _tag(chunk.tag), chunk.tier, chunk.path
                    caller = caller_from_pb(chunk.tag)
                    tier = node.tier(tier_name)
                    # A memory tier writes on the loop: nothing to overlap, so in turn.
                    inline = tier_name in node.inline
                    if chunk.offset < 0:
                        raise InvalidArgument("offset must be >= 0", chunk.offset,
                                              "write from offset 0 or later")
                    # In a thread even on a memory tier: an open can block (a FIFO
                    # someone made in the tier waits for a reader) and must not stop the
                    # loop. Closing a regular file cannot, so it runs inline there.
                    # As the caller: permissions are checked here, at the open.
                    writer = await node.run(tier.open_for_write, chunk.path, chunk.offset,
                                            caller=caller)
                elif chunk.path or chunk.tier or chunk.offset or chunk.HasField("tag"):
                    raise InvalidArgument("only the first chunk of a stream names the file",
                                          chunk.path or chunk.tier or chunk.offset,
                                          "send tag, tier, path and offset once")
                size = len(chunk.data)
                if size > node.max_request:
                    raise InvalidArgument(f"chunk larger than {node.max_request} bytes", size,
                                          "send chunks of 1 MiB")
                sync = sync or chunk.fsync
                if not size:
                    # Charged all the same (the scheduler's min_charge): an empty chunk
                    # costs the daemon a message, and a stream of them cost 5 s of CPU in
                    # 5 s while nothing was charged.
                    node.gate.release(await node.gate.acquire(tag, tier_name, "write", 0))
                else:
                    assert writer is not None
                    write = self._write_one(writer, writer.claim(size), chunk.data, tag,
                                            tier_name, caller)
                    if inline:
                        total += await write
                        continue
                    if len(pending) >= WRITE_DEPTH:
                        total += await pending.popleft()
                    pending.append(asyncio.ensure_future(write))
            if writer is None:
                raise InvalidArgument("empty write stream", None,
                                      "send a first chunk with tier and path")
            while pending:
                total += await pending.popleft()
            if sync:
                await node.run(writer.fsync, caller=caller)
            return pb.WriteReply(bytes_written=total)
        except asyncio.CancelledError:
            if idle.cancelled_by_me():
                raise DeadlineExceeded(
                    f"write stream sent nothing for {idle.seconds:g} s", path,
                    "send the next chunk sooner, or end the stream", "ETIMEDOUT") from None
            raise
        finally:
            idle.close()
            for f in pending:     # the stream failed: let no write outlive its descriptor
                f.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            if writer is not None:
                if tier_name in node.inline:
                    await node.io(tier_name, writer.close)
                else:
                    await node.run(writer.close, refuse_when_stalled=False)

    async def _write_one(self, writer: TierWriter, offset: int, data: bytes, tag: Tag,
                         tier_name: str, caller: Caller | None) -> int:
        node = self.node
        slot = await node.gate.acquire(tag, tier_name, "write", len(data))
        try:
            # As the caller too: a write by anyone but root clears the file's setuid and
            # setgid bits (the kernel's rule), and a write as root would not.
            done_at = node.to_device(tier_name, len(data))
            n = await node.io(tier_name, writer.write_at, offset, data, caller=caller)
            await node.device_done(done_at)
        finally:
            node.gate.release(slot)
        c = node.counters[tier_name]
        c.bytes_written += n
        c.requests += 1
        return n

    async def Read(self, request: pb.ReadRequest,
                   context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ReadChunk]:
        node = self.node
        with node.admission.stream(context.peer()):
            tier = node.tier(request.tier)
            tag = _tag(request.tag)
            caller = caller_from_pb(request.tag)
            chunk = request.chunk_size or MiB
            if chunk < 0 or chunk > node.max_request:
                raise InvalidArgument(f"chunk_size must be between 1 and {node.max_request}",
                                      request.chunk_size, "ask for 1 MiB chunks")
            if request.offset < 0:
                raise InvalidArgument("offset must be >= 0", request.offset, "read from 0")
            size = int((await node.run(tier.stat, request.path, caller=caller))["size"])
            # Charge what will really be read, so the last short chunk costs its size.
            end = size if request.length <= 0 else min(size, request.offset + request.length)
            reader = await node.run(tier.read_chunks, request.path, request.offset,
                                    max(0, end - request.offset), chunk, caller=caller)
            offset = request.offset
            it = iter(reader)
            # A caller that takes nothing holds the reader's descriptor: ended after as
            # long as a silent writer (the stream is cancelled while it waits to send).
            idle = IdleWatch(node.limits.stream_idle_seconds)
            try:
                while offset < end:
                    want = min(chunk, end - offset)
                    async with node.gate.admit(tag, request.tier, "read", want):
                        done_at = node.to_device(request.tier, want)
                        data = await node.io(request.tier, next, it, None, caller=caller)
                        await node.device_done(done_at)
                    if not data:
                        break
                    c = node.counters[request.tier]
                    c.bytes_read += len(data)
                    c.requests += 1
                    idle.arm()
                    yield pb.ReadChunk(offset=offset, data=data)
                    idle.disarm()
                    offset += len(data)
            finally:
                idle.close()
                await node.run(reader.close, refuse_when_stalled=False)

    async def _meta(self, request: Any, fn: Callable[[TierBackend], T]) -> T:
        tier = self.node.tier(request.tier)
        tag = _tag(request.tag)
        caller = caller_from_pb(request.tag)
        # A walk holds a descriptor per directory: none is started when they are short.
        self.node.admission.check_fds()
        async with self.node.gate.admit(tag, request.tier, "meta", 0):
            return await self.node.run(fn, tier, caller=caller)

    async def Stat(self, request: pb.StatRequest, context: Any) -> pb.StatReply:
        return _stat_pb(await self._meta(request, lambda t: t.stat(request.path)))

    async def Create(self, request: pb.CreateRequest, context: Any) -> pb.CreateReply:
        created = await self._meta(request, lambda t: t.create(
            request.path, request.mode or 0o644, request.exclusive))
        return pb.CreateReply(created=created)

    async def Unlink(self, request: pb.UnlinkRequest, context: Any) -> pb.UnlinkReply:
        await self._meta(request, lambda t: t.unlink(request.path))
        return pb.UnlinkReply()

    async def Mkdir(self, request: pb.MkdirRequest, context: Any) -> pb.MkdirReply:
        await self._meta(request, lambda t: t.mkdir(request.path, request.mode or 0o755,
                                                    request.parents))
        return pb.MkdirReply(created=True)

    async def Rmdir(self, request: pb.RmdirRequest, context: Any) -> pb.RmdirReply:
        await self._meta(request, lambda t: t.rmdir(request.path))
        return pb.RmdirReply()

    async def Readdir(self, request: pb.ReaddirRequest, context: Any) -> pb.ReaddirReply:
        # One page per call: 30,000 long names are more than a gRPC message holds.
        most = min(request.max_entries or READDIR_PAGE, READDIR_PAGE)
        entries, after = await self._meta(request, lambda t: t.readdir_page(
            request.path, request.page_token, most))
        return pb.ReaddirReply(entries=[
            pb.DirEntry(name=e.name, is_dir=e.is_dir, size=e.size, mode=e.mode, uid=e.uid,
                        gid=e.gid, mtime_ns=e.mtime_ns) for e in entries],
            next_page_token=after)

    async def Rename(self, request: pb.RenameRequest, context: Any) -> pb.RenameReply:
        await self._meta(request, lambda t: t.rename(request.src, request.dst))
        return pb.RenameReply()

    async def Truncate(self, request: pb.TruncateRequest, context: Any) -> pb.TruncateReply:
        await self._meta(request, lambda t: t.truncate(request.path, request.size))
        return pb.TruncateReply()

    async def Fsync(self, request: pb.FsyncRequest, context: Any) -> pb.FsyncReply:
        await self._meta(request, lambda t: t.fsync(request.path))
        return pb.FsyncReply()

    async def Statfs(self, request: pb.StatfsRequest, context: Any) -> pb.StatfsReply:
        tier = self.node.tier(request.tier)
        _tag(request.tag)
        caller = caller_from_pb(request.tag)
        return pb.StatfsReply(**await self.node.run(tier.statfs, caller=caller))

    async def Setattr(self, request: pb.SetattrRequest, context: Any) -> pb.SetattrReply:
        r = request

        def opt(name: str) -> int | None:
            return int(getattr(r, name)) if r.HasField(name) else None
        st = await self._meta(r, lambda t: t.setattr(
            r.path, mode=opt("mode"), uid=opt("uid"), gid=opt("gid"),
            atime_ns=opt("atime_ns"), mtime_ns=opt("mtime_ns"), atime_now=r.atime_now,
            mtime_now=r.mtime_now))
        return pb.SetattrReply(stat=_stat_pb(st))


# --------------------------------------------------------------------------- admin


class AdminService(rpc.AdminServiceServicer):
    def __init__(self, node: Node, token: str | None) -> None:
        self.node = node
        self.token = token

    def _auth(self, context: grpc.aio.ServicerContext) -> None:
        md = dict(context.invocation_metadata() or ())
        got = md.get("authorization", "")
        if not got:
            raise Unauthenticated("admin call without a credential", None,
                                  "pass the admin token (qosctl --token-file)")
        if self.token is None or not hmac.compare_digest(str(got), f"Bearer {self.token}"):
            raise PermissionDenied("admin credential refused", None,
                                   "use the token of this daemon's admin_token_file")

    def _check_tier(self, tier: str) -> None:
        if tier and tier not in self.node.tiers:
            raise NotFound("unknown tier", tier,
                           f"use one of {', '.join(sorted(self.node.tiers))} or none")

    async def SetPolicy(self, request: pb.SetPolicyRequest, context: Any) -> pb.Policy:
        self._auth(context)
        p = policy_from_pb(request.policy)
        self._check_tier(p.tier)
        p = replace(p, updated_ns=time.time_ns(), origin=self.node.daemon_id).validated()
        return policy_to_pb(await self.node.policy_writer.put(p))

    async def DeletePolicy(self, request: pb.DeletePolicyRequest,
                           context: Any) -> pb.DeletePolicyReply:
        self._auth(context)
        sel = policy_from_pb(pb.Policy(selector=request.selector)).selector
        # Idempotent, as the contract says: deleted=false when there was none.
        return pb.DeletePolicyReply(
            deleted=await self.node.policy_writer.delete(sel, request.tier))

    async def ListPolicies(self, request: pb.ListPoliciesRequest,
                           context: Any) -> pb.ListPoliciesReply:
        self._auth(context)
        return pb.ListPoliciesReply(policies=[policy_to_pb(p) for p in self.node.policies.all()])

    async def Reserve(self, request: pb.ReserveRequest, context: Any) -> pb.ReserveReply:
        self._auth(context)
        if not request.job_id:
            raise InvalidArgument("reserve needs a job id", "", "give --job")
        check_name("job_id", request.job_id)
        self._check_tier(request.tier)
        p = Policy(Selector(Kind.JOB, request.job_id), request.tier, request.limit_bps,
                   request.bandwidth_bps, 1.0, 0, time.time_ns(), self.node.daemon_id)
        return pb.ReserveReply(policy=policy_to_pb(await self.node.policy_writer.put(
            p.validated())))

    async def Release(self, request: pb.ReleaseRequest, context: Any) -> pb.ReleaseReply:
        self._auth(context)
        check_name("job_id", request.job_id)
        released = await self.node.policy_writer.release(request.job_id)
        if not released:
            raise NotFound("no reservation or policy for job", request.job_id,
                           "list them with qosctl policy list")
        return pb.ReleaseReply(released=released)

    async def SetEnforcement(self, request: pb.SetEnforcementRequest,
                             context: Any) -> pb.SetEnforcementReply:
        self._auth(context)
        was = self.node.gate.enabled
        released = self.node.gate.set_enabled(request.enabled)
        if was != request.enabled:
            log.warning("enforcement switched %s by an admin call%s",
                        "on" if request.enabled else "off",
                        f"; released {released} waiting requests" if released else "")
        return pb.SetEnforcementReply(enabled=request.enabled, released=released)

    def stats(self, job: str = "", tier: str = "",
              most: int = STATS_CLASSES) -> pb.StatsReply:
        """A snapshot of at most ``most`` classes (``truncated`` when more matched); the
        tiers' sums count every matching class, sent or not."""
        node = self.node
        sched = node.gate.scheduler
        matched = [s for s in sched.stats(node.gate.now())
                   if (not job or s.job == job) and (not tier or s.tier == tier)]
        classes = [pb.ClassStats(
            tag=s.job, tier=s.tier, selector=s.selector, bytes_read=s.bytes_read,
            bytes_written=s.bytes_written, requests=s.requests, queued=s.queued,
            in_flight=s.in_flight, wait_seconds_total=s.wait_seconds_total,
            rate_bps=s.rate_bps, tokens=s.tokens, limit_bps=s.limit_bps,
            reservation_bps=s.reservation_bps, weight=s.weight, rejected=s.rejected)
            for s in matched[:most]]
        tiers = []
        caps = sched.tier_bandwidth()
        for name, t in sorted(node.tiers.items()):
            if tier and name != tier:
                continue
            c = node.counters[name]
            mine = [s for s in matched if s.tier == name]
            tiers.append(pb.TierStats(tier=name, root=str(t.root), bytes_read=c.bytes_read,
                                      bytes_written=c.bytes_written, requests=c.requests,
                                      in_flight=sum(s.in_flight for s in mine),
                                      queued=sum(s.queued for s in mine),
                                      bandwidth_bps=caps.get(name, 0.0),
                                      emulated_device_bps=node.devices[name].rate
                                      if name in node.devices else 0.0))
        return pb.StatsReply(time_ns=time.time_ns(), daemon_id=node.daemon_id,
                             classes=classes, tiers=tiers, enforcing=node.gate.enabled,
                             truncated=len(matched) > most, total_classes=len(matched))

    async def GetStats(self, request: pb.StatsRequest, context: Any) -> pb.StatsReply:
        self._auth(context)
        check_name("job_id", request.job_id)
        most = request.max_classes or STATS_CLASSES
        if most > MAX_STATS_CLASSES:
            raise InvalidArgument(f"max_classes above {MAX_STATS_CLASSES}",
                                  request.max_classes, "ask for fewer, or filter by job")
        return self.stats(request.job_id, request.tier, most)

    async def WatchStats(self, request: pb.WatchStatsRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[pb.StatsReply]:
        self._auth(context)
        check_name("job_id", request.job_id)
        ms = request.interval_ms
        if ms != 0 and not 100 <= ms <= 3_600_000:
            raise InvalidArgument("interval_ms must be 0 (1 s) or 100..3600000",
                                  ms, "give e.g. 1000")
        interval = (request.interval_ms or 1000) / 1000
        while True:
            yield self.stats(request.job_id)
            await asyncio.sleep(interval)
