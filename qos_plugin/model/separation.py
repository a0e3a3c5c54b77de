"""How well a partition separates makespans: adjacent-leaf Hedges' g.

Leaves are sorted by median makespan; for each adjacent pair with enough rows on
both sides the bias-corrected standardized mean difference (Hedges' g) is
computed with the pooled standard deviation. A pair is *significant* when ``g``
reaches a threshold, fixed or adapted to the leaves' spread (:class:`Threshold`).
Pairs are weighted by the harmonic mean of their sizes, ``2 / (1/n_i + 1/n_j)``.
The score is one of

* ``avg_effect``: weighted mean g over the significant pairs (the default, as in
  the published QoSFlow run);
* ``frac_sig``: weighted fraction of significant pairs;
* ``product``: their product, high only when most neighbours are clearly apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def hedges_g(x: np.ndarray, y: np.ndarray) -> float:
    """|g| of two samples; NaN when either has < 2 values or no spread."""
    nx, ny = x.size, y.size
    if nx < 2 or ny < 2:
        return math.nan
    vx, vy = float(np.var(x, ddof=1)), float(np.var(y, ddof=1))
    sp = math.sqrt(((nx - 1) * vx + (ny - 1) * vy) / (nx + ny - 2))
    if not math.isfinite(sp) or sp == 0.0:
        return math.nan
    j = 1.0 - 3.0 / (4.0 * (nx + ny) - 9.0)
    return abs(j * (float(np.mean(y)) - float(np.mean(x))) / sp)


@dataclass(frozen=True)
class Separation:
    score: float        # NaN when there is a single leaf
    n_leaves: int
    pairs: int          # adjacent pairs evaluated
    significant: int

    @property
    def skipped(self) -> bool:
        return self.n_leaves <= 1


def leaves_by_median(y: np.ndarray, leaf_ids: np.ndarray) -> list[np.ndarray]:
    """Row indices of each leaf, leaves ordered by median (ties: by leaf id)."""
    ids = np.unique(leaf_ids)
    groups = [np.flatnonzero(leaf_ids == i) for i in ids]
    medians = np.array([np.median(y[g]) for g in groups])
    order = np.argsort(medians, kind="stable")
    return [groups[i] for i in order]


def relative_spread(x: np.ndarray, estimator: str = "mad") -> float:
    """Coefficient of variation: 1.4826 * MAD / median, or sd / mean."""
    if x.size == 0:
        return math.inf
    if estimator == "mad":
        centre = float(np.median(x))
        spread = 1.4826 * float(np.median(np.abs(x - centre)))
    else:
        centre = float(np.mean(x))
        spread = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    if not math.isfinite(centre) or centre <= 0:
        return math.inf
    return spread / centre


@dataclass(frozen=True)
class Threshold:
    """When a pair's g counts as significant.

    Fixed: ``g >= g_min``. Adaptive (``delta`` set): ``g >= clip(delta / cv, floor,
    cap)`` with ``cv`` the pooled relative spread of the two leaves, so a gap of
    ``delta`` (relative) is what counts, whatever the leaves' noise.
    """

    g_min: float = 0.30
    delta: float | None = None
    estimator: str = "mad"
    floor: float = 0.0
    cap: float = 1.0

    def for_pair(self, a: np.ndarray, b: np.ndarray) -> float:
        if self.delta is None:
            return self.g_min
        ca, cb = relative_spread(a, self.estimator), relative_spread(b, self.estimator)
        if not (math.isfinite(ca) and math.isfinite(cb)):
            return self.g_min
        pooled = math.sqrt(0.5 * (ca * ca + cb * cb))
        if pooled <= 0:
            return self.g_min
        return max(self.floor, min(self.cap, self.delta / pooled))


SCORES = ("avg_effect", "product", "frac_sig")


def separation(y: np.ndarray, leaf_ids: np.ndarray, threshold: Threshold | None = None,
               n_min_pair: int = 8, score: str = "avg_effect") -> Separation:
    threshold = threshold or Threshold()
    groups = leaves_by_median(y, leaf_ids)
    if len(groups) <= 1:
        return Separation(math.nan, len(groups), 0, 0)
    w_all = w_sig = g_sig = 0.0
    pairs = sig = 0
    for a, b in zip(groups, groups[1:], strict=False):
        if min(a.size, b.size) < n_min_pair:
            continue
        g = hedges_g(y[a], y[b])
        if not math.isfinite(g):
            continue
        w = 2.0 / (1.0 / a.size + 1.0 / b.size)
        w_all += w
        pairs += 1
        if g >= threshold.for_pair(y[a], y[b]):
            w_sig += w
            g_sig += g * w
            sig += 1
    avg = g_sig / w_sig if w_sig > 0 else 0.0
    frac = w_sig / w_all if w_all > 0 else 0.0
    value = {"avg_effect": avg, "product": avg * frac, "frac_sig": frac}[score]
    return Separation(value, len(groups), pairs, sig)
