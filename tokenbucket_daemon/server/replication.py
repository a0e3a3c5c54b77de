"""The shell around ``core.replica``: policies from etcd (or, alone, SQLite) into force.

``PolicySync`` is what AdminService writes policies through (``PolicyWriter``) and what
keeps the daemon's policy table equal to the group's:

* with etcd, an admin call on any daemon is written to etcd by that daemon (acting for
  the administrator) and answered once the daemon's own watch has seen it, so the next
  ListPolicies there shows it; every other daemon applies it from its watch. When etcd
  does not confirm the write the call fails with UNAVAILABLE (and, unless the write
  reached etcd after all, nothing changes anywhere).
  ``run`` reads the prefix, follows the watch, and starts over (a fresh read) whenever
  the watch ends: etcd unreachable, the member lost its leader, or a compaction.
* alone (no ``[etcd]``), an admin change is applied and persisted at once, as before.

Either way every applied change is also written to SQLite with the revision, and the
SQLite copy is what a daemon serves from the moment it starts until etcd answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol, TypeVar

import grpc

from tokenbucket_daemon.core.policy import Kind, Policy, Selector
from tokenbucket_daemon.core.replica import (
    Apply,
    Deleted,
    Event,
    Key,
    LocalDelete,
    LocalPut,
    Log,
    Persist,
    Put,
    Remove,
    Replica,
    Restored,
    Snapshot,
    Unreachable,
    job_prefix,
    key_from_etcd,
    policy_from_etcd,
    policy_key,
    value_of,
)
from tokenbucket_daemon.errors import InvalidArgument, NotFound
from tokenbucket_daemon.server.etcdstore import (
    Change,
    EtcdClient,
    KeyValue,
    StoreUnavailable,
    WatchLost,
)
from tokenbucket_daemon.server.store import PolicyStore

if TYPE_CHECKING:
    from tokenbucket_daemon.server.service import Node

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long an admin call waits for its own write to come back through the watch. The
# write is in etcd either way; past this the reply does not wait for the local copy.
SEEN_TIMEOUT = 2.0
RETRY_MAX = 2.0       # seconds between attempts to reach etcd, at most


class PolicyWriter(Protocol):
    """Where AdminService sends policy changes."""

    async def put(self, p: Policy) -> Policy:
        """Store ``p`` (validated, with updated_ns and origin set) for the group."""

    async def delete(self, selector: Selector, tier: str) -> bool:
        """Delete one policy; whether it existed."""

    async def release(self, job: str) -> int:
        """Delete every policy of ``job``; how many there were."""


class PolicySync:
    def __init__(self, node: Node, store: PolicyStore, etcd: EtcdClient | None = None,
                 prefix: str = "/qos/v1/") -> None:
        self.node = node
        self.store = store
        self.etcd = etcd
        self.prefix = prefix
        self.replica = Replica()
        self._seen = asyncio.Event()     # set (and replaced) whenever the revision moves

    # ------------------------------------------------------------ carrying out

    def handle(self, *events: Event) -> None:
        """Feed events to the replica and carry out its instructions."""
        changed = False
        for ins in self.replica.handle(*events):
            if isinstance(ins, Apply):
                try:
                    self.node.policies.put(ins.policy)
                except InvalidArgument as e:
                    # A copy written by an older version may hold what this one refuses.
                    log.warning("%s: policy %s not enforced: %s", self.node.daemon_id,
                                ins.policy.selector, e)
                    continue
                changed = True
            elif isinstance(ins, Remove):
                try:
                    self.node.policies.delete(*ins.key)
                except NotFound:
                    pass
                changed = True
            elif isinstance(ins, Persist):
                self.store.write(ins.upserts, ins.deletes, ins.revision)
            elif isinstance(ins, Log):
                log.log(logging.WARNING if ins.level == "warning" else logging.INFO,
                        "%s: %s", self.node.daemon_id, ins.message)
        if changed:
            gate = self.node.gate
            gate.scheduler.set_policies(self.node.policies, gate.now())
            gate.kick()
        self._seen.set()
        self._seen = asyncio.Event()

    def restore(self) -> None:
        """Serve the SQLite copy (at start, before etcd answered)."""
        policies, revision = self.store.load()
        self.handle(Restored(tuple(policies), revision))

    # ------------------------------------------------------------ admin writes

    async def put(self, p: Policy) -> Policy:
        if self.etcd is None:
            self.handle(LocalPut(p))
            return p
        rev = await self._write(self.etcd.put(policy_key(self.prefix, p.key), value_of(p)))
        await self._until(rev)
        return p

    async def delete(self, selector: Selector, tier: str) -> bool:
        key: Key = (selector, tier)
        if self.etcd is None:
            there = key in self.replica.policies
            self.handle(LocalDelete(key))
            return there
        rev, n = await self._write(self.etcd.delete(policy_key(self.prefix, key)))
        await self._until(rev)
        return n > 0

    async def release(self, job: str) -> int:
        if self.etcd is None:
            keys = [k for k in self.replica.policies if k[0] == Selector(Kind.JOB, job)]
            self.handle(*(LocalDelete(k) for k in keys))
            return len(keys)
        # One delete of the job's prefix: one revision, every tier's policy at once.
        rev, n = await self._write(self.etcd.delete(job_prefix(self.prefix, job),
                                                    prefix=True))
        await self._until(rev)
        return n

    async def _write(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as e:
            # UNAVAILABLE: not made. DEADLINE_EXCEEDED: maybe made; the watch will say.
            raise StoreUnavailable(
                "the group's policy store (etcd) did not confirm the change",
                f"{e.code().name}: {e.details()}",
                "list the policies and retry when etcd is reachable") from None

    async def _until(self, revision: int) -> None:
        """Wait until the watch has brought ``revision`` here (at most SEEN_TIMEOUT)."""
        end = time.monotonic() + SEEN_TIMEOUT
        while self.replica.revision < revision:
            left = end - time.monotonic()
            if left <= 0:
                log.info("revision %d not seen through the watch in %.1f s", revision,
                         SEEN_TIMEOUT)
                return
            try:
                await asyncio.wait_for(self._seen.wait(), left)
            except TimeoutError:
                pass

    # ------------------------------------------------------------ following etcd

    def _decode(self, key: str, value: bytes | None, revision: int) -> Event | None:
        try:
            k = key_from_etcd(self.prefix, key)
        except InvalidArgument as e:
            log.warning("%s: ignoring etcd key %s", self.node.daemon_id, e)
            return None
        if value is None:
            return Deleted(revision, k)
        try:
            return Put(revision, policy_from_etcd(k, value))
        except InvalidArgument as e:
            # Every daemon sees the same bytes and drops the key alike.
            log.warning("%s: etcd key %s holds no valid policy (%s): not enforced",
                        self.node.daemon_id, key, e)
            return Deleted(revision, k)

    def _snapshot(self, revision: int, kvs: list[KeyValue]) -> Snapshot:
        events = [self._decode(kv.key, kv.value, kv.mod_revision) for kv in kvs]
        return Snapshot(revision, tuple(e.policy for e in events if isinstance(e, Put)))

    def _changes(self, changes: list[Change]) -> list[Event]:
        out = [self._decode(c.key, c.value, c.revision) for c in changes]
        return [e for e in out if e is not None]

    async def run(self) -> None:
        """Follow etcd until cancelled (returns at once for a lone daemon)."""
        if self.etcd is None:
            return
        delay = 0.2
        watched = self.prefix + "policies/"
        while True:
            try:
                revision, kvs = await self.etcd.get_prefix(watched)
                self.handle(self._snapshot(revision, kvs))
                delay = 0.2
                async for changes in self.etcd.watch(watched, revision + 1):
                    self.handle(*self._changes(changes))
            except WatchLost as e:
                log.info("%s: etcd watch ended (%s); reading the policies again",
                         self.node.daemon_id, e)
                await asyncio.sleep(0.1)
            except grpc.aio.AioRpcError as e:
                self.handle(Unreachable(time.monotonic(), f"{e.code().name}: {e.details()}"))
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX)

    async def close(self) -> None:
        if self.etcd is not None:
            await self.etcd.close()
