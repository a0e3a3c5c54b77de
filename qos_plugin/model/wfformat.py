"""WfFormat workflow instances: their DAG template and their I/O primitives.

Two layouts are read, told apart by their structure rather than by
``schemaVersion`` (writers disagree on which number goes with which layout):

* the specification layout of WfFormat 1.5 and 1.6 (what WfCommons 1.1 to 1.6 and
  its Pegasus converter write): ``workflow.specification.tasks[]`` with ``id``,
  ``parents``, ``inputFiles`` and ``outputFiles`` (file ids), and
  ``workflow.specification.files[]`` with ``id`` and ``sizeInBytes``;
  ``workflow.execution`` (runtimes, machines) is not read;
* the embedded layout of earlier instances: ``workflow.tasks[]`` each with
  ``files[]`` entries ``{"link": "input"|"output", "id" or "name", "sizeInBytes"}``
  and ``parents`` naming tasks by ``id`` (else ``name``).

The template has one stage per task type (its ``category``, or the task name
without its trailing id), the stage's predecessors are the types of its tasks'
parents (plus ``initial_data`` when a task reads a file no task writes), and
levels are the longest path from a source in the type graph.

The I/O primitives (:func:`io_data_from_wfformat`) are the rows of the DataLife
table (:class:`~qos_plugin.model.iodata.IoData`) the instance implies: one read
per (task, input file) and one write per (task, output file), of the file's
size. WfFormat has no field for the bytes of one I/O operation, so every row
gets the transfer size given by the caller (``--transfer-size``, default
:data:`DEFAULT_TRANSFER_BYTES`).
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError
from qos_plugin.model.iodata import IoData, IoRecord, load_io_data
from qos_plugin.model.jsonio import read_json
from qos_plugin.model.limits import MAX_MIB, MAX_TASKS, MAX_TRANSFER_BYTES
from qos_plugin.model.template import (
    INITIAL_DATA,
    Stage,
    WorkflowTemplate,
    find_cycle,
    read_template_json,
    template_from_dict,
)

log = logging.getLogger(__name__)

MIB = float(1 << 20)
# The transfer size every row of an instance gets unless told otherwise: the
# bytes per read or write 'qos-plan run' always used before models carried one.
DEFAULT_TRANSFER_BYTES = 1 << 20
MAX_FILE_BYTES = MAX_MIB * MIB
_ID_SUFFIX = re.compile(r"(_ID\d+|_\d+)$")
_EXPECTED = ("give a WfFormat 1.5/1.6 instance (workflow.specification.tasks and files) "
             "or one with workflow.tasks[].files")


def task_type(task: dict[str, Any]) -> str:
    cat = task.get("category")
    if isinstance(cat, str) and cat:
        return cat
    return _ID_SUFFIX.sub("", str(task.get("name") or task.get("id")))


def is_wfformat(data: Any) -> bool:
    return isinstance(data, dict) and "workflow" in data and "schemaVersion" in data


@dataclass(frozen=True)
class WfTask:
    """One task: its id, type (stage), parents' ids, and its files in order."""

    id: str
    type: str
    parents: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class WfInstance:
    """A checked instance in either layout.

    ``sizes`` holds the bytes of each (task id, file id) the instance gives a size
    for (every reference to a listed file in the specification layout, per entry
    in the embedded one); ``lists_files`` tells whether it declares its files at
    all (a specification without a ``files`` list gives a template, not I/O).
    """

    name: str
    source: str
    tasks: tuple[WfTask, ...]
    sizes: dict[tuple[str, str], float]
    lists_files: bool

    def producer_types(self) -> dict[str, str]:
        """The task type that writes each file (the last writer listed wins)."""
        return {f: t.type for t in self.tasks for f in t.outputs}


def _id(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value)
    return None


def _ids(task: dict[str, Any], key: str, name: str) -> list[str]:
    """The list of ids under ``key`` of a task (parents, inputFiles, outputFiles)."""
    value = task.get(key, [])
    if not isinstance(value, list) or any(_id(v) is None for v in value):
        raise InputError(name, f"task {str(task.get('id'))[:60]!r}: {key} is not a list of "
                         "ids", f"give {key} as a list of strings")
    return [str(v) for v in value]


def _size(entry: dict[str, Any], fid: str, name: str) -> float | None:
    """``sizeInBytes`` of a file entry, checked; None when it has none."""
    if "sizeInBytes" not in entry:
        return None
    v = entry["sizeInBytes"]
    ok = isinstance(v, int | float) and not isinstance(v, bool)
    if not ok or not math.isfinite(v) or not 0 <= v <= MAX_FILE_BYTES:
        raise InputError(name, f"file {fid[:60]!r} has sizeInBytes={str(v)[:40]}",
                         f"give a number of bytes from 0 to {MAX_FILE_BYTES:.4g}")
    return float(v)


def _task_list(data: Any, name: str) -> tuple[list[Any], bool]:
    """The raw tasks and whether they are in the specification layout."""
    wf = data.get("workflow") if isinstance(data, dict) else None
    spec = wf.get("specification") if isinstance(wf, dict) else None
    if isinstance(spec, dict) and "tasks" in spec:
        tasks, spec_layout = spec["tasks"], True
    elif isinstance(wf, dict) and spec is None and "tasks" in wf:
        tasks, spec_layout = wf["tasks"], False
    else:
        raise InputError(name, "not a WfFormat instance (no workflow.specification.tasks "
                         "nor workflow.tasks)", _EXPECTED)
    if not isinstance(tasks, list) or not tasks:
        raise InputError(name, "the instance has no task", "give a non-empty workflow")
    if len(tasks) > MAX_TASKS:
        raise InputError(name, f"the instance has {len(tasks):,} tasks",
                         f"at most {MAX_TASKS:,} are read")
    for t in tasks:
        # The embedded layout named tasks before it gave them ids.
        if not isinstance(t, dict) or (_id(t.get("id")) is None and
                                       (spec_layout or _id(t.get("name")) is None)):
            raise InputError(name, f"task without an id: {str(t)[:60]}", "give every task an id")
    return tasks, spec_layout


def parse_instance(data: Any, name: str = "instance") -> WfInstance:
    """The checked tasks and file sizes of a WfFormat instance (either layout).

    Task ids are unique, parents name tasks of the instance, the task graph is
    acyclic (a cycle hidden inside one task type would otherwise vanish from the
    template), file ids are listed when the instance lists files, and sizes are
    finite, non-negative numbers of bytes.
    """
    tasks, spec_layout = _task_list(data, name)
    sizes: dict[tuple[str, str], float] = {}
    parsed: list[WfTask] = []
    if spec_layout:
        files = data["workflow"]["specification"].get("files", [])
        if not isinstance(files, list):
            raise InputError(name, "workflow.specification.files is not a list",
                             "list the files as objects with an id and sizeInBytes")
        size_of: dict[str, float | None] = {}
        for f in files:
            fid = _id(f.get("id")) if isinstance(f, dict) else None
            if fid is None:
                raise InputError(name, f"file without an id: {str(f)[:60]}",
                                 "give every file an id and its sizeInBytes")
            if fid in size_of:
                raise InputError(name, f"file id {fid[:60]!r} is listed twice",
                                 "list every file once")
            size_of[fid] = _size(f, fid, name)
        for t in tasks:
            tid = str(t["id"])
            ins, outs = _ids(t, "inputFiles", name), _ids(t, "outputFiles", name)
            for f, how in [(f, "reads") for f in ins] + [(f, "writes") for f in outs]:
                if files and f not in size_of:
                    raise InputError(name, f"task {tid[:60]!r} {how} unknown file {f[:60]!r}",
                                     "list the file under workflow.specification.files")
                size = size_of.get(f)
                if size is not None:
                    sizes[(tid, f)] = size
            parsed.append(WfTask(tid, task_type(t), tuple(_ids(t, "parents", name)),
                                 tuple(ins), tuple(outs)))
        lists_files = bool(files)
    else:
        def key(t: dict[str, Any]) -> str:
            return _id(t.get("id")) or str(_id(t.get("name")))

        keys = {key(t) for t in tasks}
        key_of_name = {str(_id(t.get("name"))): key(t) for t in tasks
                       if _id(t.get("name")) is not None}
        for t in tasks:
            tid = key(t)
            entries = t.get("files", [])
            if not isinstance(entries, list):
                raise InputError(name, f"task {tid[:60]!r}: files is not a list",
                                 "give files as a list of objects with link, id and "
                                 "sizeInBytes")
            ins, outs = [], []
            for e in entries:
                fid = _id(e.get("id", e.get("name"))) if isinstance(e, dict) else None
                link = e.get("link") if isinstance(e, dict) else None
                if fid is None or link not in ("input", "output"):
                    raise InputError(name, f"task {tid[:60]!r} has a file entry "
                                     f"{str(e)[:60]}", "give each file entry an id (or name), "
                                     "link input or output, and sizeInBytes")
                (ins if link == "input" else outs).append(fid)
                size = _size(e, fid, name)
                if size is not None:
                    sizes[(tid, fid)] = size
            parents = tuple(p if p in keys else key_of_name.get(p, p)
                            for p in _ids(t, "parents", name))
            parsed.append(WfTask(tid, task_type(t), parents, tuple(ins), tuple(outs)))
        lists_files = True
    _check_graph(parsed, name)
    title = data.get("name")
    return WfInstance(title if isinstance(title, str) and title else name, name,
                      tuple(parsed), sizes, lists_files)


def _check_graph(tasks: list[WfTask], name: str) -> None:
    ids: set[str] = set()
    for t in tasks:
        if t.id in ids:
            raise InputError(name, f"task id {t.id[:60]!r} is given twice",
                             "give every task its own id")
        ids.add(t.id)
    for t in tasks:
        for parent in t.parents:
            if parent not in ids:
                raise InputError(name, f"task {t.id[:60]!r} names unknown parent "
                                 f"{parent[:60]!r}", "fix the parents list")
    cycle = find_cycle({t.id: list(t.parents) for t in tasks})
    if cycle:
        shown = " -> ".join(c[:40] for c in cycle[:8]) + (" -> ..." if len(cycle) > 8 else "")
        raise InputError(name, f"tasks form a cycle: {shown}",
                         "a workflow is a DAG: fix the parents lists")


def template_from_wfformat(data: Any, name: str = "instance") -> WorkflowTemplate:
    """The template of a WfFormat instance: one stage per task type."""
    return template_from_instance(parse_instance(data, name))


def template_from_instance(inst: WfInstance) -> WorkflowTemplate:
    """The template of a parsed instance (see the module docstring)."""
    type_of = {t.id: t.type for t in inst.tasks}
    producer_of = inst.producer_types()
    counts: dict[str, int] = defaultdict(int)
    preds: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    outputs: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for t in inst.tasks:
        ty = t.type
        if ty not in counts:
            order.append(ty)
        counts[ty] += 1
        for parent in t.parents:
            if type_of[parent] != ty:
                preds[ty].setdefault(type_of[parent], set())
        for f in t.inputs:
            src = producer_of.get(f, INITIAL_DATA)
            if src != ty:
                preds[ty][src].add(re.escape(f))
        outputs[ty].update(re.escape(f) for f in t.outputs)
    level = _levels(order, {ty: [p for p in preds[ty] if p != INITIAL_DATA] for ty in order},
                    inst.source)
    stages = tuple(
        Stage(ty, float(level[ty]), counts[ty], counts[ty],
              {p: tuple(sorted(v)) for p, v in preds[ty].items()}, tuple(sorted(outputs[ty])))
        for ty in order)
    return WorkflowTemplate(inst.name, stages)


def io_data_from_instance(inst: WfInstance,
                          transfer_bytes: float = DEFAULT_TRANSFER_BYTES) -> IoData:
    """The I/O rows of a parsed instance: a read per (task, input file) from the
    file's producing task type (``initial_data`` when no task writes it), a write per
    (task, output file), each of the file's size in MiB and ``transfer_bytes`` per
    operation. Every file a task touches needs its size."""
    # A number from a file (a model's provenance) may be anything: checked as input.
    ok = isinstance(transfer_bytes, int | float) and not isinstance(transfer_bytes, bool)
    if not ok or not 0 < transfer_bytes <= MAX_TRANSFER_BYTES:      # refuses NaN too
        raise InputError("--transfer-size", f"{str(transfer_bytes)[:40]} bytes",
                         f"give a size above 0 and up to {MAX_TRANSFER_BYTES:.4g} bytes")
    if not inst.lists_files:
        raise InputError(inst.source, "the instance lists no files "
                         "(workflow.specification.files), so its I/O is unknown",
                         "list every file with its sizeInBytes, or give a workflow-data "
                         "CSV with --io-data")
    producer_of = inst.producer_types()
    records: list[IoRecord] = []
    for t in inst.tasks:
        for op, files in (("read", t.inputs), ("write", t.outputs)):
            for f in files:
                size = inst.sizes.get((t.id, f))
                if size is None:
                    raise InputError(inst.source, f"file {f[:60]!r} ({op} by task "
                                     f"{t.id[:60]!r}) has no sizeInBytes",
                                     "give every file its size in bytes")
                src = producer_of.get(f, INITIAL_DATA) if op == "read" else ""
                records.append(IoRecord(t.type, t.id, f, op, float(transfer_bytes),
                                        size / MIB, src))
    log.debug("%s: %d I/O rows from %d tasks", inst.source, len(records), len(inst.tasks))
    return IoData(records, inst.source)


def io_data_from_wfformat(data: Any, name: str = "instance",
                          transfer_bytes: float = DEFAULT_TRANSFER_BYTES) -> IoData:
    """The I/O primitives of a WfFormat instance (see :func:`io_data_from_instance`)."""
    return io_data_from_instance(parse_instance(data, name), transfer_bytes)


def _levels(order: list[str], parents: dict[str, list[str]], name: str) -> dict[str, int]:
    """Level of each task type: the longest path to it from a source, plus one."""
    cycle = find_cycle(parents)
    if cycle:
        raise InputError(name, f"task types form a cycle: {' -> '.join(cycle)}",
                         "a template needs an acyclic graph of task types")
    level: dict[str, int] = {}
    for root in order:                      # iterative: no recursion limit to hit
        stack = [root]
        while stack:
            ty = stack[-1]
            if ty in level:
                stack.pop()
                continue
            todo = [p for p in parents[ty] if p not in level]
            if todo:
                stack.extend(todo)
                continue
            level[ty] = 1 + max((level[p] for p in parents[ty]), default=0)
            stack.pop()
    return level


def load_any_template(path: str | Path) -> WorkflowTemplate:
    """A QoSFlow template or a WfFormat instance, told apart by their content."""
    data = read_template_json(path)
    if is_wfformat(data):
        return template_from_wfformat(data, str(path))
    return template_from_dict(data, str(path))


def _looks_like_json(path: str | Path) -> bool:
    # A workflow-data CSV starts with its header; a JSON instance with '{'.
    return _head(path).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def _head(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError as e:
        raise InputError(str(path), f"cannot read the I/O data ({e.strerror})",
                         "give a readable workflow-data CSV or WfFormat instance") from None


def load_any_io_data(path: str | Path, transfer_bytes: float | None = None) -> IoData:
    """The I/O primitives of a workflow-data CSV or of a WfFormat instance.

    ``transfer_bytes`` is the size of one operation for an instance (which has no
    such field; default :data:`DEFAULT_TRANSFER_BYTES`); a CSV gives its own per
    row, so giving one with a CSV is refused rather than silently ignored.
    """
    if not _looks_like_json(path):
        if transfer_bytes is not None:
            raise InputError("--transfer-size", f"{path} is a workflow-data CSV, which gives "
                             "transferSize per row", "drop --transfer-size, or give a "
                             "WfFormat instance")
        return load_io_data(path)
    data = read_json(path, "WfFormat instance")
    if not is_wfformat(data):
        raise InputError(str(path), "JSON but not a WfFormat instance (no schemaVersion and "
                         "workflow), so it holds no I/O", "give the I/O as a workflow-data "
                         "CSV or a WfFormat instance with --io-data")
    return io_data_from_wfformat(data, str(path),
                                 DEFAULT_TRANSFER_BYTES if transfer_bytes is None
                                 else transfer_bytes)
