"""qosctl against a real tokenbucketd: round trips, stats, and one-line errors that change
nothing. One daemon serves the whole module; each test uses its own jobs and selectors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenbucket_daemon.client import DataClient
from tokenbucket_daemon.core.policy import Tag
from tokenbucket_daemon.local import LocalDaemon, free_ports
from tokenbucket_daemon.qosctl import main

MiB = 1 << 20
TOKEN = "qosctl-test-token"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = LocalDaemon(tmp_path_factory.mktemp("qosctl") / "d", "q1", token=TOKEN).start()
    yield d
    d.stop(signal.SIGKILL)


@pytest.fixture
def qosctl(daemon, capsys):
    """Run ``qosctl --daemon D --token-file T ARGS...`` in-process: (exit code, out, err)."""
    def run(*args: str, token_file: Path | None = None) -> tuple[int, str, str]:
        code = main(["--daemon", daemon.address, "--token-file",
                     str(token_file or daemon.base / "token"), *args])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def policies(qosctl) -> dict[tuple[str, str], dict]:
    code, out, err = qosctl("--json", "policy", "list")
    assert (code, err) == (0, "")
    return {(p["selector"], p["tier"]): p for p in json.loads(out)["policies"]}


def row(out: str, first: str) -> list[str]:
    (line,) = [ln for ln in out.splitlines() if ln.split()[:1] == [first]]
    return line.split()


def test_policy_set_list_delete_round_trip(qosctl):
    code, out, err = qosctl("policy", "set", "job=42", "--tier", "ram", "--limit", "200MiB/s",
                            "--burst", "4MiB")
    assert (code, err) == (0, "") and "set job=42 on tier ram" in out
    code, out, _ = qosctl("policy", "set", "user=ana", "--limit", "1GiB/s", "--reserve",
                          "100MiB/s", "--weight", "2", "--json")
    assert code == 0
    assert {k: v for k, v in json.loads(out)["policy"].items() if k != "updated_ns"} == {
        "selector": "user=ana", "kind": "user", "value": "ana", "tier": "",
        "limit_bps": float(1 << 30), "reservation_bps": 100.0 * MiB, "weight": 2.0,
        "burst_bytes": 0, "scope": "daemon", "origin": "q1"}

    code, out, _ = qosctl("policy", "list")
    assert code == 0
    assert row(out, "SELECTOR") == ["SELECTOR", "TIER", "LIMIT", "SCOPE", "RESERVATION",
                                    "WEIGHT", "BURST", "ORIGIN"]
    assert row(out, "job=42") == ["job=42", "ram", "200.0MiB/s", "daemon", "none", "1",
                                  "4.0MiB", "q1"]
    assert row(out, "user=ana") == ["user=ana", "all", "1.0GiB/s", "daemon", "100.0MiB/s",
                                    "2", "default", "q1"]
    # A group-scope limit: one limit for the job across every daemon of the group.
    code, out, _ = qosctl("policy", "set", "job=43", "--limit", "100MB/s", "--scope", "group")
    assert code == 0
    assert row(qosctl("policy", "list")[1], "job=43")[:4] == ["job=43", "all", "95.4MiB/s",
                                                              "group"]
    code, out, err = qosctl("policy", "set", "user=ana", "--limit", "1MB/s", "--scope", "group")
    assert (code, out) == (2, "") and "group scope is for a job's limit only" in err
    assert qosctl("policy", "delete", "job=43")[0] == 0
    job42 = policies(qosctl)[("job=42", "ram")]
    assert (job42["limit_bps"], job42["burst_bytes"]) == (200.0 * MiB, 4 * MiB)

    # The every-tier policy of job=42 does not exist: nothing is deleted, and it says so.
    code, out, err = qosctl("policy", "delete", "job=42")
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith("qosctl: error: no policy for job=42 on every tier; nothing deleted")
    assert ("job=42", "ram") in policies(qosctl)
    assert qosctl("policy", "delete", "job=42", "--tier", "ram") == \
        (0, "deleted job=42 on tier ram\n", "")
    code, out, _ = qosctl("--json", "policy", "delete", "user=ana")
    assert (code, json.loads(out)) == (0, {"deleted": True, "selector": "user=ana", "tier": ""})
    assert not {("job=42", "ram"), ("user=ana", "")} & set(policies(qosctl))


def test_reserve_shows_in_reservations_and_stats_and_release_removes_it(daemon, qosctl):
    code, out, err = qosctl("reserve", "77", "10MiB/s", "--tier", "ram", "--limit", "50MiB/s",
                            "--user", "ana", "--account", "phys")
    assert (code, err) == (0, "") and "reserved 10.0MiB/s for job 77 on tier ram" in out
    qosctl("policy", "set", "job=78", "--limit", "5MiB/s")      # a policy without reservation
    code, out, _ = qosctl("reservations")
    assert row(out, "job=77") == ["job=77", "ram", "50.0MiB/s", "daemon", "10.0MiB/s", "1",
                                  "default", "q1"]
    assert "job=78" not in out
    code, out, _ = qosctl("reservations", "--json")
    (res,) = [p for p in json.loads(out)["reservations"] if p["selector"] == "job=77"]
    assert (res["reservation_bps"], res["limit_bps"]) == (10.0 * MiB, 50.0 * MiB)

    DataClient(daemon.address, Tag("77", "ana")).write("ram", "r77.dat", b"r" * MiB)
    code, out, _ = qosctl("stats", "--job", "77", "--json")
    (cls,) = json.loads(out)["classes"]
    assert (cls["job"], cls["tier"], cls["selector"], cls["bytes_written"]) == \
        ("77", "ram", "job=77", MiB)
    assert (cls["reservation_bps"], cls["limit_bps"]) == (10.0 * MiB, 50.0 * MiB)
    code, out, _ = qosctl("stats", "--job", "77")
    assert row(out, "77")[:3] + row(out, "77")[4:5] + row(out, "77")[6:8] == \
        ["77", "ram", "job=77", "1.0MiB", "50.0MiB/s", "10.0MiB/s"]

    assert qosctl("release", "77") == (0, "released job 77: 1 JOB policy deleted\n", "")
    code, out, _ = qosctl("reservations")
    assert "job=77" not in out
    code, out, err = qosctl("release", "77")
    assert (code, out) == (1, "") and err.startswith("qosctl: error: NOT_FOUND: ")
    assert "'77'" in err and err.count("\n") == 1
    qosctl("policy", "delete", "job=78")


def test_stats_show_bytes_per_class_and_tier_totals(daemon, qosctl):
    data = DataClient(daemon.address, Tag("5"))
    data.write("disk", "s5.dat", b"s" * (2 * MiB))
    assert len(data.read("disk", "s5.dat", length=MiB)) == MiB
    code, out, err = qosctl("stats", "--tier", "disk", "--json")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    (cls,) = [c for c in doc["classes"] if c["job"] == "5"]
    assert (cls["bytes_written"], cls["bytes_read"], cls["queued"]) == (2 * MiB, MiB, 0)
    assert set(cls) >= {"rate_bps", "wait_seconds_total", "tokens_bytes", "in_flight"}
    (tier,) = doc["tiers"]
    assert tier["tier"] == "disk" and tier["bytes_written"] >= 2 * MiB
    assert (tier["bandwidth_bps"], tier["emulated_device_bps"]) == (0, 0)    # none set
    code, out, _ = qosctl("stats", "--tier", "disk")
    assert row(out, "5")[:5] == ["5", "disk", "default", "1.0MiB", "2.0MiB"]
    assert row(out, "TIER") == ["TIER", "READ", "WRITTEN", "REQUESTS", "QUEUED", "IN-FLIGHT",
                                "BANDWIDTH", "EMULATED-DEVICE"]
    code, out, _ = qosctl("stats", "--job", "5", "--watch", "0.1", "--count", "2", "--json")
    snaps = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(snaps) == 2
    assert [c["bytes_written"] for c in snaps[1]["classes"]] == [2 * MiB]


def test_enforcement_off_shows_in_stats_and_switches_back_on(qosctl):
    assert qosctl("enforcement") == (0, "enforcement on on q1\n", "")
    try:
        code, out, err = qosctl("enforcement", "off")
        assert (code, err) == (0, "") and out.startswith("enforcement off on ")
        code, out, _ = qosctl("stats")
        assert out.splitlines()[0] == \
            "daemon q1 (enforcement OFF: requests bypass every policy)"
        code, out, _ = qosctl("--json", "enforcement")
        assert json.loads(out) == {"daemon_id": "q1", "enforcing": False}
    finally:
        code, out, _ = qosctl("--json", "enforcement", "on")
    assert (code, json.loads(out)) == (0, {"enforcing": True, "released": 0})
    assert json.loads(qosctl("--json", "stats")[1])["enforcing"] is True


@pytest.fixture(scope="module")
def silent_address():
    """A port that accepts TCP connections but never speaks: a hung host."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


BAD_INPUT = [
    # (arguments, exit code, words the one error line must hold)
    (["policy", "set", "job=9", "--limit", "fast"], 2, ["--limit", "bad rate 'fast'", "MiB/s"]),
    (["policy", "set", "job=9", "--limit", "-5MiB/s"], 2, ["'-5MiB/s' is negative"]),
    (["policy", "set", "job=9", "--reserve=-1"], 2, ["'-1' is negative"]),
    (["reserve", "9", "-1MiB/s"], 2, ["'-1MiB/s' is negative"]),
    (["reserve", "9", "0"], 2, ["must be > 0", "release"]),
    (["reserve", "job=9", "1MiB/s"], 2, ["bad job id 'job=9'"]),
    (["policy", "set", "jobb=9", "--limit", "1MiB/s"], 2,
     ["bad selector 'jobb=9'", "job=ID, user=NAME"]),
    (["policy", "delete", "job="], 2, ["bad selector 'job='"]),
    (["policy", "set", "job=9", "--limit", "1MiB/s", "--reserve", "2MiB/s"], 2,
     ["reservation 2.0MiB/s exceeds the limit 1.0MiB/s"]),
    (["policy", "set", "job=9", "--limit", "2TB/s"], 2, ["above 1 TB/s", "check the unit"]),
    (["policy", "set", "job=9", "--weight", "lots"], 2, ["bad weight 'lots'"]),
    (["policy", "set", "job=9", "--burst", "big"], 2, ["bad size 'big'"]),
    (["policy", "set", "job=9", "--tier", "tape", "--limit", "1MiB/s"], 1,
     ["NOT_FOUND", "'tape'", "disk, ram"]),
    (["policy"], 2, ["required: ACTION", "qosctl policy --help"]),
    (["stats", "--count", "2"], 2, ["--count needs --watch"]),
    (["enforcement", "maybe"], 2, ["'maybe'", "choose from 'on', 'off'"]),
    (["--token-file", "{missing}", "policy", "set", "job=9"], 2,
     ["cannot read admin token file", "missing.token", "No such file", "--token-file"]),
    (["--token-file", "{open}", "policy", "set", "job=9"], 2,
     ["readable by others", "chmod 600"]),
    (["--token-file", "{wrong}", "policy", "set", "job=9"], 1,
     ["PERMISSION_DENIED", "admin credential refused", "wrong.token"]),
    (["--daemon", "{dead}", "policy", "set", "job=9"], 1,
     ["UNAVAILABLE", "cannot reach tokenbucketd", "--daemon"]),
    (["--daemon", "127.0.0.1", "policy", "list"], 2, ["bad daemon address '127.0.0.1'"]),
    (["--daemon", "{silent}", "--timeout", "0.3", "policy", "set", "job=9"], 1,
     ["UNAVAILABLE", "no answer within 0.3 s"]),
]


@pytest.mark.parametrize("args,exit_code,words", BAD_INPUT,
                         ids=[" ".join(a) for a, _, _ in BAD_INPUT])
def test_bad_input_is_one_line_with_its_exit_code_and_changes_nothing(
        daemon, qosctl, tmp_path, silent_address, args, exit_code, words):
    files = {"missing": tmp_path / "missing.token", "open": tmp_path / "open.token",
             "wrong": tmp_path / "wrong.token"}
    for name, mode in (("open", 0o644), ("wrong", 0o600)):
        files[name].write_text("not-the-token\n")
        files[name].chmod(mode)
    fill = {**{k: str(v) for k, v in files.items()}, "dead": f"127.0.0.1:{free_ports(1)[0]}",
            "silent": silent_address}
    before = policies(qosctl)
    t0 = time.monotonic()
    code, out, err = qosctl(*[a.format(**fill) for a in args])
    assert time.monotonic() - t0 < 5          # never hangs, even on a silent host
    assert (code, out) == (exit_code, "")
    assert err.startswith("qosctl: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err
    assert policies(qosctl) == before


def test_environment_gives_the_defaults(daemon, monkeypatch, capsys):
    monkeypatch.setenv("QOS_DAEMON", daemon.address)
    monkeypatch.setenv("QOS_TOKEN_FILE", str(daemon.base / "token"))
    assert main(["policy", "set", "account=env", "--limit", "3MB/s"]) == 0
    assert main(["policy", "list", "--json"]) == 0
    assert main(["policy", "delete", "account=env"]) == 0
    out = capsys.readouterr().out.splitlines()
    (listed,) = [p for p in json.loads(out[-2])["policies"] if p["selector"] == "account=env"]
    assert listed["limit_bps"] == 3e6
    monkeypatch.setenv("QOS_DAEMON", "127.0.0.1")
    assert main(["policy", "list"]) == 2
    assert "QOS_DAEMON" in capsys.readouterr().err


def test_installed_console_script(daemon, tmp_path):
    script = Path(sys.executable).parent / "qosctl"
    assert script.is_file(), f"{script} missing: run .venv/bin/pip install -e . --no-deps"
    env = {**os.environ, "QOS_DAEMON": daemon.address,
           "QOS_TOKEN_FILE": str(daemon.base / "token")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], env=env, capture_output=True, text=True,
                              timeout=30)

    assert run("policy", "set", "job=31", "--limit", "5MB/s").returncode == 0
    r = run("--json", "policy", "list")
    assert r.returncode == 0
    assert ["job=31"] == [p["selector"] for p in json.loads(r.stdout)["policies"]
                          if p["selector"] == "job=31"]
    bad = run("policy", "set", "job=31", "--limit", "fast")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("qosctl: error: ") and bad.stderr.count("\n") == 1
    assert run("policy", "delete", "job=31").returncode == 0


def test_policy_set_on_a_reserved_job_keeps_its_reservation_unless_told(qosctl):
    """An administrator limiting a job during an incident once took its deadline's
    reservation away without a word."""
    assert qosctl("reserve", "81", "10MiB/s", "--tier", "ram")[0] == 0
    code, out, err = qosctl("policy", "set", "job=81", "--tier", "ram", "--limit", "40MiB/s")
    assert (code, err) == (0, "") and "kept its reservation of 10.0MiB/s" in out
    p = policies(qosctl)[("job=81", "ram")]
    assert (p["limit_bps"], p["reservation_bps"]) == (40 * MiB, 10 * MiB)
    # A limit below the reservation is refused, and nothing changes.
    code, out, err = qosctl("policy", "set", "job=81", "--tier", "ram", "--limit", "5MiB/s")
    assert code != 0 and "below the 10.0MiB/s job 81 holds" in err and len(err.splitlines()) == 1
    assert policies(qosctl)[("job=81", "ram")]["limit_bps"] == 40 * MiB
    # Said in so many words, the reservation goes (or is replaced by the one given).
    assert qosctl("policy", "set", "job=81", "--tier", "ram", "--limit", "5MiB/s",
                  "--drop-reservation")[0] == 0
    p = policies(qosctl)[("job=81", "ram")]
    assert (p["limit_bps"], p["reservation_bps"]) == (5 * MiB, 0)
    assert qosctl("policy", "set", "job=81", "--tier", "ram", "--reserve", "2MiB/s")[0] == 0
    assert policies(qosctl)[("job=81", "ram")]["reservation_bps"] == 2 * MiB
    # Other selectors are whole policies, as before.
    assert qosctl("policy", "set", "user=zed", "--reserve", "1MiB/s")[0] == 0
    assert qosctl("policy", "set", "user=zed", "--limit", "9MiB/s")[0] == 0
    assert policies(qosctl)[("user=zed", "")]["reservation_bps"] == 0


def test_reservations_show_what_each_tier_has_reserved_against_what_it_sustains(
        qosctl, tmp_path):
    site = tmp_path / "site.toml"
    site.write_text('registry = "/r"\n[tiers.ram]\nkind = "shared"\npath = "/x"\n'
                    'daemons = ["a:1", "b:1"]\nbandwidth = "400MiB/s"\n')
    def ram() -> dict:
        code, out, _ = qosctl("reservations", "--site", str(site), "--json")
        (t,) = [t for t in json.loads(out)["tiers"] if t["tier"] == "ram"]
        return t
    before = ram()["reserved_bps"]          # other tests' jobs share the daemon
    assert qosctl("reserve", "91", "30MiB/s", "--tier", "ram")[0] == 0
    assert qosctl("reserve", "92", "20MiB/s", "--tier", "ram")[0] == 0
    code, out, err = qosctl("reservations", "--site", str(site))
    assert (code, err) == (0, "")
    # 50 MiB/s more of this daemon's half of the tier's 400.
    shown = f"tier ram: {(before + 50 * MiB) / MiB:.1f}MiB/s reserved of 200.0MiB/s"
    assert f"{shown} on this daemon" in out, out
    assert (ram()["reserved_bps"], ram()["capacity_bps"]) == (before + 50 * MiB, 200 * MiB)
    assert qosctl("release", "91")[0] == 0 and qosctl("release", "92")[0] == 0
    code, out, err = qosctl("reservations", "--site", str(tmp_path / "none.toml"))
    assert code != 0 and "cannot read the site configuration" in err
