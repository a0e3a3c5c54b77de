"""The group's policy store in etcd: a thin client of etcd's gRPC API (v3).

Only what the daemons need: read a prefix at one revision, put, delete (a key or a
prefix) and watch a prefix from a revision. Every call goes over mutual TLS with this
daemon's etcd certificate; etcd (with ``--client-cert-auth`` and authentication on)
takes the certificate's common name as the etcd user, whose role allows read-write on
the policy prefix only. The stubs are etcd's own API as the ``aetcd`` package ships it
generated; its client is not used because it speaks plaintext only.

The channel spreads calls over every member (``round_robin``) and pings each member
every ``keepalive`` seconds, so a member that stops answering (killed, SIGSTOPped,
partitioned) is dropped within about two pings and calls go to the others; a watch on it
fails and is started again elsewhere. ``hasleader`` makes a member that lost its quorum
end its watches instead of going silent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aetcd import rpc as etcd

from tokenbucket_daemon.errors import InvalidArgument, Unavailable
from tokenbucket_daemon.server.config import EtcdConfig


class StoreUnavailable(Unavailable):
    """The group's policy store (etcd) cannot take a change now."""


class WatchLost(Exception):
    """etcd ended a watch (compacted past it, or the member lost its leader)."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int


@dataclass(frozen=True)
class Change:
    """One event of a watch: a put (``value`` set) or a delete (``value`` None)."""

    key: str
    value: bytes | None
    revision: int


def range_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (etcd's range end)."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\0"
    b[-1] += 1
    return bytes(b)


def _target(endpoints: list[str]) -> str:
    """A gRPC target naming every member by address (names resolved once, here)."""
    addrs = []
    for ep in endpoints:
        host, _, port = ep.rpartition(":")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = ipaddress.ip_address(socket.getaddrinfo(host, int(port),
                                                         type=socket.SOCK_STREAM)[0][4][0])
        addrs.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    scheme = "ipv6" if all(a.startswith("[") for a in addrs) else "ipv4"
    return f"{scheme}:{','.join(addrs)}"


class EtcdClient:
    def __init__(self, cfg: EtcdConfig) -> None:
        self.cfg = cfg
        pem = []
        for what, path in (("CA", cfg.ca), ("key", cfg.key), ("certificate", cfg.cert)):
            try:
                pem.append(path.read_bytes())
            except OSError as e:
                raise InvalidArgument(f"cannot read the [etcd] {what} file ({e.strerror})",
                                      str(path), "check the path and its owner") from None
        creds = grpc.ssl_channel_credentials(*pem)
        ms = int(cfg.keepalive * 1000)
        name = cfg.server_name or cfg.endpoints[0].rpartition(":")[0].strip("[]")
        self._chan = grpc.aio.secure_channel(_target(cfg.endpoints), creds, options=[
            ("grpc.ssl_target_name_override", name),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_time_ms", ms), ("grpc.keepalive_timeout_ms", ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # A member that is back is tried again within a second or two, not the
            # default's 20 s and more.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 1000),
            ("grpc.max_reconnect_backoff_ms", 2000)])
        self._kv = etcd.KVStub(self._chan)
        self._watch = etcd.WatchStub(self._chan)

    async def get_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` and the revision it was read at (linearizable)."""
        p = prefix.encode()
        r = await self._kv.Range(etcd.RangeRequest(key=p, range_end=range_end(p)),
                                 timeout=self.cfg.timeout)
        return r.header.revision, [KeyValue(kv.key.decode("utf-8", "replace"), kv.value,
                                            kv.mod_revision) for kv in r.kvs]

    async def put(self, key: str, value: str) -> int:
        """Write ``key``; the revision of the write. Tried twice: a member that hangs
        keeps its place in the rotation until its pings time out, and writing the same
        value again is harmless."""
        req = etcd.PutRequest(key=key.encode(), value=value.encode())
        try:
            r = await self._kv.Put(req, timeout=self.cfg.timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() not in (grpc.StatusCode.UNAVAILABLE,
                                grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            r = await self._kv.Put(req, timeout=self.cfg.timeout)
        return int(r.header.revision)

    async def delete(self, key: str, prefix: bool = False) -> tuple[int, int]:
        """Delete ``key`` (or every key under it); (revision, keys deleted)."""
        k = key.encode()
        r = await self._kv.DeleteRange(etcd.DeleteRangeRequest(
            key=k, range_end=range_end(k) if prefix else b""), timeout=self.cfg.timeout)
        return int(r.header.revision), int(r.deleted)

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[list[Change]]:
        """The changes under ``prefix`` from ``start_revision`` on, one list per etcd
        response, in revision order; raises WatchLost or AioRpcError when it ends."""
        p = prefix.encode()
        done = asyncio.Event()

        async def requests() -> AsyncIterator[etcd.WatchRequest]:
            yield etcd.WatchRequest(create_request=etcd.WatchCreateRequest(
                key=p, range_end=range_end(p), start_revision=start_revision))
            await done.wait()          # keep the stream open until the caller stops

        call = self._watch.Watch(requests(), metadata=(("hasleader", "true"),))
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise WatchLost(f"compacted past revision {start_revision} "
                                    f"(now {resp.compact_revision})")
                if resp.canceled:
                    raise WatchLost(resp.cancel_reason or "canceled by etcd")
                if resp.events:
                    yield [Change(e.kv.key.decode("utf-8", "replace"),
                                  None if e.type == etcd.Event.DELETE else e.kv.value,
                                  e.kv.mod_revision) for e in resp.events]
            raise WatchLost("etcd closed the watch")
        finally:
            done.set()
            call.cancel()

    async def close(self) -> None:
        await self._chan.close()
