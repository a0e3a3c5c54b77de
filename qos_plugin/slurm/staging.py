"""The burst-buffer hooks: a job's node-local tier directories, its stage-in and
stage-out, and their teardown (also when the job fails or is cancelled).

burst_buffer.lua calls ``qos-slurm bb HOOK JOBID [UID GID]`` and shows the user the
``error: ...`` line when a hook fails. The job's parameters travel in its burst
buffer request, set by job_submit.lua from the placement::

    #BB_LUA qos id=q0123456789ab dirs=ram=/tiers/ram/alice/q0123456789ab in=ram out=ram
            stage_in=/home/alice/input stage_out=/home/alice/results

A user can write that line too, so nothing in it is trusted: every directory must
be exactly ``<tier path>/<job user>/<id>`` on a configured node-local tier.
Copies run as the job's user, so staging never reads or writes what the user could
not. Setup records the checked request in ``<state_dir>/bb/<job>.json``; the later
hooks work from that record only.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from qos_plugin.errors import InputError, QosPluginError
from qos_plugin.slurm.placement import PLACEMENT_ID, env_name
from qos_plugin.slurm.site import Site, load_site

log = logging.getLogger(__name__)
BB_TAG = "#BB_LUA qos"


@dataclass
class StagingRecord:
    job: str
    uid: int
    gid: int
    id: str
    dirs: dict[str, str]
    in_tiers: list[str]
    out_tiers: list[str]
    stage_in: str = ""
    stage_out: str = ""


def parse_bb(text: str) -> dict[str, str]:
    """The key=value words after ``#BB_LUA qos`` (the first such line)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(BB_TAG + " ") or line == BB_TAG:
            out = {}
            for word in line[len(BB_TAG):].split():
                k, sep, v = word.partition("=")
                if not sep:
                    raise InputError("burst buffer request", f"{word!r} is not key=value",
                                     "submit with --qos-* options, not by hand")
                out[k] = v
            return out
    raise InputError("burst buffer request", "no '#BB_LUA qos' line",
                     "submit with --qos-* options, not by hand")


def check_request(site: Site, job: str, user: str, uid: int, gid: int,
                  words: dict[str, str]) -> StagingRecord:
    pid = words.get("id", "")
    if not PLACEMENT_ID.fullmatch(pid):
        raise InputError("burst buffer request", f"id {pid!r} is not a placement id",
                         "submit with --qos-* options")
    dirs: dict[str, str] = {}
    for item in filter(None, words.get("dirs", "").split(",")):
        tier, _, d = item.partition("=")
        t = site.tier(tier)
        if not t.is_local:
            raise InputError("burst buffer request", f"tier {tier!r} is not node-local",
                             "only node-local tiers are staged")
        want = t.path / user / pid
        if Path(d) != want:
            raise InputError("burst buffer request", f"directory {d!r} on tier {tier}",
                             f"it must be {want}")
        dirs[tier] = d
    if not dirs:
        raise InputError("burst buffer request", "no node-local tier directories",
                         "submit with --qos-* options")

    def tiers(key: str) -> list[str]:
        names = [t for t in words.get(key, "").split(",") if t]
        bad = [t for t in names if t not in dirs]
        if bad:
            raise InputError("burst buffer request", f"{key} tier {bad[0]!r} has no directory",
                             "submit with --qos-* options")
        return names
    for key in ("stage_in", "stage_out"):
        if words.get(key) and not os.path.isabs(words[key]):
            raise InputError("burst buffer request", f"{key} {words[key]!r} is not absolute",
                             "give the full path")
    return StagingRecord(job, uid, gid, pid, dirs, tiers("in"), tiers("out"),
                         words.get("stage_in", ""), words.get("stage_out", ""))


def make_job_dir(root: Path, path: Path, uid: int, gid: int, mode: int) -> None:
    """Create ``root/<user>/<id>`` for the job's user, as root, without following a
    link the user planted: ``root/<user>`` must be a real directory owned by root (so
    the user cannot race in it), and the job directory a real directory."""
    user_dir = path.parent
    if user_dir.parent != root:
        raise QosPluginError(f"{path} is not <tier>/<user>/<id> under {root}")
    root.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(user_dir, 0o755)
    except FileExistsError:
        pass
    st = os.lstat(user_dir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise QosPluginError(f"{user_dir} is not a directory owned by root; an "
                             "administrator must remove it")
    os.chmod(user_dir, 0o755)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise QosPluginError(f"{path} exists and is not a directory") from None
        # Never hand over a directory someone else made (another job's).
        if st.st_uid not in (uid, 0) or (st.st_uid == 0 and any(os.scandir(path))):
            raise QosPluginError(f"{path} exists and belongs to another job") from None
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, mode)


def _record_path(site: Site, job: str) -> Path:
    return site.state_dir / "bb" / f"{job}.json"


def _env_path(site: Site, job: str) -> Path:
    return site.state_dir / "bb" / f"{job}.env"


def load_record(site: Site, job: str) -> StagingRecord | None:
    try:
        return StagingRecord(**json.loads(_record_path(site, job).read_text()))
    except FileNotFoundError:
        return None


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def free_bytes(site: Site, tier: str) -> int:
    t = site.tier(tier)
    st = os.statvfs(t.path)
    free = st.f_bavail * st.f_frsize
    if t.capacity is not None:
        free = min(free, t.capacity - _tree_bytes(t.path))
    return max(0, free)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def _as_user(rec: StagingRecord, argv: list[str]) -> str:
    """Run ``argv`` as the job's user (with the user's groups); its stdout."""
    try:
        groups = os.getgrouplist(pwd.getpwuid(rec.uid).pw_name, rec.gid)
    except KeyError:
        groups = []
    p = subprocess.run(argv, user=rec.uid, group=rec.gid, extra_groups=groups,
                       capture_output=True, text=True)
    if p.returncode:
        raise QosPluginError(f"{' '.join(argv[:2])}: {p.stderr.strip() or 'failed'}")
    return p.stdout


def setup(site: Site, job: str, uid: int, gid: int, user: str | None,
          bb: str) -> StagingRecord:
    """``uid`` and ``gid`` come from slurmctld. ``user`` None (what the hook passes)
    takes the name from the uid, never from the job's text: a comment or job name can
    imitate any scontrol field."""
    if user is None:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            raise QosPluginError(f"uid {uid} has no user name on this host") from None
    rec = check_request(site, job, user, uid, gid, parse_bb(bb))
    need = 0
    if rec.stage_in:
        # Measured as the user: root must not tell the user what exists or how big.
        try:
            out = _as_user(rec, ["find", rec.stage_in, "-type", "f", "-printf", "%s\n"])
            need = sum(int(x) for x in out.split())
        except (QosPluginError, ValueError):
            raise InputError("--qos-stage-in", f"{rec.stage_in!r} does not exist or {user} "
                             "cannot read it", "give a file or directory you can read") \
                from None
    for tier in rec.in_tiers:
        free = free_bytes(site, tier)
        if need > free:
            cap = site.tiers[tier].capacity
            raise QosPluginError(f"tier {tier} is out of space: the stage-in needs "
                                 f"{_size(need)}, {_size(free)} free"
                                 + (f" (capacity {_size(cap)})" if cap else "")
                                 + f"; exclude it with --qos-exclude-tier={tier} or stage less")
    # The record before the directories: a teardown after a failure below must find
    # what was made.
    rp = _record_path(site, job)
    rp.parent.mkdir(parents=True, exist_ok=True)
    rp.write_text(json.dumps(asdict(rec)))
    for tier, d in rec.dirs.items():
        make_job_dir(site.tier(tier).path, Path(d), uid, gid, 0o700)
    # What paths() hands to the job (burst_buffer.lua copies it; it must not block).
    _env_path(site, job).write_text("".join(f"QOS_DIR_{env_name(t)}={d}\n"
                                            for t, d in rec.dirs.items()))
    log.info("job %s: node-local directories %s", job, rec.dirs)
    return rec


def data_in(site: Site, rec: StagingRecord) -> None:
    if not rec.stage_in:
        return
    for tier in rec.in_tiers:
        _as_user(rec, ["cp", "-a", "--", rec.stage_in, rec.dirs[tier] + "/"])
        log.info("job %s: staged %s into %s", rec.job, rec.stage_in, rec.dirs[tier])


def data_out(site: Site, rec: StagingRecord) -> None:
    if not rec.stage_out:
        return
    for tier in rec.out_tiers:
        _as_user(rec, ["mkdir", "-p", "--", rec.stage_out])
        _as_user(rec, ["cp", "-a", "--", rec.dirs[tier] + "/.", rec.stage_out + "/"])
        log.info("job %s: staged %s out to %s", rec.job, rec.dirs[tier], rec.stage_out)


def teardown(site: Site, job: str) -> None:
    rec = load_record(site, job)
    if rec is None:
        log.info("job %s: nothing to tear down", job)
        return
    for tier, d in rec.dirs.items():
        root = site.tier(tier).path.resolve()
        path = Path(d)
        # Checked at setup; checked again because this deletes as root.
        if path.resolve().parent.parent != root or not PLACEMENT_ID.fullmatch(path.name):
            log.error("job %s: refusing to remove %s (not under %s)", job, d, root)
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("job %s: removed %s", job, d)
    _record_path(site, job).unlink(missing_ok=True)
    _env_path(site, job).unlink(missing_ok=True)


def run_hook(site_path: str | None, hook: str, job: str, uid: int | None,
             gid: int | None) -> int:
    """One hook; prints ``ok`` or ``error: <one line>`` for burst_buffer.lua."""
    try:
        site = load_site(site_path)
        if hook == "setup":
            from qos_plugin.slurm.slurmapi import slurm_client

            if uid is None or gid is None:
                raise QosPluginError("setup needs the job's uid and gid from slurmctld")
            info = slurm_client().job(job)
            if info is None:
                raise QosPluginError(f"job {job} is unknown to Slurm")
            setup(site, job, uid, gid, None, info.burst_buffer)
        elif hook == "teardown":
            teardown(site, job)
        else:
            rec = load_record(site, job)
            if rec is None:
                raise QosPluginError(f"job {job} has no staging record; setup did not run")
            (data_in if hook == "data_in" else data_out)(site, rec)
    except (QosPluginError, OSError) as e:
        log.error("job %s: bb %s: %s", job, hook, e)
        print(f"error: qos {hook}: {e}")
        return 1
    print("ok")
    return 0
