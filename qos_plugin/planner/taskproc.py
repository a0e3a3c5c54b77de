"""The processes of a run (``qos-plan run``): what one task or copy does to files,
and the program a Slurm step runs on a compute node. Standard library only: a
step runs it with the nodes' system Python, which has no numpy.

An *action* is a JSON object; its ``kind`` says what it does:

* ``task``: read ``read_bytes`` cycling over ``reads`` (laid end to end, from byte
  ``read_from`` of them: tasks of a stage read their own parts, as a stage's tasks
  read their own inputs, not all the same first bytes, which one node's page cache
  would serve), ``transfer`` bytes at a time, then write ``write_bytes`` to ``out``,
  ``write_transfer`` at a time; each of ``reads`` is a file, or ``[file, begin,
  length]``: that span of it only (a stage's part of the initial data, read in place);
* ``copy``: copy each ``[source, destination]`` (or ``[source, destination, limit]``:
  its first ``limit`` bytes, or ``[source, destination, limit, offset]``: ``limit``
  bytes from ``offset`` on, round the end of the source to its start) of ``pairs``,
  a large file in ranges by several threads;
* ``prepare``: remove the directories ``remove`` (what an earlier run left would be
  read as this run's inputs), flush the node's dirty pages (``sync``), then write
  ``init_bytes`` to ``init`` when given.

Each gives ``[bytes read, bytes written, start, end, host]`` (wall-clock seconds).

As a program (``python -m qos_plugin.planner.taskproc MODE``), the first line of
standard input is a JSON header:

* ``run``: ``{"workers": W, "actions": [...]}``; runs the actions at once, each
  in a process of its own (at most W at a time), and prints the JSON list of
  their results;
* ``send``: ``{"pairs": [[source, destination], ...]}``; writes the sources to
  standard output as frames (a JSON line ``{"dst": D, "size": n}``, then n bytes;
  ``{}`` ends) for a ``receive`` on another node;
* ``receive`` (no header): writes the frames of standard input to their
  destinations and prints the one result of the copy.

A failure is one line on standard error and exit status 1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

Result = tuple[int, int, float, float]
CHUNK = 1 << 20
# A file of at least COPY_STREAMS chunks is copied by this many threads, each its own
# range, as parallel staging tools do: one stream has one request out at a time, and
# behind a busy shared tier's queue that is a fraction of the rate reserved for it.
COPY_STREAMS = 8


def task(reads: Sequence[str | list[Any]], read_bytes: int, out: str, write_bytes: int,
         transfer: int, write_transfer: int, read_from: int = 0) -> Result:
    """One task: read ``read_bytes`` cycling over ``reads`` (files or ``[file, begin,
    length]`` spans of them, end to end, from byte ``read_from`` of them) ``transfer``
    bytes at a time, write ``write_bytes`` to ``out`` ``write_transfer`` at a time;
    returns bytes read, bytes written and wall-clock start and end."""
    start = time.time()
    done = 0
    spans = [_span(r) for r in reads]
    total = sum(n for _p, _b, n in spans)
    if read_bytes and not total:
        raise RuntimeError(f"nothing to read for {out}")
    at = read_from % total if read_bytes else 0
    while done < read_bytes:
        before = done
        for p, begin, size in spans:
            if at >= size:              # before the first byte to read (or empty)
                at -= size
                continue
            with open(p, "rb", buffering=0) as f:
                f.seek(begin + at)
                left = size - at
                while done < read_bytes and left > 0:
                    chunk = f.read(min(transfer, read_bytes - done, left))
                    if not chunk:
                        break
                    done += len(chunk)
                    left -= len(chunk)
            at = 0
            if done >= read_bytes:
                break
        if done == before:              # a whole pass read nothing: files shorter than said
            raise RuntimeError(f"the inputs of {out} are shorter than their sizes")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    written = 0
    block = b"\0" * min(write_transfer, max(write_bytes, 1))
    with open(out, "wb", buffering=0) as f:
        while written < write_bytes:
            n = f.write(block[:min(write_transfer, write_bytes - written)])
            written += n or 0
    return done, written, start, time.time()


def copy(pairs: list[tuple[Any, ...]], streams: int = COPY_STREAMS) -> Result:
    """Copy each (source, destination) file, its first ``limit`` bytes for a (source,
    destination, limit), or ``limit`` bytes from ``offset`` round the source for a
    (source, destination, limit, offset), ``streams`` ranges at once; bytes read and
    written, start, end."""
    start = time.time()
    moved = 0
    for src, dst, *part in pairs:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        size = os.path.getsize(src)
        want = min(size, int(part[0])) if part else size
        offset = int(part[1]) % size if len(part) > 1 and size else 0
        # (source begin, source end, destination begin) of each piece.
        first = min(want, size - offset)
        pieces = [(offset, offset + first, 0)]
        if first < want:
            pieces.append((0, want - first, first))
        fi = os.open(src, os.O_RDONLY)
        try:
            fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                ranges = [r for b, e, d in pieces for r in _ranges(b, e, d, streams)]
                if len(ranges) == 1:
                    _copy_range(fi, fo, *ranges[0])
                else:
                    with ThreadPoolExecutor(min(streams, len(ranges))) as pool:
                        list(pool.map(_copy_range, [fi] * len(ranges), [fo] * len(ranges),
                                      *zip(*ranges, strict=True)))
            finally:
                os.close(fo)
        finally:
            os.close(fi)
        moved += os.path.getsize(dst)
    return moved, moved, start, time.time()


def _ranges(begin: int, end: int, dst: int, streams: int) -> list[tuple[int, int, int]]:
    """``[begin, end)`` of a source (to ``dst`` on) cut into at most ``streams`` ranges
    of at least a chunk each."""
    k = max(1, min(streams, (end - begin) // CHUNK))
    cuts = [begin + (end - begin) * i // k for i in range(k + 1)]
    return [(a, b, dst + a - begin) for a, b in zip(cuts, cuts[1:], strict=False)]


def _copy_range(fi: int, fo: int, begin: int, end: int, dst: int) -> None:
    at = begin
    while at < end:
        chunk = os.pread(fi, min(CHUNK, end - at), at)
        if not chunk:                     # the source is shorter than it was
            return
        done = 0
        while done < len(chunk):
            done += os.pwrite(fo, chunk[done:], dst + at - begin + done)
        at += len(chunk)


def prepare(remove: list[str], init: str | None, init_bytes: int, transfer: int) -> Result:
    """A fresh start: ``remove`` gone, then the initial data written (when ``init``)."""
    start = time.time()
    for d in remove:
        shutil.rmtree(d, ignore_errors=True)
    if remove or init is not None:
        # Earlier runs' writes still in the page cache would be written back during
        # this one's phases, competing with its I/O for the devices: a run starts with
        # them written. Untimed, before the first phase; it flushes every file system
        # of the node. (A prepare of nothing is the profile's timed no-op phase.)
        os.sync()
    if init is None:
        return 0, 0, start, time.time()
    r, w, _, end = task([], 0, init, init_bytes, transfer, transfer)
    # The initial data was on the home tier long before the job: not in this node's
    # page cache, where the first stage's reads would find it for free.
    fd = os.open(init, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return r, w, start, end


def _span(read: str | list[Any]) -> tuple[str, int, int]:
    """(file, begin, length) of one of a task's reads: a whole file, or its span."""
    if isinstance(read, str):
        return read, 0, os.path.getsize(read)
    path, begin, length = read
    size = os.path.getsize(path)
    begin = min(max(0, int(begin)), size)
    return str(path), begin, max(0, min(int(length), size - begin))


def perform(action: dict[str, Any]) -> list[Any]:
    """One action (see the module's text), its result with this host's name."""
    kind = action["kind"]
    if kind == "task":
        res = task(action["reads"], action["read_bytes"], action["out"],
                   action["write_bytes"], action["transfer"], action["write_transfer"],
                   action.get("read_from", 0))
    elif kind == "copy":
        res = copy([tuple(p) for p in action["pairs"]])
    elif kind == "prepare":
        res = prepare(action["remove"], action.get("init"), action.get("init_bytes", 0),
                      action.get("transfer", CHUNK))
    else:
        raise ValueError(f"unknown action kind {str(kind)[:40]!r}")
    return [*res, socket.gethostname()]


def run_actions(actions: list[dict[str, Any]], workers: int) -> list[list[Any]]:
    """Every action at once, a process each (at most ``workers`` at a time)."""
    if not actions:
        return []
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(actions)))) as pool:
        return list(pool.map(perform, actions))


def send(pairs: list[tuple[str, str]], out: BinaryIO) -> None:
    for src, dst in pairs:
        size = os.path.getsize(src)
        out.write(json.dumps({"dst": dst, "size": size}).encode() + b"\n")
        with open(src, "rb") as f:
            left = size
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise OSError(f"{src} shrank while it was sent")
                out.write(chunk)
                left -= len(chunk)
    out.write(b"{}\n")
    out.flush()


def receive(inp: BinaryIO) -> list[Any]:
    """The frames of ``inp`` written to their destinations; the copy's result."""
    start = time.time()
    moved = 0
    while True:
        line = inp.readline()
        if not line:
            raise OSError("the sender's stream ended before its last frame")
        frame = json.loads(line)
        if not frame:
            break
        dst, left = Path(frame["dst"]), int(frame["size"])
        dst.parent.mkdir(parents=True, exist_ok=True)
        with open(dst, "wb") as f:
            while left:
                chunk = inp.read(min(CHUNK, left))
                if not chunk:
                    raise OSError(f"the stream ended inside {dst}")
                f.write(chunk)
                left -= len(chunk)
                moved += len(chunk)
    return [moved, moved, start, time.time(), socket.gethostname()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else ""
    try:
        if mode == "receive":
            print(json.dumps(receive(sys.stdin.buffer)))
            return 0
        header = json.loads(sys.stdin.buffer.readline() or b"null")
        if mode == "run":
            print(json.dumps(run_actions(header["actions"], int(header["workers"]))))
        elif mode == "send":
            send([(a, b) for a, b in header["pairs"]], sys.stdout.buffer)
        else:
            print(f"taskproc: unknown mode {mode[:20]!r}; give run, send or receive",
                  file=sys.stderr)
            return 1
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
        # One line for the step's output; the orchestrator reports it with the node.
        print(f"{socket.gethostname()}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
