"""tokenbucket_daemon.heap: fixed malloc thresholds, unless the environment sets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = "from tokenbucket_daemon.heap import keep_buffers_in_heap as k; print(k())"


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env,
                         "PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_thresholds_are_set_on_glibc():
    assert _probe() == "True"


def test_an_administrators_environment_wins():
    assert _probe(MALLOC_MMAP_THRESHOLD_="1048576") == "False"
    assert _probe(MALLOC_TRIM_THRESHOLD_="1048576") == "False"
