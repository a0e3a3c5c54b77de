"""The burst-buffer hooks on temporary directories: the request line, the checks that
make a hand-written request harmless, setup/stage-in/stage-out/teardown, and the
out-of-space refusal. Runs as root (setup chowns); copies run as the job's uid."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from qos_plugin.errors import InputError, QosPluginError
from qos_plugin.slurm.site import Site, load_site
from qos_plugin.slurm.staging import (
    StagingRecord,
    check_request,
    data_in,
    data_out,
    free_bytes,
    load_record,
    node_epilog,
    node_prolog,
    setup,
    teardown,
)

PID = "q0123456789ab"
NOBODY = 65534
NOBODY_NAME = __import__("pwd").getpwuid(NOBODY).pw_name



@pytest.fixture(autouse=True)
def _as_root() -> None:
    # The hooks run as root (chown, copies as another uid); like tests/slurm, these
    # fail rather than skip without it, so a CI without root cannot pass silently.
    if os.geteuid() != 0:
        pytest.fail("the staging tests run the hooks as root; run them as root")


@pytest.fixture()
def base():
    """A directory every user can traverse (tmp_path's parents are root-only), so that
    copies as an unprivileged uid fail or succeed for the file's own permissions."""
    d = Path(tempfile.mkdtemp(prefix="qos-staging-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_site(base: Path, nvme_capacity: str | None = None) -> Site:
    for t in ("lustre", "nvme", "tmpfs"):
        (base / "tiers" / t).mkdir(parents=True)
        (base / "tiers" / t).chmod(0o755)
    cap = f'capacity = "{nvme_capacity}"\n' if nvme_capacity else ""
    (base / "site.toml").write_text(
        f'registry = "{base / "registry"}"\nstate_dir = "{base / "state"}"\n'
        f'[tiers.lustre]\nkind = "shared"\npath = "{base / "tiers" / "lustre"}"\n'
        f'[tiers.nvme]\nkind = "node-local"\npath = "{base / "tiers" / "nvme"}"\n{cap}'
        f'[tiers.tmpfs]\nkind = "node-local"\npath = "{base / "tiers" / "tmpfs"}"\n')
    return load_site(base / "site.toml")


@pytest.fixture()
def site(base):
    return make_site(base)


def jobdir(site: Site, tier: str, user: str = "alice", pid: str = PID) -> str:
    return str(site.tiers[tier].path / user / pid)


def bb(site: Site, *, user="alice", tiers=("nvme", "tmpfs"), inn="nvme", out="tmpfs",
       extra="") -> dict[str, str]:
    """The words a node hook checks (as staging.words_of makes them from a placement)."""
    dirs = ",".join(f"{t}={jobdir(site, t, user)}" for t in tiers)
    words = {"id": PID, "dirs": dirs, "in": inn, "out": out}
    words.update(w.split("=", 1) for w in extra.split())
    return words


HOST = socket.gethostname()


# --- the request line ---------------------------------------------------------------

# --- check_request: nothing in the line is trusted -----------------------------------

def check(site: Site, words: dict[str, str], user: str = "alice") -> StagingRecord:
    return check_request(site, "17", user, 1001, 1001, words)


def test_a_well_formed_request_becomes_a_record(site):
    rec = check(site, bb(site, extra=" stage_in=/home/alice/in stage_out=/home/a/o"))
    assert rec == StagingRecord("17", 1001, 1001, PID,
                                {"nvme": jobdir(site, "nvme"), "tmpfs": jobdir(site, "tmpfs")},
                                ["nvme"], ["tmpfs"], "/home/alice/in", "/home/a/o")


@pytest.mark.parametrize("dirs, needle", [
    ("nvme=/etc", "directory '/etc' on tier nvme"),
    ("nvme={nvme}/bob/" + PID, "on tier nvme; it must be {nvme}/alice/" + PID),
    ("nvme={nvme}/alice/q111111111111", "it must be {nvme}/alice/" + PID),
    ("nvme={nvme}/alice/" + PID + "/../../../../../etc", "it must be"),
    ("nvme={nvme}/alice/" + PID + "/sub", "it must be"),
    ("nvme={tmpfs}/alice/" + PID, "it must be {nvme}/alice/" + PID),
    ("lustre={lustre}/alice/" + PID, "tier 'lustre' is not node-local"),
    ("ssd=/ssd/alice/" + PID, "tier 'ssd' is not configured"),
    ("", "no node-local tier directories"),
])
def test_forged_directories_are_refused(site, dirs, needle):
    paths = {t: str(site.tiers[t].path) for t in site.tiers}
    with pytest.raises(InputError) as e:
        check(site, {"id": PID, "dirs": dirs.format(**paths), "in": "", "out": ""})
    assert needle.format(**paths) in str(e.value)


@pytest.mark.parametrize("pid", ["", "q123", "Q0123456789AB", "q0123456789ab/..", "../q0123456789",
                                 "q0123456789abc", "x0123456789ab"])
def test_bad_ids_are_refused(site, pid):
    with pytest.raises(InputError, match="is not a placement id"):
        check(site, {"id": pid, "dirs": f"nvme={site.tiers['nvme'].path}/alice/{pid}"})


@pytest.mark.parametrize("words, needle", [
    ({"in": "tmpfs"}, "in tier 'tmpfs' has no directory"),
    ({"out": "nvme,lustre"}, "out tier 'lustre' has no directory"),
    ({"stage_in": "home/alice/in"}, "stage_in 'home/alice/in' is not absolute"),
    ({"stage_out": "out"}, "stage_out 'out' is not absolute"),
])
def test_stage_tiers_need_directories_and_paths_must_be_absolute(site, words, needle):
    w = {"id": PID, "dirs": f"nvme={jobdir(site, 'nvme')}", **words}
    with pytest.raises(InputError, match=needle):
        check(site, w)


# --- setup, stage-in, stage-out, teardown --------------------------------------------

def test_setup_makes_private_directories_and_records_the_request(site):
    rec = setup(site, "17", NOBODY, NOBODY, "alice", bb(site))
    for tier in ("nvme", "tmpfs"):
        d = Path(jobdir(site, tier))
        st = d.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (NOBODY, NOBODY, 0o700)
        pst = d.parent.stat()
        assert (pst.st_uid, stat.S_IMODE(pst.st_mode)) == (0, 0o755)
    assert not (site.tiers["lustre"].path / "alice").exists()
    assert load_record(site, "17") == rec
    assert json.loads((site.state_dir / "nodes" / HOST / "17.json").read_text())["dirs"] \
        == rec.dirs


def test_setup_refuses_a_forged_request_before_touching_anything(site):
    with pytest.raises(InputError, match="it must be"):
        setup(site, "17", NOBODY, NOBODY, "mallory", bb(site, user="alice"))
    assert not any(list(site.tiers[t].path.iterdir()) for t in site.tiers)
    assert load_record(site, "17") is None


def test_setup_refuses_a_missing_stage_in(site, base):
    with pytest.raises(InputError, match="--qos-stage-in: .* does not exist or alice cannot"):
        setup(site, "17", 0, 0, "alice", bb(site, extra=f" stage_in={base}/nothing"))
    assert load_record(site, "17") is None


def test_stage_in_and_stage_out_copy_and_teardown_removes(site, base):
    src = base / "input"
    (src / "sub").mkdir(parents=True)
    (src / "a.dat").write_text("A" * 100)
    (src / "sub" / "b.dat").write_text("B")
    out = base / "results" / "run1"
    rec = setup(site, "17", 0, 0, "alice",
                bb(site, inn="nvme,tmpfs", out="tmpfs", extra=f" stage_in={src} stage_out={out}"))
    data_in(site, rec)
    for tier in ("nvme", "tmpfs"):
        staged = Path(jobdir(site, tier)) / "input"
        assert (staged / "a.dat").read_text() == "A" * 100
        assert (staged / "sub" / "b.dat").read_text() == "B"
    (Path(jobdir(site, "tmpfs")) / "result.txt").write_text("done\n")
    (Path(jobdir(site, "nvme")) / "scratch.txt").write_text("not staged out\n")
    data_out(site, rec)
    assert (out / "result.txt").read_text() == "done\n"
    assert (out / "input" / "a.dat").exists()
    assert not (out / "scratch.txt").exists()            # nvme is not an out tier
    teardown(site, "17")
    assert not Path(jobdir(site, "nvme")).exists() and not Path(jobdir(site, "tmpfs")).exists()
    assert load_record(site, "17") is None
    assert (out / "result.txt").exists() and (src / "a.dat").exists()
    teardown(site, "17")                                  # nothing left: a no-op


def test_without_stage_paths_nothing_is_copied(site):
    rec = setup(site, "17", 0, 0, "alice", bb(site))
    data_in(site, rec)
    data_out(site, rec)
    assert list(Path(jobdir(site, "nvme")).iterdir()) == []


def test_copies_run_as_the_job_user(site, base):
    """Staging never reads what the user could not: a root-only file stays put."""
    secret = base / "secret"
    secret.write_text("root only")
    secret.chmod(0o600)
    public = base / "public"
    public.write_text("anyone")
    public.chmod(0o644)
    rec = setup(site, "17", NOBODY, NOBODY, "alice", bb(site, extra=f" stage_in={secret}"))
    with pytest.raises(QosPluginError, match="cp -a: .*Permission denied"):
        data_in(site, rec)
    assert not (Path(jobdir(site, "nvme")) / "secret").exists()
    rec = setup(site, "18", NOBODY, NOBODY, "alice", bb(site, extra=f" stage_in={public}"))
    data_in(site, rec)
    copied = Path(jobdir(site, "nvme")) / "public"
    assert copied.read_text() == "anyone" and copied.stat().st_uid == NOBODY


def test_failed_stage_out_is_a_one_line_error(site, base):
    (base / "afile").write_text("x")
    rec = setup(site, "17", 0, 0, "alice", bb(site, extra=f" stage_out={base}/afile/out"))
    with pytest.raises(QosPluginError) as e:
        data_out(site, rec)
    assert str(e.value).startswith("mkdir -p:") and "\n" not in str(e.value)


def write_record(site: Site, job: str, dirs: dict[str, str]) -> None:
    (site.state_dir / "nodes" / HOST).mkdir(parents=True, exist_ok=True)
    rec = {"job": job, "uid": 0, "gid": 0, "id": PID, "dirs": dirs, "in_tiers": [],
           "out_tiers": []}
    (site.state_dir / "nodes" / HOST / f"{job}.json").write_text(json.dumps(rec))


@pytest.mark.parametrize("forged", [
    "{victim}/alice/" + PID,                                   # outside the tier
    "{nvme}/alice/" + PID + "/../../../../victim/alice/" + PID,  # climbs out
    "{nvme}/alice/data",                                       # not a placement id
    "{nvme}/alice",                                            # the user's whole directory
    "{link}",                                                  # symlink to elsewhere
])
def test_teardown_refuses_to_delete_outside_the_tier(site, base, forged):
    victim = base / "victim" / "alice" / PID
    victim.mkdir(parents=True)
    (victim / "keep").write_text("precious")
    data = site.tiers["nvme"].path / "alice" / "data"
    data.mkdir(parents=True)
    link = site.tiers["nvme"].path / "alice" / "q111111111111"
    link.symlink_to(victim)
    path = forged.format(victim=base / "victim", nvme=site.tiers["nvme"].path, link=link)
    write_record(site, "17", {"nvme": path})
    teardown(site, "17")
    assert (victim / "keep").read_text() == "precious"
    assert data.is_dir() and link.is_symlink()
    assert load_record(site, "17") is None                     # the record still goes


def test_teardown_removes_only_job_directories_under_the_tier(site):
    good = Path(jobdir(site, "nvme"))
    (good / "deep").mkdir(parents=True)
    other = Path(jobdir(site, "nvme", pid="q222222222222"))
    other.mkdir()
    write_record(site, "17", {"nvme": str(good)})
    teardown(site, "17")
    assert not good.exists() and other.is_dir() and good.parent.is_dir()


# --- space --------------------------------------------------------------------------

def test_free_bytes_uses_the_capacity_less_what_the_tier_holds(base):
    site = make_site(base, nvme_capacity="10KiB")
    assert free_bytes(site, "nvme") == 10 * 1024
    (site.tiers["nvme"].path / "old").mkdir()
    (site.tiers["nvme"].path / "old" / "f").write_bytes(b"x" * 4096)
    assert free_bytes(site, "nvme") == 6 * 1024
    (site.tiers["nvme"].path / "old" / "g").write_bytes(b"x" * 8192)
    assert free_bytes(site, "nvme") == 0
    st = os.statvfs(site.tiers["tmpfs"].path)            # no capacity: the file system's
    assert free_bytes(site, "tmpfs") == st.f_bavail * st.f_frsize


def test_stage_in_larger_than_the_capacity_is_refused_with_the_reason(base):
    site = make_site(base, nvme_capacity="4KiB")
    src = base / "big"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 3000)
    (src / "b").write_bytes(b"x" * 2000)
    with pytest.raises(InputError) as e:
        setup(site, "17", 0, 0, "alice", bb(site, extra=f" stage_in={src}"))
    msg = str(e.value)
    assert f"tier nvme: out of space on {HOST}" in msg and "needs 4.9 KiB, 4.0 KiB free" in msg
    assert "(capacity 4.0 KiB)" in msg and "--qos-exclude-tier=nvme" in msg
    assert not Path(jobdir(site, "nvme")).exists() and load_record(site, "17") is None
    # The same stage-in into a tier without the limit (and the small tier not an in
    # tier) is fine: only the tiers the input goes to are checked.
    rec = setup(site, "18", 0, 0, "alice", bb(site, inn="tmpfs", extra=f" stage_in={src}"))
    assert rec.in_tiers == ["tmpfs"]


# --- the node hooks: from the job's environment, as slurmd runs them ------------------

def _env(site: Site, job: str = "17", **extra: str) -> dict[str, str]:
    from qos_plugin.slurm.placement import Placement

    p = Placement(id=PID, workflow="w@1", nodes=1, makespan=1.0, region=0, rule="",
                  stages={"a": "nvme", "b": "lustre"},
                  dirs={"nvme": jobdir(site, "nvme", "root"),
                        "lustre": jobdir(site, "lustre", "root")},
                  local=["nvme"], in_tiers=["nvme", "lustre"], out_tiers=["nvme"],
                  stage_in=extra.pop("stage_in", ""), stage_out=extra.pop("stage_out", ""))
    env = {f"SPANK_{k}": v for k, v in p.to_env().items()}
    return {**env, "SLURM_JOB_ID": job, "SLURM_JOB_UID": "0", "SLURM_JOB_GID": "0", **extra}


def test_node_prolog_and_epilog_stage_the_node_local_part_only(site, base, monkeypatch):
    cancelled: list[tuple[str, str]] = []
    monkeypatch.setattr("qos_plugin.slurm.staging.cancel_job",
                        lambda job, why: cancelled.append((job, why)))
    conf = str(base / "site.toml")
    src = base / "in.txt"
    src.write_text("input")
    out = base / "out"
    assert node_prolog(conf, _env(site, stage_in=str(src), stage_out=str(out))) == 0
    assert (Path(jobdir(site, "nvme", "root")) / "in.txt").read_text() == "input"
    assert not Path(jobdir(site, "lustre", "root")).exists()       # the controller's part
    (Path(jobdir(site, "nvme", "root")) / "result").write_text("r")
    assert node_epilog(conf, {"SLURM_JOB_ID": "17"}) == 0
    assert (out / "result").read_text() == "r" and (out / "in.txt").exists()
    assert not Path(jobdir(site, "nvme", "root")).exists() and load_record(site, "17") is None
    assert node_epilog(conf, {"SLURM_JOB_ID": "17"}) == 0      # nothing left: a no-op
    # The request's fault (a missing input) cancels the job, the node stays in service.
    assert node_prolog(conf, _env(site, "18", stage_in=str(base / "nothing"))) == 0
    assert cancelled and cancelled[0][0] == "18" and "does not exist" in cancelled[0][1]
    assert not Path(jobdir(site, "nvme", "root")).exists() and load_record(site, "18") is None
    # A node fault (the site cannot be read) fails the prolog: Slurm drains the node.
    assert node_prolog(str(base / "missing.toml"), _env(site, "19")) == 1
    # A job without a placement is none of the hooks' business.
    assert node_prolog(conf, {"SLURM_JOB_ID": "20"}) == 0


# --- the controller prolog's shared-tier directories (the same rule) -----------------

def test_prolog_takes_only_the_exact_shared_tier_directory(site):
    from qos_plugin.slurm.jobhooks import _shared
    from qos_plugin.slurm.placement import Placement

    def placement(pid=PID, lustre=None):
        return Placement(id=pid, workflow="w@1", nodes=1, makespan=1.0, region=0, rule="",
                         stages={"a": "lustre", "b": "nvme"},
                         dirs={"lustre": lustre or jobdir(site, "lustre", NOBODY_NAME, pid),
                               "nvme": jobdir(site, "nvme", NOBODY_NAME, pid)},
                         local=["nvme"], in_tiers=["lustre"], out_tiers=["nvme"])

    env = {"SLURM_JOB_UID": str(NOBODY), "SLURM_JOB_GID": str(NOBODY), "SLURM_JOB_ID": "5"}
    rec = _shared(site, placement(), env)
    assert rec.dirs == {"lustre": jobdir(site, "lustre", NOBODY_NAME)}   # nodes do nvme
    assert rec.in_tiers == ["lustre"] and rec.out_tiers == []
    lustre = site.tiers["lustre"].path
    for forged in (str(lustre), str(lustre / "bob" / PID), "/etc"):
        with pytest.raises(QosPluginError, match="it must be"):
            _shared(site, placement(lustre=forged), env)
    with pytest.raises(QosPluginError, match="bad placement id"):
        _shared(site, placement(pid="q1", lustre=str(lustre / NOBODY_NAME / "q1")), env)
    with pytest.raises(QosPluginError, match="no job user"):
        _shared(site, placement(), {k: v for k, v in env.items() if k != "SLURM_JOB_UID"})


def test_make_job_dir_never_follows_a_planted_link(tmp_path):
    """A user who can write the tier root must not get a root-owned directory chowned
    to them through a symlink (as setup and the prolog run as root)."""
    import os

    from qos_plugin.errors import QosPluginError
    from qos_plugin.slurm.staging import make_job_dir

    root = tmp_path / "tier"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.mkdir()
    job = root / "eve" / "q0123456789ab"
    # <root>/<user> as a link to a root-owned directory
    (root / "eve").symlink_to(victim)
    with pytest.raises(QosPluginError, match="not a directory owned by root"):
        make_job_dir(root, job, 65534, 65534, 0o700)
    assert os.stat(victim).st_uid == 0 and not (victim / "q0123456789ab").exists()
    # <root>/<user> made by the user beforehand
    (root / "eve").unlink()
    (root / "eve").mkdir()
    os.chown(root / "eve", 65534, 65534)
    with pytest.raises(QosPluginError, match="not a directory owned by root"):
        make_job_dir(root, job, 65534, 65534, 0o700)
    # the job directory itself a link
    os.chown(root / "eve", 0, 0)
    job.symlink_to(victim)
    with pytest.raises(QosPluginError, match="exists and is not a directory"):
        make_job_dir(root, job, 65534, 65534, 0o700)
    assert os.stat(victim).st_uid == 0
    # the good case: a real directory owned by the user inside a root-owned one
    job.unlink()
    make_job_dir(root, job, 65534, 65534, 0o700)
    st = os.lstat(job)
    assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o700)
    assert os.lstat(root / "eve").st_uid == 0
    with pytest.raises(QosPluginError, match="is not <tier>/<user>/<id>"):
        make_job_dir(root, tmp_path / "elsewhere" / "eve" / "q0123456789ab", 1, 1, 0o700)


def test_setup_takes_the_user_from_the_uid_and_never_hands_over_another_jobs_dir(site):
    """A forged scontrol field cannot name another user: the hook passes no name and
    setup looks the uid up; a directory that exists for another uid is refused."""
    import pwd

    nobody = pwd.getpwuid(NOBODY).pw_name
    rec = setup(site, "30", NOBODY, NOBODY, None, bb(site, user=nobody))
    assert Path(rec.dirs["nvme"]).stat().st_uid == NOBODY
    with pytest.raises(InputError, match="it must be"):
        setup(site, "31", NOBODY, NOBODY, None, bb(site, user="alice"))
    # the same directories requested by root's job: they belong to job 30's user
    with pytest.raises(QosPluginError, match="belongs to another job"):
        setup(site, "32", 0, 0, nobody, bb(site, user=nobody))
    assert Path(rec.dirs["nvme"]).stat().st_uid == NOBODY


def test_stage_in_size_is_measured_as_the_user(site, base):
    """Root's view of a tree the user cannot read never reaches the user."""
    secret = base / "private"
    secret.mkdir(mode=0o700)
    (secret / "x").write_bytes(b"x" * 1000)
    with pytest.raises(InputError, match="does not exist or alice cannot read it"):
        setup(site, "33", NOBODY, NOBODY, "alice", bb(site, extra=f" stage_in={secret}"))
