"""Where a file's bytes live: round-robin stripes over a tier's daemons.

Stripe ``k`` of every file (bytes ``[k*S, (k+1)*S)``) is served by daemon ``k mod N`` and
kept at the same offset of the same path in that daemon's store. With one store behind all
daemons (a parallel file system) the daemons write disjoint ranges of one file; with a store
per daemon each holds a sparse file with its stripes. Either way a file's size is the
largest size any store reports, and the namespace (directories, file names) is kept on
every distinct store with the first one authoritative.
"""

from __future__ import annotations

from dataclasses import dataclass

from qosfs.errors import UsageError

MiB = 1 << 20


@dataclass(frozen=True)
class Piece:
    daemon: int
    offset: int
    length: int


@dataclass(frozen=True)
class Layout:
    daemons: int
    stripe_size: int = MiB

    def __post_init__(self) -> None:
        if self.daemons < 1:
            raise UsageError(f"a tier needs at least one daemon, got {self.daemons}")
        if self.stripe_size < 4096 or self.stripe_size % 4096:
            raise UsageError(f"stripe size must be a positive multiple of 4 KiB, got "
                             f"{self.stripe_size}; use e.g. 1MiB")

    def daemon_of(self, offset: int) -> int:
        return (offset // self.stripe_size) % self.daemons

    def pieces(self, offset: int, length: int) -> list[Piece]:
        """``[offset, offset+length)`` cut at stripe boundaries, in file order; with one
        daemon, one piece."""
        if length <= 0:
            return []
        if self.daemons == 1:
            return [Piece(0, offset, length)]
        out: list[Piece] = []
        end = offset + length
        while offset < end:
            stop = min(end, (offset // self.stripe_size + 1) * self.stripe_size)
            out.append(Piece(self.daemon_of(offset), offset, stop - offset))
            offset = stop
        return out


def assemble(offset: int, length: int, parts: list[tuple[Piece, bytes]], size: int) -> bytes:
    """The bytes of ``[offset, offset+length)`` from pieces that may have come back short.

    A short piece is a hole (zeros) if the file goes on past it, so the result is cut at
    ``size``, the file's size, and everything missing below it reads as zeros.
    """
    end = min(offset + length, max(size, offset))
    buf = bytearray(end - offset)
    for piece, data in parts:
        start = piece.offset - offset
        n = min(len(data), piece.length, len(buf) - start)
        if n > 0:
            buf[start:start + n] = data[:n]
    return bytes(buf)


def store_groups(sees: list[list[bool]]) -> list[list[int]]:
    """Daemons grouped by the store they share. ``sees[i][j]``: daemon ``j`` saw a file
    created through daemon ``i``. Group order follows the first member; daemon 0's group
    comes first and is the authoritative namespace."""
    groups: list[list[int]] = []
    placed: set[int] = set()
    for i in range(len(sees)):
        if i in placed:
            continue
        group = [i] + [j for j in range(i + 1, len(sees)) if j not in placed and sees[i][j]]
        placed.update(group)
        groups.append(group)
    return groups
