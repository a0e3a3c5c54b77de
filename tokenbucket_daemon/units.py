"""Sizes and rates as people write them: ``64KiB``, ``1MB``, ``200MiB/s``."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6,
          "mib": 1 << 20, "g": 1e9, "gb": 1e9, "gib": 1 << 30, "t": 1e12, "tb": 1e12,
          "tib": 1 << 40}
_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Bytes in ``text`` (``64KiB``, ``1MB``, ``4096``); ValueError says what is wrong."""
    return int(_parse(text, "size"))


def parse_rate(text: str) -> float:
    """Bytes per second in ``text`` (``200MiB/s``, ``50MB/s``, ``0`` = unlimited)."""
    t = text.strip()
    if t.lower().endswith("/s"):
        t = t[:-2]
    return _parse(t, "rate")


def _parse(text: str, what: str) -> float:
    m = _RE.match(text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"bad {what} {text!r}; write e.g. 64KiB, 1MB, 200MiB/s")
    return float(m.group(1)) * _UNITS[unit]


def format_rate(bps: float) -> str:
    if bps <= 0:
        return "unlimited"
    for unit, f in (("GiB/s", 1 << 30), ("MiB/s", 1 << 20), ("KiB/s", 1024)):
        if bps >= f:
            return f"{bps / f:.1f}{unit}"
    return f"{bps:.0f}B/s"
