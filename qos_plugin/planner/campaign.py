"""The shells around validation and calibration: run placements through a
backend, keep what was run in a runs file, write a corrected profile, train the
calibrated model. The numbers are made by ``validation``, ``prediction`` and
``calibration``.

**Backends.** A backend takes one checked run (``runner.RunSpec``) and returns
its record (``runner.run``'s schema: placement, nodes, scale, per-level phase
starts and ends, total). ``local`` runs the tasks as processes on this machine;
``slurm`` (``slurmrun``) as srun steps on the nodes of the allocation it runs in,
one step per node and phase.

**Runs file** (``qos-runs/1``), what validate writes and calibrate reads::

    {"format": "qos-runs/1", "model": NAME, "version": V, "backend": "local",
     "nodes": N, "scale": F, "repeat": R,
     "placements": [{"placement": {stage: tier}, "row": r,
                     "predicted": {"total": s, "levels": [[in, exec, out], ...]}}],
     "runs": [RUN RECORD, ...]}       # R per placement, in the order they ran
"""

from __future__ import annotations

import copy
import datetime
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError
from qos_plugin.model.jsonio import read_json
from qos_plugin.model.profile import StorageProfile, format_start_more
from qos_plugin.planner import runner, slurmrun
from qos_plugin.planner.prediction import ModelInputs, Prediction
from qos_plugin.planner.trained import TrainedModel

log = logging.getLogger(__name__)

RUNS_FORMAT = "qos-runs/1"
Backend = Callable[[runner.RunSpec], dict[str, Any]]
BACKENDS: dict[str, Backend] = {"local": runner.run, "slurm": slurmrun.run}
# The columns load_profile needs, in the profiler's spelling.
PROFILE_COLUMNS = ("operation", "transferSize", "aggregateFilesizeMB", "numNodes",
                   "tasksPerNode", "trMiB", "storageType")


def backend_tier_dirs(backend: str, given: Sequence[str]) -> dict[str, Path]:
    """The tier directories of runs through ``backend``: ``--tier-dir`` values, over
    (in Slurm mode) the directories the job's placement gave it."""
    import os

    base = slurmrun.job_tier_dirs(os.environ) if backend == "slurm" else {}
    return {**base, **runner.parse_tier_dirs(given)}


def run_placements(specs: Sequence[runner.RunSpec], repeat: int, backend: Backend,
                   progress: Callable[[int, int], None] | None = None
                   ) -> list[dict[str, Any]]:
    """Run every checked placement ``repeat`` times; the records, in the order they ran.

    Repeats go round the placements rather than one placement R times in a row,
    so a slow spell of the machine is spread over placements instead of
    lengthening one.
    """
    records = []
    total = repeat * len(specs)
    for _ in range(repeat):
        for spec in specs:
            records.append(backend(spec))
            if progress is not None:
                progress(len(records), total)
    return records


def prediction_json(p: Prediction) -> dict[str, Any]:
    return {"total": p.total, "levels": [list(lv) for lv in p.levels]}


def runs_document(model: TrainedModel, backend: str, nodes: int, scale: float, repeat: int,
                  placements: Sequence[dict[str, str]], rows: Sequence[int],
                  predictions: Sequence[Prediction], records: Sequence[dict[str, Any]]
                  ) -> dict[str, Any]:
    return {"format": RUNS_FORMAT, "model": model.name, "version": model.version,
            "backend": backend, "nodes": nodes, "scale": scale, "repeat": repeat,
            "placements": [{"placement": p, "row": r, "predicted": prediction_json(pr)}
                           for p, r, pr in zip(placements, rows, predictions, strict=True)],
            "runs": list(records)}


def load_runs(path: str | Path) -> dict[str, Any]:
    """A runs file, its format checked (the records are checked as they are read)."""
    doc = read_json(path, "runs file")
    if not isinstance(doc, dict) or doc.get("format") != RUNS_FORMAT:
        raise InputError(str(path), f"is not a runs file (format "
                         f"{str(doc.get('format') if isinstance(doc, dict) else None)[:40]!r},"
                         f" not {RUNS_FORMAT!r})",
                         "give the runs JSON 'qos-plan validate' wrote")
    if not isinstance(doc.get("runs"), list) or not doc["runs"] \
            or not all(isinstance(r, dict) for r in doc["runs"]):
        raise InputError(str(path), "has no runs", "validate the model first: "
                         "'qos-plan validate NAME ...' writes the runs file")
    if not isinstance(doc.get("model"), str):
        raise InputError(str(path), "names no model", "give the runs JSON 'qos-plan "
                         "validate' wrote")
    return doc


def daemon_tier_bytes(stats: Any, source: str) -> dict[str, float]:
    """Bytes per tier in the ``qosctl stats --job J --json`` documents of one run
    (one per daemon): read plus written, over the job's classes."""
    docs = stats if isinstance(stats, list) else [stats]
    out: dict[str, float] = {}
    try:
        for d in docs:
            for c in d["classes"]:
                tier = c["tier"]
                if not isinstance(tier, str):
                    raise TypeError("a class's tier is not a name")
                n = c["bytes_read"] + c["bytes_written"]
                if isinstance(n, bool) or not isinstance(n, int | float) or n < 0:
                    raise ValueError(f"bytes of tier {tier[:40]!r} are {str(n)[:20]}")
                out[tier] = out.get(tier, 0.0) + float(n)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(source, f"is not 'qosctl stats --json' output ({type(e).__name__}: "
                         f"{str(e)[:120]})", "give, per run, the list of 'qosctl stats "
                         "--job J --json' outputs of its daemons") from None
    return out


def write_profile(profile: StorageProfile, path: Path) -> None:
    """``profile`` as a CSV that ``load_profile`` reads back to the same runs."""
    from qos_plugin.model.csvio import write_csv

    rows = []
    # The estimator and the phase start go with the runs: a corrected profile is read
    # as its source was.
    extra: dict[str, str] = {}
    if profile.estimator != "qosflow":
        extra["estimator"] = profile.estimator
    if profile.phase_start_s:
        extra["phaseStartSeconds"] = repr(profile.phase_start_s)
    if profile.phase_start_more_s:
        extra["phaseStartMoreSeconds"] = format_start_more(profile.phase_start_more_s)
    for (op, st), (x, rates) in sorted(profile.runs.items()):
        for (nodes, tpn, transfer, size), rate in zip(x.tolist(), rates.tolist(), strict=True):
            rows.append([op, repr(transfer), repr(size), repr(nodes), repr(tpn), repr(rate), st,
                         *extra.values()])
    write_csv(path, list(PROFILE_COLUMNS) + list(extra), rows)


def retrain(base: TrainedModel, inputs: ModelInputs, profile_path: Path, version: int,
            calibrated_from: dict[str, Any], memory_budget: int | None = None) -> TrainedModel:
    """``base`` trained again with the profile at ``profile_path``: its template,
    I/O data, tiers, node counts and region selection, as 'qos-plan train' does."""
    from qos_plugin.model.carried import carried_of
    from qos_plugin.model.costbuild import build_cost_table
    from qos_plugin.model.iodata import stage_volumes
    from qos_plugin.model.makespan import MakespanModel
    from qos_plugin.model.profile import load_profile
    from qos_plugin.model.regions import CartSettings
    from qos_plugin.planner.training import build_model, file_fingerprint, fit_table_regions

    nodes = [int(n) for n in base.provenance.get("nodes", base.node_counts)]
    settings = base.provenance.get("region_settings", {})
    select = settings.get("select", "separated") if isinstance(settings, dict) else "separated"
    # Read back what was written: the model is trained from the file its provenance names.
    profile = load_profile(profile_path)
    template, tiers = inputs.template, inputs.tiers
    costs = build_cost_table(template, inputs.io, profile, tiers, nodes)
    volumes = stage_volumes(inputs.io, template.stage_names)
    table = MakespanModel(template, costs, tiers, carried=carried_of(profile, volumes)
                          ).evaluate(nodes, memory_budget=memory_budget)
    cart = CartSettings(select=select)
    configs, regions, labels = fit_table_regions(table, cart)
    provenance = copy.deepcopy(base.provenance)
    provenance.setdefault("inputs", {})["profile"] = file_fingerprint(profile_path)
    provenance["region_settings"] = vars(cart)
    provenance["calibrated_from"] = calibrated_from
    created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return build_model(base.name, version, table, configs, regions, labels, volumes,
                       provenance, created)
