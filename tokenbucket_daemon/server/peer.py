"""Daemon to daemon: policy replication (last writer wins) and demand exchange.

A policy set or deleted on any daemon is pushed to every peer at once, and the
whole table (with tombstones) again every second, so a daemon that missed a push
(restarting, partitioned) catches up within a second of coming back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc

from tokenbucket_daemon.convert import policy_from_pb, policy_to_pb
from tokenbucket_daemon.core.policy import Policy, Selector
from tokenbucket_daemon.errors import DaemonError, InvalidArgument
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.proto import qos_pb2_grpc as rpc
from tokenbucket_daemon.server.service import Node

log = logging.getLogger(__name__)


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
        self.demand[request.daemon_id] = request
        return own_demand(self.node)

    async def ListPeers(self, request: pb.ListPeersRequest, context: Any) -> pb.ListPeersReply:
        return pb.ListPeersReply(peers=[pb.Peer(address=a) for a in self.peers])


def own_demand(node: Node) -> pb.DemandReport:
    d = node.gate.scheduler.demand(node.gate.now())
    return pb.DemandReport(daemon_id=node.daemon_id, time_ns=time.time_ns(),
                           jobs=[pb.JobDemand(job_id=j, tier=t, demand_bps=v)
                                 for (j, t), v in d.items()])


class Replicator:
    """Pushes this daemon's policies to its peers: at once on change, and every second."""

    def __init__(self, node: Node, peers: list[str], period: float = 1.0) -> None:
        self.node = node
        self.peers = peers
        self.period = period
        self.changed = asyncio.Event()
        self._channels = {a: grpc.aio.insecure_channel(a) for a in peers}
        self._stubs = {a: rpc.PeerServiceStub(c) for a, c in self._channels.items()}

    def sync_message(self) -> pb.PolicySync:
        node = self.node
        return pb.PolicySync(
            origin=node.daemon_id,
            policies=[policy_to_pb(p) for p in node.policies.all()],
            deleted=[pb.Tombstone(selector=policy_to_pb(Policy(sel)).selector, tier=tier,
                                  deleted_ns=ns) for (sel, tier), ns in node.tombstones.items()])

    async def push(self) -> None:
        msg = self.sync_message()

        async def one(addr: str) -> None:
            try:
                await self._stubs[addr].PushPolicies(msg, timeout=0.5)
            except grpc.aio.AioRpcError as e:
                log.debug("push to %s failed: %s", addr, e.code().name)
        await asyncio.gather(*(one(a) for a in self.peers))

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.changed.wait(), self.period)
            except TimeoutError:
                pass
            self.changed.clear()
            if self.peers:
                await self.push()

    async def close(self) -> None:
        for c in self._channels.values():
            await c.close()
