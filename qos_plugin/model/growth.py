"""Separated growth: the most accurate regions whose neighbours are all distinct.

A region is worth showing only if it differs from the regions next to it:
sorted by median makespan, every neighbouring pair must be *separated*, that is

* their medians at least ``gap`` apart, relative to the faster one
  (``(m_b - m_a) / m_a >= gap``), and
* Hedges' g of the pair at least the pair's threshold (:class:`Threshold`, the
  significance test of the cross-validated selection).

Among the prunings of the fitted tree whose regions are all separated, we look
for the one with the lowest error, best-first: start from one region (every
placement) and repeatedly replace a region by its subtree cut ``lookahead``
levels down (its two children, or their children too), taking the replacement
that removes the most absolute error per region added (the ratio cost-complexity
pruning ranks links by) among those that keep every neighbouring pair
separated. Stop when no replacement does. The number of regions is therefore a
consequence of the workflow and of the gap: at most ``1 + ln(max/min) /
ln(1 + gap)`` for makespans between min and max, and fewer when the tree's splits
do not fall on distinct classes. Each region is a node of the tree, so its rule
is the short conjunction of the splits above it.

Everything here is computed from the tree's own arrays and each node's rows: no
cross-validation, because the table is the whole configuration space (the
population itself, not a sample of it) and a model's makespans carry no noise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from qos_plugin.model.pruning import TreeArrays
from qos_plugin.model.separation import Threshold, hedges_g


@dataclass(frozen=True)
class NodeStats:
    n: int
    mean: float
    median: float
    rows: np.ndarray


@dataclass(frozen=True)
class GrowthStep:
    """The partition after one replacement."""

    regions: int
    mae: float
    replaced: int            # the node that was replaced
    by: tuple[int, ...]      # the nodes that replaced it


@dataclass
class Growth:
    nodes: list[int]         # the regions: tree nodes, ascending id
    steps: list[GrowthStep]
    rows: dict[int, np.ndarray]


class SeparatedGrowth:
    """Best-first growth of separated regions over a fitted tree."""

    def __init__(self, tree: Any, X: np.ndarray, y: np.ndarray, threshold: Threshold,
                 gap: float, lookahead: int = 2) -> None:
        self.t = TreeArrays(tree)
        self.y = np.asarray(y, dtype=float)
        self.threshold = threshold
        self.gap = gap
        self.lookahead = max(1, lookahead)
        path = tree.decision_path(X).tocsc()
        self._indptr, self._indices = path.indptr, path.indices
        self._stats: dict[int, NodeStats] = {}
        self._pairs: dict[tuple[int, int], bool] = {}
        # Absolute error of a node around its median, from the tree's own impurity.
        self.err = self.t.impurity * self.t.weight

    def stats(self, node: int) -> NodeStats:
        s = self._stats.get(node)
        if s is None:
            rows = self._indices[self._indptr[node]:self._indptr[node + 1]]
            v = self.y[rows]
            s = NodeStats(int(v.size), float(np.mean(v)), float(np.median(v)), rows)
            self._stats[node] = s
        return s

    def separated(self, a: int, b: int) -> bool:
        """Whether region ``b`` (the slower by median) stands apart from ``a``."""
        known = self._pairs.get((a, b))
        if known is None:
            known = self._pairs[(a, b)] = self._separated(a, b)
        return known

    def _separated(self, a: int, b: int) -> bool:
        sa, sb = self.stats(a), self.stats(b)
        if sa.median > 0:
            if (sb.median - sa.median) / sa.median < self.gap:
                return False
        elif not sb.median > sa.median:
            return False
        ya, yb = self.y[sa.rows], self.y[sb.rows]
        g = hedges_g(ya, yb)
        if math.isnan(g):   # a side of one row, or both without spread: the gap decides
            return sb.mean != sa.mean
        return g >= self.threshold.for_pair(ya, yb)

    def all_separated(self, nodes: list[int]) -> bool:
        order = sorted(nodes, key=lambda i: (self.stats(i).median, i))
        return all(self.separated(a, b) for a, b in zip(order, order[1:], strict=False))

    def _cuts(self, node: int, depth: int) -> Iterator[tuple[int, ...]]:
        """Every cut of ``node``'s subtree at most ``depth`` levels down."""
        yield (node,)
        left, right = int(self.t.left[node]), int(self.t.right[node])
        if depth == 0 or left == -1:
            return
        for a in self._cuts(left, depth - 1):
            for b in self._cuts(right, depth - 1):
                yield a + b

    def grow(self) -> Growth:
        nodes = [0]
        total = float(self.y.size)
        steps: list[GrowthStep] = []
        while True:
            best: tuple[float, int, int, tuple[int, ...]] | None = None
            for node in nodes:
                rest = [m for m in nodes if m != node]
                for cut in self._cuts(node, self.lookahead):
                    if len(cut) == 1:
                        continue
                    gain = (self.err[node] - float(self.err[list(cut)].sum())) / (len(cut) - 1)
                    if not gain > 0:
                        continue
                    key = (-gain, len(cut), node, cut)
                    if best is not None and key >= best:
                        continue
                    if self.all_separated(rest + list(cut)):
                        best = key
            if best is None:
                break
            _, _, node, cut = best
            nodes = sorted([m for m in nodes if m != node] + list(cut))
            steps.append(GrowthStep(len(nodes), float(self.err[nodes].sum()) / total, node,
                                    cut))
        return Growth(nodes, steps, {i: self.stats(i).rows for i in nodes})

