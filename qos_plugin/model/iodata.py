"""Measured I/O primitives of a workflow run (the artifact's workflow-data CSV).

One row per (task process, file, operation): bytes per operation
(``transferSize``), MiB moved by the task (``aggregateFilesizeMB``), the task's
stage (``taskName``) and, for reads, which stage produced the file (``prevTask``,
``initial_data`` for inputs of the workflow). Rows may be replicated per node
count; they are all kept and summed as given (see costbuild for why).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError
from qos_plugin.model.csvio import read_table, write_csv
from qos_plugin.model.limits import MAX_MIB, MAX_TRANSFER_BYTES

REQUIRED = ("operation", "transferSize", "aggregateFilesizeMB", "taskName", "taskPID",
            "fileName", "prevTask")


@dataclass(frozen=True)
class IoRecord:
    stage: str
    task: str
    file: str
    operation: str        # "read" or "write"
    transfer_bytes: float
    size_mb: float
    source: str           # producing stage for reads ("" for writes)


@dataclass
class IoData:
    records: list[IoRecord]
    source: str

    def stage_records(self, stage: str, operation: str) -> list[IoRecord]:
        return [r for r in self.records if r.stage == stage and r.operation == operation]


def load_io_data(path: str | Path) -> IoData:
    t = read_table(path, REQUIRED, "I/O primitives table")
    ops = [o.lower() for o in t.text("operation")]
    bad = [k for k, o in enumerate(ops) if o not in ("read", "write")]
    if bad:
        k = bad[0]
        raise InputError(f"{t.source}:{t.lines[k]}", f"operation is {ops[k]!r}",
                         "use read or write")
    ts = t.numbers("transferSize", lo=1e-9, hi=MAX_TRANSFER_BYTES,
                   hint="the bytes of one operation: a positive number")
    size = t.numbers("aggregateFilesizeMB", lo=0.0, hi=MAX_MIB,
                     hint="MiB moved by the task: 0 or more")
    stages, tasks, files, prev = (t.text("taskName"), t.text("taskPID"), t.text("fileName"),
                                  t.text("prevTask"))
    records = [IoRecord(stages[k], tasks[k], files[k], ops[k], float(ts[k]), float(size[k]),
                        prev[k] if ops[k] == "read" else "")
               for k in range(len(t))]
    return IoData(records, t.source)


def stage_volumes(io: IoData, stages: list[str]) -> dict[str, dict[str, Any]]:
    """MiB each stage reads and writes, as the cost builder prices them (its rows
    summed as given), and the distinct files behind them (smallest size each):
    what a stage-in copies to a node and what a stage-out flushes. ``in_from_mib``
    splits the distinct input files by source (``initial_data`` or the producing
    stage): a stage-in copy from one shared tier brings only its sources' files.
    ``read_transfer_bytes`` and ``write_transfer_bytes`` (for an operation the stage
    has) are the transfer size that moves most of its bytes: what a run replays."""
    out: dict[str, dict[str, Any]] = {}
    for s in stages:
        reads, writes = io.stage_records(s, "read"), io.stage_records(s, "write")
        sources = dict.fromkeys(r.source for r in reads)
        out[s] = {"read_mib": sum(r.size_mb for r in reads),
                  "write_mib": sum(r.size_mb for r in writes),
                  "in_files_mib": _distinct_mib(reads), "out_files_mib": _distinct_mib(writes),
                  "in_from_mib": {src: _distinct_mib([r for r in reads if r.source == src])
                                  for src in sources}}
        for op, recs in (("read", reads), ("write", writes)):
            if recs:
                out[s][f"{op}_transfer_bytes"] = _main_transfer(recs)
    return out


def _main_transfer(records: list[IoRecord]) -> float:
    """The transfer size of the most MiB among ``records`` (the smaller on a tie, so
    the answer does not depend on row order)."""
    mib: dict[float, float] = {}
    for r in records:
        mib[r.transfer_bytes] = mib.get(r.transfer_bytes, 0.0) + r.size_mb
    return min(mib, key=lambda t: (-mib[t], t))


def _distinct_mib(records: list[IoRecord]) -> float:
    size: dict[str, float] = {}
    for r in records:
        size[r.file] = min(size.get(r.file, r.size_mb), r.size_mb)
    return sum(size.values())


def write_io_csv(io: IoData, path: str | Path) -> None:
    """The I/O primitives in the workflow-data CSV schema."""
    write_csv(path, list(REQUIRED),
              ([r.operation, r.transfer_bytes, repr(r.size_mb), r.stage, r.task, r.file,
                r.source] for r in io.records))
