"""A workflow of our own whose makespans are computed by hand in the tests.

Stages (N = 2 gives the tasks per node in brackets):
  level 1: A (4 tasks, tpn 2) and B (2, tpn 1), both read initial data
  level 2: C (4, tpn 2) reads A and B; D (2, tpn 1) reads A and has no successor
  level 3: E (1, tpn 1) reads C
Tiers: pfs (shared), nvme, ram, bb (node-local). Hand computations use pfs and
nvme; ram and bb rows are nvme's scaled, so the space has four tiers.
"""

from __future__ import annotations

from qos_plugin.model.costs import CostRow, CostTable
from qos_plugin.model.template import template_from_dict
from qos_plugin.model.tiers import parse_tiers

TIERS = parse_tiers("pfs:shared,nvme:node-local,ram:node-local,bb:node-local")

TEMPLATE = template_from_dict({
    "A": {"stage_order": 1, "num_tasks": 4, "predecessors": {"initial_data": {"inputs": ["in"]}},
          "outputs": ["a"]},
    "B": {"stage_order": 1, "num_tasks": 2, "predecessors": {"initial_data": {"inputs": ["in"]}},
          "outputs": ["b"]},
    "C": {"stage_order": 2, "num_tasks": 4,
          "predecessors": {"A": {"inputs": ["a"]}, "B": {"inputs": ["b"]}}, "outputs": ["c"]},
    "D": {"stage_order": 2, "num_tasks": 2, "predecessors": {"A": {"inputs": ["a"]}},
          "outputs": ["d"]},
    "E": {"stage_order": 3, "num_tasks": 1, "predecessors": {"C": {"inputs": ["c"]}},
          "outputs": ["e"]},
}, name="handmade")

# (producer, consumer, producer tier, producer tpn, consumer tier, consumer tpn,
#  est_prod, est_cons); levels are filled in from the template.
ROWS = [
    # initial reads in place (pfs) and after a copy onto nvme
    ("stage_in-A", "A", "pfs", 0, "pfs", 2, 0.0, 10.0),
    ("stage_in-A", "A", "pfs", 0, "pfs", 1, 0.0, 99.0),   # other tpn: not preferred
    ("stage_in-A", "A", "pfs-nvme", 4, "nvme", 2, 6.0, 3.0),
    ("stage_in-A", "A", "pfs-nvme", 8, "nvme", 2, 5.0, 3.0),  # cheapest copy, tpn 8
    ("stage_in-B", "B", "pfs", 0, "pfs", 1, 0.0, 4.0),
    ("stage_in-B", "B", "pfs-nvme", 4, "nvme", 1, 2.0, 1.0),
    ("stage_in-C", "C", "pfs-nvme", 4, "nvme", 2, 1.25, 0.1),
    ("stage_in-D", "D", "pfs-nvme", 4, "nvme", 1, 0.7, 0.1),
    ("stage_in-E", "E", "pfs-nvme", 2, "nvme", 1, 0.8, 0.1),
    # direct edges: producer writes, consumer reads, on one tier
    ("A", "C", "pfs", 2, "pfs", 2, 1.0, 2.0),
    ("A", "C", "nvme", 2, "nvme", 2, 0.5, 1.0),
    ("B", "C", "pfs", 1, "pfs", 2, 0.5, 1.5),
    ("B", "C", "nvme", 1, "nvme", 2, 0.25, 0.5),
    ("A", "D", "pfs", 2, "pfs", 1, 3.0, 2.5),
    ("A", "D", "nvme", 2, "nvme", 1, 1.5, 1.2),
    ("C", "E", "pfs", 2, "pfs", 1, 2.0, 0.7),
    ("C", "E", "nvme", 2, "nvme", 1, 1.0, 0.4),
    # moves of outputs: (src tier, move) with consumer-side cost and its tpn
    ("A", "stage_out-A", "pfs", 2, "pfs-nvme", 4, 0.0, 8.0),
    ("A", "stage_out-A", "nvme", 2, "nvme-pfs", 4, 0.0, 6.0),
    ("A", "stage_out-A", "nvme", 2, "nvme-nvme", 2, 0.0, 9.0),
    ("B", "stage_out-B", "pfs", 1, "pfs-nvme", 1, 0.0, 3.0),
    ("B", "stage_out-B", "nvme", 1, "nvme-pfs", 1, 0.0, 2.0),
    ("B", "stage_out-B", "nvme", 1, "nvme-nvme", 1, 0.0, 2.5),
    ("C", "stage_out-C", "pfs", 2, "pfs-nvme", 6, 0.0, 1.5),
    ("C", "stage_out-C", "nvme", 2, "nvme-pfs", 3, 0.0, 1.2),
    ("C", "stage_out-C", "nvme", 2, "nvme-nvme", 2, 0.0, 1.3),
    # final stages: their write, and the flush of node-local outputs
    ("D", "stage_out-D", "pfs", 1, "pfs-nvme", 1, 0.9, 7.0),
    ("D", "stage_out-D", "nvme", 1, "nvme-pfs", 3, 0.6, 4.0),
    ("D", "stage_out-D", "nvme", 1, "nvme-pfs", 5, 0.6, 3.5),
    ("E", "stage_out-E", "pfs", 1, "pfs-nvme", 1, 0.3, 2.0),
    ("E", "stage_out-E", "nvme", 1, "nvme-pfs", 2, 0.2, 1.1),
]

SCALE = {"ram": 0.5, "bb": 0.8}


def _level(name: str) -> float:
    if name.startswith("stage_in-"):
        return TEMPLATE[name.split("-", 1)[1]].level - 0.5
    if name.startswith("stage_out-"):
        return TEMPLATE[name.split("-", 1)[1]].level + 0.5
    return TEMPLATE[name].level


def cost_table() -> CostTable:
    rows = []
    for p, c, pt, ptpn, ct, ctpn, ep, ec in ROWS:
        variants = [(pt, ct, 1.0)]
        if "nvme" in pt or "nvme" in ct:
            variants += [(pt.replace("nvme", t), ct.replace("nvme", t), f)
                         for t, f in SCALE.items()]
        for vpt, vct, f in variants:
            # A write on the shared tier costs the same whatever the move after it.
            fp = 1.0 if vpt == "pfs" else f
            rows.append(CostRow(p, _level(p), c, _level(c), vpt, ptpn, vct, ctpn,
                                ep * fp, ec * f))
    return CostTable.from_rows(rows, source="handmade")
