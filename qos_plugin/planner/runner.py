"""Run a trained workflow for real on this machine (local mode): every stage's tasks
are processes that read and write the stage's I/O volumes on the placement's tier
directories, with the stage-in copies and stage-out moves where the makespan charges
them (``model/movement.py``, the one statement of those rules) and the model's
barriers: all of a level, copies included, before the next level starts, and within
a level stage-in, then execution, then stage-out (the makespan adds them).

What a run does, and what it takes from the model:

* bytes per task: a stage's ``read_mib`` and ``write_mib`` (whole-stage totals)
  times ``scale``, split evenly over its ``num_tasks`` tasks (rounded to bytes);
* transfers of the stage's ``read_transfer_bytes`` and ``write_transfer_bytes``
  (the size moving most of its bytes in the I/O data) where the model has them,
  else ``transfer_bytes`` (default 1 MiB), at most :data:`MAX_RUN_TRANSFER`;
* task ``i`` runs on node ``i % nodes``; a node-local tier's files are under
  ``DIR/node<j>``, a shared tier's under ``DIR``; everything under ``<workflow>/``;
* task ``i`` writes one file ``<stage>/t<i>.dat``; a task reads its volume from its
  sources' files (the initial data and its predecessors' outputs) where they are on
  its tier and node (after a copy), else where they were written, cycling over them;
* the initial data, one file on the home tier, is as large as the largest distinct
  input (``in_files_mib``) of a stage reading it, scaled;
* stage-in: each copy ``movement.stage_in_copies`` charges brings the source's files
  onto every node of the stage's node-local tier; stage-out: each move
  ``movement.stage_out_moves`` charges copies the outputs (kept at the source, since
  other consumers and the final flush may read them too) to the target tier: a
  fan-out gives every node all outputs, a move to a shared tier gathers them there,
  a move from a shared tier onto a node-local one puts each file on its task's node.

Slurm mode (srun steps on the job's nodes) is not built yet.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qos_plugin.errors import InputError, QosPluginError
from qos_plugin.model.movement import PHASES, stage_in_copies, stage_out_moves
from qos_plugin.model.template import INITIAL_DATA, WorkflowTemplate, template_from_dict
from qos_plugin.model.tiers import TierSet, parse_tiers
from qos_plugin.planner.trained import TrainedModel

MIB = 1 << 20
DEFAULT_TRANSFER = MIB
# A task holds one transfer in memory per worker: a trace whose transfer is a whole
# multi-GiB file is replayed in chunks of this size instead.
MAX_RUN_TRANSFER = 64 * MIB
SOURCE = "qos-plan run"


@dataclass(frozen=True)
class RunSpec:
    """A checked request: the model, the placement's row, where each tier lives."""

    model: TrainedModel
    placement: dict[str, str]
    nodes: int
    scale: float
    tier_dirs: dict[str, Path]
    row: int
    transfer_bytes: int = DEFAULT_TRANSFER
    workers: int = field(default_factory=lambda: max(2, os.cpu_count() or 2))


def parse_placement(text: str) -> dict[str, str]:
    """``STAGE=TIER,...`` as a mapping (duplicates and empty parts refused)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        stage, eq, tier = part.strip().partition("=")
        if not eq or not stage or not tier:
            raise InputError("--placement", f"{part.strip()!r} is not STAGE=TIER",
                             "give STAGE=TIER for every stage, separated by commas")
        if stage in out:
            raise InputError("--placement", f"stage {stage!r} given twice", "give it once")
        out[stage] = tier
    return out


def parse_tier_dirs(values: Sequence[str]) -> dict[str, Path]:
    """``TIER=PATH`` options as a mapping."""
    out: dict[str, Path] = {}
    for v in values:
        tier, eq, path = v.partition("=")
        if not eq or not tier or not path:
            raise InputError("--tier-dir", f"{v!r} is not TIER=PATH", "e.g. --tier-dir pfs=/tmp/x")
        out[tier] = Path(path)
    return out


def check_run(model: TrainedModel, placement: Mapping[str, str], nodes: int, scale: float,
              tier_dirs: Mapping[str, Path], transfer_bytes: int = DEFAULT_TRANSFER) -> RunSpec:
    """Every input checked before anything is written (InputError, one line)."""
    if not (0 < scale <= 1):       # refuses NaN too
        raise InputError("--scale", f"{scale!r} is not in (0, 1]", "give e.g. --scale 0.01")
    if transfer_bytes <= 0:
        raise InputError("transfer size", f"{transfer_bytes} is not positive")
    unknown = sorted(set(placement) - set(model.stages))
    if unknown:
        raise InputError("--placement", f"unknown stage {unknown[0]!r}",
                         f"stages of {model.name}: {', '.join(model.stages)}")
    missing = [s for s in model.stages if s not in placement]
    if missing:
        raise InputError("--placement", f"no tier for stage {missing[0]!r}",
                         "give STAGE=TIER for every stage")
    for t in list(placement.values()) + list(tier_dirs):
        if t not in model.tier_names:
            raise InputError("--placement" if t in placement.values() else "--tier-dir",
                             f"unknown tier {t!r}", f"tiers of {model.name}: "
                             f"{', '.join(model.tier_names)}")
    row = model.row_of(nodes, dict(placement))
    if row is None:
        raise InputError("--placement", f"{model.name} v{model.version} has no placement "
                         f"{','.join(f'{s}={placement[s]}' for s in model.stages)} "
                         f"on {nodes} nodes", f"node counts: "
                         f"{','.join(map(str, model.node_counts))}; see 'qos-plan query'")
    if model.volumes is None:
        raise InputError(SOURCE, f"{model.name} v{model.version} has no I/O volumes",
                         "train it with --io-data")
    home = _tierset(model).home.name
    for t in dict.fromkeys([home, *placement.values()]):
        if t not in tier_dirs:
            raise InputError("--tier-dir", f"no directory for tier {t!r}",
                             f"give --tier-dir {t}=PATH")
    return RunSpec(model, dict(placement), nodes, scale, dict(tier_dirs), row, transfer_bytes)


def _tierset(model: TrainedModel) -> TierSet:
    return parse_tiers(",".join(f"{n}:{k}" for n, k in
                                zip(model.tier_names, model.tier_kinds, strict=True)))


def _per_task(mib: float, scale: float, tasks: int) -> int:
    return int(round(mib * scale * MIB / tasks))


def _transfer(volumes: Mapping[str, float], op: str, default: int) -> int:
    """Bytes per ``op`` of a stage: the model's, else ``default``; 1 to MAX_RUN_TRANSFER."""
    return max(1, min(MAX_RUN_TRANSFER, int(volumes.get(f"{op}_transfer_bytes", default))))


# --- workers: top-level functions, so the process pool can run them ---------------

def _task(reads: list[str], read_bytes: int, out: str, write_bytes: int,
          transfer: int, write_transfer: int) -> tuple[int, int, float, float]:
    """One task: read ``read_bytes`` cycling over ``reads`` ``transfer`` bytes at a time,
    write ``write_bytes`` to ``out`` ``write_transfer`` at a time; returns bytes read,
    bytes written and wall-clock start and end."""
    start = time.time()
    done = 0
    sizes = [os.path.getsize(p) for p in reads]
    if read_bytes and not any(sizes):
        raise RuntimeError(f"nothing to read for {out}")
    while done < read_bytes:
        for p, size in zip(reads, sizes, strict=True):
            if not size:
                continue
            with open(p, "rb", buffering=0) as f:
                while done < read_bytes:
                    chunk = f.read(min(transfer, read_bytes - done))
                    if not chunk:
                        break
                    done += len(chunk)
            if done >= read_bytes:
                break
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    written = 0
    block = b"\0" * min(write_transfer, max(write_bytes, 1))
    with open(out, "wb", buffering=0) as f:
        while written < write_bytes:
            n = f.write(block[:min(write_transfer, write_bytes - written)])
            written += n or 0
    return done, written, start, time.time()


def _copy(pairs: list[tuple[str, str]]) -> tuple[int, int, float, float]:
    """Copy each (source, destination) file; bytes read and written, start, end."""
    start = time.time()
    moved = 0
    for src, dst in pairs:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        moved += os.path.getsize(dst)
    return moved, moved, start, time.time()


# --- the run ------------------------------------------------------------------------

class _Layout:
    """Where each tier's (and node's) files are."""

    def __init__(self, spec: RunSpec, tiers: TierSet, workflow: str) -> None:
        self.spec, self.tiers, self.workflow = spec, tiers, workflow

    def dir(self, tier: str, node: int) -> Path:
        base = self.spec.tier_dirs[tier]
        if self.tiers[tier].is_local:
            base = base / f"node{node}"
        return base / self.workflow

    def nodes_of(self, tier: str) -> range:
        return range(self.spec.nodes) if self.tiers[tier].is_local else range(1)


def _files(d: Path) -> list[str]:
    return sorted(str(p) for p in d.iterdir()) if d.is_dir() else []


class RunFailed(QosPluginError):
    """A run that could not finish (a tier directory not writable, a disk full...)."""


def run(spec: RunSpec) -> dict[str, Any]:
    """Run the workflow of ``spec``; the record of what it did (see ``run_table``):
    per stage its tasks (node, file, bytes, start and end) and per phase its seconds,
    bytes and copies; per level each phase's start and end; totals."""
    try:
        return _run(spec)
    except (OSError, RuntimeError) as e:
        # One line as every other failure, not a worker's traceback.
        raise RunFailed(f"the run failed: {e}") from e


def _run(spec: RunSpec) -> dict[str, Any]:
    model = spec.model
    tmpl: WorkflowTemplate = template_from_dict(model.workflow, name=model.name,
                                                patterns=False)
    tiers = _tierset(model)
    home = tiers.home.name
    lay = _Layout(spec, tiers, tmpl.name)
    vol = model.volumes
    assert vol is not None
    columns = [np.array([tiers.index(spec.placement[s])]) for s in tmpl.stage_names]
    pos = {s: i for i, s in enumerate(tmpl.stage_names)}
    N, scale, xfer = spec.nodes, spec.scale, spec.transfer_bytes
    # A fresh run: what an earlier run left would be read as this run's inputs.
    for t in dict.fromkeys([home, *spec.placement.values()]):
        for j in lay.nodes_of(t):
            shutil.rmtree(lay.dir(t, j), ignore_errors=True)
    init_bytes = max([int(round(vol[s.name].get("in_files_mib", vol[s.name]["read_mib"])
                                * scale * MIB)) for s in tmpl.stages if s.reads_initial_data]
                     or [0])
    init = lay.dir(home, 0) / INITIAL_DATA / "input.dat"
    _task([], 0, str(init), init_bytes, xfer, xfer)

    stages: dict[str, dict[str, Any]] = {
        s.name: {"tier": spec.placement[s.name], "level": s.level, "tasks": [],
                 "transfer_bytes": {op: _transfer(vol[s.name], op, xfer)
                                    for op in ("read", "write")},
                 "phases": {p: {"seconds": 0.0, "read_bytes": 0, "written_bytes": 0,
                                "copies": 0} for p in PHASES}}
        for s in tmpl.stages}
    levels: list[dict[str, Any]] = []

    def source_dir(source: str, tier: str, node: int) -> Path:
        """Where a reader on ``tier``/``node`` finds ``source``: there after a copy,
        else where it was written (the initial data on home)."""
        here = lay.dir(tier, node) / source
        if here.is_dir():
            return here
        if source == INITIAL_DATA:
            return lay.dir(home, 0) / INITIAL_DATA
        pt = spec.placement[source]
        return lay.dir(pt, node if tiers[pt].is_local else 0) / source

    t0 = time.time()
    with ProcessPoolExecutor(max_workers=spec.workers) as pool:
        for level in tmpl.levels:
            at = tmpl.stages_at(level)
            lv: dict[str, Any] = {"level": level, "phases": {}}
            for phase in PHASES:
                jobs: list[tuple[str, Any]] = []   # (stage, future)
                for st in at:
                    s, t = pos[st.name], spec.placement[st.name]
                    if phase == "stage-in":
                        for x, sources in stage_in_copies(tmpl, tiers, s, columns):
                            for source, mask in sources:
                                if not mask[0]:
                                    continue
                                src = (lay.dir(home, 0) / INITIAL_DATA if source == INITIAL_DATA
                                       else lay.dir(tiers.tiers[x].name, 0) / source)
                                for j in lay.nodes_of(t):
                                    dst = lay.dir(t, j) / source
                                    pairs = [(f, str(dst / Path(f).name)) for f in _files(src)]
                                    jobs.append((st.name, pool.submit(_copy, pairs)))
                    elif phase == "execution":
                        rb = _per_task(vol[st.name]["read_mib"], scale, st.num_tasks)
                        wb = _per_task(vol[st.name]["write_mib"], scale, st.num_tasks)
                        for i in range(st.num_tasks):
                            j = i % N
                            node = j if tiers[t].is_local else 0
                            reads = [f for src in st.predecessors
                                     for f in _files(source_dir(src, t, node))]
                            out = lay.dir(t, node) / st.name / f"t{i}.dat"
                            tx = stages[st.name]["transfer_bytes"]
                            fut = pool.submit(_task, reads, rb, str(out), wb, tx["read"],
                                              tx["write"])
                            stages[st.name]["tasks"].append(
                                {"task": i, "node": j, "path": str(out), "future": fut})
                            jobs.append((st.name, fut))
                    else:
                        for y, mask in enumerate(stage_out_moves(tmpl, tiers, s, columns)):
                            if mask[0]:
                                jobs += [(st.name, pool.submit(_copy, pairs)) for pairs in
                                         _out_pairs(lay, st.name, t, tiers.tiers[y].name)]
                results = [(name, fut.result()) for name, fut in jobs]   # the barrier
                for name, (r, w, _a, _b) in results:
                    ph = stages[name]["phases"][phase]
                    ph["read_bytes"] += r
                    ph["written_bytes"] += w
                    ph["copies"] += phase != "execution"
                for st in at:
                    mine = [res for name, res in results if name == st.name]
                    if mine:
                        stages[st.name]["phases"][phase]["seconds"] = (
                            max(e for *_, e in mine) - min(a for *_, a, _e in mine))
                lv["phases"][phase] = {
                    "start": min((res[2] for _, res in results), default=None),
                    "end": max((res[3] for _, res in results), default=None)}
            spans = [p for p in lv["phases"].values() if p["start"] is not None]
            lv["start"] = min((p["start"] for p in spans), default=None)
            lv["end"] = max((p["end"] for p in spans), default=None)
            levels.append(lv)
    total = time.time() - t0
    for rec in stages.values():
        for task in rec["tasks"]:
            r, w, a, b = task.pop("future").result()
            task.update(read_bytes=r, written_bytes=w, start=a, end=b)
    return {"model": model.name, "version": model.version, "mode": "local",
            "nodes": N, "scale": scale, "transfer_bytes": xfer,
            "placement": spec.placement,
            "predicted_seconds": float(model.total[spec.row]),
            "total_seconds": total, "levels": levels, "stages": stages,
            "read_bytes": sum(p["read_bytes"] for r in stages.values()
                              for p in r["phases"].values()),
            "written_bytes": sum(p["written_bytes"] for r in stages.values()
                                 for p in r["phases"].values())}


def _out_pairs(lay: _Layout, stage: str, src_tier: str,
               dst_tier: str) -> Iterator[list[tuple[str, str]]]:
    """The copies of a stage-out move of ``stage``'s outputs, one list per copy job."""
    local_src = lay.tiers[src_tier].is_local
    local_dst = lay.tiers[dst_tier].is_local
    srcs = {j: _files(lay.dir(src_tier, j) / stage) for j in lay.nodes_of(src_tier)}
    if src_tier == dst_tier:       # fan-out: every node gets every other node's outputs
        for j in lay.nodes_of(dst_tier):
            dst = lay.dir(dst_tier, j) / stage
            yield [(f, str(dst / Path(f).name)) for k, fs in srcs.items() if k != j for f in fs]
    elif local_dst and not local_src:   # moved once: each file onto its task's node
        files = srcs[0]
        for j in lay.nodes_of(dst_tier):
            dst = lay.dir(dst_tier, j) / stage
            yield [(f, str(dst / Path(f).name)) for f in files
                   if int(Path(f).stem[1:]) % lay.spec.nodes == j]
    else:                          # gathered onto a shared tier
        dst = lay.dir(dst_tier, 0) / stage
        for fs in srcs.values():
            yield [(f, str(dst / Path(f).name)) for f in fs]


def run_table(record: Mapping[str, Any]) -> str:
    """A short text table of a run: per stage its tier and the seconds and MiB of
    each phase, then the total against the prediction (at scale 1)."""
    lines = [f"{'stage':12s} {'tier':8s} " + " ".join(f"{p:>20s}" for p in PHASES),
             " " * 22 + " ".join(f"{'seconds, MiB r+w':>20s}" for _ in PHASES)]
    for name, st in record["stages"].items():
        cells = []
        for p in PHASES:
            ph = st["phases"][p]
            mib = (ph["read_bytes"] + ph["written_bytes"]) / MIB
            cells.append(f"{ph['seconds']:8.3f}s {mib:9.2f}MiB")
        lines.append(f"{name:12s} {st['tier']:8s} " + " ".join(f"{c:>20s}" for c in cells))
    lines.append(f"total {record['total_seconds']:.3f} s at scale {record['scale']:g} "
                 f"(predicted {record['predicted_seconds']:.3f} s at scale 1); read "
                 f"{record['read_bytes'] / MIB:.2f} MiB, wrote "
                 f"{record['written_bytes'] / MIB:.2f} MiB")
    return "\n".join(lines)
