"""benchmarks/loop/run.py refuses a bad --validate-repeat or --validate-after-repeat in
one line, before it starts anything (it would otherwise start a cluster and fail inside
a job)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "loop" / "run.py"


def _main():
    spec = importlib.util.spec_from_file_location("loop_run", RUN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod     # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.main


@pytest.mark.parametrize("flag", ["--validate-repeat", "--validate-after-repeat"])
@pytest.mark.parametrize("value", ["0", "101", "-2"])
def test_a_bad_validate_repeat_is_one_line(flag, value, capsys, tmp_path):
    assert _main()(["--dir", str(tmp_path / "never"), flag, value]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"{flag}: {value} is not 1 to 100 runs a placement"
    assert not (tmp_path / "never").exists()


def test_an_after_repeat_without_an_after_is_refused(capsys, tmp_path):
    assert _main()(["--dir", str(tmp_path / "never"), "--validate-after-repeat", "2",
                    "--validate-no-calibrate"]) == 1
    assert capsys.readouterr().err.startswith("--validate-after-repeat: there is no after")
    assert not (tmp_path / "never").exists()
