"""PrologSlurmctld and EpilogSlurmctld: a QoS job's shared-tier directories and its
bandwidth reservations on the daemons, made at allocation and released at the end
(Slurm runs EpilogSlurmctld for completed, failed and cancelled jobs alike).

A shared tier's reservation is split evenly over the daemons that serve it (files
are striped over them); a node-local tier's rate is reserved per node on each of its
daemons. When a daemon cannot be reached the site's ``on_unavailable`` decides:
``open`` runs the job without that reservation (logged), ``closed`` fails the prolog
(Slurm then requeues and holds the job).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from qos_plugin.errors import QosPluginError
from qos_plugin.slurm.placement import PLACEMENT_ID, SPANK_PROLOG_PREFIX, Placement
from qos_plugin.slurm.site import Site, load_site
from qos_plugin.slurm.staging import make_job_dir

log = logging.getLogger(__name__)
MiB = 1 << 20


def reservations(site: Site, p: Placement) -> list[tuple[str, str, float]]:
    """(daemon, tier, bytes/s) for each reservation the placement needs."""
    out = []
    for tier, mibps in p.bandwidth.items():
        t = site.tier(tier)
        if not t.daemons or mibps <= 0:
            continue
        share = mibps * MiB if t.is_local else mibps * MiB / len(t.daemons)
        out += [(d, tier, share) for d in t.daemons]
    return out


def _job(env: Mapping[str, str]) -> tuple[str, Placement | None]:
    job = env.get("SLURM_JOB_ID", "")
    return job, Placement.from_env(env, SPANK_PROLOG_PREFIX)


def _make_shared_dirs(site: Site, p: Placement, env: Mapping[str, str]) -> None:
    """``<tier>/<user>/<id>`` on each shared tier, owned by the job's user. The
    placement came through the job's environment, so it is checked like user input:
    these run as root."""
    uid, gid = int(env.get("SLURM_JOB_UID", "-1")), int(env.get("SLURM_JOB_GID", "-1"))
    user = env.get("SLURM_JOB_USER", "")
    if uid < 0 or not user or not PLACEMENT_ID.fullmatch(p.id):
        raise QosPluginError(f"no job user ({user!r}, uid {uid}) or a bad placement id "
                             f"{p.id!r}")
    for tier, d in p.dirs.items():
        t = site.tier(tier)
        if t.is_local:
            continue                  # the burst buffer's setup makes these, per node
        path = t.path / user / p.id
        if Path(d) != path:
            raise QosPluginError(f"directory {d!r} on tier {tier}: it must be {path}")
        make_job_dir(t.path, path, uid, gid, 0o755)


def prolog(site_path: str | None, env: Mapping[str, str]) -> int:
    import grpc

    from tokenbucket_daemon.client import AdminClient

    job, p = _job(env)
    if p is None:
        return 0
    try:
        site = load_site(site_path)
        _make_shared_dirs(site, p, env)
        token = site.admin_token()
    except (QosPluginError, OSError) as e:
        log.error("job %s: %s", job, e)
        return 1
    failed = []
    for daemon, tier, bps in reservations(site, p):
        client = AdminClient(daemon, token)
        try:
            client.reserve(job, bps, tier=tier, user=env.get("SLURM_JOB_USER", ""),
                           account=env.get("SLURM_JOB_ACCOUNT", ""))
            log.info("job %s: reserved %.1f MiB/s on %s tier %s", job, bps / MiB, daemon, tier)
        except grpc.RpcError as e:
            failed.append(daemon)
            log.error("job %s: reserve on %s tier %s failed: %s %s", job, daemon, tier,
                      e.code().name, e.details())
        finally:
            client.close()
    if failed and site.on_unavailable == "closed":
        log.error("job %s: on_unavailable=closed, failing the prolog", job)
        return 1
    return 0


def epilog(site_path: str | None, env: Mapping[str, str]) -> int:
    import grpc

    from tokenbucket_daemon.client import AdminClient

    job, p = _job(env)
    if p is None:
        return 0
    try:
        site = load_site(site_path)
        token = site.admin_token()
    except QosPluginError as e:
        log.error("job %s: %s", job, e)
        return 0
    daemons = dict.fromkeys(d for d, _, _ in reservations(site, p))
    for daemon in daemons:
        client = AdminClient(daemon, token)
        try:
            n = client.release(job)
            log.info("job %s: released %d reservation(s) on %s", job, n, daemon)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                log.error("job %s: release on %s failed: %s %s", job, daemon, e.code().name,
                          e.details())
        finally:
            client.close()
    return 0
