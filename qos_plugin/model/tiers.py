"""Storage tiers and their kinds.

A tier is a place a stage's files can live. Its *kind* decides the data moves the
model charges: a ``shared`` tier is visible from every node; a ``node-local`` tier
lives on each compute node, so a consumer on another node needs a fan-out copy.
No tier name has a meaning in code; only the kind and the declared order do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from qos_plugin.errors import InputError
from qos_plugin.model.limits import check_name

MOVE_SEPARATOR = "-"


class TierKind(StrEnum):
    SHARED = "shared"
    NODE_LOCAL = "node-local"


@dataclass(frozen=True)
class Tier:
    name: str
    kind: TierKind

    @property
    def is_local(self) -> bool:
        return self.kind is TierKind.NODE_LOCAL


@dataclass(frozen=True)
class TierSet:
    """An ordered set of tiers.

    The order is the order configurations are enumerated in. By convention (and
    by :func:`infer_tiers`) shared tiers come first and node-local tiers follow
    from fastest to slowest, which is what the FSF and Hybrid heuristics read.
    The first shared tier is the *home* tier: initial data lives there and final
    outputs are flushed to it.
    """

    tiers: tuple[Tier, ...]

    def __post_init__(self) -> None:
        names = [t.name for t in self.tiers]
        if not names:
            raise InputError("tiers", "no tier declared", "declare at least one shared tier")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError("tiers", f"tier declared twice: {', '.join(dup)}",
                             "give each tier once")
        for n in names:
            why = check_name(n)
            if why:
                raise InputError("tiers", f"tier name {n[:40]!r} {why}",
                                 "name tiers with printable characters")
            if MOVE_SEPARATOR in n or "," in n or ":" in n:
                raise InputError("tiers", f"invalid tier name {n!r}",
                                 "use a name without '-', ',' or ':' (a '-' joins the two "
                                 "tiers of a data move, as in 'shared-local')")
        if not any(t.kind is TierKind.SHARED for t in self.tiers):
            raise InputError("tiers", f"no shared tier among {', '.join(names)}",
                             "declare one tier as NAME:shared; initial data lives there")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tiers]

    @property
    def home(self) -> Tier:
        return next(t for t in self.tiers if t.kind is TierKind.SHARED)

    @property
    def local_names(self) -> list[str]:
        """Node-local tiers, fastest first (declaration order)."""
        return [t.name for t in self.tiers if t.is_local]

    def index(self, name: str) -> int:
        for i, t in enumerate(self.tiers):
            if t.name == name:
                return i
        raise InputError("tiers", f"unknown tier {name!r}",
                         f"use one of: {', '.join(self.names)}")

    def __getitem__(self, name: str) -> Tier:
        return self.tiers[self.index(name)]

    def __len__(self) -> int:
        return len(self.tiers)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.tiers)


def move_name(src: str, dst: str) -> str:
    """The compound storage type of a data move from ``src`` to ``dst``."""
    return f"{src}{MOVE_SEPARATOR}{dst}"


def split_move(storage_type: str) -> tuple[str, str] | None:
    """``('a', 'b')`` for a move ``'a-b'``, None for a plain tier name."""
    if MOVE_SEPARATOR not in storage_type:
        return None
    src, _, dst = storage_type.partition(MOVE_SEPARATOR)
    return src, dst


def parse_tiers(spec: str) -> TierSet:
    """Parse ``'beegfs:shared,tmpfs:node-local,ssd:node-local'``.

    ``local`` is accepted for ``node-local``.
    """
    tiers: list[Tier] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, kind = part.partition(":")
        if not sep:
            raise InputError("--tiers", f"tier {part!r} has no kind",
                             "write NAME:shared or NAME:node-local")
        kind = kind.strip().lower()
        if kind == "local":
            kind = TierKind.NODE_LOCAL.value
        try:
            tiers.append(Tier(name.strip(), TierKind(kind)))
        except ValueError:
            raise InputError("--tiers", f"unknown tier kind {kind!r} for {name!r}",
                             "use shared or node-local") from None
    return TierSet(tuple(tiers))


def order_tiers(shared: Iterable[str], local_by_speed: Sequence[str]) -> TierSet:
    """Shared tiers (in the given order) then node-local tiers fastest first."""
    return TierSet(tuple([Tier(n, TierKind.SHARED) for n in shared]
                         + [Tier(n, TierKind.NODE_LOCAL) for n in local_by_speed]))


def format_tiers(tiers: TierSet) -> str:
    return ",".join(f"{t.name}:{t.kind.value}" for t in tiers)
