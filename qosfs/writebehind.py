"""Per-file-handle write-behind: a program's writes are pipelined to the daemons.

A daemon round trip costs milliseconds here, so writing through one request at a time
caps a sequential writer far below the tier. Instead each handle keeps up to ``window``
bytes in flight: a write returns once its data is handed over, and blocks while the
window is full, so the program is paced by its own job's token bucket, in its own
context (the kernel's writeback cache would pace every job on the mount alike). Small
contiguous writes are merged up to ``merge`` bytes, never across a stripe. The first
failure is kept and given to the program at its next write, fsync or close, as the
page cache does; fsync and close return only once everything before them is on the tier.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from qosfs.errors import RemoteError

log = logging.getLogger(__name__)

# Sends ``data`` at ``offset`` (cut at stripes by the caller's function); returns bytes.
Sender = Callable[[int, bytes], Awaitable[int]]


class WriteBehind:
    def __init__(self, send: Sender, stripe_size: int, window: int, merge: int) -> None:
        self._send, self.stripe, self.window, self.merge = send, stripe_size, window, merge
        # (task, offset, length), oldest first; a task leaves only once it finished.
        self._tasks: deque[tuple[asyncio.Task[int], int, int]] = deque()
        self._in_flight = 0
        self._buf = bytearray()
        self._buf_off = 0
        self.error: RemoteError | None = None

    @property
    def pending(self) -> bool:
        return bool(self._buf or self._tasks)

    def _raise_error(self) -> None:
        if self.error is not None:
            e, self.error = self.error, None      # reported once, like a page cache error
            raise e

    async def write(self, offset: int, data: bytes) -> None:
        self._raise_error()
        if self._buf and offset == self._buf_off + len(self._buf) \
                and len(self._buf) + len(data) <= self.merge \
                and (offset + len(data) - 1) // self.stripe == self._buf_off // self.stripe:
            self._buf += data
            if len(self._buf) >= self.merge or (offset + len(data)) % self.stripe == 0:
                await self._dispatch_buffer()
        else:
            await self._dispatch_buffer()
            if len(data) < self.merge and (offset + len(data)) % self.stripe != 0 \
                    and offset // self.stripe == (offset + len(data) - 1) // self.stripe:
                self._buf, self._buf_off = bytearray(data), offset
            else:
                await self._dispatch(offset, data)
        self._raise_error()

    async def _dispatch_buffer(self) -> None:
        if self._buf:
            data, off = bytes(self._buf), self._buf_off
            self._buf = bytearray()
            await self._dispatch(off, data)

    async def _dispatch(self, offset: int, data: bytes) -> None:
        # An earlier write to the same bytes must land first: the daemon may run two
        # requests in any order.
        end = offset + len(data)
        overlap = [t for t, o, n in self._tasks if o < end and offset < o + n]
        if overlap:
            await asyncio.wait(overlap)
        task = asyncio.ensure_future(self._send(offset, data))
        self._tasks.append((task, offset, len(data)))
        self._in_flight += len(data)
        while self._in_flight > self.window and self._tasks:
            await self._reap_oldest()

    async def _reap_oldest(self) -> None:
        task, _, n = self._tasks[0]
        await asyncio.wait([task])
        # Another drain may have reaped it meanwhile; count and keep its error once.
        if self._tasks and self._tasks[0][0] is task:
            self._tasks.popleft()
            self._in_flight -= n
            exc = None if task.cancelled() else task.exception()
            if exc is not None and self.error is None:
                self.error = exc if isinstance(exc, RemoteError) else \
                    RemoteError(errno.EIO, f"write failed: {exc!r}")

    async def drain(self, report: bool = True) -> None:
        """Send what is merged, wait for everything in flight; raise the first failure
        (when ``report``: a reader draining a writer's data leaves the error to it)."""
        await self._dispatch_buffer()
        while self._tasks:
            await self._reap_oldest()
        if report:
            self._raise_error()
