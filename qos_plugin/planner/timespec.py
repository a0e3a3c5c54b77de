"""Durations in Slurm's time syntax: ``MM``, ``MM:SS``, ``HH:MM:SS``,
``D-HH``, ``D-HH:MM`` and ``D-HH:MM:SS`` (as ``sbatch --time`` reads them)."""

from __future__ import annotations

import re

from qos_plugin.errors import InputError

# ASCII digits only: ``\d`` (and int()) would also take other scripts' digits,
# so '٥:٠٠' would be read as five minutes. Fields of at most 9 digits keep int()
# far from its 4300-digit limit.
_F = "([0-9]{1,9})"
_DAYS = re.compile(rf"{_F}-{_F}(?::{_F})?(?::{_F})?")
_PLAIN = re.compile(rf"{_F}(?::{_F})?(?::{_F})?")
# A deadline beyond a year is a typo, not a workflow (Slurm's own limits are
# in that range).
MAX_DURATION = 366 * 86400

HINT = "use Slurm time syntax: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def parse_duration(text: str, option: str = "--deadline") -> float:
    """Seconds in ``text``; an InputError naming ``option`` when it is not a duration."""
    s = text.strip(" \t")
    if m := _DAYS.fullmatch(s):
        d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
        parts = [h, mi, sec]
        seconds = ((d * 24 + h) * 60 + mi) * 60 + sec
    elif m := _PLAIN.fullmatch(s):
        groups = [int(g) for g in m.groups() if g is not None]
        parts = groups
        if len(groups) == 1:          # MM
            seconds = groups[0] * 60
        elif len(groups) == 2:        # MM:SS
            seconds = groups[0] * 60 + groups[1]
        else:                         # HH:MM:SS
            seconds = (groups[0] * 60 + groups[1]) * 60 + groups[2]
    else:
        raise InputError(option, f"{text[:40]!r} is not a duration", HINT)
    # Slurm accepts minutes and seconds up to 59 after the leading field only.
    if any(p > 59 for p in parts[1:]):
        raise InputError(option, f"{text!r} has a field over 59", HINT)
    if seconds <= 0:
        raise InputError(option, f"{text!r} is not a positive duration", HINT)
    if seconds > MAX_DURATION:
        raise InputError(option, f"{text!r} is longer than 366 days", HINT)
    return float(seconds)


def format_duration(seconds: float) -> str:
    """``[D-]HH:MM:SS`` rounded to the second (``-`` sign for negative values)."""
    sign = "-" if seconds < 0 else ""
    total = int(round(abs(seconds)))
    d, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{d}-{h:02d}:{m:02d}:{s:02d}" if d else f"{sign}{h:02d}:{m:02d}:{s:02d}"
