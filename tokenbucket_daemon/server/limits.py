"""What one daemon holds for its callers, bounded: streams per client and in all, file
descriptors (a reserve kept for admin calls), and how long a stream may sit idle.

Before these bounds a tester made real daemons fail from loopback: 11,000 idle write
streams held 19,549 of 20,000 descriptors, three clients stat-ing a 19,000-deep path made
a fourth client's Create fail with EMFILE, and nothing timed out. The config's
``[limits]`` table sets them (:class:`Limits`); the data plane asks :class:`Admission`
before it opens anything, and :class:`IdleWatch` ends a stream its caller stopped feeding.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tokenbucket_daemon.errors import InvalidArgument, ResourceExhausted
from tokenbucket_daemon.server.backend import MAX_DEPTH


@dataclass(frozen=True)
class Limits:
    """The ``[limits]`` table of the daemon's config."""

    # Write and Read streams open at once, all clients together; 0 = from the daemon's
    # descriptor limit (each stream holds up to two descriptors while it is open).
    max_streams: int = 0
    # ... from one client host (a node agent serves a whole compute node).
    max_streams_per_client: int = 256
    # Descriptors kept free for admin calls, health checks and new connections: below
    # that, data-plane calls are refused and health says NOT_SERVING.
    fd_reserve: int = 256
    # A Write stream that sends nothing (a Read stream whose caller takes nothing) for
    # this long is ended and its file closed.
    stream_idle_seconds: float = 30.0
    # Every I/O thread stuck in one call this long: the daemon cannot serve its tiers.
    io_stall_seconds: float = 30.0
    # Directories deep a path may go, symlinks followed included.
    max_path_depth: int = MAX_DEPTH

    def __post_init__(self) -> None:
        checks = [("max_streams", self.max_streams, 0, 1 << 20),
                  ("max_streams_per_client", self.max_streams_per_client, 1, 1 << 20),
                  ("fd_reserve", self.fd_reserve, 16, 1 << 20),
                  ("stream_idle_seconds", self.stream_idle_seconds, 0.1, 86400.0),
                  ("io_stall_seconds", self.io_stall_seconds, 0.1, 86400.0),
                  ("max_path_depth", self.max_path_depth, 1, 2048)]
        for name, value, low, high in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not low <= value <= high:
                raise InvalidArgument(f"[limits] {name} must be between {low} and {high}",
                                      value, f"see {Limits.__module__} for the defaults")
        for name in ("max_streams", "max_streams_per_client", "fd_reserve", "max_path_depth"):
            if not isinstance(getattr(self, name), int):
                raise InvalidArgument(f"[limits] {name} must be a whole number",
                                      getattr(self, name), "write it without a point")


def client_of(peer: str) -> str:
    """The client host of a gRPC peer string ("ipv4:10.0.0.5:4242" -> "ipv4:10.0.0.5")."""
    if peer.startswith("ipv6:["):
        return peer.split("]", 1)[0] + "]"
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class FdGauge:
    """Free descriptors of this process: its soft RLIMIT_NOFILE minus the ones open,
    counted from /proc/self/fd at most every ``every`` seconds (listing 20,000 entries
    takes milliseconds; a call must not)."""

    def __init__(self, every: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self._at = -1e9
        self._free = 1 << 30

    def free(self) -> int:
        now = self.clock()
        if now - self._at >= self.every:
            self._at = now
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            try:
                used = len(os.listdir("/proc/self/fd"))
            except OSError:       # no descriptor left even to list them
                used = limit
            self._free = (1 << 30 if limit == resource.RLIM_INFINITY else limit) - used
        return self._free

    @staticmethod
    def limit() -> int:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


class Admission:
    """Counts the data plane's open streams per client and in all, and checks the
    descriptors left, before a call opens anything; refusals are RESOURCE_EXHAUSTED with
    errno EMFILE, which a POSIX client passes on as "too many open files"."""

    def __init__(self, limits: Limits, fds: FdGauge | None = None) -> None:
        self.limits = limits
        self.fds = fds or FdGauge()
        self._per_client: dict[str, int] = {}
        self.open_streams = 0
        self.refused = 0

    @property
    def max_streams(self) -> int:
        if self.limits.max_streams:
            return self.limits.max_streams
        return max(16, (FdGauge.limit() - self.limits.fd_reserve) // 2)

    def fds_short(self) -> bool:
        """True while fewer descriptors than the reserve are free."""
        return self.fds.free() < self.limits.fd_reserve

    def check_fds(self) -> None:
        if self.fds_short():
            self.refused += 1
            raise ResourceExhausted("the daemon is short of file descriptors", None,
                                    "retry later; the rest is kept for admin calls",
                                    "EMFILE")

    @contextmanager
    def stream(self, peer: str) -> Iterator[None]:
        """Hold one stream slot of ``peer``'s host while the block runs."""
        client = client_of(peer)
        mine = self._per_client.get(client, 0)
        if mine >= self.limits.max_streams_per_client:
            self.refused += 1
            raise ResourceExhausted(f"too many streams open from this client ({mine})",
                                    client, "close some, or wait for them to finish",
                                    "EMFILE")
        if self.open_streams >= self.max_streams:
            self.refused += 1
            raise ResourceExhausted(f"too many streams open ({self.open_streams})", None,
                                    "retry later", "EMFILE")
        self.check_fds()
        self._per_client[client] = mine + 1
        self.open_streams += 1
        try:
            yield
        finally:
            self.open_streams -= 1
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]


class IdleWatch:
    """Cancels the task that made it once it has waited on its caller, between ``arm``
    and ``disarm``, for ``seconds`` without a break.

    One timer per idle period instead of one per message: a timeout around every await
    of a stream's next chunk would cost a timer handle each, on the daemon's hottest path.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._since: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    def arm(self) -> None:
        """The task now waits for its caller."""
        self._since = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(self._since + self.seconds, self._check)

    def disarm(self) -> None:
        """The caller answered."""
        self._since = None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._since is None:
            return            # busy with our own work; armed again at the next wait
        due = self._since + self.seconds
        if self._loop.time() >= due:
            self.fired = True
            if self._task is not None:
                self._task.cancel()
        else:
            self._handle = self._loop.call_at(due, self._check)

    def cancelled_by_me(self) -> bool:
        """After a CancelledError: True (and the cancellation taken back) when it was this
        watch's, so the caller can end the call with a status of its own."""
        if self.fired and self._task is not None:
            self._task.uncancel()
            return True
        return False
