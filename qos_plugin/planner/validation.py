"""Predicted against measured: which placements to run, and how well the model
ranked and timed them. Pure: predictions and run records in, numbers out.

Definitions (one value per placement; a placement run R times counts its median):

* **pairwise concordance** (QoSFlow's, ``ranking.concordance``): order the
  placements by predicted makespan; the fraction of pairs (a before b) whose
  measured makespans are in that order (ties count as concordant);
* **Spearman**: the correlation of the ranks of predicted and measured
  makespans (ties get their average rank);
* **relative error** of a makespan: ``|predicted - measured| / measured``;
  the median and the largest over the placements;
* **per phase** (stage-in, execution, stage-out, each summed over the levels):
  the median relative error over the placements where the phase took time, and
  the median error as a share of the placement's measured makespan (a phase
  of a few milliseconds can be 100% wrong and matter nothing);
* **best**: the placement predicted fastest, the one measured fastest, and the
  gap ``(measured(predicted best) - measured best) / measured best``; the
  prediction "picks the best" when the gap is within :data:`BEST_WITHIN`;
* **run-to-run spread** of a placement run R >= 2 times: ``(slowest - fastest) /
  median`` of its makespans; the median and the largest over the placements;
* **pairs the runs tell apart**: pairs of placements, each run at least twice,
  whose medians differ by more than either's spread (``slowest - fastest``);
  the concordance over those pairs alone says how well the model ranks what the
  measurements can rank at all. A pair closer than its own runs vary is ordered
  by chance however good the model, so with one run each the concordance of
  near-equal placements measures the machine's noise as much as the model. Not
  a replacement for the concordance (the issue's target is the concordance of
  all pairs), a reading of it.

Placements: all of them when at most :data:`ALL_BELOW` (a run each is cheap
enough), else K spread over the regions (:func:`select_rows`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.movement import PHASES
from qos_plugin.model.ranking import concordance
from qos_plugin.planner.prediction import Prediction

# Validate every placement when there are at most this many; else a sample.
ALL_BELOW = 12
DEFAULT_SAMPLE = 12
# The chosen placement is good enough when its measured makespan is within this
# fraction of the measured best (the target).
BEST_WITHIN = 0.05


@dataclass(frozen=True)
class Measurement:
    """One run: its placement, nodes, scale, makespan and per-level phase seconds."""

    placement: dict[str, str]
    nodes: int
    scale: float
    total: float
    levels: tuple[tuple[float, float, float], ...]

    @property
    def phases(self) -> dict[str, float]:
        return {p: float(sum(lv[i] for lv in self.levels)) for i, p in enumerate(PHASES)}


def _seconds(value: Any, where: str, hi: float = 1e9) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not 0 <= value < hi:                      # refuses NaN too
        raise ValueError(f"{where} is {str(value)[:40]}, not seconds")
    return float(value)


# Phase starts and ends are wall-clock times (seconds since the epoch).
_CLOCK = 1e11


def measurement_of(record: Mapping[str, Any], source: str = "run record") -> Measurement:
    """The measurement in a run record of ``qos-plan run`` (InputError when it is
    not one). A level's phase lasts from its launch to its barrier (the start of its
    processes included, as a profile's phase start charges it), or, in a record
    without those times, from its first action's start to its last action's end; a
    phase with no action took 0 s."""
    try:
        placement = record["placement"]
        if not isinstance(placement, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in placement.items()):
            raise TypeError("placement is not an object of stage: tier")
        nodes = record["nodes"]
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"nodes is {str(nodes)[:20]}")
        scale = _seconds(record["scale"], "scale")
        if not 0 < scale <= 1:
            raise ValueError(f"scale is {scale:g}")
        levels = []
        for lv in record["levels"]:
            spans = []
            for p in PHASES:
                ph = lv["phases"][p]
                start, end = ph["start"], ph["end"]
                if ph.get("launched") is not None and ph.get("returned") is not None:
                    start, end = ph["launched"], ph["returned"]
                spans.append(0.0 if start is None or end is None else
                             max(0.0, _seconds(end, "a phase end", _CLOCK)
                                 - _seconds(start, "a phase start", _CLOCK)))
            levels.append((spans[0], spans[1], spans[2]))
        total = _seconds(record["total_seconds"], "total_seconds")
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(source, f"is not a run record of 'qos-plan run' ({type(e).__name__}: "
                         f"{str(e)[:120]})", "give the runs file 'qos-plan validate' wrote"
                         ) from None
    return Measurement(dict(placement), nodes, scale, total, tuple(levels))


def select_rows(regions: Sequence[int], totals: Sequence[float], k: int | None,
                seed: int = 0) -> list[int]:
    """Which of the candidate placements to run (indices into them).

    ``k`` None: all when there are at most :data:`ALL_BELOW`, else
    :data:`DEFAULT_SAMPLE`. A sample always holds the predicted best, then takes
    placements from the regions in turn (regions by their fastest placement
    first), each region's in an order drawn with ``seed``: every region is
    represented before any gets a second placement, so the sample spans the
    makespans the model tells apart, and the same call gives the same sample.
    """
    n = len(totals)
    if k is None:
        k = n if n <= ALL_BELOW else DEFAULT_SAMPLE
    if k >= n:
        return list(range(n))
    t = np.asarray(totals, dtype=float)
    best = int(np.argmin(t))
    rng = np.random.default_rng(seed)
    by_region: dict[int, list[int]] = {}
    for i, r in enumerate(regions):
        if i != best:
            by_region.setdefault(int(r), []).append(i)
    queues = [list(rng.permutation(rows)) for _, rows in
              sorted(by_region.items(), key=lambda kv: (float(t[kv[1]].min()), kv[0]))]
    chosen = [best]
    while len(chosen) < k:
        for q in queues:
            if q and len(chosen) < k:
                chosen.append(int(q.pop(0)))
    return chosen


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's rank correlation; NaN when either side has no spread."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    da, db = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(da @ da) * float(db @ db))
    return float(da @ db) / den if den > 0 else float("nan")


@dataclass(frozen=True)
class Comparison:
    """How the predictions of some placements compare with their measured runs."""

    predicted: list[float]              # per placement
    measured: list[float]               # per placement, median over its repeats
    repeats: list[int]
    concordance: float
    spearman: float
    relative_error: list[float]
    median_relative_error: float
    max_relative_error: float
    phases: dict[str, dict[str, float | None]]
    predicted_best: int
    measured_best: int
    best_gap: float
    spread: list[float | None]          # per placement; None when run once
    separable_pairs: int                # pairs the runs tell apart (module docstring)
    separable_concordance: float        # over those pairs; NaN when none

    @property
    def median_spread(self) -> float | None:
        return _median([x for x in self.spread if x is not None])

    @property
    def max_spread(self) -> float | None:
        known = [x for x in self.spread if x is not None]
        return max(known) if known else None

    @property
    def best_within(self) -> bool:
        return self.best_gap <= BEST_WITHIN


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def compare(predicted: Sequence[Prediction], measured: Sequence[Sequence[Measurement]]
            ) -> Comparison:
    """Compare each placement's prediction with its runs (at least one each)."""
    if len(predicted) != len(measured) or not predicted:
        raise ValueError("one list of runs per prediction, and at least one prediction")
    if any(not runs for runs in measured):
        raise ValueError("a placement without runs")
    pred = np.array([p.total for p in predicted])
    meas = np.array([float(np.median([m.total for m in runs])) for runs in measured])
    rel = np.abs(pred - meas) / meas
    phases: dict[str, dict[str, float | None]] = {}
    for p in PHASES:
        pp = np.array([x.phases[p] for x in predicted])
        mp = np.array([float(np.median([m.phases[p] for m in runs])) for runs in measured])
        timed = mp > 0
        phases[p] = {"predicted_seconds": float(pp.sum()), "measured_seconds": float(mp.sum()),
                     "median_relative_error": _median((np.abs(pp - mp)[timed]
                                                       / mp[timed]).tolist()),
                     "median_share_error": _median((np.abs(pp - mp) / meas).tolist())}
    pbest, mbest = int(np.argmin(pred)), int(np.argmin(meas))
    totals = [[m.total for m in runs] for runs in measured]
    ranges = [max(t) - min(t) if len(t) > 1 else None for t in totals]
    apart = concordant = 0
    for i in range(len(pred)):
        for j in range(i + 1, len(pred)):
            ri, rj = ranges[i], ranges[j]
            if ri is None or rj is None or abs(meas[i] - meas[j]) <= max(ri, rj):
                continue
            apart += 1
            # A tie in the prediction counts as concordant (told-apart pairs have none
            # in the measurement).
            concordant += (pred[i] - pred[j]) * (meas[i] - meas[j]) >= 0
    return Comparison(
        predicted=pred.tolist(), measured=meas.tolist(), repeats=[len(r) for r in measured],
        concordance=concordance(np.argsort(pred, kind="stable"), meas),
        spearman=spearman(pred, meas), relative_error=rel.tolist(),
        median_relative_error=float(np.median(rel)), max_relative_error=float(rel.max()),
        phases=phases, predicted_best=pbest, measured_best=mbest,
        best_gap=float((meas[pbest] - meas[mbest]) / meas[mbest]),
        spread=[None if r is None else r / m for r, m in zip(ranges, meas.tolist(),
                                                              strict=True)],
        separable_pairs=apart,
        separable_concordance=concordant / apart if apart else float("nan"))


def _num(x: float | None) -> float | None:
    """JSON has no NaN: an undefined statistic (one placement, no spread) is null."""
    return None if x is None or x != x else x


def comparison_json(c: Comparison, labels: Sequence[str]) -> dict[str, Any]:
    """The comparison as JSON, each placement named by ``labels``."""
    return {
        "placements": [{"placement": lab, "predicted_seconds": p, "measured_seconds": m,
                        "runs": n, "relative_error": e, "spread": sp}
                       for lab, p, m, n, e, sp in
                       zip(labels, c.predicted, c.measured, c.repeats, c.relative_error,
                           c.spread, strict=True)],
        "concordance": _num(c.concordance), "spearman": _num(c.spearman),
        "median_relative_error": c.median_relative_error,
        "max_relative_error": c.max_relative_error,
        "phases": {p: {k: _num(v) for k, v in d.items()} for p, d in c.phases.items()},
        "predicted_best": labels[c.predicted_best], "measured_best": labels[c.measured_best],
        "best_gap": c.best_gap, "best_within": c.best_within, "best_within_limit": BEST_WITHIN,
        "median_spread": c.median_spread, "max_spread": c.max_spread,
        "separable_pairs": c.separable_pairs,
        "separable_concordance": _num(c.separable_concordance)}


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


def _fixed(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"


def comparison_text(c: Comparison, labels: Sequence[str]) -> str:
    """A table per placement, then the statistics, for the terminal."""
    width = max(12, *(len(lab) for lab in labels))
    lines = [f"{'placement':{width}s} {'predicted':>11s} {'measured':>11s} {'runs':>4s} "
             f"{'error':>7s}"]
    for i in np.argsort(c.predicted, kind="stable").tolist():
        mark = (" <- predicted best" if i == c.predicted_best else "") + \
            (" <- measured best" if i == c.measured_best else "")
        lines.append(f"{labels[i]:{width}s} {c.predicted[i]:10.3f}s {c.measured[i]:10.3f}s "
                     f"{c.repeats[i]:4d} {_pct(c.relative_error[i]):>7s}{mark}")
    lines.append(f"pairwise concordance {_fixed(c.concordance)}, Spearman "
                 f"{_fixed(c.spearman)}; makespan error median "
                 f"{_pct(c.median_relative_error)}, max {_pct(c.max_relative_error)}")
    for p, d in c.phases.items():
        lines.append(f"  {p:10s} predicted {d['predicted_seconds'] or 0:9.3f}s measured "
                     f"{d['measured_seconds'] or 0:9.3f}s; error median "
                     f"{_pct(d['median_relative_error'])} of the phase, "
                     f"{_pct(d['median_share_error'])} of the makespan")
    verdict = "is the measured best" if c.predicted_best == c.measured_best else (
        f"is {_pct(c.best_gap)} slower than the measured best "
        f"({'within' if c.best_within else 'outside'} {_pct(BEST_WITHIN)})")
    lines.append(f"the predicted best {labels[c.predicted_best]} {verdict}")
    if c.median_spread is not None:
        pairs = len(c.predicted) * (len(c.predicted) - 1) // 2
        lines.append(f"run-to-run spread median {_pct(c.median_spread)}, max "
                     f"{_pct(c.max_spread)}; {c.separable_pairs} of {pairs} pairs differ by "
                     "more than their runs vary"
                     + (f", concordance {_fixed(c.separable_concordance)} over them"
                        if c.separable_pairs else ""))
    return "\n".join(lines)
