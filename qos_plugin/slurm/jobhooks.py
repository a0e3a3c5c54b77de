"""PrologSlurmctld and EpilogSlurmctld, on the controller: a QoS job's shared-tier
directories, its stage-in to and stage-out from them, and its bandwidth reservations on
the daemons, made at allocation and released at the end (Slurm runs EpilogSlurmctld for
completed, failed and cancelled jobs alike, and for jobs whose node failed).

The bandwidth comes from the model, not from the job: the placement reaches the prolog
through the job's environment, which a user can write with a SPANK plugin of their
own, so the prolog finds the placement's row in the registry and reserves the rates
of its job contract (computed at training; see ``planner/contract.py``). What it
reserved is recorded in ``<state_dir>/reservations/<job>.json`` for the epilog.

Only tiers enforced through daemons are reserved (a direct tier's bytes never reach a
daemon). A shared tier's reservation is split evenly over the daemons that serve it
(files are striped over them); a node-local tier's per-node rate goes to the daemon of
each of the job's own nodes (``[nodes.NAME] daemon``). When a daemon cannot be reached
the site's ``on_unavailable`` decides: ``open`` runs the job without that reservation
(logged), ``closed`` fails the prolog (Slurm then requeues and holds the job).

Shared-tier job directories are made in the tier's store as root and seen by the job
through the qosfs mount; copies into and out of them run as the job's user through the
controller's own mount. They are removed by the epilog after the stage-out unless the
job asked to keep them (``--qos-keep``).
"""

from __future__ import annotations

import json
import logging
import pwd
import subprocess
from collections.abc import Mapping
from pathlib import Path

from qos_plugin.errors import InputError, QosPluginError
from qos_plugin.planner.contract import Contract, deadline_stretch
from qos_plugin.slurm.admission import Ask, admit, daemon_part
from qos_plugin.slurm.placement import PLACEMENT_ID, SPANK_PROLOG_PREFIX, Placement
from qos_plugin.slurm.site import Site, load_site
from qos_plugin.slurm.staging import (
    StagingRecord,
    cancel_job,
    copy_contents,
    data_in,
    make_job_dir,
    remove_job_dir,
    store_dir,
)

log = logging.getLogger(__name__)
MiB = 1 << 20


def reservations(site: Site, p: Placement,
                 nodes: list[str] | None = None) -> list[tuple[str, str, float]]:
    """(daemon, tier, bytes/s) for each reservation the placement needs on ``nodes``
    (the job's nodes; node-local tiers are reserved on their daemons only)."""
    out = []
    for tier, mibps in p.bandwidth.items():
        t = site.tier(tier)
        if not t.enforced or mibps <= 0:
            continue
        if t.is_local:
            daemons = [site.node_daemons[n] for n in nodes or () if n in site.node_daemons]
            out += [(d, tier, mibps * MiB) for d in daemons]
        elif t.daemons:
            out += [(d, tier, mibps * MiB / len(t.daemons)) for d in t.daemons]
    return out


def job_nodes(env: Mapping[str, str]) -> list[str]:
    """The job's node names, from Slurm's compressed list (``node[1-3]``)."""
    text = env.get("SLURM_JOB_NODELIST", "")
    if not text:
        return []
    p = subprocess.run(["scontrol", "show", "hostnames", text], capture_output=True,
                       text=True, timeout=30)
    if p.returncode:
        raise QosPluginError(f"cannot expand the node list {text!r}: {p.stderr.strip()}")
    return p.stdout.split()


def trusted_contract(site: Site, p: Placement) -> tuple[Contract, float]:
    """The job contract of the placement and its predicted makespan, read from its model
    (never from the job's environment); InputError when the model has no such placement
    or no contract."""
    from qos_plugin.planner.registry import Registry

    model = Registry(site.registry).load(p.workflow)
    if set(p.stages) != set(model.stages) or set(p.stages.values()) - set(model.tier_names):
        raise InputError("the job's placement", f"stages {p.stages} are not a placement "
                         f"of {p.workflow}", "submit the job again with --qos-* options")
    row = model.row_of(p.nodes, p.stages)
    if row is None:
        raise InputError("the job's placement", f"{p.workflow} has no placement {p.stages} "
                         f"on {p.nodes} nodes", "submit the job again with --qos-* options")
    contract = model.contract(row)
    if contract is None:
        raise InputError("the job's placement", f"model {p.workflow} has no job contracts",
                         "retrain it with 'qos-plan train' and submit the job again")
    return contract, float(model.total[row])


def trusted_bandwidth(site: Site, p: Placement) -> tuple[dict[str, float], float]:
    """The rates the placement's reservations start from, its contract's in full on this
    site's tiers, and the most the job's deadline lets them be divided by (the deadline is
    the user's own request: a forged one can only lower its own reservation, see
    ``deadline_stretch``). What is reserved between the two is admission's
    (``admission.admit``)."""
    from qos_plugin.slurm.plan import tier_rates

    contract, makespan = trusted_contract(site, p)
    return tier_rates(site, contract), deadline_stretch(makespan, p.deadline)


def _record(site: Site, job: str) -> Path:
    return site.state_dir / "reservations" / f"{job}.json"


def _job(env: Mapping[str, str]) -> tuple[str, Placement | None]:
    job = env.get("SLURM_JOB_ID", "")
    return job, Placement.from_env(env, SPANK_PROLOG_PREFIX)


def _shared(site: Site, p: Placement, env: Mapping[str, str]) -> StagingRecord:
    """The job's shared-tier directories (as the job sees them), checked like user input
    since the placement came through the job's environment and these hooks run as root."""
    uid, gid = int(env.get("SLURM_JOB_UID", "-1")), int(env.get("SLURM_JOB_GID", "-1"))
    try:
        user = pwd.getpwuid(uid).pw_name if uid >= 0 else ""
    except KeyError:
        user = ""
    if uid < 0 or gid < 0 or not user or not PLACEMENT_ID.fullmatch(p.id):
        raise QosPluginError(f"no job user (uid {uid}) or a bad placement id {p.id!r}")
    dirs = {}
    for tier, d in p.dirs.items():
        t = site.tier(tier)
        if t.is_local:
            continue                  # the node prolog makes these, on each node
        want = t.job_root / user / p.id
        if Path(d) != want:
            raise QosPluginError(f"directory {d!r} on tier {tier}: it must be {want}")
        dirs[tier] = d
    return StagingRecord(env.get("SLURM_JOB_ID", ""), uid, gid, p.id, dirs,
                         [t for t in p.in_tiers if t in dirs],
                         [t for t in p.out_tiers if t in dirs], p.stage_in, p.stage_out)


def _finish_shared(site: Site, rec: StagingRecord, keep: bool) -> None:
    """Stage-out from the shared tiers of the last level, then remove the job's shared
    directories unless it asked to keep them."""
    if rec.stage_out:
        for tier in rec.out_tiers:
            try:
                copy_contents(rec, rec.dirs[tier], rec.stage_out)
                log.info("job %s: staged %s out to %s", rec.job, rec.dirs[tier],
                         rec.stage_out)
            except QosPluginError as e:
                log.error("job %s: stage-out from %s: %s", rec.job, tier, e)
    if keep:
        log.info("job %s: keeping %s (--qos-keep)", rec.job, sorted(rec.dirs.values()))
        return
    for tier, d in rec.dirs.items():
        t = site.tier(tier)
        remove_job_dir(t.path, str(store_dir(t, d)), rec.job)


def prolog(site_path: str | None, env: Mapping[str, str]) -> int:
    import grpc

    from tokenbucket_daemon.client import AdminClient

    job = env.get("SLURM_JOB_ID", "")
    try:
        _, p = _job(env)
        if p is None:
            return 0
        site = load_site(site_path)
        shared = _shared(site, p, env)
        token = site.admin_token()
        full, most_stretch = trusted_bandwidth(site, p)
        nodes = job_nodes(env)
        for tier, d in shared.dirs.items():
            t = site.tier(tier)
            make_job_dir(t.path, store_dir(t, d), shared.uid, shared.gid, 0o700)
    except InputError as e:
        # A placement this cluster cannot hold (a forged one, or a tier the site has
        # dropped since): end the job with the reason instead of requeueing it forever.
        log.error("job %s: %s", job, e)
        cancel_job(job, f"qos: {e}")
        return 0
    except (QosPluginError, OSError) as e:
        log.error("job %s: %s", job, e)
        return 1
    try:
        # Into the shared tiers of the input stages, as the user, through this host's
        # qosfs mount (the same copy the node prolog makes into node-local tiers).
        data_in(site, shared)
    except QosPluginError as e:
        # The user's input, not the controller, failed: end the job with the reason
        # instead of requeueing it forever.
        log.error("job %s: shared stage-in: %s", job, e)
        cancel_job(job, f"qos: stage-in failed: {e}")
        return 0
    # The environment carries the least the job needs, rounded (placement.py): only a
    # real difference, a forged or stale placement, is worth a warning.
    least = {t: r / most_stretch for t, r in full.items()}
    if set(least) != set(p.bandwidth) or any(
            abs(least[t] - p.bandwidth[t]) > 1e-3 * max(1.0, abs(least[t])) for t in least):
        log.warning("job %s: the job's environment asked for %s; reserving from the "
                    "model's %s", job, p.bandwidth, least)
    p.bandwidth = full
    wanted = reservations(site, p, nodes)
    ask = asks(site, job, wanted, token)
    decision = admit(ask, most_stretch, site.reserve)
    if not decision.admitted:
        # Not started on a promise the tier cannot keep: the job ends with the reason.
        log.error("job %s: %s", job, decision.reason)
        cancel_job(job, f"qos: {decision.reason}")
        return 0
    if decision.stretch > 1.0:
        why = ("what its tiers have free" if site.reserve == "contract" else
               "reserve = least: what its deadline needs")
        log.info("job %s: reserving its contract divided by %.2f (%s; its deadline allows "
                 "%.2f)", job, decision.stretch, why, most_stretch)
    done: set[str] = set()
    failed = False
    for (daemon, tier, _), bps, limit in zip(wanted, decision.reserved(ask),
                                             decision.limits, strict=True):
        client = AdminClient(daemon, token)
        try:
            client.reserve(job, bps, tier=tier, user=env.get("SLURM_JOB_USER", ""),
                           account=env.get("SLURM_JOB_ACCOUNT", ""), limit_bps=limit)
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
    rec.write_text(json.dumps({"daemons": sorted(done), "nodes": nodes}))
    if failed and site.on_unavailable == "closed":
        # Nothing stays behind a start that did not happen; the job ends with the reason
        # (a failed PrologSlurmctld would requeue it, to fail again while the daemon is
        # down, and tell the user nothing).
        log.error("job %s: on_unavailable=closed, ending the job", job)
        _release(job, sorted(done), token)
        cancel_job(job, "qos: a storage daemon could not reserve the job's bandwidth "
                        "(on_unavailable=closed); submit again when the daemons are back")
    return 0


def asks(site: Site, job: str, wanted: list[tuple[str, str, float]],
         token: str | None) -> list[Ask]:
    """Each wanted reservation with what its daemon already holds on that tier for
    other jobs, and that daemon's part of the tier's bandwidth. A daemon that cannot be
    asked counts as holding nothing (its reserve call will fail and on_unavailable
    decides)."""
    import grpc

    from tokenbucket_daemon.client import AdminClient
    from tokenbucket_daemon.core.policy import Kind

    held: dict[str, list[tuple[str, float]]] = {}
    out = []
    for daemon, tier, bps in wanted:
        t = site.tier(tier)
        if daemon not in held and t.bandwidth is not None:
            client = AdminClient(daemon, token)
            try:
                held[daemon] = [(q.tier, q.reservation_bps) for q in client.list_policies()
                                if q.selector.kind == Kind.JOB and q.selector.value != job]
            except grpc.RpcError:
                held[daemon] = []
            finally:
                client.close()
        others = sum(b for tr, b in held.get(daemon, []) if tr in (tier, ""))
        out.append(Ask(daemon, tier, bps, others,
                       daemon_part(t.bandwidth, not t.is_local, len(t.daemons))))
    return out


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
    have reserved on the daemons configured now; stage out of and remove the shared-tier
    directories. Never fails: Slurm cannot do better."""
    job = env.get("SLURM_JOB_ID", "")
    try:
        site = load_site(site_path)
        rec = _record(site, job)
        _, p = _job(env)
        if rec.exists():
            daemons = list(json.loads(rec.read_text())["daemons"])
        elif p is not None:
            daemons = list(dict.fromkeys(d for d, _, _ in reservations(site, p,
                                                                        job_nodes(env))))
        else:
            return 0
        _release(job, daemons, site.admin_token())
        rec.unlink(missing_ok=True)
        if p is not None:
            _finish_shared(site, _shared(site, p, env), p.keep)
    except (QosPluginError, OSError, ValueError, KeyError, TypeError) as e:
        log.error("job %s: epilog: %s", job, e)
    return 0
