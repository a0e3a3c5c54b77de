"""Daemon to daemon: the split of group-scope limits (PeerService and its rounds).

Policies are not exchanged between daemons any more: a group keeps them in etcd
(``server/replication.py``), where order is etcd's revision and only daemons can write.

Every ``peer_interval`` each daemon exchanges demand with its peers; the one with the
smallest daemon_id among those that answered in the last three rounds leads (so a
leader that is gone is replaced after three rounds): it splits every group-scope limit
(``core.split.GroupSplit``), lowers fractions first and raises them only once the
lowered daemons acknowledged. Two daemons that cannot see each other may both lead; each
still only hands out what its own view of the group frees.

Every message is checked before anything is applied (INVALID_ARGUMENT otherwise): ids
and job ids non-empty and bounded, at most ``MAX_JOBS`` entries, demands finite and
>= 0, fractions in 0..1. Fractions are taken only from a leader this daemon heard from
through its own calls to its configured peers, with a smaller id than its own, and,
under TLS, only from the daemon the caller's certificate names.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import grpc

from tokenbucket_daemon.core.policy import Scope, Tag
from tokenbucket_daemon.core.split import (
    Demand,
    GroupSplit,
    JobReport,
    Report,
    SendFractions,
)
from tokenbucket_daemon.errors import DaemonError, InvalidArgument, PermissionDenied
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.server.auth import caller_roles
from tokenbucket_daemon.server.service import Node
from tokenbucket_daemon.tls import secure_channel

log = logging.getLogger(__name__)

# Rounds a daemon waits, after the last answer of a daemon with a smaller id, before it
# takes the lead: one slow answer must not make two leaders (see core.split.leads).
LEADER_HOLD = 3
# Rounds after which a daemon not heard from is forgotten (its id, its time).
FORGET_ROUNDS = 40
MAX_JOBS = 4096          # entries of one report or update
MAX_ID = 128             # characters of a daemon id
MAX_JOB_ID = 256         # characters of a job id or tier


def _bad(what: str, value: object, hint: str) -> InvalidArgument:
    return InvalidArgument(what, value, hint)


def report_from_pb(m: pb.DemandReport) -> Report:
    """A validated demand report, or InvalidArgument naming the first bad value."""
    if not m.daemon_id or len(m.daemon_id) > MAX_ID:
        raise _bad("demand report needs a daemon_id of 1 to 128 characters",
                   m.daemon_id[:MAX_ID], "send the daemon's configured id")
    if len(m.jobs) > MAX_JOBS:
        raise _bad(f"demand report has more than {MAX_JOBS} jobs", len(m.jobs),
                   "report only jobs with a live class")
    jobs = []
    for j in m.jobs:
        if not j.job_id or len(j.job_id) > MAX_JOB_ID or len(j.tier) > MAX_JOB_ID:
            raise _bad("demand entries need a job_id (and tier) of at most 256 characters",
                       j.job_id[:MAX_JOB_ID], "the default class is not reported")
        for name in ("demand_bps", "served_bps"):
            v = getattr(j, name)
            if not math.isfinite(v) or v < 0:
                raise _bad(f"{name} must be finite and >= 0", v, f"job {j.job_id}")
        if not math.isfinite(j.fraction) or not 0 <= j.fraction <= 1:
            raise _bad("fraction must be in 0..1", j.fraction, f"job {j.job_id}")
        jobs.append(JobReport(j.job_id, j.tier, Demand(j.demand_bps, j.served_bps,
                                                       j.queued_bytes), j.fraction))
    return Report(m.daemon_id, tuple(jobs))


def fractions_from_pb(m: pb.FractionUpdate) -> list[tuple[str, str, float]]:
    if not m.leader or len(m.leader) > MAX_ID:
        raise _bad("fractions need a leader id of 1 to 128 characters", m.leader[:MAX_ID],
                   "send the leader's daemon_id")
    if len(m.fractions) > MAX_JOBS:
        raise _bad(f"more than {MAX_JOBS} fractions in one update", len(m.fractions),
                   "send only the fractions that change")
    out = []
    for f in m.fractions:
        if not f.job_id or len(f.job_id) > MAX_JOB_ID or len(f.tier) > MAX_JOB_ID:
            raise _bad("fractions need a job_id (and tier) of at most 256 characters",
                       f.job_id[:MAX_JOB_ID], "name the job")
        if not math.isfinite(f.fraction) or not 0 <= f.fraction <= 1:
            raise _bad("fractions need a value in 0..1", f"{f.job_id}={f.fraction}",
                       "a part of a group limit is between 0 and 1")
        out.append((f.job_id, f.tier, f.fraction))
    return out


class PeerService(rpc.PeerServiceServicer):
    def __init__(self, node: Node, peers: list[str], split: GroupSplit) -> None:
        self.node = node
        self.peers = peers
        self.split = split

    async def _abort(self, context: Any, e: DaemonError) -> None:
        await context.abort(grpc.StatusCode[e.code], str(e))

    async def ExchangeDemand(self, request: pb.DemandReport, context: Any) -> pb.DemandReport:
        # The caller's report is checked but not kept: what the leader splits by comes
        # from the replies to its own calls, to the peers it was configured with.
        try:
            report_from_pb(request)
        except DaemonError as e:
            await self._abort(context, e)
            raise
        return own_demand(self.node)

    async def SetFractions(self, request: pb.FractionUpdate, context: Any) -> pb.FractionAck:
        try:
            items = fractions_from_pb(request)
            name = caller_roles(context)[1]
            if name and name != request.leader:
                raise PermissionDenied("fractions sent in another daemon's name",
                                       request.leader, f"the certificate says {name}")
            if not self.split.may_lead_me(request.leader, time.monotonic()):
                raise _bad("fractions from a daemon that does not lead this one",
                           request.leader, "only the smallest daemon_id heard lately, "
                           f"below {self.node.daemon_id}, sets fractions here")
        except DaemonError as e:
            await self._abort(context, e)
            raise
        return pb.FractionAck(applied=apply_fractions(self.node, items))

    async def ListPeers(self, request: pb.ListPeersRequest, context: Any) -> pb.ListPeersReply:
        return pb.ListPeersReply(peers=[pb.Peer(address=a) for a in self.peers])


def group_limits(node: Node, reports: list[Report]) -> dict[tuple[str, str], float]:
    """The group-scope limit of every (job, tier) in ``reports``."""
    keys = {(j.job, j.tier) for r in reports for j in r.jobs}
    return {k: lim for k in keys if (lim := _group_limit(node, *k)) > 0}


def apply_fractions(node: Node, fractions: list[tuple[str, str, float]]) -> int:
    """Set the parts this daemon enforces; those of jobs without a group limit here (it
    was just deleted) are dropped. Returns how many were applied."""
    now = node.gate.now()
    n = 0
    for job, tier, f in fractions:
        if _group_limit(node, job, tier) > 0:
            node.gate.scheduler.set_fraction(job, tier, f, now)
            n += 1
    node.gate.kick()
    return n


def forget_fractions(node: Node) -> None:
    """Drop the parts of jobs whose group-scope policy is gone (they would pile up)."""
    sched = node.gate.scheduler
    now = node.gate.now()
    for job, tier in list(sched.fractions()):
        if _group_limit(node, job, tier) <= 0:
            sched.set_fraction(job, tier, None, now)


def _group_limit(node: Node, job: str, tier: str) -> float:
    """The job's group-scope limit on ``tier``, or 0 when its policy is per daemon."""
    p = node.policies.resolve(Tag(job), tier)
    return p.limit_bps if p.scope is Scope.GROUP else 0.0


def own_demand(node: Node) -> pb.DemandReport:
    sched = node.gate.scheduler
    d = sched.demand(node.gate.now())
    keys = set(d) | set(sched.fractions())
    jobs = []
    for job, tier in sorted(keys)[:MAX_JOBS]:
        dem = d.get((job, tier), Demand())
        group = _group_limit(node, job, tier) > 0
        jobs.append(pb.JobDemand(job_id=job, tier=tier, demand_bps=dem.arrival_bps,
                                 served_bps=dem.served_bps, queued_bytes=dem.queued_bytes,
                                 fraction=sched.fraction(job, tier) if group else 0.0))
    return pb.DemandReport(daemon_id=node.daemon_id, time_ns=time.time_ns(), jobs=jobs)


class Splitter:
    """Every ``period``: exchange demand with the peers and carry out what the split
    core decides (send fractions, apply ours)."""

    def __init__(self, node: Node, peers: list[str], period: float) -> None:
        self.node = node
        self.period = period
        self.split = GroupSplit(node.daemon_id, peers, LEADER_HOLD * period,
                                FORGET_ROUNDS * period)
        # Peers are reached with this daemon's own certificate (role daemon).
        self._channels = {a: secure_channel(a, node.tls, [], aio=True) for a in peers}
        self.stubs = {a: rpc.PeerServiceStub(c) for a, c in self._channels.items()}

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except Exception:                  # a bad round must not end the splitting
                log.exception("group split round failed")
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))

    async def round(self) -> None:
        node = self.node
        forget_fractions(node)
        if not any(p.scope is Scope.GROUP for p in node.policies.all()):
            return        # nothing to split: no demand traffic between daemons
        mine = own_demand(node)

        async def ask(addr: str) -> Report | None:
            try:
                return report_from_pb(
                    await self.stubs[addr].ExchangeDemand(mine, timeout=self.period))
            except grpc.aio.AioRpcError as e:
                log.debug("demand exchange with %s failed: %s", addr, e.code().name)
            except InvalidArgument as e:
                log.warning("peer %s sent a bad demand report: %s", addr, e)
            return None
        replies = dict(zip(self.stubs, await asyncio.gather(*(ask(a) for a in self.stubs)),
                           strict=True))
        me = report_from_pb(mine)
        limits = group_limits(node, [me, *(r for r in replies.values() if r is not None)])
        lower = self.split.start_round(time.monotonic(), me, replies, limits)
        if not lower:
            return
        up = self.split.lowered(await self._send(lower))
        self.split.raised(up, await self._send(up))

    async def _send(self, sends: list[SendFractions]) -> set[str]:
        """Carry out the sends (ours applied here); the ids that acknowledged."""
        node = self.node
        addr_of = {self.split.ids.get(a, f"@{a}"): a for a in self.stubs}
        done: set[str] = set()

        async def one(s: SendFractions) -> None:
            if s.daemon == node.daemon_id:
                apply_fractions(node, list(s.fractions))
                done.add(s.daemon)
                return
            msg = pb.FractionUpdate(leader=node.daemon_id, fractions=[
                pb.JobFraction(job_id=j, tier=t, fraction=f) for j, t, f in s.fractions])
            try:
                await self.stubs[addr_of[s.daemon]].SetFractions(msg, timeout=self.period)
                done.add(s.daemon)
            except grpc.aio.AioRpcError as e:
                log.debug("fractions to %s failed: %s", s.daemon, e.code().name)
        await asyncio.gather(*(one(s) for s in sends if s.daemon in addr_of
                               or s.daemon == node.daemon_id))
        return done

    async def close(self) -> None:
        for c in self._channels.values():
            await c.close()
