"""Write-behind of one file handle against a made-up daemon whose replies we release."""

from __future__ import annotations

import asyncio
import errno

import pytest

from qosfs.errors import RemoteError
from qosfs.writebehind import WriteBehind

K = 1024


class Daemon:
    """Records sends; they complete once ``open`` is set, send ``i`` failing with
    ``fail[i]`` if given."""

    def __init__(self, fail: dict[int, RemoteError] | None = None, held: bool = False) -> None:
        self.sent: list[tuple[int, bytes]] = []
        self.fail = fail or {}
        self.open = asyncio.Event()
        if not held:
            self.open.set()

    async def send(self, offset: int, data: bytes) -> int:
        i = len(self.sent)
        self.sent.append((offset, data))
        await self.open.wait()
        if i in self.fail:
            raise self.fail[i]
        return len(data)


def sizes(d: Daemon) -> list[tuple[int, int]]:
    return [(off, len(data)) for off, data in d.sent]


def test_small_contiguous_writes_merge_up_to_the_merge_size() -> None:
    async def go() -> Daemon:
        d = Daemon()
        w = WriteBehind(d.send, stripe_size=64 * K, window=1 << 20, merge=16 * K)
        for i in range(10):                       # 40 KiB in 4 KiB writes
            await w.write(i * 4 * K, b"x" * (4 * K))
        await w.write(100 * K, b"y")              # not contiguous: the buffer goes first
        await w.drain()
        return d
    assert sizes(asyncio.run(go())) == [(0, 16 * K), (16 * K, 16 * K), (32 * K, 8 * K),
                                        (100 * K, 1)]


def test_merging_never_crosses_a_stripe_and_keeps_every_byte() -> None:
    async def go() -> Daemon:
        d = Daemon()
        w = WriteBehind(d.send, stripe_size=8 * K, window=1 << 20, merge=64 * K)
        for i in range(4):                        # 0..12 KiB, across the 8 KiB line
            await w.write(i * 3 * K, bytes([i]) * (3 * K))
        await w.drain()
        return d
    d = asyncio.run(go())
    # 0-3 and 3-6 KiB merge; 6-9 KiB crosses the line, so it goes alone (the sender
    # cuts it per stripe) and the merge restarts after it.
    assert sizes(d) == [(0, 6 * K), (6 * K, 3 * K), (9 * K, 3 * K)]
    assert b"".join(data for _, data in d.sent) == b"".join(bytes([i]) * (3 * K)
                                                           for i in range(4))


def test_a_full_window_blocks_the_writer_until_the_oldest_reply() -> None:
    async def go() -> None:
        d = Daemon(held=True)
        w = WriteBehind(d.send, stripe_size=1 << 20, window=2 * 64 * K, merge=4 * K)
        await w.write(0, b"a" * (64 * K))
        await w.write(64 * K, b"b" * (64 * K))
        third = asyncio.ensure_future(w.write(128 * K, b"c" * (64 * K)))
        await asyncio.sleep(0.01)
        assert len(d.sent) == 3 and not third.done()     # sent, but the writer waits
        d.open.set()
        await asyncio.wait_for(third, 1)
        await w.drain()
        assert not w.pending
    asyncio.run(go())


def test_the_first_failure_reaches_the_next_write_then_drain_once_each() -> None:
    async def go() -> None:
        d = Daemon(fail={0: RemoteError(errno.EIO, "daemon gone"),
                         2: RemoteError(errno.ENOSPC, "full")})
        w = WriteBehind(d.send, stripe_size=1 << 20, window=64 * K, merge=4 * K)
        await w.write(0, b"a" * (64 * K))
        with pytest.raises(RemoteError) as e:
            await w.write(64 * K, b"b" * (64 * K))
        assert e.value.errno == errno.EIO
        await w.drain()              # reported once, like a page cache error
        assert not w.pending
        await w.write(128 * K, b"c" * (64 * K))
        with pytest.raises(RemoteError) as e:
            await w.drain()
        assert e.value.errno == errno.ENOSPC
    asyncio.run(go())


def test_a_reader_draining_leaves_the_error_to_the_writer() -> None:
    async def go() -> None:
        d = Daemon(fail={0: RemoteError(errno.EIO, "x")})
        w = WriteBehind(d.send, stripe_size=1 << 20, window=1 << 20, merge=4 * K)
        await w.write(0, b"a" * (64 * K))
        await w.drain(report=False)
        assert not w.pending
        with pytest.raises(RemoteError):
            await w.drain()
    asyncio.run(go())


def test_a_write_over_bytes_in_flight_waits_for_the_earlier_one() -> None:
    async def go() -> None:
        d = Daemon(held=True)
        w = WriteBehind(d.send, stripe_size=1 << 20, window=1 << 20, merge=4 * K)
        await w.write(0, b"a" * (64 * K))
        second = asyncio.ensure_future(w.write(32 * K, b"b" * (64 * K)))   # overlaps
        third = asyncio.ensure_future(w.write(512 * K, b"c" * (64 * K)))   # does not
        await asyncio.sleep(0.01)
        assert [off for off, _ in d.sent] == [0, 512 * K]
        d.open.set()
        await asyncio.wait_for(asyncio.gather(second, third), 1)
        await w.drain()
        assert [off for off, _ in d.sent] == [0, 512 * K, 32 * K]
    asyncio.run(go())


def test_two_drains_at_once_both_wait_for_everything() -> None:
    async def go() -> None:
        d = Daemon(held=True)
        w = WriteBehind(d.send, stripe_size=1 << 20, window=1 << 20, merge=4 * K)
        await w.write(0, b"a" * (64 * K))
        await w.write(64 * K, b"b" * (64 * K))
        reader = asyncio.ensure_future(w.drain(report=False))
        await asyncio.sleep(0)
        closer = asyncio.ensure_future(w.drain())
        await asyncio.sleep(0.01)
        assert not reader.done() and not closer.done()
        d.open.set()
        await asyncio.wait_for(asyncio.gather(reader, closer), 1)
        assert not w.pending
    asyncio.run(go())
