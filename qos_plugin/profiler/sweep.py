"""What to measure, and how a measurement becomes a profile row. Pure.

A tier is given as ``NAME=PATH:KIND`` (KIND ``shared`` or ``node-local``). For
each tier the sweep measures sequential reads and writes over transfer sizes,
data sizes and concurrent tasks; for moves it copies data between tiers with
``k`` concurrent copies: shared -> node-local and back (``cp`` rows) and, for
node-local tiers, between two directories of the same tier (``scp`` rows: the
fan-out between nodes, measured on this one machine as a local copy). For files it
times each tier's cost per file, whatever its bytes (``files`` rows, see FileRun).

Everything runs on one machine, so every row has ``numNodes`` 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from qos_plugin.errors import InputError
from qos_plugin.model.profile import FILE_BYTES
from qos_plugin.model.tiers import TierKind

COLUMNS = ("operation", "randomOffset", "transferSize", "aggregateFilesizeMB", "numTasks",
           "totalTime", "numNodes", "tasksPerNode", "parallelism", "trMiB", "storageType",
           "estimator", "phaseStartSeconds", "phaseStartMoreSeconds")
# How a profile of this sweep is to be read (model/profile.py): a sweep measures a few
# points, on which the published estimator's means mix transfer sizes and loads.
ESTIMATOR = "grid"
MIB = 1 << 20
_SPEC = re.compile(r"([A-Za-z0-9_.]+)=(.+):(shared|node-local)")


@dataclass(frozen=True)
class TierDir:
    name: str
    path: Path
    kind: TierKind


@dataclass(frozen=True)
class Sweep:
    transfer_sizes: tuple[int, ...]     # bytes
    data_sizes: tuple[int, ...]         # MiB moved per run, over all tasks
    tasks: tuple[int, ...]
    move_copies: tuple[int, ...]
    move_sizes: tuple[int, ...]         # MiB per move run, over all copies
    repeats: int
    # MiB of further runs at 1 MiB transfers only: long runs, whose rate a run's start
    # (opening files, the first requests) no longer lowers. A 4 KiB run's rate is its
    # per-call cost, which a longer run does not change.
    long_sizes: tuple[int, ...] = ()
    # Concurrent tasks of the per-file runs (FileRun).
    file_tasks: tuple[int, ...] = (1, 2)


QUICK = Sweep(transfer_sizes=(4096, MIB), data_sizes=(64,), tasks=(1, 2), move_copies=(1, 2),
              move_sizes=(64,), repeats=1)
FULL = Sweep(transfer_sizes=(4096, 65536, MIB, 4 * MIB), data_sizes=(64, 256, 1024),
             tasks=(1, 2, 4, 8), move_copies=(1, 2, 4), move_sizes=(512,), repeats=3)
# Measured on the local cluster, 64 MiB runs gave its shared tier 86-105 MiB/s and copies
# from it 98-100, 512 MiB copies 109: a short run's rate includes its start. Long runs
# price the hundreds of MiB a workflow's stages move from runs of that size.
LONG_MIB = 512


def with_long_runs(sweep: Sweep) -> Sweep:
    """``sweep`` with reads, writes (at 1 MiB transfers) and copies of LONG_MIB too."""
    return replace(sweep, long_sizes=tuple(sorted({*sweep.long_sizes, LONG_MIB})),
                   move_sizes=tuple(sorted({*sweep.move_sizes, LONG_MIB})))


@dataclass(frozen=True)
class IoRun:
    tier: TierDir
    operation: str          # read or write
    transfer: int
    mib: int
    tasks: int


@dataclass(frozen=True)
class MoveRun:
    src: TierDir
    dst: TierDir
    operation: str          # cp (between tiers) or scp (within a node-local tier)
    copies: int
    mib: int


# A per-file run: each task creates FILES_PER_TASK files (one FILE_BYTES write each, then
# close), then opens each again (stat, open, one read, close), as a workflow's task
# creates its output and opens its inputs. On a tier reached through qosfs each of those
# is a round trip to the daemons (~0.1 s a task of a few files here, measured against
# runs of kgenome's small tasks), which no byte rate prices.
FILES_PER_TASK = 32


@dataclass(frozen=True)
class FileRun:
    tier: TierDir
    tasks: int
    files: int = FILES_PER_TASK


def parse_tier_dir(spec: str) -> TierDir:
    m = _SPEC.fullmatch(spec)
    if not m:
        raise InputError("--tier", f"{spec!r} is not NAME=PATH:KIND",
                         "e.g. tmpfs=/dev/shm/qos:node-local or disk=/var/tmp/qos:shared")
    name, path, kind = m.groups()
    return TierDir(name, Path(path), TierKind(kind))


def check_tiers(tiers: list[TierDir]) -> None:
    names = [t.name for t in tiers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError("--tier", f"tier {dup[0]!r} given twice", "name each tier once")
    if not any(t.kind is TierKind.SHARED for t in tiers):
        raise InputError("--tier", "no shared tier", "give one tier with :shared (the home "
                         "of the workflow's data)")
    for t in tiers:
        if not t.path.is_dir():
            raise InputError("--tier", f"{t.name}: {t.path} is not a directory",
                             "create it first; the profiler writes and deletes files there")


def io_runs(tiers: list[TierDir], sweep: Sweep) -> list[IoRun]:
    points = [(ts, mib) for ts in sweep.transfer_sizes for mib in sweep.data_sizes]
    points += [(MIB, mib) for mib in sweep.long_sizes if (MIB, mib) not in points]
    return [IoRun(t, op, ts, mib, k) for t in tiers for op in ("write", "read")
            for ts, mib in points for k in sweep.tasks for _ in range(sweep.repeats)]


def move_runs(tiers: list[TierDir], sweep: Sweep) -> list[MoveRun]:
    shared = [t for t in tiers if t.kind is TierKind.SHARED]
    local = [t for t in tiers if t.kind is TierKind.NODE_LOCAL]
    pairs = [(s, loc, "cp") for s in shared for loc in local]
    pairs += [(loc, s, "cp") for s in shared for loc in local]
    pairs += [(loc, loc, "scp") for loc in local]
    return [MoveRun(a, b, op, k, mib) for a, b, op in pairs for mib in sweep.move_sizes
            for k in sweep.move_copies for _ in range(sweep.repeats)]


def file_runs(tiers: list[TierDir], sweep: Sweep) -> list[FileRun]:
    return [FileRun(t, k) for t in tiers for k in sweep.file_tasks
            for _ in range(sweep.repeats)]


def file_row(run: FileRun, seconds: float) -> dict[str, object]:
    """A per-file run as a profile row: operation ``files``, transfer FILE_BYTES, the
    MiB of its file operations (each create and each open moves one transfer), so that
    its rate, ``trMiB``, at FILE_BYTES a file operation is its file operations a second
    (``model/carried.py`` reads it so)."""
    mib = run.tasks * run.files * 2 * FILE_BYTES / MIB
    row = _row("files", FILE_BYTES, 0, run.tasks, seconds, run.tier.name)
    row["aggregateFilesizeMB"] = round(mib, 6)
    row["trMiB"] = round(mib / max(seconds, 1e-6), 6)
    return row


def io_row(run: IoRun, seconds: float) -> dict[str, object]:
    return _row(run.operation, run.transfer, run.mib, run.tasks, seconds, run.tier.name)


def move_row(run: MoveRun, seconds: float) -> dict[str, object]:
    kind = f"{run.src.name}-{run.dst.name}"
    return _row(run.operation, 4096, run.mib, run.copies, seconds, kind)


def _row(op: str, transfer: int, mib: int, tasks: int, seconds: float, storage: str
         ) -> dict[str, object]:
    seconds = max(seconds, 1e-6)
    return {"operation": op, "randomOffset": 0, "transferSize": transfer,
            "aggregateFilesizeMB": mib, "numTasks": tasks, "totalTime": round(seconds, 6),
            "numNodes": 1, "tasksPerNode": tasks, "parallelism": tasks,
            "trMiB": round(mib / seconds, 4), "storageType": storage, "estimator": ESTIMATOR,
            "phaseStartSeconds": 0.0, "phaseStartMoreSeconds": ""}
