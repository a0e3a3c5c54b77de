"""Repeated K-fold over a tree's pruning path, every alpha of a fold at once.

Per (repeat, fold) one tree is fitted on the training rows and its pruning
sequence computed once (:class:`~qos_plugin.model.pruning.PrunedPath`); the node
that stands for each validation row at every alpha of the grid is a table, and
the validation MAE and the separation of the validation leaves are computed for
all alphas together from group statistics (one sort per block of alphas), not
alpha by alpha. Folds run in a pool of threads: scikit-learn's tree builder and
numpy's sorts release the GIL, so on 2 cores two folds run side by side.

The result is identical to fitting scikit-learn with every ``ccp_alpha`` and
scoring each validation partition with :func:`~qos_plugin.model.separation.separation`
(up to the last bits of float sums; ``tests/unit/test_crossval.py`` compares them).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from qos_plugin.model.pruning import PrunedPath
from qos_plugin.model.separation import Threshold

# Validation rows x alphas evaluated per block; bounds the memory of one fold.
BLOCK = 500_000


@dataclass(frozen=True)
class FoldScores:
    """Per alpha of the grid, for one validation fold."""

    repeat: int
    fold: int
    n_val: int
    leaves: np.ndarray       # (A,) validation leaves
    pairs: np.ndarray        # (A,) adjacent pairs evaluated
    separation: np.ndarray   # (A,) score, NaN for a single leaf
    abs_err: np.ndarray      # (A,) sum of |prediction - y| over the fold


@dataclass(frozen=True)
class GroupStats:
    """Statistics of groups of validation rows (one group = one leaf at one alpha)."""

    alpha: np.ndarray        # (G,) alpha index of the group
    node: np.ndarray         # (G,) tree node
    n: np.ndarray            # (G,) rows
    mean: np.ndarray
    var: np.ndarray          # ddof=1, NaN for one row
    median: np.ndarray
    spread: np.ndarray       # relative spread for the adaptive threshold (inf: none)


def group_stats(y: np.ndarray, rep: np.ndarray, n_nodes: int, estimator: str,
                need_spread: bool) -> GroupStats:
    """Statistics of every (alpha, node) group of ``rep`` ((rows, alphas) node ids);
    ``y`` must be sorted ascending, so each group's values come out sorted."""
    A = rep.shape[1]
    keys = (np.arange(A, dtype=np.int64)[:, None] * n_nodes + rep.T).ravel()
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    yv = np.tile(y, A)[order]
    uniq, start, count = np.unique(k, return_index=True, return_counts=True)
    gid = np.repeat(np.arange(uniq.size), count)
    total = np.add.reduceat(yv, start)
    mean = total / count
    dev = yv - mean[gid]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count > 1, np.add.reduceat(dev * dev, start) / (count - 1), np.nan)
    median = _sorted_median(yv, start, count)
    spread = np.full(uniq.size, np.inf)
    if need_spread:
        if estimator == "mad":
            absdev = np.abs(yv - median[gid])
            o2 = np.lexsort((absdev, gid))
            mad = 1.4826 * _sorted_median(absdev[o2], start, count)
            centre = median
        else:
            mad = np.where(count > 1, np.sqrt(np.nan_to_num(var)), 0.0)
            centre = mean
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = np.where(np.isfinite(centre) & (centre > 0), mad / centre, np.inf)
    return GroupStats(uniq // n_nodes, uniq % n_nodes, count, mean, var, median, spread)


def _sorted_median(v: np.ndarray, start: np.ndarray, count: np.ndarray) -> np.ndarray:
    lo = v[start + (count - 1) // 2]
    hi = v[start + count // 2]
    out: np.ndarray = (lo + hi) / 2.0
    return out


@dataclass(frozen=True)
class Pairs:
    """Adjacent groups (by median, ties by node id) within each alpha."""

    alpha: np.ndarray        # (P,) alpha index
    a: np.ndarray            # (P,) lower group
    b: np.ndarray            # (P,) upper group


def adjacent_pairs(s: GroupStats) -> Pairs:
    # Groups arrive sorted by (alpha, node); a stable sort on median keeps the node
    # order for ties, as leaves_by_median does.
    order = np.lexsort((s.median, s.alpha))
    same = s.alpha[order[1:]] == s.alpha[order[:-1]]
    return Pairs(s.alpha[order[1:]][same], order[:-1][same], order[1:][same])


def hedges_g_pairs(s: GroupStats, p: Pairs) -> np.ndarray:
    """|g| of each pair; NaN where a side has < 2 rows or there is no spread."""
    na, nb = s.n[p.a].astype(float), s.n[p.b].astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        sp = np.sqrt(((na - 1) * s.var[p.a] + (nb - 1) * s.var[p.b]) / (na + nb - 2))
        j = 1.0 - 3.0 / (4.0 * (na + nb) - 9.0)
        g = np.abs(j * (s.mean[p.b] - s.mean[p.a]) / sp)
    bad = (na < 2) | (nb < 2) | ~np.isfinite(sp) | (sp == 0.0)
    return np.where(bad, np.nan, g)


def pair_thresholds(s: GroupStats, p: Pairs, threshold: Threshold) -> np.ndarray:
    """:meth:`Threshold.for_pair` of every pair."""
    if threshold.delta is None:
        return np.full(p.a.size, threshold.g_min)
    ca, cb = s.spread[p.a], s.spread[p.b]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        pooled = np.sqrt(0.5 * (ca * ca + cb * cb))
        adaptive = np.clip(threshold.delta / pooled, threshold.floor, threshold.cap)
    ok = np.isfinite(ca) & np.isfinite(cb) & (pooled > 0)
    return np.where(ok, adaptive, threshold.g_min)


def separation_scores(s: GroupStats, A: int, threshold: Threshold, n_min_pair: int,
                      score: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(score, leaves, pairs) per alpha, as :func:`separation` computes them."""
    leaves = np.bincount(s.alpha, minlength=A)
    p = adjacent_pairs(s)
    g = hedges_g_pairs(s, p)
    na, nb = s.n[p.a], s.n[p.b]
    use = (np.minimum(na, nb) >= n_min_pair) & np.isfinite(g)
    w = 2.0 / (1.0 / na + 1.0 / nb)
    sig = use & (g >= pair_thresholds(s, p, threshold))
    w_all = np.bincount(p.alpha, weights=np.where(use, w, 0.0), minlength=A)
    w_sig = np.bincount(p.alpha, weights=np.where(sig, w, 0.0), minlength=A)
    g_sig = np.bincount(p.alpha, weights=np.where(sig, g * w, 0.0), minlength=A)
    pairs = np.bincount(p.alpha, weights=use.astype(float), minlength=A).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(w_sig > 0, g_sig / w_sig, 0.0)
        frac = np.where(w_all > 0, w_sig / w_all, 0.0)
    value = {"avg_effect": avg, "product": avg * frac, "frac_sig": frac}[score]
    return np.where(leaves <= 1, np.nan, value), leaves, pairs


@dataclass(frozen=True)
class FoldJob:
    repeat: int
    fold: int
    seed: int
    train: np.ndarray
    val: np.ndarray


def evaluate_fold(X: np.ndarray, y: np.ndarray, job: FoldJob, alphas: np.ndarray,
                  make_tree: Callable[[int], Any], threshold: Threshold, n_min_pair: int,
                  score: str, estimator: str) -> FoldScores:
    """Fit one fold's tree and score its validation rows at every alpha."""
    tree = make_tree(job.seed).fit(X[job.train], y[job.train])
    path = PrunedPath(tree)
    val = job.val[np.argsort(y[job.val], kind="stable")]
    yv = y[val]
    leaf_ids, inv = np.unique(tree.apply(X[val]), return_inverse=True)
    A = alphas.size
    out_leaves = np.zeros(A, dtype=np.int64)
    out_pairs = np.zeros(A, dtype=np.int64)
    out_sep = np.full(A, np.nan)
    out_err = np.zeros(A)
    step = max(1, BLOCK // max(1, val.size))
    for lo in range(0, A, step):
        block = alphas[lo:lo + step]
        rep = path.represent(leaf_ids, block)[inv]                  # (n_val, a)
        out_err[lo:lo + step] = np.abs(path.t.value[rep] - yv[:, None]).sum(axis=0)
        stats = group_stats(yv, rep, path.t.n, estimator, threshold.delta is not None)
        sep, lv, pr = separation_scores(stats, block.size, threshold, n_min_pair, score)
        out_sep[lo:lo + step], out_leaves[lo:lo + step], out_pairs[lo:lo + step] = sep, lv, pr
    return FoldScores(job.repeat, job.fold, int(val.size), out_leaves, out_pairs, out_sep,
                      out_err)


def run_folds(X: np.ndarray, y: np.ndarray, jobs: list[FoldJob], alphas: np.ndarray,
              make_tree: Callable[[int], Any], threshold: Threshold, n_min_pair: int,
              score: str, estimator: str,
              progress: Callable[[int, int], None] | None = None,
              workers: int | None = None) -> list[FoldScores]:
    """Every fold's scores, in the order of ``jobs``."""
    workers = workers or min(len(jobs), os.cpu_count() or 1)

    def one(job: FoldJob) -> FoldScores:
        return evaluate_fold(X, y, job, alphas, make_tree, threshold, n_min_pair, score,
                             estimator)

    results: list[FoldScores] = []
    if workers <= 1:
        for job in jobs:
            results.append(one(job))
            if progress is not None:
                progress(len(results), len(jobs))
        return results
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for res in pool.map(one, jobs):
            results.append(res)
            if progress is not None:
                progress(len(results), len(jobs))
    return results

