"""The asyncio shell around the sans-I/O scheduler.

``async with gate.admit(tag, tier, op, size):`` waits until the scheduler
releases the request, then holds one of the K in-flight slots until the block
ends. Time is the event loop's monotonic clock. With enforcement off the gate admits
at once (the same server, scheduler bypassed: the overhead baseline); it can be
switched at run time (``set_enabled``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from tokenbucket_daemon.core.policy import PolicyTable, Tag
from tokenbucket_daemon.core.scheduler import Request, Scheduler, SchedulerConfig

log = logging.getLogger(__name__)


class Gate:
    def __init__(self, config: SchedulerConfig, policies: PolicyTable, enabled: bool = True,
                 tier_bandwidth: Mapping[str, float] | None = None) -> None:
        self.scheduler = Scheduler(config, policies)
        for tier, bps in (tier_bandwidth or {}).items():
            self.scheduler.set_tier_bandwidth(tier, bps, self.now())
        self.enabled = enabled
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    @staticmethod
    def now() -> float:
        """The scheduler's clock, readable from any thread (metrics scrapes run in their
        own); timers are set relative to it, so it need not be the loop's clock."""
        return time.monotonic()

    async def acquire(self, tag: Tag, tier: str, op: str, size: int) -> Request | None:
        """Wait until the scheduler releases this request; the caller then holds one of
        the K slots until ``release``. A request the scheduler can release at once is
        not given a future at all: at 64 KiB that bookkeeping is a visible share of the
        daemon's CPU."""
        if not self.enabled:
            self.scheduler.account(tag, tier, op, size, time.monotonic())
            return None
        req = Request(tag, tier, op, size)
        if self.scheduler.submit_now(req, time.monotonic()) or self._pump(req):
            return req
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        req.payload = fut
        try:
            await fut
        except asyncio.CancelledError:
            # The caller went away: drop it from its queue, or give its slot back.
            if not self.scheduler.cancel(req, self.now()):
                self.release(req)
            raise
        return req

    def release(self, req: Request | None) -> None:
        if req is not None and self.scheduler.complete(req, time.monotonic()):
            self._pump()

    @asynccontextmanager
    async def admit(self, tag: Tag, tier: str, op: str, size: int) -> AsyncIterator[None]:
        req = await self.acquire(tag, tier, op, size)
        try:
            yield
        finally:
            self.release(req)

    def set_enabled(self, enabled: bool) -> int:
        """Switch enforcement; switching it off releases every waiting request at once
        (they still give their slots back through ``release``). Returns how many."""
        self.enabled = enabled
        if enabled:
            return 0
        freed = self.scheduler.release_all(self.now())
        for req in freed:
            if req.payload is not None and not req.payload.done():
                req.payload.set_result(None)
        return len(freed)

    def kick(self) -> None:
        """Re-run dispatch now (after a policy change)."""
        self._pump()

    def _pump(self, mine: Request | None = None) -> bool:
        """Dispatch what the scheduler releases; True when that includes ``mine`` (a
        request submitted just now, still without a future)."""
        decision = self.scheduler.poll(self.now())
        got = False
        for req in decision.dispatch:
            fut = req.payload
            if req is mine:
                got = True
            elif fut is not None and not fut.done():
                fut.set_result(None)
        wake = decision.wake_at
        if wake is not None and (self._timer_at is None or wake < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = wake
            self._timer = asyncio.get_running_loop().call_later(max(0.0, wake - self.now()),
                                                                self._on_timer)
        return got

    def _on_timer(self) -> None:
        self._timer, self._timer_at = None, None
        self._pump()
