"""The thread pool that runs tier I/O off the event loop, cheaply.

``loop.run_in_executor`` wakes the event loop once per call (a write to its
self-pipe) and goes through two futures. At 64 KiB, a tmpfs ``pwrite`` takes
~25 us and that hand-off costs more than the write, so the daemon served ~40%
less than it did with writes inline. Here the workers collect finished calls
and wake the loop once for all that finished meanwhile; the loop then resolves
them in one go. Blocking calls still never run on the event loop, so a slow
tier (a parallel file system stalling) cannot freeze the daemon.

Each worker notes when its current call began, so the daemon can tell when every
worker is stuck (:meth:`IoPool.stalled`): then it refuses work that needs them and its
health says NOT_SERVING, instead of letting every caller time out.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

_Item = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class IoPool:
    def __init__(self, workers: int = 4, name: str = "tier-io") -> None:
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._lock = threading.Lock()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # When each worker's current call began (None: idle); written by that worker only.
        self._busy_since: list[float | None] = [None] * workers
        self._threads = [threading.Thread(target=self._work, args=(i,), name=f"{name}_{i}",
                                          daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        self._loop = loop
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, fut))
        return await fut

    def stalled(self, seconds: float, now: float | None = None) -> bool:
        """True when every worker has been in its current call for ``seconds`` or more."""
        now = time.monotonic() if now is None else now
        return all(t is not None and now - t >= seconds for t in self._busy_since)

    def oldest_call(self, now: float | None = None) -> float:
        """Seconds the longest-running current call has run (0 when all are idle)."""
        now = time.monotonic() if now is None else now
        return max((now - t for t in self._busy_since if t is not None), default=0.0)

    def shutdown(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()

    def _work(self, index: int) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, fut = item
            self._busy_since[index] = time.monotonic()
            try:
                result, exc = fn(*args), None
            except BaseException as e:      # handed to the awaiting coroutine
                result, exc = None, e
            self._busy_since[index] = None
            with self._lock:
                self._done.append((fut, result, exc))
                wake = not self._wake_pending
                self._wake_pending = True
            if wake:
                loop = self._loop
                assert loop is not None
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:          # the loop closed while we worked
                    log.debug("I/O finished after the event loop closed")

    def _deliver(self) -> None:
        with self._lock:
            done, self._done = self._done, []
            self._wake_pending = False
        for fut, result, exc in done:
            if fut.cancelled():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)
