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
from qos_plugin.model.template import (
    INITIAL_DATA,
    Stage,
    WorkflowTemplate,
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


def template_from_wfformat(data: Any, name: str = "instance") -> WorkflowTemplate:
    try:
        spec = data["workflow"]["specification"]
        tasks = spec["tasks"]
        files = spec.get("files", [])
    except (KeyError, TypeError):
        raise InputError(name, "not a WfFormat 1.5 instance (no workflow.specification.tasks)",
                         "give a WfFormat 1.5 JSON file or a QoSFlow template") from None
    if not isinstance(tasks, list) or not tasks:
        raise InputError(name, "the instance has no task", "give a non-empty workflow")
    file_ids = {str(f.get("id")) for f in files if isinstance(f, dict)}
    by_id: dict[str, dict[str, Any]] = {}
    for t in tasks:
        if not isinstance(t, dict) or "id" not in t:
            raise InputError(name, f"task without an id: {str(t)[:60]}", "give every task an id")
        by_id[str(t["id"])] = t
    producer_of: dict[str, str] = {}
    for t in tasks:
        for f in t.get("outputFiles", []):
            producer_of[str(f)] = task_type(t)
    counts: dict[str, int] = defaultdict(int)
    preds: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    outputs: dict[str, set[str]] = defaultdict(set)
    order: list[str] = []
    for t in tasks:
        ty = task_type(t)
        if ty not in counts:
            order.append(ty)
        counts[ty] += 1
        for parent in t.get("parents", []):
            if str(parent) not in by_id:
                raise InputError(name, f"task {t['id']!r} names unknown parent {parent!r}",
                                 "fix the parents list")
            ptype = task_type(by_id[str(parent)])
            if ptype != ty:
                preds[ty].setdefault(ptype, set())
        for f in t.get("inputFiles", []):
            f = str(f)
            if file_ids and f not in file_ids:
                raise InputError(name, f"task {t['id']!r} reads unknown file {f!r}",
                                 "list the file under workflow.specification.files")
            src = producer_of.get(f, INITIAL_DATA)
            if src == ty:
                continue
            preds[ty][src].add(re.escape(f))
        for f in t.get("outputFiles", []):
            outputs[ty].add(re.escape(str(f)))
    level = _levels(order, {ty: [p for p in preds[ty] if p != INITIAL_DATA] for ty in order},
                    name)
    stages = tuple(
        Stage(ty, float(level[ty]), counts[ty], counts[ty],
              {p: tuple(sorted(v)) for p, v in preds[ty].items()}, tuple(sorted(outputs[ty])))
        for ty in order)
    return WorkflowTemplate(str(data.get("name") or name), stages)


def _levels(order: list[str], parents: dict[str, list[str]], name: str) -> dict[str, int]:
    level: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(ty: str) -> int:
        if ty in level:
            return level[ty]
        if ty in visiting:
            raise InputError(name, f"task types form a cycle through {ty!r}",
                             "a template needs an acyclic graph of task types")
        visiting.add(ty)
        level[ty] = 1 + max((visit(p) for p in parents[ty]), default=0)
        visiting.discard(ty)
        return level[ty]

    for ty in order:
        visit(ty)
    return level


def load_any_template(path: str | Path) -> WorkflowTemplate:
    """A QoSFlow template or a WfFormat instance, told apart by their content."""
    data = read_template_json(path)
    if is_wfformat(data):
        return template_from_wfformat(data, str(path))
    return template_from_dict(data, str(path))
