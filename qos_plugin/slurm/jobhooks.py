"""PrologSlurmctld and EpilogSlurmctld: a QoS job's shared-tier directories and its
bandwidth reservations on the daemons, made at allocation and released at the end
(Slurm runs EpilogSlurmctld for completed, failed and cancelled jobs alike).

The bandwidth comes from the model, not from the job: the placement reaches the prolog
through the job's environment, which a user can write with a SPANK plugin of their
own, so the prolog finds the placement's row in the registry and recomputes its
rates. What it reserved is recorded in ``<state_dir>/reservations/<job>.json`` for
the epilog.

A shared tier's reservation is split evenly over the daemons that serve it (files
are striped over them); a node-local tier's rate is reserved per node on each of its
daemons. When a daemon cannot be reached the site's ``on_unavailable`` decides:
``open`` runs the job without that reservation (logged), ``closed`` fails the prolog
(Slurm then requeues and holds the job).
"""

from __future__ import annotations

import json
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


def trusted_bandwidth(site: Site, p: Placement) -> dict[str, float]:
    """The placement's rates recomputed from its model; QosPluginError when the
    model has no such placement."""
    from qos_plugin.planner.query import bandwidth
    from qos_plugin.planner.registry import Registry
    from qos_plugin.slurm.plan import tier_rates

    model = Registry(site.registry).load(p.workflow)
    try:
        want = [model.tier_names.index(p.stages[s]) for s in model.stages]
    except (KeyError, ValueError):
        raise QosPluginError(f"the job's stages {p.stages} are not a placement of "
                             f"{p.workflow}") from None
    rows = [r for r in range(len(model))
            if model.nodes[r] == p.nodes and list(model.placement[r]) == want]
    if not rows:
        raise QosPluginError(f"{p.workflow} has no placement {p.stages} on {p.nodes} nodes")
    return tier_rates(site, bandwidth(model, rows[0]))


def _record(site: Site, job: str) -> Path:
    return site.state_dir / "reservations" / f"{job}.json"


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

    job = env.get("SLURM_JOB_ID", "")
    try:
        _, p = _job(env)
        if p is None:
            return 0
        site = load_site(site_path)
        _make_shared_dirs(site, p, env)
        token = site.admin_token()
        rates = trusted_bandwidth(site, p)
    except (QosPluginError, OSError) as e:
        log.error("job %s: %s", job, e)
        return 1
    if rates != p.bandwidth:
        log.warning("job %s: the job's environment asked for %s; reserving the model's %s",
                    job, p.bandwidth, rates)
    p.bandwidth = rates
    done: set[str] = set()
    failed = False
    for daemon, tier, bps in reservations(site, p):
        client = AdminClient(daemon, token)
        try:
            client.reserve(job, bps, tier=tier, user=env.get("SLURM_JOB_USER", ""),
                           account=env.get("SLURM_JOB_ACCOUNT", ""))
            done.add(daemon)
            log.info("job %s: reserved %.1f MiB/s on %s tier %s", job, bps / MiB, daemon, tier)
        except grpc.RpcError as e:
            failed = True
            log.error("job %s: reserve on %s tier %s failed: %s %s", job, daemon, tier,
                      e.code().name, e.details())
        finally:
            client.close()
    rec = _record(site, job)
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(json.dumps(sorted(done)))
    if failed and site.on_unavailable == "closed":
        log.error("job %s: on_unavailable=closed, failing the prolog", job)
        _release(job, sorted(done), token)   # nothing stays behind a failed start
        return 1
    return 0


def _release(job: str, daemons: list[str], token: str | None) -> None:
    import grpc

    from tokenbucket_daemon.client import AdminClient

    for daemon in daemons:
        client = AdminClient(daemon, token)
        try:
            n = client.release(job)
            log.info("job %s: released %d reservation(s) on %s", job, n, daemon)
        except grpc.RpcError as e:
            # Peers replicate a release: another daemon may have done it already.
            if e.code() != grpc.StatusCode.NOT_FOUND:
                log.error("job %s: release on %s failed: %s %s", job, daemon, e.code().name,
                          e.details())
        finally:
            client.close()


def epilog(site_path: str | None, env: Mapping[str, str]) -> int:
    """Release what the prolog reserved (its record), else what the placement would
    have reserved on the daemons configured now. Never fails: Slurm cannot do better."""
    job = env.get("SLURM_JOB_ID", "")
    try:
        site = load_site(site_path)
        rec = _record(site, job)
        if rec.exists():
            daemons = list(json.loads(rec.read_text()))
        else:
            _, p = _job(env)
            if p is None:
                return 0
            daemons = list(dict.fromkeys(d for d, _, _ in reservations(site, p)))
        _release(job, daemons, site.admin_token())
        rec.unlink(missing_ok=True)
    except (QosPluginError, OSError, ValueError) as e:
        log.error("job %s: epilog: %s", job, e)
    return 0
