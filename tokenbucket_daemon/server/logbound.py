"""Bounded logging for the daemon's modules: values cut short, each kind of line
rate-limited.

A caller controls much of what the daemon logs (paths, job ids, how often a refusal
happens). Unbounded, 108 Stat calls with a 3 MB path component grew the log by 648 MB.
:func:`bounded` puts a :class:`BoundedLog` filter on a module's logger: every argument of
a record is cut to :data:`~tokenbucket_daemon.errors.MAX_VALUE` characters, and each kind
of line (the logger and its format string) goes through a small token bucket, so a flood
of one refusal gives a few lines and then one line per ``interval`` that says how many
were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tokenbucket_daemon.errors import MAX_MESSAGE, short_repr, shorten

# Kinds remembered; they are format strings of our own code, so a few dozen in practice.
MAX_KINDS = 1024


class BoundedLog(logging.Filter):
    """Cuts every record's arguments and message, and lets through at most ``burst``
    lines of a kind at once and one per ``interval`` seconds after that."""

    def __init__(self, burst: int = 10, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.interval, self.clock = burst, interval, clock
        # kind -> [tokens, last refill, lines left out since the last one let through]
        self._kinds: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()     # the metrics thread logs too

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg)[:200])
        with self._lock:
            state = self._kinds.get(kind)
            now = self.clock()
            if state is None:
                if len(self._kinds) >= MAX_KINDS:
                    self._kinds.clear()
                state = self._kinds[kind] = [float(self.burst), now, 0.0]
            tokens = min(float(self.burst), state[0] + (now - state[1]) / self.interval)
            state[1] = now
            if tokens < 1.0:
                state[0] = tokens
                state[2] += 1
                return False
            state[0] = tokens - 1.0
            dropped, state[2] = int(state[2]), 0.0
        _cut(record)
        if dropped:
            record.msg = f"{record.msg} [{dropped} similar lines left out]"
        return True


def _cut(record: logging.LogRecord) -> None:
    if isinstance(record.msg, str):
        record.msg = shorten(record.msg, MAX_MESSAGE)
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_short(a) for a in args)
    elif isinstance(args, dict):
        record.args = {k: _short(v) for k, v in args.items()}


def _short(value: object) -> object:
    # Numbers stay numbers (a %d must still format); everything else is shown cut.
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        return shorten(value)
    if isinstance(value, BaseException):
        return shorten(str(value))
    return _Shown(short_repr(value))


class _Shown(str):
    """A value already turned into its (cut) repr: %r of it shows it as is."""

    def __repr__(self) -> str:
        return str(self)


_FILTER = BoundedLog()


def bounded(logger: logging.Logger) -> logging.Logger:
    """``logger`` with the daemon's shared :class:`BoundedLog` filter on it."""
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
