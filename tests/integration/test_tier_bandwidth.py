"""Issue 19's contention experiment with a real daemon and real clients, in its modes.

The tier's store is a local directory (GB/s), so the daemon emulates a 100 MB/s device in
front of it and knows the tier's bandwidth. A job writes with one stream while a
neighbour writes as fast as it can with four. Without enforcement the device serves
requests in arrival order and the neighbour, with four times the requests queued, takes
most of it. With enforcement the scheduler hands the tier no more than its bandwidth:
by weight (the neighbour's is 4, so the job's share is below what it needs), or, with a
reservation for the job, the reservation first and the rest to the neighbour.
Rates are measured by the clients (acknowledged blocks per second, after a warm-up).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbucket_daemon.core.policy import Kind, Policy, Selector, Tag
from tokenbucket_daemon.ior import IorResult, run_ior
from tokenbucket_daemon.local import LocalDaemon

MiB = 1 << 20
MB = 1e6
CAPACITY = 100 * MB      # the emulated device, and the tier's bandwidth
RESERVED = 40 * MB       # the job's reservation
SECONDS, WARMUP = 9.0, 2.0
# Each block is one Write stream, drained before the next starts: blocks of many requests
# keep a one-stream job's pipeline full most of the time.
BLOCK = 8 * MiB
JOB, NEIGHBOUR = Tag("job1"), Tag("neighbour")


def pfs_daemon(base: Path, qos: bool) -> LocalDaemon:
    return LocalDaemon(base, "pfs0", tiers={"pfs": base / "pfs"}, qos=qos,
                       tier_bandwidth={"pfs": "100MB/s"},
                       emulated_device={"pfs": CAPACITY}).start()


@pytest.fixture
def daemon_off(tmp_path: Path) -> Iterator[LocalDaemon]:
    d = pfs_daemon(tmp_path / "off", qos=False)
    yield d
    d.stop(signal.SIGKILL)


@pytest.fixture
def daemon_on(tmp_path: Path) -> Iterator[LocalDaemon]:
    d = pfs_daemon(tmp_path / "on", qos=True)
    yield d
    d.stop(signal.SIGKILL)


def contend(address: str) -> tuple[float, float]:
    """Steady bytes/s of the one-stream job and the four-stream neighbour, at once."""
    got: dict[str, IorResult] = {}
    errors: list[BaseException] = []

    def load(name: str, tag: Tag, streams: int) -> None:
        try:
            got[name] = run_ior([address], "pfs", tag, MiB, BLOCK, streams, SECONDS,
                                warmup=WARMUP, prefix=name)
        except BaseException as e:       # re-raised below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=load, args=("job", JOB, 1)),
               threading.Thread(target=load, args=("neighbour", NEIGHBOUR, 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    job, neighbour = got["job"].steady_bps, got["neighbour"].steady_bps
    print(f"job {job / MB:.1f} MB/s, neighbour {neighbour / MB:.1f} MB/s")
    return job, neighbour


def test_without_enforcement_the_device_serves_the_greedy_neighbour_first(daemon_off):
    job, neighbour = contend(daemon_off.address)
    # The device holds the tier to its rate with enforcement off too ...
    assert job + neighbour <= 1.1 * CAPACITY
    assert job + neighbour >= 0.7 * CAPACITY
    # ... and serves in arrival order: the job gets far less than the reservation it
    # would be given, and less than half of what the neighbour gets.
    assert job < 0.75 * RESERVED
    assert neighbour > 2 * job


def heavy_neighbour(daemon: LocalDaemon) -> None:
    daemon.admin().set_policy(Policy(Selector(Kind.JOB, NEIGHBOUR.job), weight=4))


def test_with_enforcement_and_no_reservation_the_tier_is_shared_by_weight(daemon_on):
    heavy_neighbour(daemon_on)
    job, neighbour = contend(daemon_on.address)
    assert job + neighbour <= 1.1 * CAPACITY
    assert job + neighbour >= 0.8 * CAPACITY
    # Weights 1:4 give the job a fifth, short of the reservation it will be given.
    assert 0.12 * CAPACITY <= job <= 0.3 * CAPACITY
    assert job < 0.8 * RESERVED


def test_a_reservation_holds_under_the_tier_bandwidth_and_the_rest_goes_to_the_neighbour(
        daemon_on):
    heavy_neighbour(daemon_on)
    admin = daemon_on.admin()
    admin.reserve(JOB.job, RESERVED, tier="pfs")
    (tier,) = admin.stats(tier="pfs").tiers
    assert (tier.bandwidth_bps, tier.emulated_device_bps) == (CAPACITY, CAPACITY)
    job, neighbour = contend(daemon_on.address)
    assert job >= 0.85 * RESERVED
    assert neighbour >= 0.8 * (CAPACITY - RESERVED)     # the spare is not wasted
    assert job + neighbour <= 1.1 * CAPACITY


def test_reads_wait_for_the_emulated_device_too(tmp_path):
    # Enforcement off and no tier bandwidth: only the device stands between the readers
    # and a store that reads at GB/s.
    base = tmp_path / "reads"
    d = LocalDaemon(base, "pfs1", tiers={"pfs": base / "pfs"}, qos=False,
                    emulated_device={"pfs": "50MB/s"}).start()
    try:
        got = run_ior([d.address], "pfs", NEIGHBOUR, MiB, BLOCK, 2, 5.0, op="read",
                      warmup=1.0, prefix="r")
    finally:
        d.stop(signal.SIGKILL)
    print(f"reads {got.steady_bps / MB:.1f} MB/s")
    assert 0.7 * 50 * MB <= got.steady_bps <= 1.1 * 50 * MB


def test_a_tier_without_a_bandwidth_is_named_when_the_daemon_starts(tmp_path):
    # Without [tier_bandwidth] a floor holds only while the device keeps up: the
    # administrator hears of it once, at start, and not for a tier that has one.
    bare = LocalDaemon(tmp_path / "bare", "bare", tiers={"pfs": tmp_path / "bare" / "pfs",
                                                          "nvme": tmp_path / "bare" / "nvme"}
                       ).start()
    capped = pfs_daemon(tmp_path / "capped", qos=True)
    off = LocalDaemon(tmp_path / "off", "off", tiers={"pfs": tmp_path / "off" / "pfs"},
                      qos=False).start()
    try:
        said = [w for w in bare.warnings if "[tier_bandwidth]" in w]
        assert len(said) == 1 and "tier nvme, pfs: no [tier_bandwidth]" in said[0], bare.warnings
        assert not [w for w in capped.warnings if "[tier_bandwidth]" in w], capped.warnings
        # Enforcement off reserves nothing: nothing to warn of.
        assert not [w for w in off.warnings if "[tier_bandwidth]" in w], off.warnings
    finally:
        for d in (bare, capped, off):
            d.stop(signal.SIGKILL)
