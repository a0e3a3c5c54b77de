"""Admission of reservations against a tier's bandwidth: the pure rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from qos_plugin.errors import InputError
from qos_plugin.slurm.admission import Ask, admit, daemon_part
from qos_plugin.slurm.site import parse_rate, site_from_dict

MiB = 1 << 20


def test_a_reservation_that_fits_is_admitted_with_the_unpromised_part_as_its_limit():
    d = admit([Ask("a:1", "pfs", 50 * MiB, 100 * MiB, 200 * MiB),
               Ask("b:1", "pfs", 50 * MiB, 0.0, 200 * MiB),
               Ask("n1:1", "ssd", 10 * MiB, 0.0, None)])
    assert d.admitted and d.limits == (100 * MiB, 200 * MiB, 0.0)


def test_one_ask_that_does_not_fit_refuses_them_all_with_the_numbers():
    d = admit([Ask("a:1", "pfs", 50 * MiB, 0.0, 200 * MiB),
               Ask("b:1", "pfs", 50 * MiB, 160 * MiB, 200 * MiB)])
    assert not d.admitted and d.limits == ()
    assert "tier pfs cannot hold the job's reservation on b:1: 160.0 MiB/s of its " \
        "200.0 MiB/s are promised to running jobs and the job needs at least 50.0 MiB/s" \
        in d.reason
    assert "--qos-exclude-tier=pfs" in d.reason and "\n" not in d.reason
    # Exactly full is still a promise the tier keeps.
    assert admit([Ask("a:1", "pfs", 40 * MiB, 160 * MiB, 200 * MiB)]).admitted


def test_a_job_reserves_its_contract_in_full_when_the_tier_has_it_free():
    asks = [Ask("a:1", "pfs", 60 * MiB, 20 * MiB, 100 * MiB),
            Ask("n1:1", "ssd", 30 * MiB, 0.0, None)]
    d = admit(asks, most_stretch=2.0)
    assert d.admitted and d.stretch == 1.0
    assert d.reserved(asks) == [60 * MiB, 30 * MiB]


def test_less_free_than_the_contract_divides_every_ask_by_one_stretch():
    """50 of 100 MiB/s free on a: the job's 80 is divided by 1.6 to fit, and so is every
    other ask of the job (its phases slow alike), down to no less than its deadline needs."""
    asks = [Ask("a:1", "pfs", 80 * MiB, 50 * MiB, 100 * MiB),
            Ask("b:1", "pfs", 40 * MiB, 0.0, 100 * MiB),
            Ask("n1:1", "ssd", 16 * MiB, 0.0, None)]
    d = admit(asks, most_stretch=2.0)
    assert d.admitted and d.stretch == pytest.approx(1.6)
    assert d.reserved(asks) == pytest.approx([50 * MiB, 25 * MiB, 10 * MiB])
    assert d.limits == (50 * MiB, 100 * MiB, 0.0)
    # More than the deadline allows: refused, with the least the job needs.
    d = admit(asks, most_stretch=1.5)
    assert not d.admitted and d.limits == ()
    assert "on a:1: 50.0 MiB/s of its 100.0 MiB/s are promised" in d.reason
    assert "needs at least 53.3 MiB/s" in d.reason
    # A tier with nothing free refuses whatever the deadline.
    assert not admit([Ask("a:1", "pfs", MiB, 100 * MiB, 100 * MiB)], 1000.0).admitted


def test_the_least_rule_reserves_what_the_deadline_needs_though_the_tier_is_free():
    """The same asks as above with all of a free: "contract" reserves them in full, "least"
    divides every one by the deadline's stretch, and still refuses what does not fit."""
    asks = [Ask("a:1", "pfs", 80 * MiB, 0.0, 100 * MiB),
            Ask("n1:1", "ssd", 16 * MiB, 0.0, None)]
    assert admit(asks, 2.0).reserved(asks) == pytest.approx([80 * MiB, 16 * MiB])
    d = admit(asks, 2.0, "least")
    assert d.admitted and d.stretch == 2.0
    assert d.reserved(asks) == pytest.approx([40 * MiB, 8 * MiB])
    # Its limit is still what nobody else was promised: the spare may go to it too.
    assert d.limits == (100 * MiB, 0.0)
    # Beside 30 held of 100: 80 / 2 = 40 fits the 70 free and is what it reserves (the
    # contract rule would take 70, all that is free: a stretch of 80 / 70).
    some = [Ask("a:1", "pfs", 80 * MiB, 30 * MiB, 100 * MiB)]
    assert admit(some, 2.0).stretch == pytest.approx(80 / 70)
    d = admit(some, 2.0, "least")
    assert d.reserved(some) == pytest.approx([40 * MiB]) and d.limits == (70 * MiB,)
    held = [Ask("a:1", "pfs", 80 * MiB, 70 * MiB, 100 * MiB)]
    assert not admit(held, 2.0, "least").admitted
    assert admit(held, 3.0, "least").reserved(held) == pytest.approx([80 * MiB / 3])
    with pytest.raises(ValueError, match="reserve rule"):
        admit(asks, 2.0, "most")


def test_a_contract_above_the_whole_tier_is_reserved_at_the_whole_tier():
    asks = [Ask("a:1", "pfs", 150 * MiB, 0.0, 120 * MiB)]
    d = admit(asks, most_stretch=1.5)
    assert d.admitted and d.reserved(asks) == pytest.approx([120 * MiB])


def test_a_stretch_below_one_or_not_a_number_is_refused():
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="stretch"):
            admit([], bad)


def test_a_daemons_part_of_a_tier():
    assert daemon_part(400.0, True, 4) == 100.0       # shared: striped over its daemons
    assert daemon_part(400.0, False, 4) == 400.0      # node-local: each node's own
    assert daemon_part(None, True, 4) is None


def test_site_bandwidth_is_a_rate():
    site = site_from_dict({"registry": "/r", "tiers": {
        "pfs": {"kind": "shared", "path": "/p", "mount": "/q", "daemons": ["a:1"],
                "bandwidth": "400MB/s"}}}, Path("/s"))
    assert site.tiers["pfs"].bandwidth == 400e6
    assert parse_rate("2GiB/s", "x") == 2 * 1024 ** 3
    for bad in ("400MB", "0MB/s", "fast/s", "1MB/h"):
        with pytest.raises(InputError):
            parse_rate(bad, "bandwidth")
