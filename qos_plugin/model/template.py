"""Workflow DAG templates: stages, levels, task counts and predecessors.

The on-disk format is the QoSFlow template JSON: an object of stages, each with
``stage_order`` (its level), ``num_tasks``, ``parallelism``, ``predecessors``
(stage name or ``initial_data`` -> ``{"inputs": [regex, ...]}``) and ``outputs``
(regexes). Stages keep their declaration order, which is the order the
configuration space is enumerated in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError
from qos_plugin.model.jsonio import read_json
from qos_plugin.model.limits import MAX_LEVEL, MAX_NAME, MAX_STAGES, MAX_TASKS, check_name

INITIAL_DATA = "initial_data"
# A file pattern is a short regex; longer ones are mistakes (or slow to compile).
MAX_PATTERN = 1000


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
    """Refuse a template the model cannot evaluate truthfully: no stage, too many,
    duplicate or unprintable names, counts or levels out of range, unknown
    predecessors, a predecessor at a later level, or a cycle of stages."""
    names = t.stage_names
    if not names:
        raise InputError(t.name, "the template has no stage", "declare at least one stage")
    if len(names) > MAX_STAGES:
        raise InputError(t.name, f"the template has {len(names)} stages, more than "
                         f"{MAX_STAGES}", "merge stages of the same kind")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(t.name, f"stage declared twice: {', '.join(dup)}", "rename one")
    if INITIAL_DATA in names:
        raise InputError(t.name, f"a stage is named {INITIAL_DATA!r}",
                         "that name is reserved for the workflow's input data")
    by_name = {s.name: s for s in t.stages}
    for s in t.stages:
        why = check_name(s.name)
        if why:
            raise InputError(t.name, f"stage name {s.name!r} {why}",
                             f"name stages with 1 to {MAX_NAME} printable characters")
        for key, value in (("num_tasks", s.num_tasks), ("parallelism", s.parallelism)):
            if not 1 <= value <= MAX_TASKS:
                raise InputError(t.name, f"stage {s.name!r} has {key}={value}",
                                 f"give a whole number from 1 to {MAX_TASKS:,}")
        if not -MAX_LEVEL <= s.level <= MAX_LEVEL:      # also refuses NaN
            raise InputError(t.name, f"stage {s.name!r} has stage_order={s.level!r}",
                             f"give a finite level from {-MAX_LEVEL:g} to {MAX_LEVEL:g}")
        for p in s.stage_predecessors:
            if p == s.name:
                raise InputError(t.name, f"stage {s.name!r} names itself as a predecessor",
                                 "a stage cannot read its own outputs as a predecessor's; "
                                 "remove the self-loop")
            if p not in by_name:
                raise InputError(t.name, f"stage {s.name!r} names unknown predecessor {p!r}",
                                 f"use a stage of the template or {INITIAL_DATA!r}")
            if by_name[p].level > s.level:
                raise InputError(
                    t.name,
                    f"stage {s.name!r} (level {level_label(s.level)}) reads {p!r} "
                    f"at a later level {level_label(by_name[p].level)}",
                    "a predecessor must run at the same or an earlier level")
    cycle = find_cycle({s.name: s.stage_predecessors for s in t.stages})
    if cycle:
        raise InputError(t.name, f"stages form a cycle: {' -> '.join(cycle)}",
                         "a workflow is a DAG: remove one of these predecessor edges")


def find_cycle(parents: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of the graph given as ``node -> its parents``, as ``[a, b, ..., a]``
    in the direction data flows (b reads a's outputs), or None.

    Iterative depth-first search, so a long chain of stages cannot exhaust
    Python's recursion limit.
    """
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    for root in parents:
        if state.get(root):
            continue
        path: list[str] = [root]
        todo: list[Iterator[str]] = [iter(parents.get(root, ()))]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                # nxt is a parent of path[-1] and already on the path: the data
                # flows nxt -> ... -> path[-1] -> nxt.
                loop = path[path.index(nxt):]
                return [*loop, nxt][::-1]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(parents.get(nxt, ())))
    return None


def _need(obj: Mapping[str, Any], key: str, stage: str, source: str) -> Any:
    if key not in obj:
        raise InputError(source, f"stage {stage!r} has no {key!r}", f"add \"{key}\" to it")
    return obj[key]


def _as_int(value: Any, key: str, stage: str, source: str) -> int:
    """A JSON number that is a whole number (``4`` or ``4.0``), else an error."""
    whole = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if not whole or not 1 <= value <= MAX_TASKS:
        raise InputError(source, f"stage {stage!r}: {key}={str(value)[:40]} is not a whole "
                         f"number from 1 to {MAX_TASKS:,}", f"give {key} as an integer")
    return int(value)


def _patterns(value: Any, what: str, source: str, compile_them: bool = True
              ) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(source, f"{what} is {str(value)[:60]!r}",
                         "give a list of regex strings")
    for v in value if compile_them else ():
        if len(v) > MAX_PATTERN:
            raise InputError(source, f"{what} has a pattern of {len(v)} characters",
                             f"keep file patterns under {MAX_PATTERN} characters")
        try:
            re.compile(v)
        except (re.error, RecursionError, OverflowError, ValueError) as e:
            raise InputError(source, f"{what} has a bad regex {v[:60]!r} ({e})",
                             "fix the pattern") from None
    return tuple(value)


def template_from_dict(data: Any, name: str = "template", *, patterns: bool = True
                       ) -> WorkflowTemplate:
    """Build and validate a template from the parsed QoSFlow JSON object.

    ``patterns=False`` checks file patterns are strings without compiling them:
    a trained model's workflow is checked at every query, which never matches files.
    """
    if not isinstance(data, dict) or not data:
        raise InputError(name, "expected a JSON object of stages",
                         "see the template format in docs/planner-inputs.md")
    stages: list[Stage] = []
    for sname, raw in data.items():
        why = check_name(sname)
        if why:
            raise InputError(name, f"stage name {sname!r} {why}",
                             f"name stages with 1 to {MAX_NAME} printable characters")
        if not isinstance(raw, dict):
            raise InputError(name, f"stage {sname!r} is {type(raw).__name__}, not an object",
                             "describe each stage as an object")
        level = _need(raw, "stage_order", sname, name)
        if isinstance(level, bool) or not isinstance(level, int | float) \
                or not -MAX_LEVEL <= level <= MAX_LEVEL:
            raise InputError(name, f"stage {sname!r}: stage_order={str(level)[:40]} is not "
                             "a finite number in range",
                             f"give the stage's level as a number from {-MAX_LEVEL:g} to "
                             f"{MAX_LEVEL:g}")
        num_tasks = _as_int(_need(raw, "num_tasks", sname, name), "num_tasks", sname, name)
        parallelism = _as_int(raw.get("parallelism", num_tasks), "parallelism", sname, name)
        preds_raw = raw.get("predecessors", {})
        if not isinstance(preds_raw, dict):
            raise InputError(name, f"stage {sname!r}: predecessors is not an object",
                             "map each predecessor to {\"inputs\": [...]}")
        preds: dict[str, tuple[str, ...]] = {}
        for p, spec in preds_raw.items():
            inputs = spec.get("inputs", []) if isinstance(spec, dict) else spec
            preds[p] = _patterns(inputs, f"inputs of {sname!r} from {p!r}", name, patterns)
        outputs = _patterns(raw.get("outputs", []), f"outputs of {sname!r}", name, patterns)
        stages.append(Stage(sname, float(level), num_tasks, parallelism, preds, outputs))
    return WorkflowTemplate(name, tuple(stages))


def read_template_json(path: str | Path) -> Any:
    """The parsed JSON of a template file, with one-line errors (size, encoding,
    depth and non-finite numbers bounded: see :mod:`qos_plugin.model.jsonio`)."""
    return read_json(path, "template")


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
