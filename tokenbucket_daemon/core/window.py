"""Bytes per second over a sliding window, in slices, on caller-supplied time."""

from __future__ import annotations

from collections import deque


class RateWindow:
    """Sum of bytes over the last ``span`` seconds, kept in ``slices`` slices so
    memory stays bounded however many requests pass."""

    def __init__(self, span: float = 1.0, slices: int = 10) -> None:
        self.span = span
        self.width = span / slices
        self._slices: deque[list[float]] = deque()   # [slice index, bytes]

    def add(self, now: float, nbytes: float) -> None:
        # Called twice per request: one index computation, one lookup of the last slice.
        idx = int(now / self.width)
        slices = self._slices
        if slices and slices[-1][0] == idx:
            slices[-1][1] += nbytes
        else:          # only a new slice can push old ones out
            slices.append([idx, nbytes])
            self._prune(now)

    def rate(self, now: float) -> float:
        self._prune(now)
        return sum(b for _, b in self._slices) / self.span

    def _prune(self, now: float) -> None:
        oldest = int(now / self.width) - round(self.span / self.width) + 1
        while self._slices and self._slices[0][0] < oldest:
            self._slices.popleft()
