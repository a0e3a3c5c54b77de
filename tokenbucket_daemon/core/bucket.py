"""A byte-weighted token bucket on caller-supplied time.

Tokens are bytes: a request costs its size. The bucket fills at ``rate`` bytes per
second up to ``depth``. Fractional tokens are kept (a float), so no rounding ever
leaks bandwidth. A request larger than the bucket can never find ``cost`` tokens;
rather than starve it, it is admitted as soon as the bucket is full and leaves the
bucket in debt (negative tokens), which later requests repay: the long-run rate
stays exact.

A request is dispatched a little after its eligible time (timers are coarse). Tokens
earned in that delay must not be lost to the depth cap, or a backlogged class whose
requests are as large as the bucket (1 MiB requests, 1 MiB depth) falls short of its
rate by the delay every time; on a busy 2-core node the delays reach tens of
milliseconds. So while a request waits, the bucket may fill beyond its depth by one
request or ``LATE_CREDIT`` seconds of its rate, whichever is more; idle time still fills
it to ``depth`` only. A bucket made with ``late_credit=False`` banks nothing beyond its
depth: a tier's capacity (see the scheduler), whose burst must stay a bound.
"""

from __future__ import annotations

import math

UNLIMITED = math.inf
LATE_CREDIT = 0.1       # seconds of rate a waiting request may bank beyond the depth


class TokenBucket:
    def __init__(self, rate: float, depth: float, now: float, late_credit: bool = True) -> None:
        self.rate = rate
        self.depth = depth
        self.tokens = depth
        self._t = now
        self._late = late_credit
        # An attribute, not a property: it is read several times per request.
        self.limited = rate != UNLIMITED

    def refill(self, now: float, waiting: float = 0.0) -> None:
        """Add the tokens earned until ``now``, up to the depth, or up to the depth plus
        ``waiting`` bytes while a request of that size waits."""
        if now > self._t:
            if self.limited:
                self.tokens = min(self.depth + waiting, self.tokens + (now - self._t) * self.rate)
            self._t = now

    def eligible_at(self, cost: float, now: float, since: float | None = None) -> float:
        """Earliest time at which a request of ``cost`` bytes, waiting since ``since``
        (default: just arrived), may go."""
        if not self.limited:
            return now
        if since is not None:
            self.refill(min(since, now))
        self.refill(now, self._credit(cost))
        need = min(cost, self.depth)
        if self.tokens >= need:
            return now
        if self.rate <= 0:
            return math.inf
        return now + (need - self.tokens) / self.rate

    def take(self, cost: float, now: float) -> None:
        if self.limited:      # an unlimited bucket keeps no tokens (reconfigure fills it)
            self.refill(now, self._credit(cost))
            self.tokens -= cost

    def _credit(self, cost: float) -> float:
        return max(cost, self.rate * LATE_CREDIT) if self.limited and self._late else 0.0

    def reconfigure(self, rate: float, depth: float, now: float) -> None:
        """Change rate and depth; the tokens earned so far at the old rate are kept
        (capped at the new depth), so the change takes effect from ``now`` on."""
        self.refill(now)
        was_unlimited = not self.limited
        self.rate, self.depth = rate, depth
        self.limited = rate != UNLIMITED
        self.tokens = depth if was_unlimited else min(self.tokens, depth)
