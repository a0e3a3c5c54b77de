"""The storage profiler measures real directories with fio and cp, and writes a
profile the cost builder reads unchanged."""

from __future__ import annotations

import csv

import pytest

from qos_plugin.cli.qos_plan import main
from qos_plugin.errors import InputError
from qos_plugin.model.profile import load_profile
from qos_plugin.model.tiers import TierKind
from qos_plugin.profiler.runner import run_sweep
from qos_plugin.profiler.sweep import COLUMNS, Sweep, io_runs, move_runs, parse_tier_dir

TINY = Sweep(transfer_sizes=(4096, 1 << 20), data_sizes=(4,), tasks=(1, 2), move_copies=(1, 2),
             move_sizes=(4,), repeats=1)


def test_a_tiny_sweep_gives_a_profile_in_the_ior_schema(tmp_path):
    shared, local = tmp_path / "shared", tmp_path / "local"
    shared.mkdir()
    local.mkdir()
    tiers = [parse_tier_dir(f"disk={shared}:shared"), parse_tier_dir(f"fast={local}:node-local")]
    rows = run_sweep(io_runs(tiers, TINY), move_runs(tiers, TINY))
    assert len(rows) == 2 * 2 * 2 * 2 + 3 * 2
    out = tmp_path / "profile.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    assert all(float(r["trMiB"]) > 0 for r in rows)
    assert {r["storageType"] for r in rows} == {"disk", "fast", "disk-fast", "fast-disk",
                                                 "fast-fast"}
    profile = load_profile(out)
    tiers_read = profile.infer_tiers()
    assert [(t.name, t.kind) for t in tiers_read] == [("disk", TierKind.SHARED),
                                                       ("fast", TierKind.NODE_LOCAL)]
    assert profile.rate("read", "fast", 1, 2, 8192, 4) > 0
    # Nothing is left behind in the measured directories.
    assert list(shared.iterdir()) == [] and list(local.iterdir()) == []


def test_per_file_runs_time_creates_and_opens_as_file_operations_a_second(tmp_path):
    """Each task creates its files and opens them again: the row's rate at one
    FILE_BYTES transfer an operation is the operations a second, which the profile
    gives back; nothing is left in the tier."""
    from qos_plugin.model.profile import FILE_BYTES
    from qos_plugin.profiler.sweep import FileRun, file_runs

    shared = tmp_path / "shared"
    shared.mkdir()
    tier = parse_tier_dir(f"disk={shared}:shared")
    assert [(r.tasks, r.files) for r in file_runs([tier], TINY)] == [(1, 32), (2, 32)]
    rows = run_sweep([], [], files=[FileRun(tier, 2, 8)])
    (r,) = rows
    assert r["operation"] == "files" and r["transferSize"] == FILE_BYTES
    assert r["numTasks"] == r["tasksPerNode"] == 2
    ops_per_s = float(r["trMiB"]) * (1 << 20) / FILE_BYTES
    assert ops_per_s == pytest.approx(2 * 8 * 2 / float(r["totalTime"]), rel=1e-3)
    out = tmp_path / "profile.csv"
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)
    got = load_profile(out).rate("files", "disk", 1, 2, FILE_BYTES, 1.0)
    assert got == pytest.approx(float(r["trMiB"]))
    assert list(shared.iterdir()) == []


def test_a_phase_start_is_timed_with_the_launcher_a_run_here_uses():
    from qos_plugin.profiler.runner import measure_phase_start

    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SLURM_")}
    seconds, how = measure_phase_start(env, repeats=3)
    # Outside an allocation: a call in the local runner's worker process.
    assert how == "local processes" and 0 < seconds < 5


def test_what_more_nodes_add_to_a_phase_s_start():
    from qos_plugin.profiler.runner import start_more

    assert start_more([0.1, 0.3, 0.6]) == pytest.approx([0.2, 0.5])
    # One count says nothing about more nodes; a start that falls adds nothing.
    assert start_more([0.4]) == []
    assert start_more([0.4, 0.3]) == [0.0]


@pytest.mark.parametrize("spec,needle", [
    ("disk", "is not NAME=PATH:KIND"),
    ("disk=/tmp:fast", "is not NAME=PATH:KIND"),
])
def test_bad_tier_specs(spec, needle):
    with pytest.raises(InputError, match=needle):
        parse_tier_dir(spec)


def test_profile_cli_refuses_missing_dirs_and_no_shared_tier(tmp_path, capsys):
    code = main(["profile", "--tier", f"a={tmp_path}/nope:shared", "--out",
                 str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "is not a directory" in err and err.count("\n") == 1
    code = main(["profile", "--tier", f"a={tmp_path}:node-local", "--out",
                 str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "no shared tier" in err
    assert not (tmp_path / "p.csv").exists()


def test_long_runs_add_large_reads_writes_and_copies_at_1_mib_only(tmp_path):
    from qos_plugin.profiler.sweep import LONG_MIB, QUICK, with_long_runs

    shared, local = tmp_path / "shared", tmp_path / "local"
    tiers = [parse_tier_dir(f"disk={shared}:shared"), parse_tier_dir(f"fast={local}:node-local")]
    long = with_long_runs(QUICK)
    short = {(r.tier.name, r.operation, r.transfer, r.mib, r.tasks) for r in io_runs(tiers, QUICK)}
    more = {(r.tier.name, r.operation, r.transfer, r.mib, r.tasks) for r in io_runs(tiers, long)}
    # Every quick run, and per tier, operation and task count one of LONG_MIB at 1 MiB.
    assert short < more
    assert more - short == {(t.name, op, 1 << 20, LONG_MIB, k) for t in tiers
                            for op in ("read", "write") for k in QUICK.tasks}
    moves = {(m.src.name, m.dst.name, m.mib) for m in move_runs(tiers, long)}
    assert {m for m in moves if m[2] == LONG_MIB} == {(a, b, LONG_MIB) for a, b, _ in moves}
    assert with_long_runs(long) == long


def test_writes_and_copies_are_timed_as_a_run_makes_them_and_flushed_after(tmp_path, monkeypatch):
    """A run's tasks and copies do not fsync (planner/taskproc.py), so the profile times
    them without one; every file they wrote is fsync'd after the time is taken."""
    import qos_plugin.profiler.runner as runner

    events: list[tuple[str, object]] = []
    real_flush, real_move_row = runner.flush_files, runner.move_row

    def flush(paths):
        events.append(("flush", sorted(p.name for p in paths)))
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
        real_flush(paths)

    def move_row(run, seconds):
        events.append(("timed", run.copies))
        return real_move_row(run, seconds)

    monkeypatch.setattr(runner, "flush_files", flush)
    monkeypatch.setattr(runner, "move_row", move_row)
    shared, local = tmp_path / "shared", tmp_path / "local"
    shared.mkdir()
    local.mkdir()
    tiers = [parse_tier_dir(f"disk={shared}:shared"), parse_tier_dir(f"fast={local}:node-local")]
    one = Sweep(transfer_sizes=(1 << 20,), data_sizes=(4,), tasks=(2,), move_copies=(2,),
                move_sizes=(4,), repeats=1)
    io = [r for r in io_runs(tiers, one) if r.operation == "write"]
    moves = move_runs(tiers, one)
    run_sweep(io, moves)
    writes = [e for e in events if e[0] == "flush"][:len(io)]
    # fio's two jobs each wrote one file, flushed once fio had timed them.
    assert writes == [("flush", ["qos.0", "qos.1"])] * len(io)
    after = events[len(io):]
    assert after == [("timed", 2), ("flush", ["move.0", "move.1"])] * len(moves)
