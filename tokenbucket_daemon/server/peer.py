"""Daemon to daemon: policy replication (last writer wins) and the split of
group-scope limits.

A policy set or deleted on any daemon is pushed to every peer at once, and the
whole table (with tombstones) again every second, so a daemon that missed a push
(restarting, partitioned) catches up within a second of coming back.

Every ``peer_interval`` each daemon exchanges demand with its peers; the one with
the smallest daemon_id among those that answered in the last three rounds leads
(so a leader that is gone is replaced after three rounds): it splits every
group-scope limit (``core.split``), lowers fractions first and raises them only
once the lowered daemons acknowledged. Two daemons that cannot see each other may
both lead; each still only hands out what its own view of the group frees.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import grpc

from tokenbucket_daemon.convert import policy_from_pb, policy_to_pb
from tokenbucket_daemon.core.policy import Policy, Scope, Selector, Tag
from tokenbucket_daemon.core.split import Demand, leads, plan, raises_after, target_fractions
from tokenbucket_daemon.errors import DaemonError, InvalidArgument
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.server.service import Node
from tokenbucket_daemon.tls import secure_channel

log = logging.getLogger(__name__)

# Rounds a daemon waits, after the last answer of a daemon with a smaller id, before it
# takes the lead: one slow answer must not make two leaders (see core.split.leads).
LEADER_HOLD = 3


def _newer(ns: int, origin: str, than_ns: int, than_origin: str) -> bool:
    return (ns, origin) > (than_ns, than_origin)


def merge(node: Node, policies: list[Policy], tombs: list[tuple[Selector, str, int, str]]) -> int:
    """Apply what is newer than what we have; returns how many changed."""
    applied = 0
    for p in policies:
        cur = node.policies.get(p.selector, p.tier)
        dead = node.tombstones.get(p.key, 0)
        if (cur is None or _newer(p.updated_ns, p.origin, cur.updated_ns, cur.origin)) \
                and p.updated_ns > dead:
            node.apply_policy(p)
            applied += 1
    for sel, tier, ns, origin in tombs:
        cur = node.policies.get(sel, tier)
        if cur is not None and _newer(ns, origin, cur.updated_ns, cur.origin):
            node.remove_policy(sel, tier, ns)
            applied += 1
        elif cur is None and ns > node.tombstones.get((sel, tier), 0):
            node.tombstones[(sel, tier)] = ns
            node.version += 1
    return applied


class PeerService(rpc.PeerServiceServicer):
    def __init__(self, node: Node, peers: list[str]) -> None:
        self.node = node
        self.peers = peers
        self.demand: dict[str, pb.DemandReport] = {}

    async def PushPolicies(self, request: pb.PolicySync, context: Any) -> pb.PolicySyncReply:
        try:
            policies = [policy_from_pb(m).validated() for m in request.policies]
            if any(p.updated_ns <= 0 for p in policies):
                raise InvalidArgument("replicated policy without updated_ns", None,
                                      "peers must send policies as stored")
            tombs = [(policy_from_pb(pb.Policy(selector=t.selector)).selector, t.tier,
                      t.deleted_ns, request.origin) for t in request.deleted]
        except DaemonError as e:
            await context.abort(grpc.StatusCode[e.code], str(e))
            raise
        return pb.PolicySyncReply(applied=merge(self.node, policies, tombs))

    async def ExchangeDemand(self, request: pb.DemandReport, context: Any) -> pb.DemandReport:
        if not request.daemon_id or any(not math.isfinite(j.demand_bps) or j.demand_bps < 0
                                        for j in request.jobs):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "demand report needs a daemon_id and finite demands >= 0")
        self.demand[request.daemon_id] = request
        return own_demand(self.node)

    async def SetFractions(self, request: pb.FractionUpdate, context: Any) -> pb.FractionAck:
        bad = [f for f in request.fractions
               if not f.job_id or not math.isfinite(f.fraction) or not 0 <= f.fraction <= 1]
        if not request.leader or bad:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "fractions need a leader, a job_id and a value in 0..1: "
                                f"{bad[0].job_id!r}={bad[0].fraction}" if bad else
                                "fractions need a leader")
        apply_fractions(self.node, [(f.job_id, f.tier, f.fraction) for f in request.fractions])
        return pb.FractionAck(applied=len(request.fractions))

    async def ListPeers(self, request: pb.ListPeersRequest, context: Any) -> pb.ListPeersReply:
        return pb.ListPeersReply(peers=[pb.Peer(address=a) for a in self.peers])


def apply_fractions(node: Node, fractions: list[tuple[str, str, float]]) -> None:
    now = node.gate.now()
    for job, tier, f in fractions:
        node.gate.scheduler.set_fraction(job, tier, f, now)
    node.gate.kick()


def _group_limit(node: Node, job: str, tier: str) -> float:
    """The job's group-scope limit on ``tier``, or 0 when its policy is per daemon."""
    p = node.policies.resolve(Tag(job), tier)
    return p.limit_bps if p.scope is Scope.GROUP else 0.0


def own_demand(node: Node) -> pb.DemandReport:
    sched = node.gate.scheduler
    d = sched.demand(node.gate.now())
    keys = set(d) | set(sched.fractions())
    jobs = []
    for job, tier in sorted(keys):
        dem = d.get((job, tier), Demand())
        group = _group_limit(node, job, tier) > 0
        jobs.append(pb.JobDemand(job_id=job, tier=tier, demand_bps=dem.arrival_bps,
                                 served_bps=dem.served_bps, queued_bytes=dem.queued_bytes,
                                 fraction=sched.fraction(job, tier) if group else 0.0))
    return pb.DemandReport(daemon_id=node.daemon_id, time_ns=time.time_ns(), jobs=jobs)


class Replicator:
    """Pushes this daemon's policies to its peers: at once on change; every ``period`` to
    the peers not yet holding the current state (down, partitioned, or the state changed
    here by a merge); to everyone every ``resync`` seconds, in case a peer came back
    from an older copy of its database."""

    def __init__(self, node: Node, peers: list[str], period: float = 1.0,
                 resync: float = 30.0) -> None:
        self.node = node
        self.peers = peers
        self.period = period
        self.resync = resync
        self.changed = asyncio.Event()
        # Peers are reached with this daemon's own certificate (role daemon).
        self._channels = {a: secure_channel(a, node.tls, [], aio=True) for a in peers}
        self.stubs = {a: rpc.PeerServiceStub(c) for a, c in self._channels.items()}
        self._synced: dict[str, int] = {}      # peer -> node.version it acknowledged

    def sync_message(self) -> pb.PolicySync:
        node = self.node
        return pb.PolicySync(
            origin=node.daemon_id,
            policies=[policy_to_pb(p) for p in node.policies.all()],
            deleted=[pb.Tombstone(selector=policy_to_pb(Policy(sel)).selector, tier=tier,
                                  deleted_ns=ns) for (sel, tier), ns in node.tombstones.items()])

    async def push(self, peers: list[str] | None = None) -> None:
        version = self.node.version
        msg = self.sync_message()

        async def one(addr: str) -> None:
            try:
                await self.stubs[addr].PushPolicies(msg, timeout=0.5)
                self._synced[addr] = version
            except grpc.aio.AioRpcError as e:
                self._synced.pop(addr, None)
                log.debug("push to %s failed: %s", addr, e.code().name)
        await asyncio.gather(*(one(a) for a in (self.peers if peers is None else peers)))

    async def run(self) -> None:
        last_full = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self.changed.wait(), self.period)
            except TimeoutError:
                pass
            self.changed.clear()
            if time.monotonic() - last_full >= self.resync:
                last_full = time.monotonic()
                await self.push()
            else:
                behind = [a for a in self.peers if self._synced.get(a) != self.node.version]
                if behind:
                    await self.push(behind)

    async def close(self) -> None:
        for c in self._channels.values():
            await c.close()


class Splitter:
    """Every ``period``: exchange demand with the peers and, when this daemon leads,
    re-split every group-scope limit over the group."""

    def __init__(self, node: Node, stubs: dict[str, rpc.PeerServiceStub],
                 period: float) -> None:
        self.node = node
        self.stubs = stubs
        self.period = period
        # Last fraction each daemon reported or acknowledged, per (job, tier); what an
        # unreachable daemon is assumed to still enforce.
        self.known: dict[tuple[str, str], dict[str, float]] = {}
        self.ids: dict[str, str] = {}          # peer address -> daemon_id, once seen
        self.heard: dict[str, float] = {}      # daemon_id -> when it last answered

    @property
    def group_size(self) -> int:
        return 1 + len(self.stubs)

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
        if not any(p.scope is Scope.GROUP for p in node.policies.all()):
            return        # nothing to split: no demand traffic between daemons
        mine = own_demand(node)

        async def ask(addr: str) -> pb.DemandReport | None:
            try:
                return await self.stubs[addr].ExchangeDemand(mine, timeout=self.period)
            except grpc.aio.AioRpcError as e:
                log.debug("demand exchange with %s failed: %s", addr, e.code().name)
                return None
        replies = dict(zip(self.stubs, await asyncio.gather(*(ask(a) for a in self.stubs)),
                           strict=True))
        answered = {a: r for a, r in replies.items() if r is not None}
        now = time.monotonic()
        for a, r in answered.items():
            self.ids[a] = r.daemon_id
            self.heard[r.daemon_id] = now
        if not leads(node.daemon_id, self.heard, now, LEADER_HOLD * self.period):
            return
        reports = {node.daemon_id: mine} | {r.daemon_id: r for r in answered.values()}
        await self.lead(reports, answered)

    async def lead(self, reports: dict[str, pb.DemandReport],
                   answered: dict[str, pb.DemandReport]) -> None:
        node = self.node
        n = self.group_size
        # Daemons by id; a peer never heard from is known by its address.
        group = [node.daemon_id, *(self.ids.get(a, f"@{a}") for a in self.stubs)]
        addr_of = {self.ids.get(a, f"@{a}"): a for a in self.stubs}
        demands: dict[tuple[str, str], dict[str, Demand]] = {}
        reported: dict[tuple[str, str], dict[str, float]] = {}
        for did, rep in reports.items():
            for j in rep.jobs:
                demands.setdefault((j.job_id, j.tier), {})[did] = Demand(
                    j.demand_bps, j.served_bps, j.queued_bytes)
                if j.fraction > 0:
                    reported.setdefault((j.job_id, j.tier), {})[did] = j.fraction
        lower: dict[str, list[tuple[str, str, float]]] = {}
        raise_: dict[str, list[tuple[str, str, float]]] = {}
        plans = {}
        for key in sorted(demands):
            limit = _group_limit(node, *key)
            if limit <= 0:
                continue
            known = self.known.setdefault(key, {})
            known.update(reported.get(key, {}))
            current = {d: known.get(d, 1.0 / n) for d in group}
            pinned = frozenset(d for d in group if d not in reports)
            target = target_fractions(limit, demands[key], current, pinned)
            p = plan(current, target)
            plans[key] = (current, p)
            for d, f in p.lower.items():
                if abs(f - current[d]) > 1e-6:
                    lower.setdefault(d, []).append((*key, f))
        acked = await self._send(lower, addr_of)
        for key, (current, p) in plans.items():
            ok = {d for d in p.lower
                  if d in acked or abs(p.lower[d] - current[d]) <= 1e-6}
            for d, f in raises_after(current, p, ok).items():
                raise_.setdefault(d, []).append((*key, f))
            for d in ok:
                self.known[key][d] = p.lower[d]
        acked_up = await self._send(raise_, addr_of)
        for d in acked_up:
            for job, tier, f in raise_[d]:
                self.known[(job, tier)][d] = f

    async def _send(self, per_daemon: dict[str, list[tuple[str, str, float]]],
                    addr_of: dict[str, str]) -> set[str]:
        """Apply each daemon's new fractions (ours locally); the ids that acknowledged."""
        node = self.node
        done: set[str] = set()

        async def one(did: str, items: list[tuple[str, str, float]]) -> None:
            if did == node.daemon_id:
                apply_fractions(node, items)
                done.add(did)
                return
            msg = pb.FractionUpdate(leader=node.daemon_id, fractions=[
                pb.JobFraction(job_id=j, tier=t, fraction=f) for j, t, f in items])
            try:
                await self.stubs[addr_of[did]].SetFractions(msg, timeout=self.period)
                done.add(did)
            except grpc.aio.AioRpcError as e:
                log.debug("fractions to %s failed: %s", did, e.code().name)
        await asyncio.gather(*(one(d, items) for d, items in per_daemon.items()))
        return done
