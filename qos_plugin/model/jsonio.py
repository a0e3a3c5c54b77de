"""Reading input files that cannot lie: bounded size, strict UTF-8, bounded JSON.

Every loader of the planner (templates, WfFormat instances, trained models,
CSV tables) reads through here, so a file that is too large, not UTF-8, nested
without end or holding ``NaN``/``Infinity`` is refused with one line naming the
file and the place, before any of it reaches the model. Standard library only:
the query path reads models through it and must not import numpy.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from qos_plugin.errors import InputError

MiB = 1 << 20
# Templates and WfFormat instances: the largest public WfFormat instances are a
# few tens of MB; past this a file is a mistake (or an attack on memory).
MAX_JSON_BYTES = 64 * MiB
# Templates, instances and models nest 6 levels at most; 32 leaves room and
# stops recursion long before Python's own limit.
MAX_JSON_DEPTH = 32
# JSON integers: a count, a size in bytes or an id; 19 digits hold 2**63.
MAX_INT_DIGITS = 19
_CONTAINERS = frozenset({dict, list})


def size_text(n: float) -> str:
    """``n`` bytes as a person reads them (``1.5 GiB``)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} B"


def read_bounded(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The bytes of ``path``, refused past ``max_bytes`` (read no further, so a
    device or FIFO that never ends cannot exhaust memory)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as e:
        raise InputError(str(p), f"cannot read the {what} ({e.strerror or e})",
                         "check the path") from None
    if len(data) > max_bytes:
        raise InputError(str(p), f"the {what} is larger than {size_text(max_bytes)}",
                         f"give a smaller {what}; this limit keeps a wrong file from "
                         "filling memory")
    return data


def decode_utf8(data: bytes, source: str, what: str) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark is dropped), or an error
    naming the line and the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InputError(f"{source}:{line}",
                         f"the {what} is not UTF-8 text (byte 0x{data[e.start]:02x} at "
                         f"column {column})", "save the file as UTF-8") from None


class _Refused(Exception):
    """A JSON literal the planner refuses (raised from inside the decoder)."""

    def __init__(self, literal: str, why: str) -> None:
        super().__init__(literal)
        self.literal, self.why = literal, why


def _constant(literal: str) -> Any:
    raise _Refused(literal, "is not a finite number")


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):             # 1e999 parses as inf
        raise _Refused(literal, "overflows a float (not a finite number)")
    return value


def _int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(literal[:24] + "...", f"has more than {MAX_INT_DIGITS} digits")
    return int(literal)


def _line_of(text: str, literal: str) -> int:
    m = re.search(re.escape(literal.rstrip(".")), text)
    return text.count("\n", 0, m.start()) + 1 if m else 1


def parse_json(text: str, source: str, what: str, *, max_depth: int = MAX_JSON_DEPTH,
               syntax: str = "not valid JSON at line {line} column {column} ({msg})",
               hint: str = "fix the JSON syntax") -> Any:
    """The parsed ``text``: strict JSON without ``NaN``/``Infinity``, finite floats,
    integers of at most 19 digits, nested at most ``max_depth`` deep. ``syntax``
    and ``hint`` word a syntax error (``{line}``, ``{column}``, ``{msg}``)."""
    try:
        doc = json.loads(text, parse_constant=_constant, parse_float=_float,
                         parse_int=_int)
    except _Refused as e:
        raise InputError(f"{source}:{_line_of(text, e.literal)}",
                         f"the {what} has {e.literal} that {e.why}",
                         "write every number as a finite decimal") from None
    except json.JSONDecodeError as e:
        raise InputError(source, syntax.format(line=e.lineno, column=e.colno, msg=e.msg),
                         hint) from None
    except RecursionError:
        raise InputError(source, f"the {what} is nested deeper than {max_depth} levels",
                         "no planner file nests that deep; check the file") from None
    depth = json_depth(doc, limit=max_depth)
    if depth > max_depth:
        raise InputError(source, f"the {what} is nested deeper than {max_depth} levels",
                         "no planner file nests that deep; check the file")
    return doc


def json_depth(doc: Any, limit: int) -> int:
    """How deep ``doc`` nests (a scalar is 0), counting no further than ``limit + 1``.

    Iterative, so any depth is measured without recursion; containers of scalars
    only (a model's columns) are skipped in one pass each.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        # The types of a long column are collected in C; only a container of
        # containers is walked element by element.
        if _CONTAINERS.isdisjoint(set(map(type, children))):
            continue
        stack.extend((c, depth) for c in children if isinstance(c, dict | list))
    return deepest


def read_json(path: str | Path, what: str, *, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The parsed JSON file ``path`` under every bound above, with one-line errors."""
    data = read_bounded(path, what, max_bytes)
    return parse_json(decode_utf8(data, str(path), what), str(path), what,
                      max_depth=max_depth)
