"""WfFormat 1.5 workflow instances turned into DAG templates.

A WfFormat instance lists tasks (with parents and input/output files) and files
(with sizes). The template has one stage per task type (its ``category``, or the
task name without its trailing id), the stage's predecessors are the types of its
tasks' parents (plus ``initial_data`` when a task reads a file no task writes),
and levels are the longest path from a source in the type graph.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError
from qos_plugin.model.limits import MAX_TASKS
from qos_plugin.model.template import (
    INITIAL_DATA,
    Stage,
    WorkflowTemplate,
    find_cycle,
    read_template_json,
    template_from_dict,
)

_ID_SUFFIX = re.compile(r"(_ID\d+|_\d+)$")


def task_type(task: dict[str, Any]) -> str:
    cat = task.get("category")
    if isinstance(cat, str) and cat:
        return cat
    return _ID_SUFFIX.sub("", str(task.get("name") or task.get("id")))


def is_wfformat(data: Any) -> bool:
    return isinstance(data, dict) and "workflow" in data and "schemaVersion" in data


def _ids(task: dict[str, Any], key: str, name: str) -> list[str]:
    """The list of ids under ``key`` of a task (parents, inputFiles, outputFiles)."""
    value = task.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str | int) and
                                              not isinstance(v, bool) for v in value):
        raise InputError(name, f"task {str(task.get('id'))[:60]!r}: {key} is not a list of "
                         "ids", f"give {key} as a list of strings")
    return [str(v) for v in value]


def template_from_wfformat(data: Any, name: str = "instance") -> WorkflowTemplate:
    """The template of a WfFormat 1.5 instance: one stage per task type.

    Every field the conversion reads is type-checked, and the task graph must be
    acyclic (a task that is its own ancestor, itself included, is refused with
    the cycle named): a cycle hidden inside one task type would otherwise vanish.
    """
    try:
        spec = data["workflow"]["specification"]
        tasks = spec["tasks"]
        files = spec.get("files", [])
    except (KeyError, TypeError, AttributeError):
        raise InputError(name, "not a WfFormat 1.5 instance (no workflow.specification.tasks)",
                         "give a WfFormat 1.5 JSON file or a QoSFlow template") from None
    if not isinstance(tasks, list) or not tasks:
        raise InputError(name, "the instance has no task", "give a non-empty workflow")
    if not isinstance(files, list):
        raise InputError(name, "workflow.specification.files is not a list",
                         "list the files as objects with an id")
    if len(tasks) > MAX_TASKS:
        raise InputError(name, f"the instance has {len(tasks):,} tasks",
                         f"at most {MAX_TASKS:,} are read")
    file_ids = {str(f.get("id")) for f in files if isinstance(f, dict)}
    by_id: dict[str, dict[str, Any]] = {}
    for t in tasks:
        if not isinstance(t, dict) or not isinstance(t.get("id"), str | int) \
                or isinstance(t.get("id"), bool):
            raise InputError(name, f"task without an id: {str(t)[:60]}", "give every task an id")
        if str(t["id"]) in by_id:
            raise InputError(name, f"task id {str(t['id'])[:60]!r} is given twice",
                             "give every task its own id")
        by_id[str(t["id"])] = t
    parents = {tid: _ids(t, "parents", name) for tid, t in by_id.items()}
    for tid, ps in parents.items():
        for parent in ps:
            if parent not in by_id:
                raise InputError(name, f"task {tid[:60]!r} names unknown parent "
                                 f"{parent[:60]!r}", "fix the parents list")
    cycle = find_cycle(parents)
    if cycle:
        shown = " -> ".join(c[:40] for c in cycle[:8]) + (" -> ..." if len(cycle) > 8 else "")
        raise InputError(name, f"tasks form a cycle: {shown}",
                         "a workflow is a DAG: fix the parents lists")
    producer_of: dict[str, str] = {}
    for t in tasks:
        for f in _ids(t, "outputFiles", name):
            producer_of[f] = task_type(t)
    counts: dict[str, int] = defaultdict(int)
    preds: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    outputs: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for t in tasks:
        ty = task_type(t)
        if ty not in counts:
            order.append(ty)
        counts[ty] += 1
        for parent in parents[str(t["id"])]:
            ptype = task_type(by_id[parent])
            if ptype != ty:
                preds[ty].setdefault(ptype, set())
        for f in _ids(t, "inputFiles", name):
            if file_ids and f not in file_ids:
                raise InputError(name, f"task {str(t['id'])[:60]!r} reads unknown file "
                                 f"{f[:60]!r}", "list the file under workflow.specification.files")
            src = producer_of.get(f, INITIAL_DATA)
            if src == ty:
                continue
            preds[ty][src].add(re.escape(f))
        for f in _ids(t, "outputFiles", name):
            outputs[ty].add(re.escape(f))
    level = _levels(order, {ty: [p for p in preds[ty] if p != INITIAL_DATA] for ty in order},
                    name)
    stages = tuple(
        Stage(ty, float(level[ty]), counts[ty], counts[ty],
              {p: tuple(sorted(v)) for p, v in preds[ty].items()}, tuple(sorted(outputs[ty])))
        for ty in order)
    title = data.get("name")
    return WorkflowTemplate(title if isinstance(title, str) and title else name, stages)


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
