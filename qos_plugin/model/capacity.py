"""What a shared tier can serve at once, and the floor it puts under a level's phases.

The published model prices each action alone and takes a level's phase as its slowest
action: two stages of one level that read the shared tier at the same time are each
priced at the rate the profile measured for one, as if each had the tier to itself. A
tier serves its clients together, so a phase that moves ``B`` MiB on a shared tier of
capacity ``C`` MiB/s takes at least ``B / C`` seconds however the bytes are split among
stages and nodes: the *floor*. Applied, each phase of each level takes the larger of
its priced value (a site model's carried prices, ``carried.py``) and its floor on every
shared tier with a capacity; a contract's
rate (bytes over the phase's time) then never asks a tier for more than it serves.

A run's fan-outs between nodes are one such resource too: they are srun pipes, and all
of a job's pass through the srun processes on its first node, so a level's fan-outs
(on every node-local tier) share one rate, the fastest fan-out the profile measured. The
stage-out of a level fanning out prep_a's 480 and prep_b's 150 MiB at once took 19.1 s,
priced 8.3 as each alone.

The bytes are the movement rules' (``movement.level_mib``: a copy onto N nodes moves
N times its bytes through the shared tier). The capacity of a shared tier is the
largest aggregate rate the profile measured on it: its reads, its writes and the copies
to or from it. Only profiles read with the ``grid`` estimator (this product's
measurements) have capacities: a profile read as QoSFlow published it is priced by
QoSFlow's rules alone, so the artifact's makespans stay bit for bit. Pure: arrays in,
arrays out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qos_plugin.model.movement import Volumes, level_mib
from qos_plugin.model.profile import StorageProfile
from qos_plugin.model.template import WorkflowTemplate
from qos_plugin.model.tiers import TierSet, split_move


@dataclass(frozen=True)
class LevelFloor:
    """The inputs of the floor: the stages' volumes (``iodata.stage_volumes``) and the
    capacity in MiB/s of each shared tier that has one."""

    volumes: Volumes
    mibps: Mapping[str, float]
    fan_out_mibps: float = 0.0        # the job's fan-outs together; 0: no floor


def capacity_of(profile: StorageProfile, tiers: TierSet) -> dict[str, float]:
    """MiB/s each shared tier of ``tiers`` serves at most, from ``profile``'s runs; none
    for a profile read with the published estimator (see the module)."""
    if profile.estimator != "grid":
        return {}
    out: dict[str, float] = {}
    for t in tiers:
        if t.is_local:
            continue
        rates = [float(np.max(r)) for (op, st), (_, r) in profile.runs.items()
                 if len(r) and (st == t.name or (op == "cp" and t.name in (split_move(st)
                                                                          or ())))]
        if rates:
            out[t.name] = max(rates)
    return out


def fan_out_capacity(profile: StorageProfile, tiers: TierSet) -> float:
    """MiB/s a job's fan-outs carry together at most: the fastest fan-out (``scp`` run
    of a node-local tier of ``tiers``) the profile measured; 0 when it measured none
    or was read with the published estimator."""
    if profile.estimator != "grid":
        return 0.0
    rates = [float(np.max(r)) for (op, st), (_, r) in profile.runs.items()
             if op == "scp" and len(r) and (split_move(st) or ("", ""))[0] in tiers.names]
    return max(rates, default=0.0)


def floor_of(profile: StorageProfile, tiers: TierSet, volumes: Volumes) -> LevelFloor | None:
    """The floor of a model built from ``profile`` with these volumes, if it has one."""
    mibps = capacity_of(profile, tiers)
    fan = fan_out_capacity(profile, tiers)
    return LevelFloor(volumes, mibps, fan) if mibps or fan else None


def floor_seconds(template: WorkflowTemplate, tiers: TierSet, columns: Sequence[np.ndarray],
                  node_counts: Sequence[int], floor: LevelFloor) -> np.ndarray | None:
    """(K, V, L, 3) seconds: per node count, configuration, level and phase (stage-in,
    execution, stage-out), the longest of its shared tiers' bytes over their
    capacities, and in the stage-out the level's fan-outs over theirs; None when there
    is neither."""
    capped = [(tiers.index(name), rate) for name, rate in floor.mibps.items()
              if name in tiers.names and not tiers[name].is_local and rate > 0]
    fan = floor.fan_out_mibps
    if not capped and fan <= 0:
        return None
    mib = level_mib(template, tiers, columns, floor.volumes)
    idx = np.array([t for t, _ in capped], dtype=np.intp)
    rate = np.array([r for _, r in capped])
    fixed, per_node = mib.fixed[..., idx], mib.per_node[..., idx]      # (V, L, 3, C)
    V, L = mib.fixed.shape[:2]
    out = np.zeros((len(node_counts), V, L, 3))
    for i, n in enumerate(node_counts):
        if capped:
            out[i] = ((fixed + float(n) * per_node) / rate).max(axis=-1)
        if fan > 0:
            out[i, :, :, 2] = np.maximum(out[i, :, :, 2],
                                         (mib.fan_fixed + float(n) * mib.fan_per_node) / fan)
    return out
