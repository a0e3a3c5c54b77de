"""Admission of a job's reservations against what each tier can sustain.

A site may give a tier the bandwidth it sustains (``[tiers.pfs] bandwidth = "400MB/s"``:
a shared tier's total over its daemons, a node-local tier's per node). The prolog then
starts a job only when, on every daemon it reserves on, the reservations already held
there plus its own fit that daemon's part of the tier; otherwise the job is ended with the
reason rather than started on a promise the tier cannot keep. Each reservation comes
with a limit, the part of the daemon no other job was promised, so a reserved job cannot
take another's floor.

How much a job reserves is the site's ``reserve`` rule. ``"contract"`` (the default): its
contract in full (what its prediction assumed) when the tiers have that free, less only as
far as it must to fit beside the reservations already held, and never less than its
deadline needs (the contract divided by the deadline's ``most_stretch``,
``contract.deadline_stretch``). ``"least"``: what its deadline needs and no more, so that a
tier holds more deadline jobs at once and a job's slack is left to the others (at the
job's own risk: see below). One stretch for all of a job's asks: every phase slows
alike, which is what the deadline's sum of phases was worked out with. Why "contract" is
the default: the deadline's slack goes first to the job's own safety, as the phases the
model prices but no daemon reserves (a node-local tier, a phase's start) are what a busy
machine slows (benchmarks/loop: unreserved tmpfs phases ran 2-3 times their idle profile beside a
neighbour flooding the shared tier, and a job that had spent its slack on a lower
reservation missed its deadline). Spare bandwidth still goes to jobs without a
reservation: a reservation is a floor the daemons serve first, not a share kept idle.
Pure: numbers in, decisions out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qos_plugin.planner.contract import check_stretch
from qos_plugin.slurm.site import RESERVE_RULES

MiB = 1 << 20


@dataclass(frozen=True)
class Ask:
    """One reservation a job wants: ``bps`` (its contract in full) on ``tier`` of
    ``daemon``, which holds ``held`` bytes/s for other jobs there and sustains
    ``capacity`` (None: not given)."""

    daemon: str
    tier: str
    bps: float
    held: float
    capacity: float | None


@dataclass(frozen=True)
class Decision:
    admitted: bool
    reason: str = ""
    limits: tuple[float, ...] = ()      # bytes/s per ask (0 = unlimited), in ask order
    stretch: float = 1.0                # every ask's bps is reserved divided by this

    def reserved(self, asks: list[Ask]) -> list[float]:
        """Bytes/s to reserve for each of ``asks`` (those this decision was made on)."""
        return [a.bps / self.stretch for a in asks]


def _rate(bps: float) -> str:
    return f"{bps / MiB:.1f} MiB/s"


def admit(asks: list[Ask], most_stretch: float = 1.0, rule: str = "contract") -> Decision:
    """Admit all of ``asks`` or none, each at its ``bps`` divided by one stretch: under
    the ``"contract"`` rule the least, from 1, at which every ask fits what its daemon has
    not promised to others; under ``"least"``, ``most_stretch`` itself. Refused when the
    asks fit only beyond ``most_stretch`` (the job's deadline would not hold); the ask
    that needs the most is the reason."""
    check_stretch(most_stretch)
    if rule not in RESERVE_RULES:
        raise ValueError(f"a reserve rule is one of {RESERVE_RULES}, not {rule!r}")
    stretch, worst = 1.0, None
    for a in asks:
        if a.capacity is None or a.bps <= 0:
            continue
        free = a.capacity - a.held
        need = math.inf if free <= 0 else a.bps / free
        if need > stretch:
            stretch, worst = need, a
    # Rounding: an ask exactly at what is free is still a promise the tier keeps.
    if worst is not None and stretch > most_stretch * (1 + 1e-12):
        least = worst.bps / most_stretch
        return Decision(False, f"tier {worst.tier} cannot hold the job's reservation on "
                        f"{worst.daemon}: {_rate(worst.held)} of its "
                        f"{_rate(worst.capacity or 0.0)} are promised to running jobs and "
                        f"the job needs at least {_rate(least)}; submit again later, with a "
                        f"later --qos-deadline, or with --qos-exclude-tier={worst.tier}")
    stretch = most_stretch if rule == "least" else min(stretch, most_stretch)
    limits = tuple(0.0 if a.capacity is None else a.capacity - a.held for a in asks)
    return Decision(True, limits=limits, stretch=stretch)


def daemon_part(capacity: float | None, shared: bool, n_daemons: int) -> float | None:
    """A daemon's part of a tier's bandwidth: a shared tier's files are striped evenly
    over its daemons; a node-local tier's bandwidth is each node's already."""
    if capacity is None:
        return None
    return capacity / max(1, n_daemons) if shared else capacity
