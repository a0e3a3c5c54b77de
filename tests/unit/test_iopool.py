"""The daemon's I/O thread pool: results, exceptions and cancellation reach the right
awaiting coroutine, and calls really run off the event loop's thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tokenbucket_daemon.server.iopool import IoPool


@pytest.fixture()
def pool():
    p = IoPool(3)
    yield p
    p.shutdown()


def test_results_match_their_calls_and_run_off_the_loop(pool):
    loop_thread = threading.get_ident()

    def work(i: int) -> tuple[int, int]:
        time.sleep(0.001 * (i % 3))     # finish out of order
        return i * i, threading.get_ident()

    async def main():
        return await asyncio.gather(*(pool.run(work, i) for i in range(50)))

    out = asyncio.run(main())
    assert [r for r, _ in out] == [i * i for i in range(50)]
    assert loop_thread not in {t for _, t in out}


def test_exception_reaches_the_caller(pool):
    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    async def main():
        ok = pool.run(int, "7")
        with pytest.raises(ValueError, match="bad 3"):
            await pool.run(boom, 3)
        return await ok

    assert asyncio.run(main()) == 7


def test_cancelled_caller_does_not_break_delivery(pool):
    gate = threading.Event()

    async def main():
        slow = asyncio.ensure_future(pool.run(gate.wait, 5))
        await asyncio.sleep(0.01)
        slow.cancel()
        gate.set()
        # The cancelled call's completion is dropped; later calls still complete.
        return await asyncio.gather(*(pool.run(abs, -i) for i in range(5)))

    assert asyncio.run(main()) == [0, 1, 2, 3, 4]
