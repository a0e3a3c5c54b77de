"""Real tokenbucketd daemons on loopback and real FUSE mounts of them. Needs root and
/dev/fuse (scripts/setup --dev installs fuse3 and pyfuse3); fails, never skips, without."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenbucket_daemon.local import LocalDaemon, start_group

TIER = "pfs"


def _require_fuse() -> None:
    if os.geteuid() != 0:
        pytest.fail("the qosfs tests mount FUSE file systems and need root")
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
        pytest.fail("/dev/fuse or fusermount3 missing; run scripts/setup --dev (installs fuse3)")
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        pytest.fail("pyfuse3 is not installed; run scripts/setup --dev")


class Daemons:
    """A group of daemons serving tier ``pfs``, each from its own store directory."""

    def __init__(self, base: Path, n: int, shared: bool = False) -> None:
        self.base = base
        self.stores = [base / ("store" if shared else f"store{i}") for i in range(n)]
        self.group: list[LocalDaemon] = start_group(
            base, n, tiers=lambda i: {TIER: self.stores[i]})

    @property
    def addresses(self) -> list[str]:
        return [d.address for d in self.group]

    def stop(self) -> None:
        for d in self.group:
            d.stop(signal.SIGKILL)

    def clear(self) -> None:
        for s in set(self.stores):
            for p in s.iterdir():
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemons]:
    """Three daemons, a store each: files are striped over all three."""
    _require_fuse()
    d = Daemons(tmp_path_factory.mktemp("qosfs"), 3)
    yield d
    d.stop()


@pytest.fixture
def clean(daemons: Daemons) -> Iterator[Daemons]:
    daemons.clear()
    yield daemons
