"""The workflows of our own that the region benchmarks run on: different shapes
(chains, fan-out/fan-in, many stages on few levels), tier sets and node counts,
each with 5,000 or more placements, built with the synthetic bandwidth model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qos_plugin.model.synthetic import SyntheticWorkflow, TierModel, chain_workflow, fan_workflow
from qos_plugin.model.tiers import TierSet, parse_tiers

# One shared tier and two node-local ones, as on most clusters ...
T3 = parse_tiers("pfs:shared,tmpfs:node-local,nvme:node-local")
S3 = {"pfs": TierModel(900, 600, 0.6), "tmpfs": TierModel(5000, 3000, 0.3),
      "nvme": TierModel(2500, 1500, 0.4)}
# ... and two of each, with a slow shared one.
T4 = parse_tiers("lustre:shared,nfs:shared,ram:node-local,ssd:node-local")
S4 = {"lustre": TierModel(1500, 1000, 0.6), "nfs": TierModel(300, 200, 0.5),
      "ram": TierModel(6000, 4000, 0.3), "ssd": TierModel(2000, 1200, 0.4)}


@dataclass(frozen=True)
class Case:
    name: str
    shape: str
    build: Callable[[], SyntheticWorkflow]
    tiers: TierSet
    nodes: tuple[int, ...]


CASES = [
    Case("mixed9", "9 stages in 5 levels of 2 (the shape of issue 20), 3 tiers",
         lambda: chain_workflow(9, T3, S3, width=2, name="mixed9"), T3, (2, 4, 8)),
    Case("chain9", "chain of 9 stages, 3 tiers",
         lambda: chain_workflow(9, T3, S3, width=1, name="chain9"), T3, (2, 4, 8)),
    Case("fan7", "fan-out/fan-in: split, 7 branches, merge; 3 tiers",
         lambda: fan_workflow(7, T3, S3, name="fan7"), T3, (2, 4, 8)),
    Case("wide10", "10 stages on 2 levels, 3 tiers",
         lambda: chain_workflow(10, T3, S3, width=5, name="wide10"), T3, (2, 4, 8)),
    Case("fan5x4", "fan-out/fan-in: split, 5 branches, merge; 4 tiers (2 shared)",
         lambda: fan_workflow(5, T4, S4, name="fan5x4"), T4, (2, 4, 8)),
    Case("chain8x4", "chain of 8 stages, 4 tiers (2 shared), N up to 16",
         lambda: chain_workflow(8, T4, S4, width=1, name="chain8x4"), T4, (2, 4, 8, 16)),
]
BY_NAME = {c.name: c for c in CASES}
