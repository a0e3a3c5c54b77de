"""Workflow DAG templates: stages, levels, task counts and predecessors.

The on-disk format is the QoSFlow template JSON: an object of stages, each with
``stage_order`` (its level), ``num_tasks``, ``parallelism``, ``predecessors``
(stage name or ``initial_data`` -> ``{"inputs": [regex, ...]}``) and ``outputs``
(regexes). Stages keep their declaration order, which is the order the
configuration space is enumerated in.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError

INITIAL_DATA = "initial_data"


@dataclass(frozen=True)
class Stage:
    name: str
    level: float
    num_tasks: int
    parallelism: int
    # Predecessor name (a stage or INITIAL_DATA) -> input file patterns.
    predecessors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()

    def tasks_per_node(self, nodes: int) -> int:
        """Tasks of this stage on each node when it runs on ``nodes`` nodes."""
        return max(1, math.ceil(self.num_tasks / nodes))

    @property
    def stage_predecessors(self) -> list[str]:
        return [p for p in self.predecessors if p != INITIAL_DATA]

    @property
    def reads_initial_data(self) -> bool:
        return INITIAL_DATA in self.predecessors

    @property
    def only_initial_data(self) -> bool:
        return list(self.predecessors) == [INITIAL_DATA]


def level_label(level: float) -> str:
    """How a level is written in column names: ``1`` for 1.0, ``1.5`` otherwise."""
    return str(int(level)) if float(level).is_integer() else repr(float(level))


def stage_sort_key(stage: Stage) -> tuple[float, str]:
    return (stage.level, stage.name.lower())


@dataclass(frozen=True)
class WorkflowTemplate:
    """A validated DAG template. ``stages`` keeps declaration order."""

    name: str
    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        validate_template(self)

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def __getitem__(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise InputError(self.name, f"unknown stage {name!r}",
                         f"use one of: {', '.join(self.stage_names)}")

    @property
    def levels(self) -> list[float]:
        return sorted({s.level for s in self.stages})

    def stages_at(self, level: float) -> list[Stage]:
        """Stages of one level, by lower-cased name (the order ties are broken in)."""
        return sorted((s for s in self.stages if s.level == level),
                      key=lambda s: s.name.lower())

    def ordered(self) -> list[Stage]:
        """Stages by (level, lower-cased name): the order of report columns."""
        return sorted(self.stages, key=stage_sort_key)

    def successors(self, name: str, later_only: bool = True) -> list[Stage]:
        """Stages that read ``name``'s outputs, in declaration order.

        With ``later_only`` only consumers at a later level count: edges inside a
        level are not sequenced by the barrier model.
        """
        me = self[name]
        return [s for s in self.stages if name in s.predecessors
                and (not later_only or s.level > me.level)]


def validate_template(t: WorkflowTemplate) -> None:
    names = t.stage_names
    if not names:
        raise InputError(t.name, "the template has no stage", "declare at least one stage")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(t.name, f"stage declared twice: {', '.join(dup)}", "rename one")
    if INITIAL_DATA in names:
        raise InputError(t.name, f"a stage is named {INITIAL_DATA!r}",
                         "that name is reserved for the workflow's input data")
    by_name = {s.name: s for s in t.stages}
    for s in t.stages:
        if s.num_tasks < 1:
            raise InputError(t.name, f"stage {s.name!r} has num_tasks={s.num_tasks}",
                             "give a positive task count")
        for p in s.stage_predecessors:
            if p not in by_name:
                raise InputError(t.name, f"stage {s.name!r} names unknown predecessor {p!r}",
                                 f"use a stage of the template or {INITIAL_DATA!r}")
            if by_name[p].level > s.level:
                raise InputError(
                    t.name,
                    f"stage {s.name!r} (level {level_label(s.level)}) reads {p!r} "
                    f"at a later level {level_label(by_name[p].level)}",
                    "a predecessor must run at the same or an earlier level")


def _need(obj: Mapping[str, Any], key: str, stage: str, source: str) -> Any:
    if key not in obj:
        raise InputError(source, f"stage {stage!r} has no {key!r}", f"add \"{key}\" to it")
    return obj[key]


def _as_int(value: Any, key: str, stage: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InputError(source, f"stage {stage!r}: {key}={value!r} is not a whole number",
                         f"give {key} as an integer")
    return int(value)


def _patterns(value: Any, what: str, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(source, f"{what} is {value!r}", "give a list of regex strings")
    for v in value:
        try:
            re.compile(v)
        except re.error as e:
            raise InputError(source, f"{what} has a bad regex {v!r} ({e})",
                             "fix the pattern") from None
    return tuple(value)


def template_from_dict(data: Any, name: str = "template") -> WorkflowTemplate:
    """Build and validate a template from the parsed QoSFlow JSON object."""
    if not isinstance(data, dict) or not data:
        raise InputError(name, "expected a JSON object of stages",
                         "see the template format in the README")
    stages: list[Stage] = []
    for sname, raw in data.items():
        if not isinstance(raw, dict):
            raise InputError(name, f"stage {sname!r} is {type(raw).__name__}, not an object",
                             "describe each stage as an object")
        level = _need(raw, "stage_order", sname, name)
        if isinstance(level, bool) or not isinstance(level, int | float):
            raise InputError(name, f"stage {sname!r}: stage_order={level!r} is not a number",
                             "give the stage's level as a number")
        num_tasks = _as_int(_need(raw, "num_tasks", sname, name), "num_tasks", sname, name)
        parallelism = _as_int(raw.get("parallelism", num_tasks), "parallelism", sname, name)
        preds_raw = raw.get("predecessors", {})
        if not isinstance(preds_raw, dict):
            raise InputError(name, f"stage {sname!r}: predecessors is not an object",
                             "map each predecessor to {\"inputs\": [...]}")
        preds: dict[str, tuple[str, ...]] = {}
        for p, spec in preds_raw.items():
            inputs = spec.get("inputs", []) if isinstance(spec, dict) else spec
            preds[p] = _patterns(inputs, f"inputs of {sname!r} from {p!r}", name)
        outputs = _patterns(raw.get("outputs", []), f"outputs of {sname!r}", name)
        stages.append(Stage(sname, float(level), num_tasks, parallelism, preds, outputs))
    return WorkflowTemplate(name, tuple(stages))


def read_template_json(path: str | Path) -> Any:
    """The parsed JSON of a template file, with one-line errors."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(str(p), f"cannot read the template ({e.strerror})",
                         "check the path") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(str(p), f"not valid JSON at line {e.lineno} column {e.colno} ({e.msg})",
                         "fix the JSON syntax") from None


def load_template(path: str | Path) -> WorkflowTemplate:
    """Load a QoSFlow template JSON file."""
    return template_from_dict(read_template_json(path), name=str(path))


def template_to_dict(t: WorkflowTemplate) -> dict[str, Any]:
    """The QoSFlow JSON form of a template (inverse of :func:`template_from_dict`)."""
    out: dict[str, Any] = {}
    for s in t.stages:
        level: float | int = int(s.level) if s.level.is_integer() else s.level
        out[s.name] = {
            "stage_order": level,
            "parallelism": s.parallelism,
            "num_tasks": s.num_tasks,
            "predecessors": {p: {"inputs": list(v)} for p, v in s.predecessors.items()},
            "outputs": list(s.outputs),
        }
    return out
