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
        "200.0 MiB/s are promised to running jobs and the job needs 50.0 MiB/s" in d.reason
    assert "--qos-exclude-tier=pfs" in d.reason and "\n" not in d.reason
    # Exactly full is still a promise the tier keeps.
    assert admit([Ask("a:1", "pfs", 40 * MiB, 160 * MiB, 200 * MiB)]).admitted


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
