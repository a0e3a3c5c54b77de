"""A directory of 30,000 long names was larger than a gRPC message: it could not be
listed at all. Readdir goes in pages now, and the clients (qosfs too) follow them."""

from __future__ import annotations

import asyncio
import os

from qosfs.remote import TierClient
from tokenbucket_daemon.client import DataClient
from tokenbucket_daemon.proto import qos_pb2 as pb
from tokenbucket_daemon.tls import from_env

N = 30_000


def names() -> list[str]:
    return [f"{i:06d}-" + "n" * 200 for i in range(N)]


def test_a_huge_directory_is_listed_in_bounded_pages(daemon):
    big = daemon.base / "ram" / "big"
    big.mkdir()
    for name in names():
        os.close(os.open(big / name, os.O_CREAT | os.O_WRONLY, 0o644))
    first = daemon.data.Readdir(pb.ReaddirRequest(tier="ram", path="big"), timeout=60)
    assert first.next_page_token and first.ByteSize() <= 2 << 20
    assert len(first.entries) < N
    listed = DataClient(daemon.address).readdir("ram", "big")
    assert [n for n, _, _ in listed] == names()
    small = daemon.data.Readdir(pb.ReaddirRequest(tier="ram", path="big", max_entries=3,
                                                  page_token=first.entries[-1].name),
                                timeout=60)
    assert [e.name for e in small.entries] == names()[len(first.entries):][:3]

    async def through_qosfs() -> list[str]:
        client = TierClient("ram", [daemon.address], tls=from_env())
        try:
            return [e.name for e in await client.readdir(0, "big", None)]
        finally:
            await client.close()
    assert asyncio.run(through_qosfs()) == names()
