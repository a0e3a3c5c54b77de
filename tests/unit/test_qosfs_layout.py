"""Stripe arithmetic and store grouping of qosfs, on plain numbers."""

from __future__ import annotations

import pytest

from qosfs.errors import UsageError
from qosfs.layout import Layout, Piece, assemble, store_groups

K = 4096


def test_pieces_cut_at_stripe_boundaries_round_robin() -> None:
    lay = Layout(3, 4 * K)
    assert lay.pieces(0, 4 * K) == [Piece(0, 0, 4 * K)]
    assert lay.pieces(3 * K, 3 * K) == [Piece(0, 3 * K, K), Piece(1, 4 * K, 2 * K)]
    got = lay.pieces(K, 14 * K)
    assert [p.daemon for p in got] == [0, 1, 2, 0]
    assert sum(p.length for p in got) == 14 * K
    assert all(a.offset + a.length == b.offset for a, b in zip(got, got[1:], strict=False))
    assert lay.daemon_of(12 * K) == 0 and lay.daemon_of(20 * K) == 2
    assert lay.pieces(5, 0) == []


def test_one_daemon_never_splits() -> None:
    assert Layout(1, 4 * K).pieces(3 * K, 100 * K) == [Piece(0, 3 * K, 100 * K)]


@pytest.mark.parametrize("daemons,stripe", [(0, 4 * K), (2, 1000), (2, 0), (2, 6 * K - 1)])
def test_bad_layouts_are_refused(daemons: int, stripe: int) -> None:
    with pytest.raises(UsageError):
        Layout(daemons, stripe)


def test_assemble_fills_holes_and_cuts_at_the_file_size() -> None:
    p = [Piece(0, 0, 4), Piece(1, 4, 4), Piece(2, 8, 4)]
    # The middle store never got its stripe; the file goes on: a hole of zeros.
    assert assemble(0, 12, [(p[0], b"abcd"), (p[1], b""), (p[2], b"ij")], 10) == \
        b"abcd\0\0\0\0ij"
    # End of file inside the second piece.
    assert assemble(0, 12, [(p[0], b"abcd"), (p[1], b"ef"), (p[2], b"")], 6) == b"abcdef"
    # Read starting past the end.
    assert assemble(20, 4, [(Piece(0, 20, 4), b"")], 10) == b""


def test_store_groups_follow_what_each_daemon_saw() -> None:
    no = [[False] * 4 for _ in range(4)]
    assert store_groups(no) == [[0], [1], [2], [3]]
    shared = [[True] * 4 for _ in range(4)]
    assert store_groups(shared) == [[0, 1, 2, 3]]
    pairs = [[False, False, True, False], [False, False, False, True],
             [False] * 4, [False] * 4]
    assert store_groups(pairs) == [[0, 2], [1, 3]]
