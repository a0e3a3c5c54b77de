"""Run the sweep on this machine: fio for reads and writes, the runner's copy for moves.

Writes and copies are timed as a run makes them (``planner/taskproc.py``): until the
bytes are in the tier, not on its device. The profile prices a run's phases, and a run's
tasks do not fsync; each measurement's files are made durable after it, untimed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from statistics import median
from typing import Any

from qos_plugin.errors import QosPluginError
from qos_plugin.model.profile import FILE_BYTES
from qos_plugin.planner.taskproc import copy as copy_files
from qos_plugin.profiler.sweep import (
    MIB,
    FileRun,
    IoRun,
    MoveRun,
    file_row,
    io_row,
    move_row,
)

log = logging.getLogger(__name__)


class ProfilerError(QosPluginError):
    """A measurement could not be taken (tool missing, disk full, ...)."""


def fio_path() -> str:
    exe = shutil.which("fio")
    if exe is None:
        raise ProfilerError("fio: not found; install it (Debian: apt-get install fio) or run "
                            "scripts/setup")
    return exe


def run_io(run: IoRun, fio: str, scratch: Path) -> dict[str, object]:
    """One fio job group: ``tasks`` jobs sharing ``mib`` MiB, one file each."""
    per_job = max(run.mib * MIB // run.tasks, run.transfer)
    base = [fio, "--name=qos", f"--directory={scratch}", f"--bs={run.transfer}",
            f"--size={per_job}", f"--numjobs={run.tasks}", "--group_reporting",
            "--output-format=json", "--filename_format=qos.$jobnum", "--ioengine=psync"]
    if run.operation == "write":
        # Timed as a job's task writes (taskproc.task): into the tier, no fsync. Made
        # durable after, untimed, so the next run does not pay for this one's writeback.
        args = base + ["--rw=write"]
    else:
        # Lay the files out first, then read them with the page cache dropped
        # for each file (fio's default invalidate=1).
        _fio(base + ["--rw=write", "--end_fsync=1"])
        args = base + ["--rw=read", "--invalidate=1"]
    doc: Any = _fio(args)
    if run.operation == "write":
        flush_files(sorted(p for p in scratch.iterdir() if p.is_file()))
    job = doc["jobs"][0][run.operation]
    seconds = job["runtime"] / 1000.0 if job["runtime"] else job["io_bytes"] / max(
        job["bw_bytes"], 1)
    mib = job["io_bytes"] / MIB
    row = io_row(run, seconds)
    row["aggregateFilesizeMB"] = round(mib, 3)
    row["trMiB"] = round(mib / max(seconds, 1e-6), 4)
    return row


def _fio(args: list[str]) -> dict[str, object]:
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise ProfilerError(f"fio failed ({out.returncode}): {out.stderr.strip()[:200]}")
    text = out.stdout[out.stdout.find("{"):]
    try:
        doc: dict[str, object] = json.loads(text)
    except json.JSONDecodeError:
        raise ProfilerError(f"fio printed no JSON: {out.stdout[:200]!r}") from None
    return doc


def run_move(run: MoveRun, src_dir: Path, dst_dir: Path) -> dict[str, object]:
    """``copies`` concurrent copies moving ``mib`` MiB between two directories."""
    per_copy = max(run.mib * MIB // run.copies, 1)
    chunk = b"\0" * min(per_copy, 4 * MIB)
    sources = []
    for i in range(run.copies):
        p = src_dir / f"move.{i}"
        with open(p, "wb") as fh:
            left = per_copy
            while left > 0:
                left -= fh.write(chunk[:left])
            fh.flush()
            os.fsync(fh.fileno())
        sources.append(p)
    _drop_cache(sources)
    t0 = time.perf_counter()
    # The copy a run's stage-in and stage-out make (taskproc.copy: ranges in parallel),
    # so that the profile prices the moves jobs make, not cp's.
    try:
        with ThreadPoolExecutor(run.copies) as pool:
            list(pool.map(lambda p: copy_files([(str(p), str(dst_dir / p.name))]), sources))
    except OSError as e:
        raise ProfilerError(f"copy {src_dir} -> {dst_dir} failed: {e}") from None
    row = move_row(run, time.perf_counter() - t0)
    # A run's copies end when the bytes are in the destination tier, not on its device
    # (taskproc.copy does not fsync): timed with the fsync, a copy onto a disk was priced
    # at 67 MiB/s and ran at 75.
    flush_files([dst_dir / f"move.{i}" for i in range(run.copies)])
    return row


def flush_files(paths: Sequence[Path]) -> None:
    """fsync each file: through qosfs this reaches the daemons' stores, which a sync of
    the node's own file systems would not."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run_files(run: FileRun, scratch: Path) -> dict[str, object]:
    """``tasks`` concurrent tasks, each creating its files and then opening them again
    (see FileRun), in processes of their own as a run's tasks are (taskproc)."""
    dirs = [scratch / f"task.{i}" for i in range(run.tasks)]
    for d in dirs:
        d.mkdir()
    t0 = time.perf_counter()
    try:
        with ProcessPoolExecutor(max_workers=run.tasks) as pool:
            list(pool.map(_file_task, [str(d) for d in dirs], [run.files] * run.tasks))
    except OSError as e:
        raise ProfilerError(f"files on {scratch} failed: {e}") from None
    return file_row(run, time.perf_counter() - t0)


def _file_task(directory: str, files: int) -> None:
    block = b"\0" * FILE_BYTES
    names = [os.path.join(directory, f"f{i}") for i in range(files)]
    for name in names:
        with open(name, "wb", buffering=0) as f:
            f.write(block)
    for name in names:
        os.stat(name)
        with open(name, "rb", buffering=0) as f:
            f.read(FILE_BYTES)


# Starts of a phase timed for the profile; their median is its phaseStartSeconds.
PHASE_STARTS = 7


def measure_phase_start(env: dict[str, str] | None = None, repeats: int = PHASE_STARTS
                        ) -> tuple[float, str]:
    """Seconds ``qos-plan run`` takes to start a phase that moves nothing and to see
    it end (the barrier), with the launcher a run here would use: srun steps on the
    allocation's first node inside a Slurm job, else the local runner's processes.
    The median of ``repeats`` starts (after one to warm up), and how it was started."""
    from qos_plugin.planner import runner
    from qos_plugin.planner.slurmrun import job_hosts

    env = dict(os.environ if env is None else env)
    if env.get("SLURM_JOB_ID"):
        return measure_phase_starts(env, 1, repeats)[0], f"srun steps on {job_hosts(env)[0]}"
    try:
        with ProcessPoolExecutor(max_workers=1) as pool:
            return _timed(runner.local_launcher(pool), 1, repeats), "local processes"
    except (OSError, QosPluginError) as e:
        raise ProfilerError(f"timing a phase's start failed: {e}") from None


def measure_phase_starts(env: dict[str, str], up_to: int | None = None,
                         repeats: int = PHASE_STARTS) -> list[float]:
    """Inside an allocation: the median start of a phase on its first 1, 2, ...,
    ``up_to`` (default: all) nodes (srun steps, one process a node, as a run's phase)."""
    from qos_plugin.planner.slurmrun import SrunLauncher, job_hosts

    try:
        hosts = job_hosts(env)
        n = len(hosts) if up_to is None else up_to
        if n <= len(hosts):
            return [_timed(SrunLauncher(hosts[:k], 1, env), k, repeats)
                    for k in range(1, n + 1)]
    except (OSError, QosPluginError) as e:
        raise ProfilerError(f"timing a phase's start failed: {e}") from None
    raise ProfilerError(f"timing a phase's start on {n} nodes needs an allocation of as "
                        f"many; this one has {len(hosts)}")


def start_more(starts: Sequence[float]) -> list[float]:
    """What a phase on 2, 3, ... nodes takes more than on one (``starts``: on 1, 2,
    ... nodes), never below 0: a profile's ``phaseStartMoreSeconds``."""
    return [round(max(0.0, s - starts[0]), 4) for s in starts[1:]]


def _timed(launch: Any, nodes: int, repeats: int) -> float:
    """The median of ``repeats`` timed launches of a phase that moves nothing on
    ``nodes`` nodes, after one to warm up."""
    from qos_plugin.planner import runner

    noop = [runner.Action("", j, {"kind": "prepare", "remove": [], "init": None,
                                  "init_bytes": 0, "transfer": MIB}) for j in range(nodes)]
    launch(noop)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        launch(noop)
        times.append(time.perf_counter() - t0)
    return float(median(times))


def _drop_cache(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_sweep(io: list[IoRun], moves: list[MoveRun],
              progress: Callable[[int, int], None] | None = None,
              files: list[FileRun] | None = None) -> list[dict[str, object]]:
    fio = fio_path()
    rows: list[dict[str, object]] = []
    files = files or []
    total = len(io) + len(moves) + len(files)
    for i, run in enumerate(io):
        with tempfile.TemporaryDirectory(prefix=".qos-profile-", dir=run.tier.path) as d:
            rows.append(run_io(run, fio, Path(d)))
        if progress:
            progress(i + 1, total)
    for j, mv in enumerate(moves):
        with tempfile.TemporaryDirectory(prefix=".qos-move-", dir=mv.src.path) as a, \
                tempfile.TemporaryDirectory(prefix=".qos-move-", dir=mv.dst.path) as b:
            rows.append(run_move(mv, Path(a), Path(b)))
        if progress:
            progress(len(io) + j + 1, total)
    for k, fr in enumerate(files):
        with tempfile.TemporaryDirectory(prefix=".qos-files-", dir=fr.tier.path) as d:
            rows.append(run_files(fr, Path(d)))
        if progress:
            progress(len(io) + len(moves) + k + 1, total)
    return rows
