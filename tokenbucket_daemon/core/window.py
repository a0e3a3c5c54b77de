"""Bytes per second over a sliding window, in slices, on caller-supplied time."""

from __future__ import annotations

from collections import deque


class RateWindow:
    """Sum of bytes over the last ``span`` seconds, kept in ``slices`` slices so
    memory stays bounded however many requests pass."""

    __slots__ = ("span", "width", "_done", "_idx", "_bytes")

    def __init__(self, span: float = 1.0, slices: int = 10) -> None:
        self.span = span
        self.width = span / slices
        self._done: deque[tuple[int, float]] = deque()   # closed slices: (index, bytes)
        # The open slice in two attributes, not a list in the deque: add runs twice
        # per request and is then one division, one comparison and one addition.
        self._idx = -1
        self._bytes = 0.0

    def add(self, now: float, nbytes: float) -> None:
        idx = int(now / self.width)
        if idx == self._idx:
            self._bytes += nbytes
        else:          # only a new slice can push old ones out
            if self._bytes:
                self._done.append((self._idx, self._bytes))
            self._idx, self._bytes = idx, nbytes
            self._prune(now)

    def rate(self, now: float) -> float:
        oldest = self._prune(now)
        total = sum(b for _, b in self._done)
        if self._idx >= oldest:
            total += self._bytes
        return total / self.span

    def _prune(self, now: float) -> int:
        oldest = int(now / self.width) - round(self.span / self.width) + 1
        done = self._done
        while done and done[0][0] < oldest:
            done.popleft()
        return oldest
