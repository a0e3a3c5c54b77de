"""Node-local tiers on each of a job's nodes: the job's directories, its stage-in and
stage-out, and their removal (also when the job fails or is cancelled).

Run by slurmd on every node of the job, as root, in that node's own namespaces: the
node Prolog at allocation (``PrologFlags=Alloc``: before the batch script starts on any
node) and the node Epilog when the job ends. Both read the placement from the job's
environment (``SPANK_QOS_*``), which a user can write with a SPANK plugin of their own,
so nothing in it is trusted: every directory must be exactly ``<tier>/<job user>/<id>``
on a configured node-local tier, and every copy runs as the job's user with the user's
groups, so staging never reads or writes what the user could not. The prolog records
the checked request in ``<state_dir>/nodes/<host>/<job>.json``; the epilog works from
that record only.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from qos_plugin.errors import InputError, QosPluginError
from qos_plugin.slurm.placement import PLACEMENT_ID, SPANK_PROLOG_PREFIX, Placement
from qos_plugin.slurm.site import Site, SiteTier, load_site

log = logging.getLogger(__name__)


REQUEST = "the job's placement"


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


def words_of(p: Placement, site: Site) -> dict[str, str]:
    """The node-local part of a placement, in the words :func:`check_request` checks."""
    local = [t for t in p.dirs if t in site.tiers and site.tiers[t].is_local]
    return {"id": p.id, "dirs": ",".join(f"{t}={p.dirs[t]}" for t in local),
            "in": ",".join(t for t in p.in_tiers if t in local),
            "out": ",".join(t for t in p.out_tiers if t in local),
            "stage_in": p.stage_in, "stage_out": p.stage_out}


def check_request(site: Site, job: str, user: str, uid: int, gid: int,
                  words: dict[str, str]) -> StagingRecord:
    pid = words.get("id", "")
    if not PLACEMENT_ID.fullmatch(pid):
        raise InputError(REQUEST, f"id {pid!r} is not a placement id",
                         "submit with --qos-* options")
    dirs: dict[str, str] = {}
    for item in filter(None, words.get("dirs", "").split(",")):
        tier, _, d = item.partition("=")
        t = site.tier(tier)
        if not t.is_local:
            raise InputError(REQUEST, f"tier {tier!r} is not node-local",
                             "only node-local tiers are staged")
        want = t.job_root / user / pid
        if Path(d) != want:
            raise InputError(REQUEST, f"directory {d!r} on tier {tier}",
                             f"it must be {want}")
        dirs[tier] = d
    if not dirs:
        raise InputError(REQUEST, "no node-local tier directories",
                         "submit with --qos-* options")

    def tiers(key: str) -> list[str]:
        names = [t for t in words.get(key, "").split(",") if t]
        bad = [t for t in names if t not in dirs]
        if bad:
            raise InputError(REQUEST, f"{key} tier {bad[0]!r} has no directory",
                             "submit with --qos-* options")
        return names
    for key in ("stage_in", "stage_out"):
        if words.get(key) and not os.path.isabs(words[key]):
            raise InputError(REQUEST, f"{key} {words[key]!r} is not absolute",
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


def _record_path(site: Site, job: str, host: str | None = None) -> Path:
    return site.state_dir / "nodes" / (host or socket.gethostname()) / f"{job}.json"


def load_record(site: Site, job: str, host: str | None = None) -> StagingRecord | None:
    try:
        return StagingRecord(**json.loads(_record_path(site, job, host).read_text()))
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


def as_user(rec: StagingRecord, argv: list[str]) -> str:
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
          words: dict[str, str]) -> StagingRecord:
    """Check the request, the space it needs, and make the job's directories on this
    node. ``uid`` and ``gid`` come from slurmd; ``user`` None takes the name from the
    uid, never from the job's text."""
    if user is None:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            raise QosPluginError(f"uid {uid} has no user name on this host") from None
    rec = check_request(site, job, user, uid, gid, words)
    need = 0
    if rec.stage_in:
        # Measured as the user: root must not tell the user what exists or how big.
        try:
            out = as_user(rec, ["find", rec.stage_in, "-type", "f", "-printf", "%s\n"])
            need = sum(int(x) for x in out.split())
        except (QosPluginError, ValueError):
            raise InputError("--qos-stage-in", f"{rec.stage_in!r} does not exist or {user} "
                             "cannot read it", "give a file or directory you can read") \
                from None
    for tier in rec.in_tiers:
        free = free_bytes(site, tier)
        if need > free:
            cap = site.tiers[tier].capacity
            raise InputError(f"tier {tier}", f"out of space on {socket.gethostname()}: the "
                             f"stage-in needs {_size(need)}, {_size(free)} free"
                             + (f" (capacity {_size(cap)})" if cap else ""),
                             f"exclude it with --qos-exclude-tier={tier} or stage less")
    # The record before the directories: a teardown after a failure below must find
    # what was made.
    rp = _record_path(site, job)
    rp.parent.mkdir(parents=True, exist_ok=True)
    rp.write_text(json.dumps(asdict(rec)))
    for tier, d in rec.dirs.items():
        t = site.tier(tier)
        make_job_dir(t.path, store_dir(t, d), uid, gid, 0o700)
    log.info("job %s: node-local directories %s", job, rec.dirs)
    return rec


def data_in(site: Site, rec: StagingRecord) -> None:
    if not rec.stage_in:
        return
    for tier in rec.in_tiers:
        as_user(rec, ["cp", "-a", "--", rec.stage_in, rec.dirs[tier] + "/"])
        log.info("job %s: staged %s into %s", rec.job, rec.stage_in, rec.dirs[tier])


def copy_contents(rec: StagingRecord, src: str, dest: str) -> None:
    """Copy what ``src`` holds into ``dest`` (made if missing), as the job's user.
    ``dest`` keeps its own mode and owner: ``cp -a src/. dest`` would give it the job
    directory's 0700."""
    as_user(rec, ["mkdir", "-p", "--", dest])
    as_user(rec, ["find", src, "-mindepth", "1", "-maxdepth", "1", "-exec",
                   "cp", "-a", "-t", dest, "--", "{}", "+"])


def data_out(site: Site, rec: StagingRecord) -> None:
    if not rec.stage_out:
        return
    for tier in rec.out_tiers:
        copy_contents(rec, rec.dirs[tier], rec.stage_out)
        log.info("job %s: staged %s out to %s", rec.job, rec.dirs[tier], rec.stage_out)


def store_dir(t: SiteTier, job_dir: str) -> Path:
    """Where a job directory the job sees as ``<job root>/<user>/<id>`` is kept: the same
    for a tier used directly, in the store behind the daemons for an enforced one."""
    d = Path(job_dir)
    return t.path / d.parent.name / d.name


def remove_job_dir(root: Path, d: str, job: str) -> bool:
    """Delete a job directory as root, only if it is ``<root>/<user>/<placement id>``."""
    path = Path(d)
    # Checked when made; checked again because this deletes as root.
    if path.parent.parent != root or not PLACEMENT_ID.fullmatch(path.name) \
            or path.resolve().parent.parent != root.resolve():
        log.error("job %s: refusing to remove %s (not under %s)", job, d, root)
        return False
    shutil.rmtree(path, ignore_errors=True)
    log.info("job %s: removed %s", job, d)
    return True


def teardown(site: Site, job: str) -> None:
    rec = load_record(site, job)
    if rec is None:
        log.info("job %s: nothing to tear down", job)
        return
    for tier, d in rec.dirs.items():
        t = site.tier(tier)
        remove_job_dir(t.path, str(store_dir(t, d)), job)
    _record_path(site, job).unlink(missing_ok=True)


def cancel_job(job: str, why: str) -> None:
    """End a job whose staging failed through the user's doing, with the reason in its
    record, without failing the prolog: a failed prolog drains the node."""
    note = why.replace("\n", " ")[:900]
    subprocess.run(["scontrol", "update", f"JobId={job}", f"AdminComment={note}"],
                   capture_output=True, text=True, timeout=30)
    subprocess.run(["scancel", job], capture_output=True, text=True, timeout=30)


def node_prolog(site_path: str | None, env: dict[str, str]) -> int:
    """slurmd's Prolog on each of the job's nodes: directories and stage-in. Exit 1 only
    for a fault of the node (Slurm drains it); a fault of the request cancels the job."""
    job = env.get("SLURM_JOB_ID", "")
    try:
        p = Placement.from_env(env, SPANK_PROLOG_PREFIX)
    except InputError as e:
        log.error("job %s: %s", job, e)
        cancel_job(job, f"qos: {e}")
        return 0
    if p is None:
        return 0
    try:
        site = load_site(site_path)
    except QosPluginError as e:
        log.error("job %s: node prolog: %s", job, e)
        return 1
    try:
        words = words_of(p, site)
        if not words["dirs"]:
            return 0
        uid, gid = int(env.get("SLURM_JOB_UID", "-1")), int(env.get("SLURM_JOB_GID", "-1"))
        if uid < 0 or gid < 0:
            raise QosPluginError(f"job {job}: slurmd gave no SLURM_JOB_UID/GID")
        rec = setup(site, job, uid, gid, None, words)
        data_in(site, rec)
    except InputError as e:
        log.error("job %s: node prolog: %s", job, e)
        try:
            teardown(site, job)
        except (QosPluginError, OSError):
            pass
        cancel_job(job, f"qos: {e}")
        return 0
    except (QosPluginError, OSError) as e:
        log.error("job %s: node prolog: %s", job, e)
        return 1
    return 0


def node_epilog(site_path: str | None, env: dict[str, str]) -> int:
    """slurmd's Epilog on each node: stage-out, then remove the job's directories. Never
    fails: a failed epilog drains the node, and the job is over either way."""
    job = env.get("SLURM_JOB_ID", "")
    try:
        site = load_site(site_path)
        rec = load_record(site, job)
        if rec is None:
            return 0
        try:
            data_out(site, rec)
        except QosPluginError as e:
            log.error("job %s: stage-out on %s: %s", job, socket.gethostname(), e)
        teardown(site, job)
    except (QosPluginError, OSError) as e:
        log.error("job %s: node epilog: %s", job, e)
    return 0
