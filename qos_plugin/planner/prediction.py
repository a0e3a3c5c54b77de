"""Predictions of a trained model for placements run at a scale, and the inputs
they are made from.

A model stores its predictions at scale 1 only. A run at ``--scale F`` moves
every volume times F, and its prediction is not the stored one times F: a cost
is a data size over a rate the profile gives *at that data size* (small
transfers run at lower rates: latency), and copies and tasks do not shrink.
So the prediction at F is made again, the way training made it: every I/O
record's size times F (transfer sizes, tasks and files unchanged), the cost
table built from it and the model's profile (``costbuild``), the makespan of
the placements evaluated by ``MakespanModel`` (the movement rules of
``movement.py``). At F = 1 that gives the stored predictions again.

That needs the model's I/O data and profile, which its provenance names (with
their sha256): :func:`model_inputs` reads them back and refuses files that
changed since training. A model trained from a cost table has no per-byte
rates to scale; its predictions are only known at scale 1.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.carried import carried_of
from qos_plugin.model.costbuild import build_cost_table
from qos_plugin.model.iodata import IoData, stage_volumes
from qos_plugin.model.makespan import MakespanModel
from qos_plugin.model.movement import PHASES
from qos_plugin.model.profile import StorageProfile, load_profile
from qos_plugin.model.template import WorkflowTemplate, template_from_dict
from qos_plugin.model.tiers import TierSet, parse_tiers
from qos_plugin.model.wfformat import load_any_io_data
from qos_plugin.planner.trained import TrainedModel

log = logging.getLogger(__name__)

Placement = Mapping[str, str]


@dataclass(frozen=True)
class Prediction:
    """A predicted makespan and its (stage-in, execution, stage-out) per level."""

    total: float
    levels: tuple[tuple[float, float, float], ...]

    @property
    def phases(self) -> dict[str, float]:
        """Seconds of each phase over all levels (the makespan adds them)."""
        return {p: float(sum(lv[i] for lv in self.levels)) for i, p in enumerate(PHASES)}


@dataclass(frozen=True)
class ModelInputs:
    """What a model was trained from, read back: enough to predict it again."""

    template: WorkflowTemplate
    io: IoData
    profile: StorageProfile
    tiers: TierSet
    nodes: list[int]          # the training node counts (the cost table's)
    io_path: Path
    profile_path: Path


def tierset_of(model: TrainedModel) -> TierSet:
    return parse_tiers(",".join(f"{n}:{k}" for n, k in
                                zip(model.tier_names, model.tier_kinds, strict=True)))


def placement_of(model: TrainedModel, row: int) -> dict[str, str]:
    """Tier per stage of ``row``."""
    return {s: model.tier_names[t] for s, t in zip(model.stages, model.placement[row],
                                                   strict=True)}


def stored_prediction(model: TrainedModel, row: int) -> Prediction:
    """The prediction training stored for ``row`` (scale 1)."""
    flat = model.phases[row]
    levels = tuple((flat[3 * k], flat[3 * k + 1], flat[3 * k + 2])
                   for k in range(len(model.levels)))
    return Prediction(float(model.total[row]), levels)


def scale_io(io: IoData, scale: float) -> IoData:
    """Every record's MiB times ``scale``; transfer sizes, tasks and files as they are."""
    return IoData([replace(r, size_mb=r.size_mb * scale) for r in io.records],
                  f"{io.source} x {scale:g}")


def predict(template: WorkflowTemplate, io: IoData, profile: StorageProfile, tiers: TierSet,
            nodes: int, placements: Sequence[Placement], scale: float = 1.0,
            cost_nodes: Sequence[int] = ()) -> list[Prediction]:
    """The prediction of each placement on ``nodes`` nodes with every volume times
    ``scale``, made as training makes it (cost build, then makespan).

    ``cost_nodes`` are the node counts the cost table is built for: give the
    model's training node counts, since a move priced by the table takes the
    cheapest of its rows over all of them (default: ``nodes`` alone; a site
    model's moves are priced by what they carry at ``nodes``, carried.py)."""
    built = sorted({*cost_nodes, nodes})
    scaled = scale_io(io, scale)
    costs = build_cost_table(template, scaled, profile, tiers, built)
    keys = [tuple(tiers.index(p[s]) for s in template.stage_names) for p in placements]
    distinct = list(dict.fromkeys(keys))
    cfg = np.asarray(distinct, dtype=np.int16).reshape(len(distinct), len(template.stages))
    carried = carried_of(profile, stage_volumes(scaled, template.stage_names))
    table = MakespanModel(template, costs, tiers, carried=carried).evaluate([nodes], configs=cfg)
    # evaluate() sorts its rows by makespan: find each placement's row again.
    where = {tuple(int(v) for v in row): i for i, row in enumerate(table.config.tolist())}
    lin, lex, lout = table.level_in, table.level_exec, table.level_out
    out = []
    for key in keys:
        i = where[key]
        out.append(Prediction(float(table.total[i]), tuple(
            (float(lin[i, k]), float(lex[i, k]), float(lout[i, k]))
            for k in range(len(template.levels)))))
    return out


def _input_path(model: TrainedModel, what: str) -> Path:
    """The file ``what`` of the model's provenance, checked against its sha256."""
    inputs = model.provenance.get("inputs", {})
    entry = inputs.get(what) if isinstance(inputs, dict) else None
    ref = f"{model.name}@{model.version}"
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        raise InputError(ref, f"was not trained from --{what.replace('_', '-')} "
                         "(no per-byte rates to predict a scaled run or to calibrate)",
                         "train it with --io-data and --profile, or validate at --scale 1")
    path = Path(entry["path"])
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise InputError(ref, f"cannot read its {what} {str(path)!r} ({e.strerror})",
                         "restore the file it was trained from, or train it again") from None
    if digest != entry.get("sha256"):
        raise InputError(ref, f"its {what} {str(path)!r} changed since training",
                         "restore the file it was trained from, or train it again")
    return path


def model_inputs(model: TrainedModel) -> ModelInputs:
    """The template, I/O data, profile and tiers ``model`` was trained from."""
    io_path = _input_path(model, "io_data")
    profile_path = _input_path(model, "profile")
    template = template_from_dict(model.workflow, name=model.name, patterns=False)
    nodes = model.provenance.get("nodes")
    if not isinstance(nodes, list) or not all(isinstance(n, int) for n in nodes):
        nodes = model.node_counts
    io = load_any_io_data(io_path, model.provenance.get("transfer_size"))
    return ModelInputs(template, io, load_profile(profile_path),
                       tierset_of(model), nodes, io_path, profile_path)
