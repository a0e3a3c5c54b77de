"""A byte-weighted token bucket on caller-supplied time.

Tokens are bytes: a request costs its size. The bucket fills at ``rate`` bytes per
second up to ``depth``. Fractional tokens are kept (a float), so no rounding ever
leaks bandwidth. A request larger than the bucket can never find ``cost`` tokens;
rather than starve it, it is admitted as soon as the bucket is full and leaves the
bucket in debt (negative tokens), which later requests repay: the long-run rate
stays exact.
"""

from __future__ import annotations

import math

UNLIMITED = math.inf


class TokenBucket:
    def __init__(self, rate: float, depth: float, now: float) -> None:
        self.rate = rate
        self.depth = depth
        self.tokens = depth
        self._t = now

    @property
    def limited(self) -> bool:
        return self.rate != UNLIMITED

    def refill(self, now: float) -> None:
        if now > self._t:
            if self.limited:
                self.tokens = min(self.depth, self.tokens + (now - self._t) * self.rate)
            self._t = now

    def eligible_at(self, cost: float, now: float) -> float:
        """Earliest time at which a request of ``cost`` bytes may go."""
        if not self.limited:
            return now
        self.refill(now)
        need = min(cost, self.depth)
        if self.tokens >= need:
            return now
        if self.rate <= 0:
            return math.inf
        return now + (need - self.tokens) / self.rate

    def take(self, cost: float, now: float) -> None:
        self.refill(now)
        if self.limited:
            self.tokens -= cost

    def reconfigure(self, rate: float, depth: float, now: float) -> None:
        """Change rate and depth; the tokens earned so far at the old rate are kept
        (capped at the new depth), so the change takes effect from ``now`` on."""
        self.refill(now)
        was_unlimited = not self.limited
        self.rate, self.depth = rate, depth
        self.tokens = depth if was_unlimited else min(self.tokens, depth)
