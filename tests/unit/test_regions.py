"""Regions: the pruning replay and the vectorised cross-validation against
scikit-learn refitted at every alpha, and separated growth on workflows of our own."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.model_selection import KFold
from sklearn.tree import DecisionTreeRegressor

from qos_plugin.model.configtable import from_makespan
from qos_plugin.model.crossval import run_folds
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.pruning import PrunedPath, TreeArrays, weakest_links
from qos_plugin.model.regions import (
    CartSettings,
    alpha_grid,
    choose_alpha,
    cross_validate,
    design_matrix,
    fit_regions,
    fold_jobs,
)
from qos_plugin.model.rules import build_regions
from qos_plugin.model.separation import Threshold, hedges_g, separation
from qos_plugin.model.synthetic import TierModel, chain_workflow, fan_workflow
from qos_plugin.model.tiers import parse_tiers

TIERS = parse_tiers("pfs:shared,tmpfs:node-local,nvme:node-local")
SPEEDS = {"pfs": TierModel(900, 600, 0.6), "tmpfs": TierModel(5000, 3000, 0.3),
          "nvme": TierModel(2500, 1500, 0.4)}


def table_of(wf, nodes):  # type: ignore[no-untyped-def]
    return from_makespan(MakespanModel(wf.template, wf.cost_table(nodes), wf.tiers)
                         .evaluate(nodes))


@pytest.fixture(scope="module")
def small():
    """154 placements: 5 stages in 3 levels, N = 2, 4."""
    t = table_of(chain_workflow(5, TIERS, SPEEDS, width=2), [2, 4])
    return design_matrix(t).X, t.total.astype(float)


def tree(leaf: int, alpha: float = 0.0, seed: int = 0) -> DecisionTreeRegressor:
    return DecisionTreeRegressor(criterion="absolute_error", min_samples_leaf=leaf,
                                 max_depth=12, random_state=seed, ccp_alpha=alpha)


@pytest.mark.parametrize("leaf", [1, 3, 8])
def test_pruning_path_is_scikit_learns(small, leaf):
    X, y = small
    full = tree(leaf).fit(X, y)
    events = weakest_links(TreeArrays(full))
    sk = full.cost_complexity_pruning_path(X, y).ccp_alphas
    assert [0.0] + [a for a, _ in events] == list(sk)
    # Every alpha of the grid replays the tree scikit-learn fits with it.
    path = PrunedPath(full)
    rows = np.arange(y.size)
    leaves, inv = np.unique(full.apply(X), return_inverse=True)
    grid = np.unique(np.concatenate([[0.0], np.maximum(sk, 0.0), path.alphas[:-1] * 1.0001]))
    nodes = path.represent(leaves, grid)[inv]
    for j, a in enumerate(grid):
        refit = tree(leaf, a).fit(X, y)
        assert np.array_equal(path.t.value[nodes[rows, j]], refit.predict(X)), f"alpha {a}"
        assert np.unique(nodes[:, j]).size == refit.get_n_leaves()


def reference_folds(X, y, settings: CartSettings, alphas):  # type: ignore[no-untyped-def]
    """The slow way: refit scikit-learn at every alpha and score each fold alone."""
    out = {}
    for r in range(settings.repeats):
        rep_seed = settings.seed + 137 * r
        splits = KFold(settings.folds, shuffle=True, random_state=rep_seed).split(X)
        for f, (tr, va) in enumerate(splits):
            for j, a in enumerate(alphas):
                t = tree(settings.cv_leaf, a, rep_seed + f).fit(X[tr], y[tr])
                sep = separation(y[va], t.apply(X[va]), settings.threshold,
                                 settings.pair_minimum, settings.score)
                err = float(np.abs(t.predict(X[va]) - y[va]).sum())
                out[(r, f, j)] = (sep.n_leaves, sep.pairs, sep.score, err)
    return out


@pytest.mark.parametrize("settings", [
    CartSettings(select="constrained", folds=3, repeats=2),
    CartSettings(select="pass_only", folds=3, repeats=2, g_delta=None, score="product"),
    CartSettings(select="weighted", folds=4, repeats=1, g_spread="std", score="frac_sig",
                 cv_min_samples_leaf=5, n_min_pair=3),
])
def test_vectorised_cross_validation_is_the_slow_reference(small, settings):
    X, y = small
    alphas = alpha_grid(X, y, settings)
    assert alphas.size > 20
    ref = reference_folds(X, y, settings, alphas)
    folds = run_folds(X, y, fold_jobs(y.size, settings), alphas,
                      lambda seed: tree(settings.cv_leaf, 0.0, seed), settings.threshold,
                      settings.pair_minimum, settings.score, settings.g_spread, workers=2)
    for fs in folds:
        for j in range(alphas.size):
            leaves, pairs, score, err = ref[(fs.repeat, fs.fold, j)]
            assert (fs.leaves[j], fs.pairs[j]) == (leaves, pairs)
            assert fs.abs_err[j] == pytest.approx(err, rel=1e-12)
            if math.isnan(score):
                assert math.isnan(fs.separation[j])
            else:
                assert fs.separation[j] == pytest.approx(score, rel=1e-9, abs=1e-12)
    # Same scores, so the same choice as choosing from the reference's scores.
    cv = cross_validate(X, y, settings)
    assert cv.chosen_alpha == choose_alpha(cv.scores, settings)
    R = settings.repeats
    for j, s in enumerate(cv.scores):
        seps = [np.median([v[2] for k, v in ref.items() if k[0] == r and k[2] == j
                           and not math.isnan(v[2])] or [math.nan]) for r in range(R)]
        finite = [v for v in seps if not math.isnan(v)]
        if finite:
            assert s.separation == pytest.approx(float(np.median(finite)), abs=1e-9)


def neighbours_separated(table, labels, gap: float, threshold: Threshold) -> list[bool]:  # type: ignore[no-untyped-def]
    """Each adjacent pair of regions (by median): medians `gap` apart and g over the
    threshold, computed here from the rows, independently of the growth code."""
    y = table.total
    groups = [y[labels == k] for k in range(int(labels.max()) + 1)]
    medians = [float(np.median(g)) for g in groups]
    assert medians == sorted(medians)
    out = []
    for a, b in zip(groups, groups[1:], strict=False):
        ma, mb = float(np.median(a)), float(np.median(b))
        g = hedges_g(a, b)
        out.append((mb - ma) / ma >= gap and g >= threshold.for_pair(a, b))
    return out


def test_nine_stages_three_tiers_get_a_handful_of_separated_regions():
    """The shape that got 633 regions of ~10 placements from the published selection:
    9 stages, 3 tiers, N = 2, 4, 8."""
    table = table_of(chain_workflow(9, TIERS, SPEEDS, width=2), [2, 4, 8])
    assert len(table) > 5000
    settings = CartSettings()
    fit = fit_regions(table, settings)
    regions = build_regions(table, fit.labels, fit.leaf_bounds)
    assert 3 <= len(regions) <= 10
    assert all(neighbours_separated(table, fit.labels, settings.gap, settings.threshold))
    assert min(r.stats.size for r in regions) >= 100
    assert max(len(r.bounds) for r in regions) <= 4       # short rules: a few splits
    assert [s.regions for s in fit.growth] == sorted({s.regions for s in fit.growth})
    assert fit.growth[-1].mae < fit.growth[0].mae


@pytest.mark.parametrize("wf", [chain_workflow(7, TIERS, SPEEDS, width=1),
                                fan_workflow(5, TIERS, SPEEDS),
                                chain_workflow(8, TIERS, SPEEDS, width=4)],
                         ids=["chain", "fan", "two-levels"])
def test_every_shape_gets_separated_neighbours(wf):
    table = table_of(wf, [2, 4, 8])
    fit = fit_regions(table)
    assert 2 <= int(fit.labels.max()) + 1 <= 12
    assert all(neighbours_separated(table, fit.labels, 0.10, Threshold(0.30, 0.10)))


def test_a_dominant_stage_gives_one_region_per_tier():
    """One stage moves 50x more data than the rest: its tier decides the makespan,
    and the regions say so (one per tier, the stage fixed in each)."""
    from qos_plugin.model.synthetic import dag_workflow

    wf = dag_workflow("dominant", [
        ("big", 1, 8, {"initial_data": 20000.0}, 100.0),
        ("a", 2, 4, {"big": 100.0}, 50.0), ("b", 2, 4, {"big": 100.0}, 50.0),
        ("c", 3, 2, {"a": 50.0, "b": 50.0}, 10.0)], TIERS, SPEEDS)
    table = table_of(wf, [4])
    fit = fit_regions(table, CartSettings(min_samples_leaf=3))
    regions = build_regions(table, fit.labels, fit.leaf_bounds)
    assert [r.rule["big"] for r in regions] == ["tmpfs", "nvme", "pfs"]
    assert all(r.critical == ["big"] for r in regions)


def test_a_larger_gap_gives_fewer_regions():
    table = table_of(fan_workflow(5, TIERS, SPEEDS), [2, 4, 8])
    counts = [int(fit_regions(table, CartSettings(g_delta=d)).labels.max()) + 1
              for d in (0.05, 0.10, 0.25)]
    assert counts[0] >= counts[1] >= counts[2] >= 1
    assert counts[0] > counts[2]


def test_a_floor_on_the_threshold_keeps_only_large_effects():
    table = table_of(chain_workflow(7, TIERS, SPEEDS, width=1), [2, 4, 8])
    y = table.total

    def effects(settings: CartSettings) -> list[float]:
        labels = fit_regions(table, settings).labels
        groups = [y[labels == k] for k in range(int(labels.max()) + 1)]
        return [hedges_g(a, b) for a, b in zip(groups, groups[1:], strict=False)]

    assert min(effects(CartSettings())) < 0.8      # the published threshold allows less
    strict = effects(CartSettings(g_floor=0.8))
    assert strict and min(strict) >= 0.8
