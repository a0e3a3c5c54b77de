"""Placement heuristics and pairwise concordance.

Each policy orders the configurations at one node count, best first. The
pairwise concordance (PC) of an order is the fraction of pairs (a before b) with
``total(a) <= total(b)``: 1 is a perfect ranking, 0.5 a random one.

* FSF (fastest storage first): most stages on the fastest node-local tier, then on
  the next one, ..., then by makespan;
* LTL (low transition layout): fewest non-zero staging terms, then by makespan;
* Hybrid: ``minmax(sum_i w_i * #tier_i) + (1 - minmax(#staging terms))`` descending
  (weights L, L-1, ..., 1 for the L node-local tiers fastest first), then makespan;
* QoSFlow: regions by median makespan, then by makespan inside a region.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qos_plugin.model.configtable import ConfigTable

POLICIES = ("FSF", "LTL", "Hybrid", "QoSFlow")


def concordance(order: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ordered pairs that are not inversions (ties count as concordant)."""
    seq = np.asarray(y, dtype=float)[np.asarray(order)]
    n = seq.size
    if n < 2:
        return float("nan")
    inversions = _count_inversions([float(v) for v in seq])
    return float(1.0 - inversions / (n * (n - 1) / 2))


def _count_inversions(seq: list[float]) -> int:
    """Pairs i < j with seq[i] > seq[j] (strictly), by merge sort."""
    if len(seq) < 2:
        return 0
    mid = len(seq) // 2
    left, right = seq[:mid], seq[mid:]
    count = _count_inversions(left) + _count_inversions(right)
    left.sort()
    right.sort()
    # For each element of right, how many in left are strictly greater.
    idx = np.searchsorted(np.asarray(left), np.asarray(right), side="right")
    count += int(np.sum(len(left) - idx))
    return count


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(x)), float(np.max(x))
    scaled: np.ndarray = np.zeros_like(x, dtype=float) if hi == lo else (x - lo) / (hi - lo)
    return scaled


def tier_counts(table: ConfigTable, local_tiers: Sequence[str]) -> np.ndarray:
    """(R, L) number of stages on each node-local tier."""
    return np.stack([(table.placement == t).sum(axis=1) for t in local_tiers], axis=1) \
        if local_tiers else np.zeros((len(table), 0), dtype=np.int64)


def staging_terms(table: ConfigTable) -> np.ndarray:
    counts: np.ndarray = (np.nan_to_num(table.staging, nan=0.0) > 0).sum(axis=1)
    return counts


def order_fsf(table: ConfigTable, local_tiers: Sequence[str]) -> np.ndarray:
    counts = tier_counts(table, local_tiers)
    keys = [table.total] + [-counts[:, i] for i in reversed(range(counts.shape[1]))]
    return np.lexsort(keys)


def order_ltl(table: ConfigTable) -> np.ndarray:
    return np.lexsort((table.total, staging_terms(table)))


def order_hybrid(table: ConfigTable, local_tiers: Sequence[str]) -> np.ndarray:
    counts = tier_counts(table, local_tiers).astype(float)
    weights = np.arange(len(local_tiers), 0, -1, dtype=float)
    fsf = counts @ weights if len(local_tiers) else np.zeros(len(table))
    score = _minmax(fsf) + (1.0 - _minmax(staging_terms(table).astype(float)))
    return np.lexsort((table.total, -score))


def order_regions(table: ConfigTable, labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    medians = {int(r): float(np.median(table.total[labels == r])) for r in ids}
    order: list[int] = []
    for r in sorted(medians, key=lambda r: (medians[r], r)):
        rows = np.flatnonzero(labels == r)
        order.extend(rows[np.argsort(table.total[rows], kind="stable")].tolist())
    return np.asarray(order, dtype=np.int64)


def rank_policies(table: ConfigTable, labels: np.ndarray, local_tiers: Sequence[str],
                  nodes: int | None = None) -> dict[str, float]:
    """Pairwise concordance of every policy, at one node count (or over all rows)."""
    if nodes is not None:
        keep = table.nodes == nodes
        table, labels = table.take(keep), labels[keep]
    y = table.total
    return {
        "FSF": concordance(order_fsf(table, local_tiers), y),
        "LTL": concordance(order_ltl(table), y),
        "Hybrid": concordance(order_hybrid(table, local_tiers), y),
        "QoSFlow": concordance(order_regions(table, labels), y),
    }
