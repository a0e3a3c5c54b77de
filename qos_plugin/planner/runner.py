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
  ``DIR/node<j>`` (local mode; on node j's own ``DIR`` in Slurm mode), a shared
  tier's under ``DIR``; everything under ``<workflow>/``;
* task ``i`` writes one file ``<stage>/t<i>.dat``; a task reads its volume from its
  sources' files (the initial data and its predecessors' outputs) where they are on
  its tier and node (after a copy), else where they were written, cycling over them;
* the ``k``-th task on a node starts reading at byte ``k`` times its volume of its
  sources laid end to end (``read_from``), cycling over them: the tasks a node runs
  side by side read their own parts, not all the same bytes, which the node's page
  cache would serve once (tasks on other nodes may read the same bytes: each node
  reads them from the tier);
* the initial data, one file on the home tier, is the parts of it the stages reading
  it read (``movement.copied_from``, scaled), end to end: a stage's stage-in copies its
  own part, and its tasks reading in place read that part only;
* stage-in: each copy ``movement.stage_in_copies`` charges brings the source's files
  onto every node of the stage's node-local tier; stage-out: each move
  ``movement.stage_out_moves`` charges copies the outputs (kept at the source, since
  other consumers and the final flush may read them too) to the target tier: a
  fan-out gives every node all outputs, a move to a shared tier gathers them there,
  a move from a shared tier onto a node-local one puts each file on its task's node.

Local mode and Slurm mode (``slurmrun``: srun steps on the job's nodes) share all of
this: ``plan_run`` makes the actions of every phase from the rules above, ``execute``
runs them phase by phase through a *launcher* and makes the record. The two differ
only in the launcher (a process pool here; srun steps there) and in where a
node-local tier's nodes are (``node<j>`` subdirectories here; the same path on each
node's own disk there).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qos_plugin.errors import InputError, QosPluginError
from qos_plugin.model.movement import PHASES, copied_from, stage_in_copies, stage_out_moves
from qos_plugin.model.template import INITIAL_DATA, WorkflowTemplate, template_from_dict
from qos_plugin.model.tiers import TierSet, parse_tiers
from qos_plugin.planner import taskproc
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


# --- the processes: ``taskproc`` (standard library only, so a Slurm step can run it) ----

# Looked up here when a local run submits a task, so a test can watch what tasks get.
_task = taskproc.task
_copy = taskproc.copy


class RunFailed(QosPluginError):
    """A run that could not finish (a tier directory not writable, a disk full...)."""


# --- the plan: which actions run on which node, phase by phase (no I/O) --------------

@dataclass
class Action:
    """One process of a run: a ``taskproc`` action to perform on node ``node``.

    ``sources`` gives, per pair of a copy, the node whose node-local tier holds the
    source (None: a shared tier, seen on every node); a source on another node than
    ``node`` must cross the network (a fan-out)."""

    stage: str
    node: int
    payload: dict[str, Any]
    sources: list[int | None] = field(default_factory=list)


@dataclass
class RunPlan:
    """Every action of a run: ``prepare`` first (one per node), then per level the
    actions of each phase; ``tasks`` the execution actions of each stage in task
    order (the record's tasks)."""

    prepare: list[Action]
    levels: list[tuple[float, dict[str, list[Action]]]]
    tasks: dict[str, list[Action]]


class _Layout:
    """Where each tier's (and node's) files are. ``node_dirs``: a node-local tier's
    nodes are subdirectories ``node<j>`` of one directory (local mode, one machine);
    else every node has the tier at the same path on a disk of its own (Slurm)."""

    def __init__(self, spec: RunSpec, tiers: TierSet, workflow: str, node_dirs: bool) -> None:
        self.spec, self.tiers, self.workflow = spec, tiers, workflow
        self.node_dirs = node_dirs

    def dir(self, tier: str, node: int) -> Path:
        base = self.spec.tier_dirs[tier]
        if self.tiers[tier].is_local and self.node_dirs:
            base = base / f"node{node}"
        return base / self.workflow

    def nodes_of(self, tier: str) -> range:
        return range(self.spec.nodes) if self.tiers[tier].is_local else range(1)

    def node_of(self, tier: str, node: int) -> int | None:
        """Whose disk ``tier``'s files of ``node`` are on (None: shared)."""
        return node if self.tiers[tier].is_local else None


Key = tuple[str, int, str]       # (tier, node, source): a directory of the run


def plan_run(spec: RunSpec, node_dirs: bool = True) -> RunPlan:
    """The actions of ``spec``'s run, from the movement rules and the per-task
    volumes. Which files each directory holds is followed through the phases here
    (a phase sees what the phases before it left), so that no node has to list
    another node's disk."""
    model = spec.model
    tmpl: WorkflowTemplate = template_from_dict(model.workflow, name=model.name,
                                                patterns=False)
    tiers = _tierset(model)
    home = tiers.home.name
    lay = _Layout(spec, tiers, tmpl.name, node_dirs)
    vol = model.volumes
    assert vol is not None
    columns = [np.array([tiers.index(spec.placement[s])]) for s in tmpl.stage_names]
    pos = {s: i for i, s in enumerate(tmpl.stage_names)}
    N, scale, xfer = spec.nodes, spec.scale, spec.transfer_bytes
    files: dict[Key, list[str]] = {}

    def path(key: Key, name: str) -> str:
        return str(lay.dir(key[0], key[1]) / key[2] / name)

    used = list(dict.fromkeys([home, *spec.placement.values()]))
    # The initial data is every stage's own part of it, end to end: what the model
    # copies for each stage (movement.copied_from) and what its tasks read in place.
    parts = {s.name: int(round(copied_from(vol, s.name, INITIAL_DATA) * scale * MIB))
             for s in tmpl.stages if s.reads_initial_data}
    part_at = {name: sum(list(parts.values())[:i]) for i, name in enumerate(parts)}
    init_bytes = sum(parts.values())
    init_key: Key = (home, 0, INITIAL_DATA)
    prepare = []
    for j in range(N):
        remove = [str(lay.dir(t, j)) for t in used if j in lay.nodes_of(t)]
        init = path(init_key, "input.dat") if j == 0 else None
        if remove or init:
            prepare.append(Action("", j, {"kind": "prepare", "remove": remove, "init": init,
                                          "init_bytes": init_bytes, "transfer": xfer}))
    files[init_key] = ["input.dat"]

    def source_key(source: str, tier: str, node: int, stage: str) -> Key:
        """Where a reader (of ``stage``) on ``tier``/``node`` finds ``source``: there
        after a copy, else where it was written (the initial data on home)."""
        here = (tier, node, _copy_name(source, stage))
        if here in files:
            return here
        if source == INITIAL_DATA:
            return init_key
        pt = spec.placement[source]
        return (pt, node if tiers[pt].is_local else 0, source)

    def copy(stage: str, node: int, pairs: list[tuple[Key, Key, str]],
             adds: list[tuple[Key, str]], part: tuple[int, int] | None = None) -> Action:
        adds += [(dst, name) for _src, dst, name in pairs]
        # A part (bytes, offset) copies only those bytes of each file (taskproc.copy).
        tail = [] if part is None else list(part)
        return Action(stage, node, {"kind": "copy",
                                    "pairs": [[path(s, n), path(d, n), *tail]
                                              for s, d, n in pairs]},
                      [lay.node_of(s[0], s[1]) for s, _d, _n in pairs])

    levels: list[tuple[float, dict[str, list[Action]]]] = []
    tasks: dict[str, list[Action]] = {s.name: [] for s in tmpl.stages}
    for level in tmpl.levels:
        at = tmpl.stages_at(level)
        phases: dict[str, list[Action]] = {}
        for phase in PHASES:
            acts: list[Action] = []
            adds: list[tuple[Key, str]] = []    # seen by the phases after this one
            for st in at:
                s, t = pos[st.name], spec.placement[st.name]
                if phase == "stage-in":
                    for x, sources in stage_in_copies(tmpl, tiers, s, columns):
                        for source, mask in sources:
                            if not mask[0]:
                                continue
                            src = init_key if source == INITIAL_DATA else \
                                (tiers.tiers[x].name, 0, source)
                            # The initial data's copy carries what the model charges
                            # this stage's (movement.copied_from): its own part, in a
                            # directory of its own, not the whole input per stage.
                            part = ((parts[st.name], part_at[st.name])
                                    if source == INITIAL_DATA else None)
                            for j in lay.nodes_of(t):
                                dst: Key = (t, j, _copy_name(source, st.name))
                                acts.append(copy(st.name, j, [(src, dst, n)
                                                              for n in files.get(src, [])],
                                                 adds, part))
                elif phase == "execution":
                    rb = _per_task(vol[st.name]["read_mib"], scale, st.num_tasks)
                    wb = _per_task(vol[st.name]["write_mib"], scale, st.num_tasks)
                    tx = {op: _transfer(vol[st.name], op, xfer) for op in ("read", "write")}
                    for i in range(st.num_tasks):
                        j = i % N
                        node = j if tiers[t].is_local else 0
                        keys = [source_key(src, t, node, st.name) for src in st.predecessors]
                        keys.sort(key=lambda k: k != init_key)   # initial data in place first
                        # The initial data read in place is the stage's own part of it.
                        reads: list[Any] = [
                            [path(k, n), part_at[st.name], parts[st.name]] if k == init_key
                            else path(k, n) for k in keys for n in files.get(k, [])]
                        # The k-th task on a node reads the k-th part of its inputs: the
                        # tasks a node runs side by side read different bytes, which its
                        # page cache would otherwise serve once for all of them, more the
                        # more tasks a node holds (kgenome at N = 3 ran 25% faster than
                        # its tier allows when task i read from i times its volume).
                        out: Key = (t, node, st.name)
                        adds.append((out, f"t{i}.dat"))
                        a = Action(st.name, j, {"kind": "task", "reads": reads,
                                                "read_bytes": rb, "read_from": i // N * rb,
                                                "out": path(out, f"t{i}.dat"),
                                                "write_bytes": wb, "transfer": tx["read"],
                                                "write_transfer": tx["write"]})
                        tasks[st.name].append(a)
                        acts.append(a)
                else:
                    for y, mask in enumerate(stage_out_moves(tmpl, tiers, s, columns,
                                                             N == 1)):
                        if mask[0]:
                            acts += [copy(st.name, node, pairs, adds) for node, pairs in
                                     _out_pairs(lay, files, st.name, t, tiers.tiers[y].name)]
            phases[phase] = acts
            for key, name in adds:
                names = files.setdefault(key, [])
                if name not in names:
                    names.append(name)
                    names.sort()
        levels.append((level, phases))
    return RunPlan(prepare, levels, tasks)


def _copy_name(source: str, stage: str) -> str:
    """The directory a stage-in copy of ``source`` goes to: the initial data's is the
    stage's own (each stage's copy carries its own part); a stage's outputs are shared
    by the readers on that tier and node."""
    return f"{INITIAL_DATA}-{stage}" if source == INITIAL_DATA else source


def _out_pairs(lay: _Layout, files: Mapping[Key, list[str]], stage: str, src_tier: str,
               dst_tier: str) -> Iterator[tuple[int, list[tuple[Key, Key, str]]]]:
    """The copies of a stage-out move of ``stage``'s outputs, one (node it runs on,
    its (source, destination, file) list) per copy process."""
    local_src = lay.tiers[src_tier].is_local
    local_dst = lay.tiers[dst_tier].is_local
    srcs = {j: (src_tier, j, stage) for j in lay.nodes_of(src_tier)}
    if src_tier == dst_tier:       # fan-out: every node gets every other node's outputs
        for j in lay.nodes_of(dst_tier):
            yield j, [(k, (dst_tier, j, stage), n) for i, k in srcs.items() if i != j
                      for n in files.get(k, [])]
    elif local_dst and not local_src:   # moved once: each file onto its task's node
        for j in lay.nodes_of(dst_tier):
            yield j, [(srcs[0], (dst_tier, j, stage), n) for n in files.get(srcs[0], [])
                      if int(Path(n).stem[1:]) % lay.spec.nodes == j]
    else:                          # gathered onto a shared tier, by the node holding them
        for j, k in srcs.items():
            yield j, [(k, (dst_tier, 0, stage), n) for n in files.get(k, [])]


# --- running a plan ------------------------------------------------------------------

# Runs one phase's actions at once, with the barrier: every result ([bytes read,
# bytes written, start, end, host], in the actions' order) once all have ended.
Launcher = Callable[[list[Action]], list[list[Any]]]


def run(spec: RunSpec) -> dict[str, Any]:
    """Run the workflow of ``spec`` on this machine (local mode); the record of what
    it did (see ``run_table``): per stage its tasks (node, host, file, bytes, start
    and end) and per phase its seconds, bytes and copies; per level each phase's
    start and end; totals."""
    try:
        with ProcessPoolExecutor(max_workers=spec.workers) as pool:
            return execute(spec, plan_run(spec), local_launcher(pool), "local")
    except (OSError, RuntimeError) as e:
        # One line as every other failure, not a worker's traceback.
        raise RunFailed(f"the run failed: {e}") from e


def local_launcher(pool: ProcessPoolExecutor) -> Launcher:
    """The local mode's launcher: each action a call in ``pool``'s processes."""
    host = socket.gethostname()

    def submit(a: Action) -> Any:
        p = a.payload
        if p["kind"] == "task":
            return pool.submit(_task, p["reads"], p["read_bytes"], p["out"], p["write_bytes"],
                               p["transfer"], p["write_transfer"], p.get("read_from", 0))
        if p["kind"] == "copy":
            return pool.submit(_copy, [tuple(x) for x in p["pairs"]])
        return pool.submit(taskproc.prepare, p["remove"], p["init"], p["init_bytes"],
                           p["transfer"])

    def launch(actions: list[Action]) -> list[list[Any]]:
        futures = [submit(a) for a in actions]
        return [[*f.result(), host] for f in futures]
    return launch


def execute(spec: RunSpec, plan: RunPlan, launch: Launcher, mode: str,
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``plan`` phase by phase through ``launch`` (a barrier after each phase);
    the run's record. ``mode`` and ``extra`` say how and where it ran."""
    model = spec.model
    vol = model.volumes
    assert vol is not None
    stages: dict[str, dict[str, Any]] = {}
    tmpl = template_from_dict(model.workflow, name=model.name, patterns=False)
    for s in tmpl.stages:
        stages[s.name] = {
            "tier": spec.placement[s.name], "level": s.level, "tasks": [],
            "transfer_bytes": {op: _transfer(vol[s.name], op, spec.transfer_bytes)
                               for op in ("read", "write")},
            "phases": {p: {"seconds": 0.0, "read_bytes": 0, "written_bytes": 0,
                           "copies": 0} for p in PHASES}}
    launch(plan.prepare)
    results: dict[int, list[Any]] = {}      # by id() of the action
    levels: list[dict[str, Any]] = []
    t0 = time.time()
    for level, phases in plan.levels:
        lv: dict[str, Any] = {"level": level, "phases": {}}
        for phase in PHASES:
            acts = phases[phase]
            launched = time.time()
            got = launch(acts)               # the barrier
            returned = time.time()
            for a, res in zip(acts, got, strict=True):
                results[id(a)] = res
                ph = stages[a.stage]["phases"][phase]
                ph["read_bytes"] += res[0]
                ph["written_bytes"] += res[1]
                ph["copies"] += phase != "execution"
            for name in dict.fromkeys(a.stage for a in acts):
                mine = [res for a, res in zip(acts, got, strict=True) if a.stage == name]
                stages[name]["phases"][phase]["seconds"] = (max(r[3] for r in mine)
                                                            - min(r[2] for r in mine))
            # start/end: of the actions themselves; launched/returned: the phase as the
            # run waits for it, its processes' start included (what the model charges).
            lv["phases"][phase] = {"start": min((r[2] for r in got), default=None),
                                   "end": max((r[3] for r in got), default=None),
                                   "launched": launched if acts else None,
                                   "returned": returned if acts else None}
        spans = [p for p in lv["phases"].values() if p["start"] is not None]
        lv["start"] = min((p["start"] for p in spans), default=None)
        lv["end"] = max((p["end"] for p in spans), default=None)
        levels.append(lv)
    total = time.time() - t0
    for name, acts in plan.tasks.items():
        for i, a in enumerate(acts):
            r, w, start, end, host = results[id(a)]
            stages[name]["tasks"].append(
                {"task": i, "node": a.node, "host": host, "path": a.payload["out"],
                 "read_bytes": r, "written_bytes": w, "start": start, "end": end})
    return {"model": model.name, "version": model.version, "mode": mode, **(extra or {}),
            "nodes": spec.nodes, "scale": spec.scale, "transfer_bytes": spec.transfer_bytes,
            "placement": spec.placement,
            "predicted_seconds": float(model.total[spec.row]),
            "total_seconds": total, "levels": levels, "stages": stages,
            "read_bytes": sum(p["read_bytes"] for r in stages.values()
                              for p in r["phases"].values()),
            "written_bytes": sum(p["written_bytes"] for r in stages.values()
                                 for p in r["phases"].values())}


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
