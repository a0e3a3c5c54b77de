"""An emulated storage device: a virtual clock that serves bytes FIFO at a fixed rate.

A tier whose store is far faster than the tier it stands for (a local directory at GB/s
modelling a parallel file system at 100 MB/s) makes contention a matter of the clients'
CPU, which no daemon can schedule. The emulated device gives it the bottleneck of the
real thing: a request of ``size`` bytes that reaches it at ``now`` is done no earlier
than ``max(now, free_at) + size / rate``, in the order requests reach it, as a device
queue serves them. The shell does the real I/O and then waits (without holding a thread)
until that time. Sans-I/O: time is an argument.
"""

from __future__ import annotations

import math

from tokenbucket_daemon.errors import InvalidArgument

MAX_RATE = 1e12      # bytes/s: beyond any device; larger is a typo


def check_rate(what: str, bps: object, fix: str) -> float:
    """``bps`` as a float when it is a finite rate in (0, 1e12] bytes/s; otherwise one
    line naming ``what`` and the value, with ``fix``."""
    if (isinstance(bps, bool) or not isinstance(bps, (int, float)) or not math.isfinite(bps)
            or not 0 < bps <= MAX_RATE):
        raise InvalidArgument(f"{what} must be a rate above 0 and at most {MAX_RATE:g} "
                              "bytes/s", bps, fix)
    return float(bps)


class DeviceClock:
    """When each request handed to the device is done, in arrival order."""

    def __init__(self, rate: float) -> None:
        self.rate = check_rate("an emulated device's rate", rate, "give e.g. 100e6")
        self.free_at = -math.inf     # when the device has served everything it was given
        self.bytes = 0               # handed to it so far

    def admit(self, size: int, now: float) -> float:
        """Hand ``size`` bytes to the device at ``now``; returns when they are done."""
        self.free_at = max(now, self.free_at) + size / self.rate
        self.bytes += size
        return self.free_at

    def backlog(self, now: float) -> float:
        """Seconds of work the device holds at ``now``."""
        return max(0.0, self.free_at - now)
