"""The asyncio shell around the sans-I/O scheduler.

``async with gate.admit(tag, tier, op, size):`` waits until the scheduler
releases the request, then holds one of the K in-flight slots until the block
ends. Time is the event loop's monotonic clock. With QoS off the gate admits at
once (the same server, scheduler bypassed: the overhead baseline).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tokenbucket_daemon.core.policy import PolicyTable, Tag
from tokenbucket_daemon.core.scheduler import Request, Scheduler, SchedulerConfig

log = logging.getLogger(__name__)


class Gate:
    def __init__(self, config: SchedulerConfig, policies: PolicyTable, enabled: bool = True):
        self.scheduler = Scheduler(config, policies)
        self.enabled = enabled
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @staticmethod
    def now() -> float:
        """The scheduler's clock, readable from any thread (metrics scrapes run in their
        own); timers are set relative to it, so it need not be the loop's clock."""
        return time.monotonic()

    @asynccontextmanager
    async def admit(self, tag: Tag, tier: str, op: str, size: int) -> AsyncIterator[None]:
        if not self.enabled:
            yield
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        req = self.scheduler.submit(Request(tag, tier, op, size, payload=fut), self.now())
        self._pump()
        try:
            await fut
        except asyncio.CancelledError:
            # The caller went away: drop it from its queue, or give its slot back.
            if not self.scheduler.cancel(req, self.now()):
                self.scheduler.complete(req, self.now())
                self._pump()
            raise
        try:
            yield
        finally:
            self.scheduler.complete(req, self.now())
            self._pump()

    def kick(self) -> None:
        """Re-run dispatch now (after a policy change)."""
        self._pump()

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        decision = self.scheduler.poll(self.now())
        for req in decision.dispatch:
            fut = req.payload
            if not fut.done():
                fut.set_result(None)
        wake = decision.wake_at
        if wake is not None and (self._timer_at is None or wake < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake
            self._timer = loop.call_later(max(0.0, wake - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self._pump()
