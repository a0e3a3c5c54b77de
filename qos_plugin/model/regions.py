"""Regions: an interpretable partition of the configuration space (CART).

Features are the tier of each stage (one-hot) and the node count; the target is
the makespan. A regression tree is grown once over all node counts and pruned by
cost complexity. The pruning strength alpha is chosen by repeated K-fold
cross-validation over the tree's pruning path, scoring each candidate on
validation MAE and on the separation of its leaves (see :mod:`separation`):

* ``constrained`` (default): among alphas whose median MAE is within
  ``mae_budget`` of the best, the highest median separation;
* ``pass_only``: the highest median separation;
* ``weighted``: the best blend ``(1-w) * sep_norm + w * (1 - mae_norm)``.

The refit tree's leaves, numbered by median makespan, are the regions.
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
from qos_plugin.model.separation import Threshold, separation

log = logging.getLogger(__name__)

SELECT_MODES = ("constrained", "pass_only", "weighted")


@dataclass(frozen=True)
class CartSettings:
    """Tree and cross-validation settings.

    The defaults are those of the published QoSFlow 1kgenome run, read off its
    own records: its cross-validation trees had leaves of 3 rows (its alpha grid
    is exactly that tree's pruning path) and its final tree leaves of 8 rows (it
    has 18 leaves at the chosen alpha); significance is the adaptive threshold
    and the score the mean effect (its per-fold scores are reproduced exactly).
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
    score: str = "avg_effect"
    n_min_pair: int | None = None        # defaults to min_samples_leaf
    select: str = "constrained"
    mae_budget: float = 0.02
    mae_weight: float = 0.30

    def __post_init__(self) -> None:
        if self.select not in SELECT_MODES:
            raise InputError("--select", f"unknown alpha choice {self.select!r}",
                             f"use one of: {', '.join(SELECT_MODES)}")
        for opt, v in (("--min-leaf", self.min_samples_leaf),
                       ("--cv-min-leaf", self.cv_min_samples_leaf)):
            if v is not None and v < 1:
                raise InputError(opt, f"{v} is not positive", "give at least 1")
        if self.folds < 2:
            raise InputError("--folds", f"{self.folds} folds", "give at least 2")
        if self.repeats < 1:
            raise InputError("--repeats", f"{self.repeats} repeats", "give at least 1")

    @property
    def threshold(self) -> Threshold:
        return Threshold(self.g_min, self.g_delta, self.g_spread)

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
    """Distinct, non-negative alphas of the full tree's pruning path."""
    tree = _tree(settings, settings.seed, 0.0, settings.cv_leaf).fit(X, y)
    path = tree.cost_complexity_pruning_path(X, y)
    alphas = np.asarray(path.ccp_alphas, dtype=float)
    alphas = np.where(np.isfinite(alphas), np.maximum(alphas, 0.0), 0.0)
    return np.unique(alphas)


class PrunedPath:
    """Minimal cost-complexity pruning of a fitted tree, replayed for any alpha.

    The weakest-link sequence is computed once with scikit-learn's arithmetic
    (same operation order, same tie-breaking), so the tree for a given alpha (the
    prefix of the sequence up to the first link weaker than alpha) is exactly the
    tree scikit-learn would fit with that ``ccp_alpha``.
    """

    def __init__(self, tree: Any, leaves: np.ndarray) -> None:
        t = tree.tree_
        self.value = np.asarray(t.value).reshape(t.node_count, -1)[:, 0]
        self.leaves = np.asarray(leaves)
        self.events = _weakest_links(t)
        self._members = _subtree_leaves(t)
        self._applied = 0
        self._rep = np.arange(t.node_count)

    def at(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(leaf of each sample, prediction) for ``alpha``; alphas must not decrease."""
        if alpha <= 0.0:   # scikit-learn does not prune at all for ccp_alpha == 0
            return self.leaves, self.value[self.leaves]
        while self._applied < len(self.events) and not self.events[self._applied][0] > alpha:
            node = self.events[self._applied][1]
            self._rep[self._members[node]] = node
            self._applied += 1
        leaf = self._rep[self.leaves]
        return leaf, self.value[leaf]


def _subtree_leaves(t: Any) -> list[np.ndarray]:
    left, right = t.children_left, t.children_right
    out: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * t.node_count
    for node in range(t.node_count - 1, -1, -1):   # children have larger ids
        if left[node] == -1:
            out[node] = np.array([node], dtype=np.int64)
        else:
            out[node] = np.concatenate([out[left[node]], out[right[node]]])
    return out


def _weakest_links(t: Any) -> list[tuple[float, int]]:
    n = int(t.node_count)
    left = [int(v) for v in t.children_left]
    right = [int(v) for v in t.children_right]
    w = [float(v) for v in t.weighted_n_node_samples]
    imp = [float(v) for v in t.impurity]
    total = w[0]
    r_node = [w[i] * imp[i] / total for i in range(n)]
    parent = [-1] * n
    for i in range(n):
        if left[i] != -1:
            parent[left[i]] = parent[right[i]] = i
    is_leaf = [left[i] == -1 for i in range(n)]
    r_branch = [0.0] * n
    n_leaves = [0] * n
    for leaf in range(n):
        if not is_leaf[leaf]:
            continue
        r_branch[leaf] = r_node[leaf]
        idx = leaf
        while idx != 0:
            p = parent[idx]
            r_branch[p] += r_node[leaf]
            n_leaves[p] += 1
            idx = p
    candidate = [not x for x in is_leaf]
    events: list[tuple[float, int]] = []
    while candidate[0]:
        best, best_i = float(np.finfo(np.float64).max), -1
        for i in range(n):
            if candidate[i]:
                a = (r_node[i] - r_branch[i]) / (n_leaves[i] - 1)
                if a < best:
                    best, best_i = a, i
        events.append((best, best_i))
        stack = [best_i]
        while stack:
            k = stack.pop()
            candidate[k] = False
            if left[k] != -1:
                stack += [left[k], right[k]]
        pruned_leaves = n_leaves[best_i] - 1
        n_leaves[best_i] = 0
        diff = r_node[best_i] - r_branch[best_i]
        r_branch[best_i] = r_node[best_i]
        idx = parent[best_i]
        while idx != -1:
            n_leaves[idx] -= pruned_leaves
            r_branch[idx] += diff
            idx = parent[idx]
    return events


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
    folds: list[dict[str, Any]] = field(default_factory=list)  # per (repeat, alpha, fold)


def cross_validate(X: np.ndarray, y: np.ndarray, settings: CartSettings,
                   progress: Callable[[int, int], None] | None = None) -> CvResult:
    """Repeated K-fold over the pruning path; returns the chosen alpha."""
    from sklearn.model_selection import KFold

    alphas = alpha_grid(X, y, settings)
    if y.size < settings.folds:
        raise InputError("regions", f"{y.size} configurations for {settings.folds} folds",
                         "give more configurations or fewer --folds")
    per_alpha_sep: dict[int, list[float]] = {i: [] for i in range(alphas.size)}
    per_alpha_mae: dict[int, list[float]] = {i: [] for i in range(alphas.size)}
    per_alpha_leaves: dict[int, list[float]] = {i: [] for i in range(alphas.size)}
    records: list[dict[str, Any]] = []
    steps = settings.repeats * alphas.size
    done = 0
    for r in range(settings.repeats):
        rep_seed = settings.seed + 137 * r
        splits = list(KFold(n_splits=settings.folds, shuffle=True,
                            random_state=rep_seed).split(X))
        # One full tree per fold; every alpha's tree is a prefix of its
        # weakest-link pruning sequence (as scikit-learn prunes it).
        pruned = []
        for f, (tr, va) in enumerate(splits):
            full = _tree(settings, rep_seed + f, 0.0, settings.cv_leaf).fit(X[tr], y[tr])
            pruned.append(PrunedPath(full, full.apply(X[va])))
        for ai, alpha in enumerate(alphas):
            seps: list[float] = []
            leaves: list[int] = []
            abs_err = 0.0
            for f, (_, va) in enumerate(splits):
                leaf, pred = pruned[f].at(float(alpha))
                sep = separation(y[va], leaf, settings.threshold, settings.pair_minimum,
                                 settings.score)
                err = np.abs(pred - y[va])
                abs_err += float(err.sum())
                if not sep.skipped:
                    seps.append(sep.score)
                    leaves.append(sep.n_leaves)
                records.append(dict(repeat=r, alpha=float(alpha), fold=f, n_val=int(va.size),
                                    leaves=sep.n_leaves, pairs=sep.pairs,
                                    separation=sep.score, mae=float(err.mean())))
            finite = [s for s in seps if not math.isnan(s)]
            per_alpha_sep[ai].append(float(np.median(finite)) if finite else math.nan)
            per_alpha_mae[ai].append(abs_err / y.size)
            per_alpha_leaves[ai].append(float(np.mean(leaves)) if leaves else math.nan)
            done += 1
            if progress is not None:
                progress(done, steps)
    scores = [AlphaScore(float(a), _nanmedian(per_alpha_sep[i]), _nanmedian(per_alpha_mae[i]),
                         _nanmean(per_alpha_leaves[i])) for i, a in enumerate(alphas)]
    return CvResult(choose_alpha(scores, settings), scores, records)


def _nanmedian(v: list[float]) -> float:
    f = [x for x in v if not math.isnan(x)]
    return float(np.median(f)) if f else math.nan


def _nanmean(v: list[float]) -> float:
    f = [x for x in v if not math.isnan(x)]
    return float(np.mean(f)) if f else math.nan


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
    """The refit tree, reduced to plain data."""

    labels: np.ndarray                   # (R,) region of each row, 0 = lowest median
    alpha: float
    cv: CvResult
    leaf_bounds: dict[int, list[str]]    # region -> split conditions on its path


def fit_regions(table: ConfigTable, settings: CartSettings | None = None,
                progress: Callable[[int, int], None] | None = None) -> RegionFit:
    """Choose alpha by cross-validation, refit on all rows, number leaves by median."""
    settings = settings or CartSettings()
    if len(table) < 2 * settings.min_samples_leaf:
        raise InputError("regions", f"only {len(table)} configurations",
                         f"regions need at least {2 * settings.min_samples_leaf} "
                         "(twice --min-leaf)")
    d = design_matrix(table)
    y = table.total.astype(float)
    cv = cross_validate(d.X, y, settings, progress)
    tree = _tree(settings, settings.seed, cv.chosen_alpha, settings.min_samples_leaf).fit(d.X, y)
    leaves = tree.apply(d.X)
    ids = np.unique(leaves)
    medians = np.array([np.median(y[leaves == i]) for i in ids])
    order = ids[np.argsort(medians, kind="stable")]
    leaf_to_region = {int(leaf): k for k, leaf in enumerate(order)}
    labels = np.array([leaf_to_region[int(v)] for v in leaves], dtype=np.int64)
    bounds = {leaf_to_region[int(leaf)]: conds
              for leaf, conds in _leaf_paths(tree, d.features).items()
              if int(leaf) in leaf_to_region}
    log.info("alpha=%.6g gives %d regions", cv.chosen_alpha, len(order))
    return RegionFit(labels, cv.chosen_alpha, cv, bounds)


def _leaf_paths(tree: Any, features: list[str]) -> dict[int, list[str]]:
    """Conditions from the root to each leaf, in the domain's words."""
    t = tree.tree_
    out: dict[int, list[str]] = {}

    def walk(node: int, conds: list[str]) -> None:
        left, right = int(t.children_left[node]), int(t.children_right[node])
        if left == right:  # a leaf
            out[node] = conds
            return
        name, thr = features[int(t.feature[node])], float(t.threshold[node])
        if name == "nodes":
            walk(left, conds + [f"nodes <= {thr:g}"])
            walk(right, conds + [f"nodes > {thr:g}"])
        else:
            stage, tier = name.split("=", 1)
            walk(left, conds + [f"{stage} != {tier}"])
            walk(right, conds + [f"{stage} == {tier}"])

    walk(0, [])
    return out
