"""Cost-complexity pruning of a fitted tree, computed once and replayed for any alpha.

scikit-learn prunes a tree for ``ccp_alpha`` by repeatedly cutting the weakest
link (the internal node whose subtree gains least error per leaf) until the
weakest link is stronger than alpha. :func:`weakest_links` computes that whole
sequence with scikit-learn's arithmetic (same operations in the same order, same
tie-breaking: the smallest value, then the smallest node id), so the tree for any
alpha is a prefix of the sequence and equals the tree scikit-learn would fit with
that ``ccp_alpha``. A heap keeps it at O(events x depth x log nodes) instead of a
scan of every node per event.

:class:`PrunedPath` answers "which node stands for this leaf at alpha" for every
alpha of a grid at once, as a (leaves, alphas) table.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np


class TreeArrays:
    """The arrays of a fitted scikit-learn tree that pruning needs, as numpy.

    Node ids are in depth-first preorder (scikit-learn's depth-first builder), so
    the subtree of node ``i`` is the id range ``[i, i + size[i])``.
    """

    def __init__(self, tree: Any) -> None:
        t = tree.tree_ if hasattr(tree, "tree_") else tree
        self.n = int(t.node_count)
        self.left = np.asarray(t.children_left, dtype=np.int64)
        self.right = np.asarray(t.children_right, dtype=np.int64)
        self.value = np.asarray(t.value).reshape(self.n, -1)[:, 0].astype(float)
        self.weight = np.asarray(t.weighted_n_node_samples, dtype=float)
        self.impurity = np.asarray(t.impurity, dtype=float)
        self.parent = np.full(self.n, -1, dtype=np.int64)
        internal = np.flatnonzero(self.left != -1)
        self.parent[self.left[internal]] = internal
        self.parent[self.right[internal]] = internal
        self.size = np.ones(self.n, dtype=np.int64)
        for i in internal[::-1]:            # children have larger ids
            self.size[i] += self.size[self.left[i]] + self.size[self.right[i]]
        if not (np.all(self.left[internal] == internal + 1)
                and np.all(self.right[internal] == internal + 1 + self.size[internal + 1])):
            raise ValueError("tree nodes are not in depth-first preorder")
        self.depth = np.zeros(self.n, dtype=np.int64)
        for i in range(1, self.n):          # parents have smaller ids
            self.depth[i] = self.depth[self.parent[i]] + 1

    @property
    def is_leaf(self) -> np.ndarray:
        leaf: np.ndarray = self.left == -1
        return leaf


def weakest_links(t: TreeArrays) -> list[tuple[float, int]]:
    """(effective alpha, node) of each pruning event, in scikit-learn's order."""
    n = t.n
    left = t.left.tolist()
    parent = t.parent.tolist()
    w = t.weight.tolist()
    imp = t.impurity.tolist()
    total = w[0]
    r_node = [w[i] * imp[i] / total for i in range(n)]
    r_branch = [0.0] * n
    n_leaves = [0] * n
    for leaf in range(n):             # bubbled up leaf by leaf, as scikit-learn sums
        if left[leaf] != -1:
            continue
        r_branch[leaf] = r_node[leaf]
        idx = leaf
        while idx != 0:
            p = parent[idx]
            r_branch[p] += r_node[leaf]
            n_leaves[p] += 1
            idx = p
    size = t.size.tolist()
    candidate = [x != -1 for x in left]
    version = [0] * n
    heap = [((r_node[i] - r_branch[i]) / (n_leaves[i] - 1), i, 0)
            for i in range(n) if candidate[i]]
    heapq.heapify(heap)
    events: list[tuple[float, int]] = []
    while candidate[0] and heap:
        alpha, best, ver = heapq.heappop(heap)
        if not candidate[best] or ver != version[best]:
            continue                  # pruned away, or its value has changed since
        events.append((alpha, best))
        candidate[best:best + size[best]] = [False] * size[best]
        pruned_leaves = n_leaves[best] - 1
        n_leaves[best] = 0
        diff = r_node[best] - r_branch[best]
        r_branch[best] = r_node[best]
        idx = parent[best]
        while idx != -1:
            n_leaves[idx] -= pruned_leaves
            r_branch[idx] += diff
            version[idx] += 1
            heapq.heappush(heap, ((r_node[idx] - r_branch[idx]) / (n_leaves[idx] - 1),
                                  idx, version[idx]))
            idx = parent[idx]
    return events


class PrunedPath:
    """The pruning sequence of one fitted tree, replayable for any alpha.

    ``pruned_at[node]`` is the smallest alpha at which ``node`` is cut to a leaf
    (infinite for nodes never cut). scikit-learn stops at the first weakest link
    stronger than alpha, so an event applies from the running maximum of the
    alphas up to it.
    """

    def __init__(self, tree: Any) -> None:
        self.t = TreeArrays(tree)
        self.events = weakest_links(self.t)
        self.pruned_at = np.full(self.t.n, np.inf)
        if self.events:
            alphas = np.maximum.accumulate(np.array([a for a, _ in self.events]))
            self.pruned_at[np.array([i for _, i in self.events])] = alphas

    @property
    def alphas(self) -> np.ndarray:
        """Distinct alphas at which the tree changes (0 first, scikit-learn's path)."""
        return np.unique(np.concatenate([[0.0], self.pruned_at[np.isfinite(self.pruned_at)]]))

    def leaves_at(self, alpha: float) -> np.ndarray:
        """The leaves of the tree pruned at ``alpha`` (node ids, ascending)."""
        return self.represent(np.flatnonzero(self.t.is_leaf), np.array([alpha]))[:, 0]

    def represent(self, leaves: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """(len(leaves), len(alphas)) node standing for each leaf at each alpha.

        A leaf's stand-in is its topmost ancestor already cut at alpha, else the
        leaf itself. ``alpha <= 0`` prunes nothing, as in scikit-learn.
        """
        t = self.t
        leaves = np.asarray(leaves, dtype=np.int64)
        D = int(t.depth[leaves].max()) + 1 if leaves.size else 1
        path = np.repeat(leaves[:, None], D, axis=1)    # root first, padded with the leaf
        node = leaves.copy()
        for d in range(D - 1, -1, -1):
            here = t.depth[leaves] >= d
            path[here, d] = node[here]
            up = here & (node != 0)
            node[up] = t.parent[node[up]]
        cut = np.minimum.accumulate(self.pruned_at[path], axis=1)
        # Position d stands for the leaf from the first alpha >= cut[:, d] on, and
        # cut does not increase with depth, so the positions that qualify at an
        # alpha are the deepest ones: the stand-in is the shallowest of them.
        alphas = np.asarray(alphas, dtype=float)
        A, L = alphas.size, leaves.size
        pos = np.searchsorted(alphas, cut, side="left")
        flat = (np.arange(L)[:, None] * (A + 1) + pos).ravel()
        qualifying = np.cumsum(np.bincount(flat, minlength=L * (A + 1)).reshape(L, A + 1),
                               axis=1)[:, :A]
        shallowest = D - qualifying
        out = np.take_along_axis(path, np.minimum(shallowest, D - 1), axis=1)
        out = np.where(shallowest >= D, path[:, -1:], out)
        out[:, alphas <= 0.0] = leaves[:, None]
        result: np.ndarray = out
        return result
