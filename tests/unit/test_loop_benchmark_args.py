"""benchmarks/loop/run.py refuses a bad --validate-repeat or --validate-after-repeat in
one line, before it starts anything (it would otherwise start a cluster and fail inside
a job)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "loop" / "run.py"


def _module():
    spec = importlib.util.spec_from_file_location("loop_run", RUN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod     # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _main():
    return _module().main


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


@pytest.mark.parametrize("value", ["1.25", "1.0", "nan"])
def test_a_least_slack_that_leaves_the_contract_whole_is_refused(value, capsys, tmp_path):
    assert _main()(["--dir", str(tmp_path / "never"), "--least-slack", value]) == 1
    assert capsys.readouterr().err.startswith(f"--least-slack: {float(value)} leaves")
    assert not (tmp_path / "never").exists()


def test_a_least_slack_past_what_a_run_waits_for_is_refused(capsys, tmp_path):
    assert _main()(["--dir", str(tmp_path / "never"), "--least-slack", "1000"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("--least-slack: 1000.0 times the prediction") and "at most 100" in err
    assert not (tmp_path / "never").exists()


def test_the_neighbour_is_judged_against_what_the_least_reservation_leaves():
    """(c)'s table: 80 MB/s tier, a least reservation of 50, the neighbour at 27 beside
    it: 30 left, 0.90 of it taken; the workflow moving 40 leaves a spare of 40."""
    mod = _module()
    run = {"mode": "least", "makespan_s": 30.0, "met": True, "deadline_s": 40.0,
           "reservation_Bps": 50e6, "neighbour_Bps": 27e6, "workflow_Bps": 40e6}
    res = {"shared_bandwidth_Bps": 80e6, "workflow": "loop@1", "nodes": 1,
           "predicted_s": 20.0, "placement": {"a": "pfs"}, "deadline_s": 24.0,
           "streams": 6, "runs": [run, {**run, "neighbour_Bps": 25e6}, run],
           "least_slack": 2.0}
    text = mod.tables(res)
    assert "deadline 40.0 s, x2.0" in text
    assert "| left after the workflow's reservation (50.0 MB/s) | 30.0 |" in text
    assert "| **share of what is left that it got** | **0.90** |" in text
    assert "spare: the device less the workflow's use, 40.0; **share of it the neighbour " \
           "got** | **0.68** |" in text


def test_the_reserve_rule_is_set_for_a_while_and_a_leftover_one_dropped(tmp_path):
    """A killed run's ``reserve`` line does not outlive the next: the rule is written
    once, then the site as it was without it, also when the run inside fails."""
    import tomllib
    from types import SimpleNamespace

    mod = _module()
    conf = tmp_path / "site.toml"
    conf.write_text('reserve = "least"\nregistry = "/r"\n\n[tiers.pfs]\nkind = "shared"\n')
    loop = object.__new__(mod.Loop)
    loop.cluster = SimpleNamespace(site_conf=conf)
    with loop.reserve_rule("least"):
        assert tomllib.loads(conf.read_text())["reserve"] == "least"
        assert conf.read_text().count("reserve =") == 1
    assert "reserve" not in tomllib.loads(conf.read_text())
    with pytest.raises(RuntimeError), loop.reserve_rule("least"):
        raise RuntimeError("a run failed")
    after = tomllib.loads(conf.read_text())
    assert "reserve" not in after and after["tiers"]["pfs"]["kind"] == "shared"
