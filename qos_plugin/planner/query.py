"""QoS queries over a trained model: constraints in, one placement (or a precise
"infeasible") out. Pure: plain Python over the model's rows, no clock, no I/O.

Objectives:

* ``fastest``: the smallest predicted makespan that meets every constraint.
* ``frugal``: meet the deadline with the fewest nodes, then with the fewest
  stages on node-local tiers (the fastest, scarcest tier counted first), then
  the fastest of those.

When no placement meets every constraint the answer says which constraint binds:
the deadline when some placement satisfies all the others (the closest one is the
fastest of them, with its miss), otherwise the first hard constraint (max nodes,
allowed tiers, excluded tiers, down tiers) without which placements exist. Every
single constraint whose removal alone would make the query feasible is listed
with the placement it would give.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any

from qos_plugin.errors import InputError
from qos_plugin.planner.contract import Contract, deadline_stretch
from qos_plugin.planner.trained import DIGITS, RegionInfo, TrainedModel

OBJECTIVES = ("fastest", "frugal")
# Constraint names as the user typed them, in the order binding is decided.
HARD = ("max_nodes", "tiers", "exclude", "down")
OPTION = {"max_nodes": "--max-nodes", "tiers": "--tiers", "exclude": "--exclude-tier",
          "down": "--down-tier", "deadline": "--deadline"}


@dataclass(frozen=True)
class Constraints:
    deadline: float | None = None            # seconds
    max_nodes: int | None = None
    tiers: frozenset[str] | None = None      # allowed tiers (None: all)
    exclude: frozenset[str] = frozenset()
    down: frozenset[str] = frozenset()
    objective: str = "fastest"
    # MiB/s a tier sustains (a shared tier in all, a node-local one per node): a
    # placement whose contract needs more there, after the deadline's slack, is not
    # chosen (the site's `bandwidth`, what admission holds reservations to).
    sustains: Mapping[str, float] | None = None

    def validate(self, model: TrainedModel) -> None:
        known = model.tier_names
        for option, names in (("--tiers", self.tiers or ()), ("--exclude-tier", self.exclude),
                              ("--down-tier", self.down)):
            unknown = sorted(set(names) - set(known))
            if unknown:
                raise InputError(option, f"unknown tier {unknown[0]!r}",
                                 f"model {model.name} has tiers: {', '.join(known)}")
        if self.max_nodes is not None and self.max_nodes < 1:
            raise InputError("--max-nodes", f"{self.max_nodes} nodes cannot run anything",
                             "give 1 or more")
        if self.deadline is not None and not self.deadline > 0:
            raise InputError("--deadline", f"{self.deadline!r} is not a positive duration",
                             "give a time such as 20:00")
        if self.objective not in OBJECTIVES:
            raise InputError("--objective", f"unknown objective {self.objective!r}",
                             f"use one of: {', '.join(OBJECTIVES)}")


@dataclass(frozen=True)
class Choice:
    """One placement of the model."""

    row: int
    nodes: int
    tiers: dict[str, str]
    makespan: float
    region: RegionInfo
    critical_path: str


@dataclass
class Answer:
    feasible: bool
    constraints: Constraints
    choice: Choice | None = None
    margin: float | None = None              # deadline - makespan
    runner_up: Choice | None = None
    contract: Contract | None = None         # what the choice needs from each tier
    bandwidth: dict[str, dict[str, object]] | None = None   # the contract's peak per tier
    binding: str | None = None
    closest: Choice | None = None
    miss: float | None = None                # closest makespan - deadline
    relaxations: dict[str, Choice] = field(default_factory=dict)
    with_down_up: Choice | None = None       # best placement were the down tiers up
    candidates: int = 0                      # placements meeting all but the deadline
    too_fast: int = 0                        # better ones passed over: more than a tier
                                             # sustains (Constraints.sustains)


Rows = list[int]


def _masks(model: TrainedModel, c: Constraints) -> dict[str, list[bool]]:
    masks: dict[str, list[bool]] = {}
    if c.max_nodes is not None:
        cap = c.max_nodes
        masks["max_nodes"] = [n <= cap for n in model.nodes]
    names = model.tier_names
    for name, allowed in (("tiers", c.tiers),
                          ("exclude", None if not c.exclude else set(names) - c.exclude),
                          ("down", None if not c.down else set(names) - c.down)):
        if allowed is not None:
            # A placement is a string of tier digits: it keeps to the allowed tiers
            # when stripping their digits leaves nothing.
            digits = "".join(DIGITS[i] for i, t in enumerate(names) if t in allowed)
            masks[name] = [not code.strip(digits) if digits else False
                           for code in model.placement.codes]
    if c.deadline is not None:
        deadline = c.deadline
        masks["deadline"] = [t <= deadline for t in model.total]
    return masks


def _rows(model: TrainedModel, masks: dict[str, list[bool]], skip: str = "") -> Rows:
    """Rows that pass every mask but ``skip``, in row order."""
    use = [m for name, m in masks.items() if name != skip]
    every = range(len(model))
    if not use:
        return list(every)
    return list(compress(every, use[0] if len(use) == 1 else map(all, zip(*use, strict=True))))


def _keys(model: TrainedModel, objective: str) -> list[tuple[Any, ...]]:
    """Each row's sort key for the objective (unique: the row index comes last)."""
    memo = f"keys:{objective}"
    if memo not in model.memo:
        rows = range(len(model))
        if objective == "fastest":
            model.memo[memo] = list(zip(model.total, model.nodes, rows, strict=True))
        else:
            counts = [list(map(str.count, model.placement.codes,
                               repeat(DIGITS[model.tier_names.index(t)])))
                      for t in model.local_tiers]
            model.memo[memo] = list(zip(model.nodes, *counts, model.total, rows, strict=True))
    keys: list[tuple[Any, ...]] = model.memo[memo]
    return keys


def rank_rows(model: TrainedModel, rows: Rows, objective: str) -> Rows:
    """``rows`` ordered best first for the objective (ties: earlier row first)."""
    return sorted(rows, key=_keys(model, objective).__getitem__)


def _top(model: TrainedModel, rows: Rows, objective: str, k: int) -> Rows:
    """The ``k`` best of ``rows``, best first: the head of :func:`rank_rows`."""
    # The keys end with the row, so comparing keys alone gives the order and the row.
    return [key[-1] for key in heapq.nsmallest(k, map(_keys(model, objective).__getitem__,
                                                         rows))]


# Placements whose contract is read to find ones the tiers sustain, best first, at most.
SUSTAIN_CHECKS = 4096


def needs_fit(model: TrainedModel, row: int, c: Constraints) -> bool:
    """The row's contract, lowered by the deadline's slack, asks no tier for more than
    ``c.sustains`` gives (a row without a contract: nothing is known to be too much)."""
    contract = model.contract(row)
    if contract is None or not c.sustains:
        return True
    rates = contract.rates(deadline_stretch(float(model.total[row]), c.deadline))
    return all(rates.get(t, 0.0) <= cap * (1 + 1e-9) for t, cap in c.sustains.items())


def _sustained(model: TrainedModel, rows: Rows, c: Constraints) -> tuple[Rows, int]:
    """The best two of ``rows`` the tiers sustain (at most SUSTAIN_CHECKS looked at, in
    the objective's order), and how many better ones were passed over for it."""
    kept: list[int] = []
    passed = 0
    for row in _top(model, rows, c.objective, min(len(rows), SUSTAIN_CHECKS)):
        if needs_fit(model, row, c):
            kept.append(row)
            if len(kept) == 2:
                break
        elif not kept:
            passed += 1
    return kept, passed


def choice(model: TrainedModel, row: int) -> Choice:
    names = model.tier_names
    tiers = model.placement[row]
    return Choice(row, model.nodes[row], {s: names[tiers[j]] for j, s in enumerate(model.stages)},
                  model.total[row], model.regions[model.region[row]],
                  model.paths[model.path[row]])


def _best(model: TrainedModel, rows: Rows, objective: str) -> Choice:
    return choice(model, _top(model, rows, objective, 1)[0])


def answer(model: TrainedModel, c: Constraints) -> Answer:
    """The placement that best meets ``c``, or why none does."""
    c.validate(model)
    masks = _masks(model, c)
    hard = _rows(model, masks, skip="deadline")
    ok = [r for r in hard if masks["deadline"][r]] if "deadline" in masks else hard
    out = Answer(feasible=bool(ok), constraints=c, candidates=len(hard))
    if ok and c.sustains:
        kept, out.too_fast = _sustained(model, ok, c)
        if not kept:
            out.feasible = False
            out.binding = "sustains"
            out.closest = choice(model, _top(model, ok, c.objective, 1)[0])
            return out
        ok = kept
    if ok:
        ranked = _top(model, ok, c.objective, 2)
        out.choice = choice(model, ranked[0])
        if len(ranked) > 1:
            out.runner_up = choice(model, ranked[1])
        if c.deadline is not None:
            out.margin = c.deadline - out.choice.makespan
        # The rates were computed at training (the job contract); the query only reads them.
        out.contract = model.contract(out.choice.row)
        if out.contract is not None and model.volumes is not None:
            out.bandwidth = out.contract.summary()
        if c.down:
            best_up = _best(model, _rows(model, masks, skip="down"), c.objective)
            if best_up.row != out.choice.row:
                out.with_down_up = best_up
        return out

    # Infeasible: which constraint binds, what comes closest, what would help.
    # Without the deadline the answer is the closest placement below.
    for name in [n for n in masks if n != "deadline"]:
        alone = _rows(model, masks, skip=name)
        if alone:
            out.relaxations[name] = _best(model, alone, c.objective)
    if hard:
        out.binding = "deadline"
        out.closest = _best(model, hard, "fastest")
        out.miss = out.closest.makespan - float(c.deadline or 0.0)
        return out
    hard_masks = {k: v for k, v in masks.items() if k != "deadline"}
    given = [n for n in HARD if n in hard_masks]
    out.binding = ",".join(given)            # when no single one is to blame
    rows = list(range(len(model)))
    for name in given:
        rest = _rows(model, hard_masks, skip=name)
        if rest:
            out.binding, rows = name, rest
            break
    out.closest = _best(model, rows, "fastest")
    if c.deadline is not None:
        out.miss = out.closest.makespan - c.deadline
    return out
