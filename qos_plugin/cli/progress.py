"""Progress on stderr for steps that take more than a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Call with (done, total); prints nothing for steps that end within ``delay``."""

    def __init__(self, label: str, stream: TextIO | None = None, delay: float = 1.0,
                 every: float = 0.5) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.delay = delay
        self.every = every
        self._last = 0.0
        self._shown = False
        self._quarter = -1.0  # last quarter reported when stderr is not a terminal

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.start < self.delay or (now - self._last < self.every and done < total):
            return
        self._last = now
        self._shown = True
        pct = 100.0 * done / total if total else 100.0
        end = "\n" if done >= total else ""
        tty = self.stream.isatty()
        prefix = "\r" if tty else ""
        if tty or done >= total or pct // 25 != self._quarter:
            self._quarter = pct // 25
            self.stream.write(f"{prefix}{self.label}: {done}/{total} ({pct:.0f}%)"
                              f"{end if tty else chr(10)}")
            self.stream.flush()

    def stage(self, what: str) -> None:
        """Say which step starts, once the whole run has taken more than ``delay``."""
        if time.monotonic() - self.start >= self.delay:
            self._shown = True
            self.stream.write(f"{self.label}: {what} ({time.monotonic() - self.start:.1f} s)\n")
            self.stream.flush()

    def finish(self, note: str = "") -> None:
        if self._shown:
            elapsed = time.monotonic() - self.start
            self.stream.write(f"{self.label}: done in {elapsed:.1f} s{note}\n")
            self.stream.flush()
