"""Regions: an interpretable partition of the configuration space (CART).

Features are the tier of each stage (one-hot) and the node count; the target is
the makespan. A regression tree is grown once over all node counts; its regions
are the nodes of one pruning of it, numbered by median makespan. Which pruning:

* ``separated`` (default, :mod:`growth`): the lowest-error pruning, grown
  best-first, whose neighbouring regions are all separated (medians at least the
  relative gap apart and Hedges' g over the threshold).
* the published QoSFlow selections: the pruning strength alpha is chosen by
  repeated K-fold cross-validation over the tree's pruning path, scoring each
  candidate on validation MAE and on the separation of its leaves (see
  :mod:`separation`, :mod:`crossval`), and the tree refit on all rows at that
  alpha:

  - ``constrained`` (the published run): among alphas whose median MAE is
    within ``mae_budget`` of the best, the highest median separation;
  - ``pass_only``: the highest median separation;
  - ``weighted``: the best blend ``(1-w) * sep_norm + w * (1 - mae_norm)``.

scikit-learn is imported here only; the exported regions are plain data.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.configtable import ConfigTable
from qos_plugin.model.crossval import FoldJob, FoldScores, run_folds
from qos_plugin.model.growth import GrowthStep, SeparatedGrowth
from qos_plugin.model.pruning import TreeArrays, weakest_links
from qos_plugin.model.separation import Threshold

log = logging.getLogger(__name__)

SELECT_MODES = ("separated", "constrained", "pass_only", "weighted")
PUBLISHED = "constrained"


@dataclass(frozen=True)
class CartSettings:
    """Tree, selection and cross-validation settings.

    The tree and the significance test are those of the published QoSFlow
    1kgenome run, read off its own records: final tree leaves of 8 rows, the
    adaptive threshold ``clip(g_delta / pooled MAD-CV, 0, 1)``. The default
    selection is ``separated``, with the same relative gap ``g_delta`` between
    neighbouring medians. ``select="constrained"`` is the published run: its
    cross-validation trees had leaves of 3 rows (its alpha grid is exactly that
    tree's pruning path), its score the mean effect, and at the chosen alpha its
    final tree has the published 18 leaves.
    """

    min_samples_leaf: int = 8            # final tree
    cv_min_samples_leaf: int | None = 3  # trees fitted during cross-validation
    max_depth: int | None = 12
    criterion: str = "absolute_error"
    folds: int = 5
    repeats: int = 5
    seed: int = 42
    g_min: float = 0.30
    # Adaptive significance: a relative gap of g_delta between neighbouring
    # leaves counts; None for the fixed g_min threshold.
    g_delta: float | None = 0.10
    g_spread: str = "mad"
    g_floor: float = 0.0                 # lowest adaptive threshold (a least effect size)
    score: str = "avg_effect"
    n_min_pair: int | None = None        # defaults to min_samples_leaf
    select: str = "separated"
    lookahead: int = 2                   # levels a region may be cut down at once
    mae_budget: float = 0.02
    mae_weight: float = 0.30

    def __post_init__(self) -> None:
        if self.select not in SELECT_MODES:
            raise InputError("--select", f"unknown region selection {self.select!r}",
                             f"use one of: {', '.join(SELECT_MODES)}")
        for opt, v in (("--min-leaf", self.min_samples_leaf),
                       ("--cv-min-leaf", self.cv_min_samples_leaf)):
            if v is not None and v < 1:
                raise InputError(opt, f"{v} is not positive", "give at least 1")
        if self.folds < 2:
            raise InputError("--folds", f"{self.folds} folds", "give at least 2")
        if self.repeats < 1:
            raise InputError("--repeats", f"{self.repeats} repeats", "give at least 1")
        if self.lookahead < 1:
            raise InputError("--lookahead", f"{self.lookahead} levels", "give at least 1")

    @property
    def threshold(self) -> Threshold:
        return Threshold(self.g_min, self.g_delta, self.g_spread, floor=self.g_floor)

    @property
    def gap(self) -> float:
        """Relative gap between neighbouring medians that separated regions need."""
        return self.g_delta if self.g_delta is not None else 0.0

    @property
    def cv_leaf(self) -> int:
        return self.cv_min_samples_leaf if self.cv_min_samples_leaf is not None \
            else self.min_samples_leaf

    @property
    def pair_minimum(self) -> int:
        return self.n_min_pair if self.n_min_pair is not None else self.cv_leaf


@dataclass
class Design:
    X: np.ndarray
    features: list[str]           # "stage=tier" or "nodes"
    stages: list[str]
    categories: list[list[str]]   # tiers seen per stage, sorted


def design_matrix(table: ConfigTable) -> Design:
    """One-hot tier per stage (categories sorted) followed by the node count."""
    cols = []
    names = []
    cats = []
    for j, s in enumerate(table.stages):
        values = sorted({str(v) for v in table.placement[:, j]})
        cats.append(values)
        for v in values:
            cols.append((table.placement[:, j] == v).astype(float))
            names.append(f"{s}={v}")
    cols.append(table.nodes.astype(float))
    names.append("nodes")
    return Design(np.stack(cols, axis=1), names, list(table.stages), cats)


def _tree(settings: CartSettings, seed: int, alpha: float, leaf: int) -> Any:
    from sklearn.tree import DecisionTreeRegressor

    return DecisionTreeRegressor(criterion=settings.criterion, min_samples_leaf=leaf,
                                 max_depth=settings.max_depth, random_state=seed,
                                 ccp_alpha=max(0.0, float(alpha)))


def alpha_grid(X: np.ndarray, y: np.ndarray, settings: CartSettings) -> np.ndarray:
    """Distinct, non-negative alphas of the full tree's pruning path (scikit-learn's
    ``cost_complexity_pruning_path``, without fitting the tree twice)."""
    tree = _tree(settings, settings.seed, 0.0, settings.cv_leaf).fit(X, y)
    events = weakest_links(TreeArrays(tree))
    alphas = np.array([0.0] + [a for a, _ in events], dtype=float)
    alphas = np.where(np.isfinite(alphas), np.maximum(alphas, 0.0), 0.0)
    return np.unique(alphas)


@dataclass(frozen=True)
class AlphaScore:
    alpha: float
    separation: float      # median over repeats of the median over folds
    mae: float             # median over repeats of the pooled validation MAE
    leaves: float          # mean leaves per validation fold


@dataclass
class CvResult:
    chosen_alpha: float
    scores: list[AlphaScore]
    folds: list[FoldScores] = field(default_factory=list)   # per (repeat, fold), all alphas


def fold_jobs(n: int, settings: CartSettings) -> list[FoldJob]:
    """The (repeat, fold) splits: K-fold shuffled with seed + 137 * repeat."""
    from sklearn.model_selection import KFold

    jobs = []
    for r in range(settings.repeats):
        rep_seed = settings.seed + 137 * r
        splits = KFold(n_splits=settings.folds, shuffle=True,
                       random_state=rep_seed).split(np.zeros((n, 1)))
        jobs += [FoldJob(r, f, rep_seed + f, tr, va) for f, (tr, va) in enumerate(splits)]
    return jobs


def cross_validate(X: np.ndarray, y: np.ndarray, settings: CartSettings,
                   progress: Callable[[int, int], None] | None = None,
                   workers: int | None = None) -> CvResult:
    """Repeated K-fold over the pruning path; returns the chosen alpha.

    Each fold's tree is fitted once and every alpha is a prefix of its pruning
    sequence; all alphas of a fold are scored together (:mod:`crossval`).
    """
    if y.size < settings.folds:
        raise InputError("regions", f"{y.size} configurations for {settings.folds} folds",
                         "give more configurations or fewer --folds")
    alphas = alpha_grid(X, y, settings)
    folds = run_folds(X, y, fold_jobs(y.size, settings), alphas,
                      lambda seed: _tree(settings, seed, 0.0, settings.cv_leaf),
                      settings.threshold, settings.pair_minimum, settings.score,
                      settings.g_spread, progress, workers)
    R, A = settings.repeats, alphas.size
    sep = np.full((R, A), np.nan)
    mae = np.zeros((R, A))
    leaves = np.full((R, A), np.nan)
    for r in range(R):
        mine = [f for f in folds if f.repeat == r]
        seps = np.stack([f.separation for f in mine])              # (folds, A)
        sep[r] = _median_finite(seps)
        mae[r] = np.sum([f.abs_err for f in mine], axis=0) / y.size
        counted = np.stack([f.leaves > 1 for f in mine])
        with np.errstate(invalid="ignore"):
            leaves[r] = np.where(counted.any(axis=0),
                                 (np.stack([f.leaves for f in mine]) * counted).sum(axis=0)
                                 / counted.sum(axis=0), np.nan)
    scores = [AlphaScore(float(a), float(_median_finite(sep[:, i:i + 1])[0]),
                         float(_median_finite(mae[:, i:i + 1])[0]),
                         float(np.nanmean(leaves[:, i])) if np.isfinite(leaves[:, i]).any()
                         else math.nan)
              for i, a in enumerate(alphas)]
    return CvResult(choose_alpha(scores, settings), scores, folds)


def _median_finite(v: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the finite values; NaN where there are none."""
    finite = np.isfinite(v)
    k = finite.sum(axis=0)
    srt = np.sort(np.where(finite, v, np.inf), axis=0)
    lo = np.take_along_axis(srt, (np.maximum(k - 1, 0) // 2)[None, :], axis=0)[0]
    hi = np.take_along_axis(srt, np.minimum(k // 2, v.shape[0] - 1)[None, :], axis=0)[0]
    with np.errstate(invalid="ignore"):
        out: np.ndarray = np.where(k > 0, (lo + hi) / 2.0, np.nan)
    return out


def _desc(x: float) -> float:
    """Sort key for 'larger first' with NaN last."""
    return math.inf if math.isnan(x) else -x


def choose_alpha(scores: list[AlphaScore], settings: CartSettings) -> float:
    if settings.select == "pass_only":
        best = min(scores, key=lambda s: (_desc(s.separation), s.leaves, -s.alpha))
        return best.alpha
    if settings.select == "constrained":
        maes = [s.mae for s in scores if not math.isnan(s.mae)]
        floor = min(maes)
        eligible = [s for s in scores if s.mae <= (1.0 + settings.mae_budget) * floor]
        best = min(eligible, key=lambda s: (_desc(s.separation), _desc(s.leaves), s.alpha))
        return best.alpha
    sep = np.array([s.separation for s in scores])
    mae = np.array([s.mae for s in scores])
    w = settings.mae_weight
    blend = (1.0 - w) * _minmax(sep) + w * (1.0 - _minmax(mae))
    k = min(range(len(scores)),
            key=lambda i: (_desc(float(blend[i])), _desc(scores[i].leaves), scores[i].alpha))
    return scores[k].alpha


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = np.nanmin(x), np.nanmax(x)
    if not np.isfinite(lo + hi) or hi == lo:
        return np.zeros_like(x)
    scaled: np.ndarray = (x - lo) / (hi - lo)
    return scaled


@dataclass
class RegionFit:
    """The chosen regions, reduced to plain data."""

    labels: np.ndarray                   # (R,) region of each row, 0 = lowest median
    leaf_bounds: dict[int, list[str]]    # region -> split conditions on its path
    select: str
    alpha: float | None = None           # cross-validated selections only
    cv: CvResult | None = None
    growth: list[GrowthStep] = field(default_factory=list)  # separated selection only


def fit_regions(table: ConfigTable, settings: CartSettings | None = None,
                progress: Callable[[int, int], None] | None = None) -> RegionFit:
    """Regions of ``table``: separated growth (default) or a cross-validated alpha
    refit on all rows; regions are numbered by median makespan."""
    settings = settings or CartSettings()
    if len(table) < 2 * settings.min_samples_leaf:
        raise InputError("regions", f"only {len(table)} configurations",
                         f"regions need at least {2 * settings.min_samples_leaf} "
                         "(twice --min-leaf)")
    d = design_matrix(table)
    y = table.total.astype(float)
    if settings.select == "separated":
        tree = _tree(settings, settings.seed, 0.0, settings.min_samples_leaf).fit(d.X, y)
        grown = SeparatedGrowth(tree, d.X, y, settings.threshold, settings.gap,
                                settings.lookahead).grow()
        node_of_row = np.empty(y.size, dtype=np.int64)
        for node, rows in grown.rows.items():
            node_of_row[rows] = node
        labels, bounds = _number_by_median(tree, d.features, node_of_row, y)
        log.info("separated growth gives %d regions", len(bounds))
        return RegionFit(labels, bounds, settings.select, growth=grown.steps)
    cv = cross_validate(d.X, y, settings, progress)
    tree = _tree(settings, settings.seed, cv.chosen_alpha, settings.min_samples_leaf).fit(d.X, y)
    labels, bounds = _number_by_median(tree, d.features, tree.apply(d.X), y)
    log.info("alpha=%.6g gives %d regions", cv.chosen_alpha, len(bounds))
    return RegionFit(labels, bounds, settings.select, cv.chosen_alpha, cv)


def _number_by_median(tree: Any, features: list[str], node_of_row: np.ndarray,
                      y: np.ndarray) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Region labels (0 = lowest median; ties by node id) and each region's path."""
    ids, inv = np.unique(node_of_row, return_inverse=True)
    medians = np.array([np.median(y[inv == k]) for k in range(ids.size)])
    order = np.argsort(medians, kind="stable")
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size)
    paths = node_paths(tree, features)
    return rank[inv], {int(rank[k]): paths[int(node)] for k, node in enumerate(ids)}


def node_paths(tree: Any, features: list[str]) -> dict[int, list[str]]:
    """Conditions from the root to every node, in the domain's words."""
    t = tree.tree_
    out: dict[int, list[str]] = {0: []}
    for node in range(int(t.node_count)):   # parents come before their children
        left, right = int(t.children_left[node]), int(t.children_right[node])
        if left == -1:
            continue
        name, thr = features[int(t.feature[node])], float(t.threshold[node])
        if name == "nodes":
            out[left] = out[node] + [f"nodes <= {thr:g}"]
            out[right] = out[node] + [f"nodes > {thr:g}"]
        else:
            stage, tier = name.split("=", 1)
            out[left] = out[node] + [f"{stage} != {tier}"]
            out[right] = out[node] + [f"{stage} == {tier}"]
    return out
