"""RateWindow: bytes per second over the last span, on synthetic time."""

from tokenbucket_daemon.core.window import RateWindow


def test_counts_the_last_span_and_forgets_older_slices() -> None:
    w = RateWindow(span=1.0, slices=10)
    w.add(0.05, 100)            # slice 0
    w.add(0.55, 200)            # slice 5
    w.add(0.58, 300)            # slice 5 again: the open slice grows
    assert w.rate(0.6) == 600
    assert w.rate(0.99) == 600
    # At 1.0 the window is slices 1..10: slice 0 is out.
    assert w.rate(1.0) == 500
    w.add(1.2, 50)              # a new slice closes slice 5
    assert w.rate(1.2) == 550
    assert w.rate(1.45) == 550
    assert w.rate(1.55) == 50   # slice 5 (0.5-0.6) has left the window (1.5 is slice 15)
    assert w.rate(2.2) == 0     # and so has the open slice, without another add


def test_an_idle_gap_longer_than_the_span_forgets_everything() -> None:
    w = RateWindow(span=2.0, slices=4)
    for i in range(20):
        w.add(i * 0.1, 1000)
    assert w.rate(1.95) == 20 * 1000 / 2.0
    w.add(10.0, 7)
    assert w.rate(10.0) == 7 / 2.0
