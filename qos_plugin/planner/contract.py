"""The job contract of a placement: what the job needs from each tier in each phase
to finish as predicted, computed once at training (``training.contract_tables``,
from the moves of ``model/movement.py`` that the makespan is made of) and read here.

Everyone who needs a rate reads it from the contract: the query's answer, the
placement sbatch gives the job, the prolog's reservations. Nothing derives it
again, so the figures the user is shown are the figures the daemons reserve.

In the model (format ``qos-model/2``, optional: models trained without I/O volumes
have none)::

    "contracts": {"stage_in": [stage, ...],     # stages that read the workflow's input
                  "stage_out": [stage, ...],    # stages of the last level
                  "levels": [[NEEDS, ...] per level]}

A level's contracts are aligned with its phase triples (``"phases"``): a row's
phase index also picks its contract, so contracts add no column to the rows (a
level's distinct triples are then distinct by their contracts too). NEEDS is a
list of ``[phase, tier, mib, mib_per_s]`` (phase 0 stage-in, 1 execution, 2
stage-out; tier an index into the model's tiers; the phase's time is its triple's),
with a fifth value, the rate per node, for node-local tiers. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from qos_plugin.model.limits import MAX_MIB, MAX_NODES, MAX_RATE_MIBPS

PHASES = ("stage-in", "execution", "stage-out")
# A stored rate must be its bytes over its time to this relative precision.
RATE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Need:
    """What the job needs from one tier in one phase of one level."""

    level: float
    phase: str                     # one of PHASES
    tier: str
    mib: float                     # moved on the tier by the whole job
    seconds: float                 # the phase's predicted time
    mib_per_s: float               # mib / seconds: what the tier must sustain
    per_node_mib_per_s: float | None = None   # node-local tiers: each node's share

    @property
    def label(self) -> str:
        return f"{self.phase} level {self.level:g}"


@dataclass(frozen=True)
class Contract:
    """A placement's needs, and the tiers its input is staged into and its output
    staged out of (``--qos-stage-in`` / ``--qos-stage-out``)."""

    needs: tuple[Need, ...]
    stage_in: tuple[str, ...]
    stage_out: tuple[str, ...]

    def peak(self, tier: str) -> Need | None:
        """The need with the highest rate on ``tier`` (the first of equals), if any."""
        best: Need | None = None
        for n in self.needs:
            if n.tier == tier and (best is None or n.mib_per_s > best.mib_per_s):
                best = n
        return best

    def tiers(self) -> list[str]:
        return list(dict.fromkeys(n.tier for n in self.needs))

    def rates(self, stretch: float = 1.0) -> dict[str, float]:
        """MiB/s to hold per tier: the peak over phases, per node on node-local tiers
        (each node's daemon sees its own share), the whole job's on shared tiers; with
        ``stretch`` (see :func:`deadline_stretch`) that much lower."""
        check_stretch(stretch)
        out: dict[str, float] = {}
        for t in self.tiers():
            p = self.peak(t)
            assert p is not None
            rate = p.per_node_mib_per_s if p.per_node_mib_per_s is not None else p.mib_per_s
            out[t] = rate / stretch
        return out

    def summary(self) -> dict[str, dict[str, object]]:
        """Per tier its peak: ``mib_per_s``, ``phase`` and, node-local, the per-node rate."""
        out: dict[str, dict[str, object]] = {}
        for t in self.tiers():
            p = self.peak(t)
            assert p is not None
            entry: dict[str, object] = {"mib_per_s": round(p.mib_per_s, 3), "phase": p.label}
            if p.per_node_mib_per_s is not None:
                entry["per_node_mib_per_s"] = round(p.per_node_mib_per_s, 3)
            out[t] = entry
        return out

    def to_json(self) -> dict[str, Any]:
        return {"stage_in": list(self.stage_in), "stage_out": list(self.stage_out),
                "needs": [vars(n) for n in self.needs]}


@dataclass(frozen=True)
class ContractTables:
    """The contracts of a model's rows: per level the distinct needs, in the order of
    the level's phase triples (a row's phase index is its contract's)."""

    levels: list[list[list[list[float]]]]    # level -> distinct contract -> need
    stage_in: list[str]
    stage_out: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"stage_in": self.stage_in, "stage_out": self.stage_out, "levels": self.levels}


# The part of a deadline the least reservation aims at: the rest is kept for what the
# model does not charge (the job's start, each srun step's, the prolog's stage-in) and its
# error. Measured on the local cluster (benchmarks/loop): a 13.4 s run spent 1.3 s between
# its phases (srun launching each phase's steps) and ran its unreserved phases on a busy
# node's CPU 0.5 s slower than predicted; at 0.9 a deadline 1.2 times the prediction
# was missed by 0.3 s with the reservation delivered in full.
DEADLINE_MARGIN = 0.8


def check_stretch(stretch: float) -> None:
    """ValueError unless ``stretch`` is a finite number of at least 1."""
    if not (math.isfinite(stretch) and stretch >= 1.0):
        raise ValueError(f"a stretch must be finite and at least 1, not {stretch!r}")


def deadline_stretch(makespan: float, deadline: float | None) -> float:
    """How many times slower than predicted each phase may run with the job still done by
    its deadline: ``DEADLINE_MARGIN * deadline / makespan``, at least 1 (no deadline, or
    one the prediction barely meets: 1).

    If every phase's rate is divided by it, every phase takes that many times longer,
    and the makespan, their sum, becomes the deadline less its margin: the contract
    divided by it is the least the job needs reserved. The planner keeps to placements
    whose least a tier can hold, and admission refuses a job only when its least does not
    fit (``slurm/admission.py``, which under the site's default ``reserve`` rule reserves
    more when the tiers have it free: phases on tiers no daemon reserves may run slower
    than predicted on a busy machine; ``reserve = "least"`` reserves the least). Never
    above 1 times the contract: a forged deadline or makespan can lower a job's own
    reservation, not raise it."""
    if deadline is None or not (math.isfinite(makespan) and makespan > 0
                                and math.isfinite(deadline)):
        return 1.0
    return max(1.0, DEADLINE_MARGIN * deadline / makespan)


def contract_of(tables: ContractTables, phases: Sequence[Sequence[Sequence[float]]],
                index: Sequence[Sequence[int]], row: int, levels: Sequence[float],
                tier_names: Sequence[str], placement: dict[str, str]) -> Contract:
    """The contract of ``row`` (``phases`` and ``index``: each level's phase triples and
    its column of row indices into them; ``placement``: the row's tier per stage)."""
    needs = []
    for k, (table, ix) in enumerate(zip(tables.levels, index, strict=True)):
        triple = phases[k][ix[row]]
        for e in table[ix[row]]:
            ph = int(e[0])
            needs.append(Need(levels[k], PHASES[ph], tier_names[int(e[1])], e[2], triple[ph],
                              e[3], e[4] if len(e) > 4 else None))
    return Contract(tuple(needs),
                    tuple(dict.fromkeys(placement[s] for s in tables.stage_in)),
                    tuple(dict.fromkeys(placement[s] for s in tables.stage_out)))


def _check_needs(flat: list[Any], tier_kinds: Sequence[str], seconds: list[float]) -> None:
    """Every need of a model at once (this runs at every query): well-formed, bounded,
    and its rate its MiB over its phase's time ``seconds`` (same order)."""
    if set(map(type, flat)) - {list} or set(map(len, flat)) - {4, 5}:
        raise TypeError("a contract need is not a list of 4 or 5 numbers")
    if set(map(type, chain.from_iterable(flat))) - {int, float}:
        raise TypeError("a contract need holds something other than numbers")
    if {e[0] for e in flat} - {0, 1, 2} or {e[1] for e in flat} - set(range(len(tier_kinds))):
        raise ValueError("a contract need names a phase or a tier the model does not have")
    for i, what, hi in ((2, "MiB", MAX_MIB * MAX_NODES), (3, "rate", MAX_RATE_MIBPS)):
        col = [e[i] for e in flat]
        if col and not (min(col) >= 0 and max(col) <= hi):     # refuses NaN too
            raise ValueError(f"a contract's {what} is not a number from 0 to {hi:g}")
    # A tampered rate would reserve what the prediction never asked for.
    if not all(t > 0 and math.isclose(e[3], e[2] / t, rel_tol=RATE_TOLERANCE)
               for e, t in zip(flat, seconds, strict=True)):
        raise ValueError("a contract's rate is not its MiB over its phase's time")
    if not all((tier_kinds[e[1]] == "node-local") == (len(e) == 5) and
               (len(e) == 4 or 0 <= e[4] <= e[3]) for e in flat):
        raise ValueError("a contract's per-node rate is missing on a node-local tier, "
                         "given on a shared one, or above the job's rate")


def contracts_from_json(doc: Any, stages: Sequence[str], tier_kinds: Sequence[str],
                        phases: Sequence[Sequence[Sequence[float]]]) -> ContractTables | None:
    """The contract tables of a model document, checked against the model's phase
    triples ``phases`` (ValueError/TypeError when damaged); None when it has none."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc["levels"], list) \
            or len(doc["levels"]) != len(phases):
        raise TypeError(f"contracts is not an object with {len(phases)} levels")
    ends = []
    for key in ("stage_in", "stage_out"):
        names = doc[key]
        if not isinstance(names, list) or set(names) - set(stages):
            raise ValueError(f"contracts.{key} names a stage the model does not have")
        ends.append(list(names))
    flat: list[Any] = []
    seconds: list[float] = []
    for table, triples in zip(doc["levels"], phases, strict=True):
        if not isinstance(table, list) or len(table) != len(triples) \
                or not all(isinstance(needs, list) for needs in table):
            raise TypeError("a level's contracts are not one list of needs per phase triple")
        for needs, triple in zip(table, triples, strict=True):
            flat += needs
            seconds += [triple[e[0]] if isinstance(e, list) and e and e[0] in (0, 1, 2)
                        else 0.0 for e in needs]
    _check_needs(flat, tier_kinds, seconds)
    return ContractTables(doc["levels"], ends[0], ends[1])
