"""Option values of ``qos-plan`` read strictly: ASCII digits only, bounded, one-line
errors (InputError) instead of argparse's usage text.

``int()`` alone takes ``' 5 '``, ``'1_0'`` and digits of other scripts (``'٥'``);
what a user typed by mistake must not become a node count.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from qos_plugin.errors import InputError
from qos_plugin.model.limits import MAX_NODE_COUNTS, MAX_NODES

_COUNT = re.compile(r"[0-9]{1,9}")
_SIZE = re.compile(r"([0-9]{1,15}(?:\.[0-9]{1,6})?)\s?([KMGT]i?B?|B)?", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
# Half the machine: the estimate is within ~25%, training holds more than the
# evaluation (regions), and the daemons and the rest of the node need theirs.
BUDGET_FRACTION = 0.5
# A cgroup v2 memory limit, when the planner runs inside one (a Slurm job).
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


def parse_count(text: str, option: str, lo: int = 1, hi: int = MAX_NODES) -> int:
    """A whole number from ``lo`` to ``hi`` written in ASCII digits."""
    s = text.strip(" \t")
    if not _COUNT.fullmatch(s):
        raise InputError(option, f"{text[:40]!r} is not a whole number",
                         f"give a number from {lo} to {hi:,} in digits 0-9")
    value = int(s)
    if not lo <= value <= hi:
        raise InputError(option, f"{value} is out of range", f"give a number from {lo} to "
                         f"{hi:,}")
    return value


def parse_nodes(text: str, option: str = "--nodes") -> list[int]:
    """Node counts separated by commas (``2,5,10``): each 1 to MAX_NODES, distinct."""
    parts = [p for p in text.split(",") if p.strip(" \t")]
    if not parts:
        raise InputError(option, f"{text[:40]!r} has no node count",
                         "give node counts separated by commas, e.g. 2,5,10")
    if len(parts) > MAX_NODE_COUNTS:
        raise InputError(option, f"{len(parts)} node counts", f"give at most "
                         f"{MAX_NODE_COUNTS}")
    values = [parse_count(p, option) for p in parts]
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise InputError(option, f"node count {dup[0]} is given twice", "give each once")
    return values


def parse_size(text: str, option: str, lo: int = 1 << 20, hi: float = math.inf) -> int:
    """Bytes in ``12GiB``, ``512M``, ``1.5T`` or a plain number of bytes (binary
    units: K = KiB), from ``lo`` (default 1 MiB) to ``hi``."""
    m = _SIZE.fullmatch(text.strip(" \t"))
    if not m:
        raise InputError(option, f"{text[:40]!r} is not a size",
                         "write it like 16GiB, 512MiB or a number of bytes")
    unit = (m.group(2) or "").upper()[:1]
    value = int(float(m.group(1)) * _UNITS[unit])
    if value < lo:
        raise InputError(option, f"{text!r} is less than {lo:,} bytes",
                         "give a larger size")
    if value > hi:
        raise InputError(option, f"{text!r} is more than {hi:,.0f} bytes",
                         "give a smaller size")
    return value


def physical_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_LIMIT.read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def default_memory_budget() -> int:
    """The evaluation's memory budget when none is given: half of
    :func:`physical_memory` (12 GiB on a 24 GiB machine)."""
    return int(physical_memory() * BUDGET_FRACTION)
