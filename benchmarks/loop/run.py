"""The whole loop on the local cluster: plan, reserve, enforce, meet the deadline.

One command, as root: it starts a 3-node local cluster whose shared tier is a device of
``--shared-bandwidth`` (its two daemons emulate and schedule their halves of it, as a
parallel file system's servers; see docs/daemon.md), measures the cluster's profile on a
compute node through the paths jobs use (``deploy/local/profile``), trains the workflow
``loop`` (the pipeline example's DAG at ``--scale``, sized to run in tens of seconds)
from that profile, and then:

(b) **deadline under contention.** A neighbour job writes to the shared tier as fast as
    it can (``--streams`` dd streams of 4 MiB blocks) for the whole run, while ``loop``
    runs with a deadline of 1.2 times the predicted makespan of its fastest placement,
    ``--runs`` times in each of three modes:

    * ``slurm``: no QoS, Slurm alone: every stage on the shared tier, daemons' enforcement
      off (what a user without the planner runs);
    * ``placed``: ``sbatch --qos-deadline`` (the planner's placement, its stage-in and
      reservations made) with enforcement off: what a placement alone (QoSFlow) gives;
    * ``reserved``: the same with enforcement on: ours.
    * ``least``: the same with the site's ``reserve = "least"`` and a deadline of
      ``--least-slack`` times the prediction: the job reserves what its deadline needs,
      less than the tier, for (c).

    Per run: the measured makespan (``qos-plan run --backend slurm``'s record, srun steps
    on the job's nodes), whether the deadline held, and the neighbour's throughput over
    the workflow's run (the daemons' counters of its job).

(c) **the neighbour's cost.** Its throughput alone with enforcement on and off, and,
    during the reserved runs, against what the tier has left after the workflow's
    reservation and against the spare, the tier less what the workflow moved on it over
    its run (a reservation is a floor: what the workflow leaves unused must go to it).
    In ``reserved`` the reservation is the whole tier (the contract in full, free), so
    nothing is left after it; ``least`` leaves the tier less the deadline's need.

Writes benchmarks/loop/results.json, results.md (the tables) and deadline.png; prints the
tables. ``--keep`` leaves the cluster up; ``--dir`` reuses a cluster already up there.
Validation of predictions against runs (issue 19 (a)) is `qos-plan validate --backend
slurm` (docs/validation.md), run by ``--validate``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from qos_plugin.errors import QosPluginError  # noqa: E402
from qos_plugin.examples.genome import GenomeShape  # noqa: E402
from qos_plugin.examples.genome import io_data as genome_io  # noqa: E402
from qos_plugin.examples.genome import template_dict as genome_template  # noqa: E402
from qos_plugin.examples.pipeline import pipeline  # noqa: E402
from qos_plugin.model.synthetic import TierModel  # noqa: E402
from qos_plugin.planner.contract import DEADLINE_MARGIN  # noqa: E402
from qos_plugin.planner.prediction import scale_io  # noqa: E402
from qos_plugin.planner.query import (  # noqa: E402
    Choice,
    Constraints,
    answer,
    choice,
    rank_rows,
)
from qos_plugin.planner.registry import Registry  # noqa: E402
from qos_plugin.planner.trained import TrainedModel  # noqa: E402
from qos_plugin.slurm.localcluster import TIERS, ClusterError, LocalCluster  # noqa: E402
from qos_plugin.slurm.localprofile import profile_cluster, train_workflow  # noqa: E402
from qos_plugin.slurm.plan import sustained  # noqa: E402
from qos_plugin.slurm.site import load_site, parse_rate  # noqa: E402
from qos_plugin.slurm.slurmapi import CommandBackend  # noqa: E402
from tokenbucket_daemon.client import AdminClient  # noqa: E402

PY = REPO / ".venv" / "bin" / "python"
USER = "qosuser"
MODES = ("slurm", "placed", "reserved", "least")
LABEL = {"slurm": "no QoS (Slurm alone)", "placed": "placement, no reservation",
         "reserved": "placement + reservation",
         "least": "placement + least reservation (reserve = least, looser deadline)"}
SLACK = 1.2
# (c)'s deadline for the "least" mode: loose enough that what the deadline needs is less
# than the whole tier (the stretch, DEADLINE_MARGIN x this, is above 1 from LEAST_ABOVE on).
LEAST_SLACK = 2.0
LEAST_ABOVE = 1 / DEADLINE_MARGIN
LEAST_MOST = 100.0
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING")
GIVE_UP = 4.0          # a run is stopped at this many times its deadline
MB = 1e6
MiB = 1 << 20


@dataclass
class Loop:
    """The cluster and what the experiment learnt of it."""

    root: Path
    bandwidth: float
    cluster: LocalCluster = field(init=False)
    token: str = ""
    work: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cluster = LocalCluster(self.root, 2, "open", 3, False, self.bandwidth)
        self.work = self.root / "loop"

    # -- the cluster ------------------------------------------------------------------
    def up(self) -> None:
        if (self.cluster.etc / "cluster.json").exists() and \
                "slurmctld" in self.cluster.running():
            print(f"using the cluster up in {self.root}", flush=True)
        else:
            took = self.cluster.up(USER)
            print(f"cluster up in {took:.1f} s ({self.root})", flush=True)
        self.token = (self.cluster.etc / "admin.token").read_text().strip()
        # Jobs a run stopped short (^C) left behind would be neighbours of their own.
        for name in ("neighbour", "loop", "validate"):
            subprocess.run(["scancel", f"--name={name}"], env=self.env(), capture_output=True)
        self.cluster.wait_idle(120)
        self.work.mkdir(exist_ok=True)
        self.work.chmod(0o1777)       # the neighbour (a user) writes its output here
        # The neighbour's directory on the shared tier, and the no-QoS runs'.
        for d in ("neighbour", "plain"):
            store = self.cluster.store_path("pfs") / d
            store.mkdir(exist_ok=True)
            shutil.chown(store, USER if d == "neighbour" else "root")

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.cluster.env()}

    def admins(self) -> list[AdminClient]:
        return [AdminClient(a, self.token, tls=self.cluster.admin_tls())
                for a in self.cluster.daemon_addresses()]

    @contextlib.contextmanager
    def reserve_rule(self, rule: str) -> Iterator[None]:
        """The site's ``reserve`` rule for a while (the prolog reads site.toml per job),
        the default's afterwards. A ``reserve`` line a killed run left is dropped first:
        kept, it would run every later mode under its rule (or, doubled, fail the TOML)."""
        conf = self.cluster.site_conf
        base = "".join(line for line in conf.read_text().splitlines(keepends=True)
                       if not line.startswith("reserve ="))

        def write(text: str) -> None:
            # Whole or not at all: a prolog reading it meanwhile sees one or the other.
            tmp = conf.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, conf)

        # A top-level key: before the first table.
        write(base if rule == "contract" else f'reserve = "{rule}"\n' + base)
        try:
            yield
        finally:
            write(base)

    def enforcement(self, on: bool) -> None:
        for c in self.admins():
            try:
                c.set_enforcement(on)
            finally:
                c.close()

    def job_bytes(self, job: str) -> int:
        """Bytes the job moved on the shared tier, all daemons."""
        total = 0
        for c in self.admins():
            try:
                total += sum(k.bytes_written + k.bytes_read for k in c.stats(job=job).classes
                             if k.tag == job and k.tier == "pfs")
            finally:
                c.close()
        return total

    def reserved(self, job: str) -> float:
        """The job's reservation on the shared tier, all daemons (bytes/s)."""
        total = 0.0
        for c in self.admins():
            try:
                total += sum(p.reservation_bps for p in c.list_policies()
                             if p.selector.value == job and p.tier in ("pfs", ""))
            finally:
                c.close()
        return total

    def sbatch(self, args: list[str], user: str | None = None) -> str:
        argv = ["sbatch", "--parsable", "-o", str(self.work / "slurm-%j.out"), *args]
        if user:
            argv = ["runuser", "-u", user, "--", "env",
                    f"SLURM_CONF={self.cluster.slurm_conf}", *argv]
        p = subprocess.run(argv, env=self.env(), capture_output=True, text=True,
                           cwd=self.work, timeout=60)
        if p.returncode:
            raise SystemExit(f"sbatch failed: {p.stderr.strip()}")
        return p.stdout.strip().split(";")[0]

    def state(self, job: str) -> str:
        os.environ["SLURM_CONF"] = str(self.cluster.slurm_conf)
        info = CommandBackend().job(job)
        return info.state if info is not None else "GONE"

    def cancel(self, job: str) -> None:
        subprocess.run(["scancel", job], env=self.env(), capture_output=True)
        deadline = time.monotonic() + 60
        while self.state(job) in ACTIVE and time.monotonic() < deadline:
            time.sleep(0.5)

    # -- the workflow -----------------------------------------------------------------
    def train(self, scale: float, profile: Path) -> str:
        wf = pipeline([(n, k) for n, k, *_ in TIERS],
                      {n: TierModel(r, w, c) for n, _, r, w, c in TIERS}, name="loop",
                      scale=scale)
        site = load_site(self.cluster.site_conf)
        return train_workflow(site, profile, self.root / "profile", "loop", wf.template,
                              wf.io_data(), len(self.cluster.node_names()))

    def train_genome(self, scale: float, shape: GenomeShape, profile: Path) -> str:
        """The 1000 Genomes example (its DAG and file sizes, ``shape`` chromosomes x
        individuals per chromosome) with every volume times ``scale``, as ``kgenome``."""
        site = load_site(self.cluster.site_conf)
        return train_workflow(site, profile, self.root / "profile", "kgenome",
                              genome_template(shape), scale_io(genome_io(shape), scale),
                              len(self.cluster.node_names()))

    def model(self, ref: str) -> TrainedModel:
        return Registry(load_site(self.cluster.site_conf).registry).load(ref)

    @property
    def spare(self) -> str:
        """The neighbour's node, where the workflow never runs: their contention is for
        the shared tier, not for one node's CPU and qosfs mount."""
        return self.cluster.node_names()[-1]

    def fastest_held(self, model: TrainedModel) -> Choice:
        """The fastest placement on the cluster's nodes for which a deadline of SLACK
        times its prediction is one sbatch --qos-deadline can plan: some placement
        predicted within it whose reservations, lowered by its slack, the shared tier
        sustains (docs/slurm.md). The runs use that deadline; sbatch picks the placement.
        (Not the placement's own reservations: on a tier whose every copy runs at
        about its whole rate none of them fits the tier's margin unstretched.)"""
        sustains = sustained(load_site(self.cluster.site_conf))
        rows = [r for r in range(len(model))
                if model.nodes[r] < len(self.cluster.node_names())]     # not the spare
        for r in rank_rows(model, rows, "fastest"):
            deadline = float(int(SLACK * float(model.total[r])))    # as sbatch is given it
            c = Constraints(deadline=deadline, max_nodes=int(model.nodes[r]),
                            sustains=sustains)
            if answer(model, c).feasible:
                return choice(model, r)
        raise SystemExit(f"no placement of {model.name} fits the shared tier's "
                         f"{sustains} MiB/s; give a larger --shared-bandwidth")

    def neighbour(self, streams: int) -> str:
        d = self.cluster.tier_path("pfs") / "neighbour"
        loop = (f'for i in $(seq {streams}); do (while :; do dd if=/dev/zero '
                f'of={d}/f$SLURM_JOB_ID-$i bs=4M count=32 status=none; done) & done; wait')
        job = self.sbatch(["-N1", "-n1", "-w", self.spare, "--job-name=neighbour", "--wrap",
                           loop], user=USER)
        self.wait_running(job)
        return job

    def wait_running(self, job: str, timeout: float = 120) -> None:
        t_end = time.monotonic() + timeout
        while (s := self.state(job)) != "RUNNING":
            if s not in ("PENDING", "CONFIGURING") or time.monotonic() > t_end:
                raise SystemExit(f"job {job} is {s}, not running (see "
                                 f"{self.work}/slurm-{job}.out)")
            time.sleep(0.3)

    def submit(self, mode: str, ref: str, model: TrainedModel, deadline: float,
               nodes: int, out: Path) -> str:
        registry = load_site(self.cluster.site_conf).registry
        run = (f"{PY} -m qos_plugin.cli.qos_plan run {ref} --backend slurm --out {out} "
               f"--registry {registry}")
        # The workflow's home on the shared tier (its initial data, its final outputs):
        # a directory of the run's own there, whatever the placement.
        home = self.cluster.tier_path("pfs") / "plain" / out.stem
        if mode == "slurm":
            placement = ",".join(f"{s}=pfs" for s in model.stages)
            body = (f"mkdir -p {home} && {run} --placement {placement} --nodes {nodes} "
                    f"--tier-dir pfs={home}; rc=$?; rm -rf {home}; exit $rc")
            args = [f"-N{nodes}", "--ntasks-per-node=1", f"--exclude={self.spare}",
                    "--wrap", body]
        else:
            stage_in = self.work / "input.dat"
            if not stage_in.exists():
                stage_in.write_bytes(b"\0" * 4096)
            body = (f"mkdir -p {home} && {run} --placement $SLURM_SPANK_QOS_STAGES "
                    f"--nodes $SLURM_SPANK_QOS_NODES --tier-dir pfs={home}; rc=$?; "
                    f"rm -rf {home}; exit $rc")
            args = [f"--qos-workflow={ref}", f"--qos-deadline={_slurm_time(deadline)}",
                    "--qos-objective=fastest", f"--qos-max-nodes={nodes}",
                    f"--exclude={self.spare}",
                    f"--qos-stage-in={stage_in}", "--wrap", body]
        return self.sbatch(["--job-name=loop", *args])

    def one_run(self, mode: str, ref: str, model: TrainedModel, deadline: float, nodes: int,
                neighbour: str, k: int) -> dict[str, Any]:
        with self.reserve_rule("least" if mode == "least" else "contract"):
            return self._one_run(mode, ref, model, deadline, nodes, neighbour, k)

    def _one_run(self, mode: str, ref: str, model: TrainedModel, deadline: float,
                 nodes: int, neighbour: str, k: int) -> dict[str, Any]:
        self.enforcement(mode in ("reserved", "least"))
        out = self.work / f"run-{mode}-{k}-{time.monotonic_ns()}.json"
        job = self.submit(mode, ref, model, deadline, nodes, out)
        samples: list[tuple[float, int]] = []
        reservation = 0.0
        running_since: float | None = None
        # A run this far past its deadline has missed it: stopped, so that one mode cannot
        # take the experiment's whole time.
        give_up = time.time() + max(GIVE_UP * deadline, 120.0)
        mine: list[tuple[float, int]] = []       # the workflow's own bytes on pfs
        while (s := self.state(job)) in ACTIVE:
            samples.append((time.time(), self.job_bytes(neighbour)))
            mine.append((samples[-1][0], self.job_bytes(job)))
            if s == "RUNNING" and running_since is None:
                running_since = time.time()
            if s == "RUNNING" and not reservation:
                reservation = self.reserved(job)
            if time.time() > give_up:
                self.cancel(job)
                t0 = samples[0][0]
                return {"mode": mode, "run": k, "job": job, "state": "GAVE_UP",
                        "placement": {}, "nodes": nodes, "predicted_s": 0.0,
                        "makespan_s": time.time() - t0, "deadline_s": deadline,
                        "met": False, "gave_up": True, "reservation_Bps": reservation,
                        "neighbour_Bps": (samples[-1][1] - samples[0][1])
                        / max(samples[-1][0] - t0, 1e-9)}
            time.sleep(0.5)
        samples.append((time.time(), self.job_bytes(neighbour)))
        # A job at its time limit may also end FAILED: its last srun step is refused
        # ("Job/step already completing") before Slurm marks it TIMEOUT.
        overran = running_since is not None and not out.exists() and \
            samples[-1][0] - running_since >= deadline
        if (s == "TIMEOUT" or overran) and running_since is not None:
            # Slurm ended it at its time limit, the deadline (rounded up to the minute,
            # job_submit.lua): the deadline was missed, and the run took at least this.
            t0 = running_since
            return {"mode": mode, "run": k, "job": job, "state": s, "placement": {},
                    "nodes": nodes, "predicted_s": 0.0, "makespan_s": samples[-1][0] - t0,
                    "deadline_s": deadline, "met": False, "gave_up": True,
                    "reservation_Bps": reservation,
                    "neighbour_Bps": (_at(samples, samples[-1][0]) - _at(samples, t0))
                    / max(samples[-1][0] - t0, 1e-9)}
        if not out.exists():
            raise SystemExit(f"run {mode} {k} (job {job}, {s}) left no record; see "
                             f"{self.work}/slurm-{job}.out")
        rec = json.loads(out.read_text())
        starts = [lv["start"] for lv in rec["levels"] if lv["start"] is not None]
        ends = [lv["end"] for lv in rec["levels"] if lv["end"] is not None]
        t0, t1 = min(starts), max(ends)
        moved = _at(samples, t1) - _at(samples, t0)
        mine.append((time.time(), self.job_bytes(job)))
        return {"mode": mode, "run": k, "job": job, "state": s,
                "placement": rec["placement"], "nodes": rec["nodes"],
                "predicted_s": float(rec["predicted_seconds"]),
                "makespan_s": float(rec["total_seconds"]), "deadline_s": deadline,
                "met": float(rec["total_seconds"]) <= deadline,
                "reservation_Bps": reservation,
                "neighbour_Bps": moved / max(t1 - t0, 1e-9),
                "workflow_Bps": (_at(mine, t1) - _at(mine, t0)) / max(t1 - t0, 1e-9)}

    def neighbour_alone(self, neighbour: str, on: bool, seconds: float = 8.0) -> float:
        self.enforcement(on)
        time.sleep(2.0)
        b0, t0 = self.job_bytes(neighbour), time.time()
        time.sleep(seconds)
        return (self.job_bytes(neighbour) - b0) / (time.time() - t0)


class _Skip(Exception):
    """--runs-only: (b) and (c) are not run."""


def validation(loop: Loop, ref: str, nodes: list[int], k: int, repeat: int = 1,
               calibrate: bool = True, after_repeat: int | None = None
               ) -> list[dict[str, Any]]:
    """Issue 19 (a): ``qos-plan validate --backend slurm`` of ``ref`` at each node count
    in an allocation of that many nodes (K placements spread over the regions, with the
    predicted best, each run ``repeat`` times), then (``calibrate``) ``qos-plan
    calibrate`` from those runs and validate of the new version on fresh runs
    (``after_repeat`` times each, ``repeat`` unless given). The
    neighbour is not running; enforcement is on."""
    registry = load_site(loop.cluster.site_conf).registry
    qp = f"{PY} -m qos_plugin.cli.qos_plan"
    out: list[dict[str, Any]] = []
    name = ref.split("@")[0]
    for n in nodes:
        row: dict[str, Any] = {"workflow": name, "nodes": n}
        model = ref
        for when in ("before", "after") if calibrate else ("before",):
            times = repeat if when == "before" or after_repeat is None else after_repeat
            d = loop.work / f"validate-{name}-{n}-{when}"
            shutil.rmtree(d, ignore_errors=True)
            home = loop.cluster.tier_path("pfs") / "plain" / f"validate-{name}-{n}-{when}"
            dirs = (f"--tier-dir pfs={home} --tier-dir ram={loop.cluster.tier_path('ram')}/v "
                    f"--tier-dir ssd={loop.cluster.tier_path('ssd')}/v")
            body = (f"mkdir -p {home} && srun --overlap -N{n} --ntasks-per-node=1 mkdir -p "
                    f"{loop.cluster.tier_path('ram')}/v {loop.cluster.tier_path('ssd')}/v && "
                    f"{qp} validate {model} --backend slurm --nodes {n} --placements {k} "
                    f"--repeat {times} {dirs} --out {d} --json --registry {registry}; rc=$?; "
                    f"rm -rf {home}; srun --overlap -N{n} --ntasks-per-node=1 rm -rf "
                    f"{loop.cluster.tier_path('ram')}/v {loop.cluster.tier_path('ssd')}/v; "
                    "exit $rc")
            job = loop.sbatch([f"-N{n}", "--ntasks-per-node=1", "--job-name=validate",
                               "--wrap", body])
            while loop.state(job) in ACTIVE:
                time.sleep(2)
            summary = d / "validation.json"
            if not summary.exists():
                row[when] = {"error": f"no validation.json (job {job}, see "
                                      f"{loop.work}/slurm-{job}.out)"}
                break
            v = json.loads(summary.read_text())
            row[when] = {"model": f"{v['model']}@{v['version']}", **{
                key: v.get(key) for key in ("concordance", "spearman",
                                            "median_relative_error", "max_relative_error",
                                            "phases", "predicted_best", "measured_best",
                                            "best_gap", "best_within", "placements",
                                            "repeat", "median_spread", "max_spread",
                                            "separable_pairs",
                                            "separable_concordance")}}
            # The whole row, on one line: a run stopped before its results file is
            # written keeps what its log says.
            print(f"  validate {name} N={n} {when}: {json.dumps(row[when])}", flush=True)
            if when == "before" and calibrate:
                p = subprocess.run([str(PY), "-m", "qos_plugin.cli.qos_plan", "calibrate",
                                    model, "--runs", str(d / "runs.json"), "--json",
                                    "--registry", str(registry)], capture_output=True,
                                   text=True, env=loop.env())
                if p.returncode:
                    row["calibrate"] = {"error": p.stderr.strip()[-300:]}
                    break
                cal = json.loads(p.stdout)
                row["calibrate"] = {k: cal.get(k) for k in ("model", "version", "factors",
                                                             "median_error_before",
                                                             "median_error_after")}
                # Its "model" field names the model it was calibrated from.
                model = f"{ref.split('@')[0]}@{cal['version']}"
                for q in [registry, *registry.rglob("*")]:
                    q.chmod(0o755 if q.is_dir() else 0o644)
        out.append(row)
    return out


def _at(samples: list[tuple[float, int]], t: float) -> float:
    """The sampled counter at time ``t``, linearly between samples."""
    for (ta, ba), (tb, bb) in zip(samples, samples[1:], strict=False):
        if ta <= t <= tb:
            return ba + (bb - ba) * ((t - ta) / (tb - ta) if tb > ta else 0.0)
    return float(samples[0][1] if t < samples[0][0] else samples[-1][1])


def _slurm_time(seconds: float) -> str:
    s = int(seconds)          # rounded down: the deadline we hold the run to is `seconds`
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def tables(res: dict[str, Any]) -> str:
    c = res["shared_bandwidth_Bps"]
    lines = [f"Shared tier: a device of {c / MB:.0f} MB/s (2 daemons); workflow "
             f"`{res['workflow']}` on {res['nodes']} nodes, predicted "
             f"{res['predicted_s']:.1f} s (the fastest placement sbatch can plan within "
             "1.2 times it: "
             f"{' '.join(f'{k}={v}' for k, v in res['placement'].items())}), deadline "
             f"{res['deadline_s']:.1f} s (x{SLACK}); neighbour: {res['streams']} dd streams of "
             "4 MiB blocks on a node of its own." + (
                 " CPUs: " + ", ".join(f"{n} on {c}" for n, c in res["node_cpus"].items())
                 + "." if res.get("node_cpus") else ""), "",
             "| mode | runs | makespan s (each) | median | deadline met | neighbour MB/s "
             "(median) |", "|---|---:|---|---:|---:|---:|"]
    for m in MODES:
        rs = [r for r in res["runs"] if r["mode"] == m]
        if not rs:
            continue
        ms = [r["makespan_s"] for r in rs]
        each = ", ".join(f"{r['makespan_s']:.1f}" + ("+ (stopped)" if r.get("gave_up") else "")
                         for r in rs)
        label = LABEL[m]
        if m == "least":
            label = (f"placement + least reservation (reserve = least, deadline "
                     f"{rs[0]['deadline_s']:.1f} s, x{res.get('least_slack', LEAST_SLACK)})")
        # sbatch plans the fastest placement the deadline allows, which may be faster
        # than the one the deadline was set from: say which ran, and its prediction.
        ran = sorted({(" ".join(f"{k}={v}" for k, v in r["placement"].items()),
                       r["predicted_s"]) for r in rs
                      if r.get("placement") and r["placement"] != res["placement"]})
        if ran:
            label += "; ran " + ", ".join(f"{p} (predicted {t:.1f} s)" for p, t in ran)
        lines.append(f"| {label} | {len(rs)} | {each} | "
                     f"{statistics.median(ms):.1f} | {sum(r['met'] for r in rs)}/{len(rs)} | "
                     f"{statistics.median(r['neighbour_Bps'] for r in rs) / MB:.1f} |")
    if not res["runs"]:
        lines = lines[:1]
    n = res.get("neighbour")
    if n:
        lines += ["", "| the neighbour | MB/s |", "|---|---:|",
                  f"| alone, enforcement off | {n['alone_off_Bps'] / MB:.1f} |",
                  f"| alone, enforcement on | {n['alone_on_Bps'] / MB:.1f} |"]
    for mode, what in (("reserved", "reserved"), ("least", "least-reservation")):
        rs = [r for r in res["runs"] if r["mode"] == mode]
        if rs:
            lines += _beside(rs, what, c, n)
    if res.get("validation"):
        spread = any(v.get("median_spread") is not None for row in res["validation"]
                     for v in (row.get("before") or {}, row.get("after") or {}))
        lines += ["", "| workflow | N | model | placements | concordance | Spearman | "
                  "median error | max error | predicted best within 5% of measured best |"
                  + (" run-to-run spread (median, max) | pairs told apart: concordance |"
                     if spread else ""),
                  "|---|---:|---|---:|---:|---:|---:|---:|---|" + ("---|---|" if spread else "")]
        for row in res["validation"]:
            wf = row.get("workflow", "loop")
            calibrated = "calibrate" in row or "after" in row
            for when in ("before", "after") if calibrated else ("before",):
                v = row.get(when)
                if not v or "error" in v:
                    # No after when calibration refused to train: say why, not "not run".
                    cal = row.get("calibrate")
                    why = (v or {}).get("error") or (
                        f"calibration refused ({cal['error'].split('error: ', 1)[-1]})"
                        if when == "after" and isinstance(cal, dict) and cal.get("error")
                        else "not run")
                    lines.append(f"| {wf} | {row['nodes']} | {when}: {why} | | | | | | |")
                    continue
                lines.append(
                    f"| {wf} | {row['nodes']} | {v['model']} ({when} calibration) | "
                    f"{len(v.get('placements') or [])}"
                    + (f" x {v['repeat']}" if (v.get("repeat") or 1) > 1 else "")
                    + f" | {_f(v['concordance'])} | "
                    f"{_f(v['spearman'])} | {_pct(v['median_relative_error'])} | "
                    f"{_pct(v['max_relative_error'])} | "
                    f"{'yes' if v.get('best_within') else 'no'} "
                    f"(gap {_pct(v.get('best_gap'))}) |" + (
                        f" {_pct(v.get('median_spread'))}, {_pct(v.get('max_spread'))} | "
                        f"{v.get('separable_pairs', 0)}: {_f(v.get('separable_concordance'))} |"
                        if spread else ""))
    return "\n".join(lines) + "\n"


def _beside(rs: list[dict[str, Any]], what: str, c: float,
            n: dict[str, float] | None) -> list[str]:
    """(c)'s rows for one mode's runs: the neighbour beside the workflow against what the
    tier (``c``) has left after the workflow's reservation, and against the spare."""
    left = statistics.median(c - r["reservation_Bps"] for r in rs)
    got = statistics.median(r["neighbour_Bps"] for r in rs)
    lines = [f"| during the {what} runs (median) | {got / MB:.1f} |",
             f"| left after the workflow's reservation "
             f"({statistics.median(r['reservation_Bps'] for r in rs) / MB:.1f} MB/s) | "
             f"{left / MB:.1f} |",
             f"| **share of what is left that it got** | **{got / left:.2f}** |"
             if left > 0 else "| share of what is left | (nothing left) |"]
    if all("workflow_Bps" in r for r in rs):
        # A reservation is a floor, not a share kept idle: what the workflow does not
        # use of it (its phases off the shared tier) must go to the neighbour too.
        used = statistics.median(r["workflow_Bps"] for r in rs)
        lines += [f"| the workflow's own use of the tier over its run (median) | "
                  f"{used / MB:.1f} |"]
        # The device's rate, and what a job alone gets of it through qosfs and the
        # daemons (the neighbour alone, enforcement on): the spare is either less
        # what the workflow used.
        for name, cap in (("the device", c), ("the neighbour alone (enforcement on)",
                                              (n or {}).get("alone_on_Bps", c))):
            spare = cap - used
            lines.append(f"| spare: {name} less the workflow's use, {spare / MB:.1f}; "
                         f"**share of it the neighbour got** | **{got / spare:.2f}** |"
                         if spare > 0 else f"| spare of {name} | (none) |")
    return lines


def _f(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, m in enumerate(MODES):
        ys = [r["makespan_s"] for r in res["runs"] if r["mode"] == m]
        ax.scatter([i] * len(ys), ys, s=36, label=LABEL[m])
    ax.axhline(res["deadline_s"], color="red", linestyle="--", label="deadline")
    if any(r["mode"] == "least" for r in res["runs"]):
        ax.axhline(res["least_deadline_s"], color="orange", linestyle="--",
                   label="least mode's deadline")
    # The prediction of the placement each mode ran (sbatch may plan a faster one than
    # the deadline was set from); the stopped runs left none.
    marks = [(i, r["predicted_s"]) for i, m in enumerate(MODES) for r in res["runs"]
             if r["mode"] == m and r.get("predicted_s")]
    if marks:
        ax.scatter(*zip(*marks, strict=True), marker="_", s=400, color="grey",
                   label="predicted (the placement run)")
    ax.set_xticks(range(len(MODES)), [LABEL[m] if m != "least" else "placement + least "
                                      "reservation" for m in MODES], fontsize=7)
    ax.set_ylabel("measured makespan (s)")
    ax.set_title("loop beside a neighbour flooding the shared tier", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def node_cpus(spec: str, nodes: list[str], spare: str) -> dict[str, str]:
    """``--node-cpus``: ``auto`` (one CPU a node: the workflow's nodes take CPUs 1, 2,
    ... round the machine's, the neighbour's node CPU 0, so that it never shares the
    first workflow node's; nothing on one CPU), ``none``, or ``NODE=CPUS,...``."""
    if spec == "none":
        return {}
    if spec == "auto":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return {}
        work = [n for n in nodes if n != spare]
        out = {node: str(cpus[(i + 1) % len(cpus)]) for i, node in enumerate(work)}
        return {**out, spare: str(cpus[0])}
    out = {}
    for item in spec.split(","):
        node, eq, cpus = item.partition("=")
        if not eq or node not in nodes or not cpus:
            raise SystemExit(f"--node-cpus: {item!r} is not NODE=CPUS with a node of "
                             f"{', '.join(nodes)}")
        out[node] = cpus
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/qos-loop"))
    # What the shared tier's two daemons serve on the one CPU they are given (below):
    # pinned there, they served a neighbour flooding the tier 81-87 MB/s.
    ap.add_argument("--shared-bandwidth", default="80MB/s")
    ap.add_argument("--scale", type=float, default=0.15,
                    help="the pipeline example's volumes times this (default 0.15)")
    ap.add_argument("--runs", type=int, default=3, help="runs per mode (default 3)")
    ap.add_argument("--streams", type=int, default=6, help="the neighbour's dd streams")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--least-slack", type=float, default=LEAST_SLACK,
                    help="the least mode's deadline, times the prediction (more than "
                    f"{LEAST_ABOVE:g}; default {LEAST_SLACK})")
    ap.add_argument("--keep", action="store_true", help="leave the cluster up")
    ap.add_argument("--reprofile", action="store_true",
                    help="measure the profile again though <dir>/profile has one")
    ap.add_argument("--out", type=Path, default=HERE, help="where results go")
    ap.add_argument("--validate", default="", metavar="N,N,...",
                    help="also validate loop at these node counts, calibrate, validate "
                    "again (issue 19 (a); e.g. 1,2,3)")
    ap.add_argument("--validate-placements", type=int, default=8, metavar="K",
                    help="placements per validation (default 8)")
    ap.add_argument("--validate-workflows", default="loop", metavar="NAME,...",
                    help="which workflows --validate runs: loop (the pipeline example at "
                    "--scale) and kgenome (the 1000 Genomes example at --genome-scale, "
                    "--genome-shape); default loop")
    ap.add_argument("--genome-shape", default="2x4", metavar="CxI",
                    help="kgenome's chromosomes x individuals per chromosome (default 2x4)")
    ap.add_argument("--genome-scale", type=float, default=0.01,
                    help="kgenome's volumes times this (default 0.01)")
    ap.add_argument("--node-cpus", default="auto", metavar="auto|none|NODE=CPUS,...",
                    help="CPUs of each node for the whole benchmark; auto: one a node, "
                    "the neighbour's apart from the first workflow node's")
    # Storage servers are hosts of their own. Left to run on any CPU here, the daemons
    # serving the neighbour took the workflow node's CPU: beside it the workflow's tmpfs
    # phases ran 2-3 times their profile and reserved runs missed their deadline (2 of
    # 3, twice, at 120 MB/s), though their reserved phases kept to plan.
    ap.add_argument("--daemon-cpus", default="auto", metavar="auto|none|CPUS",
                    help="CPUs of the shared tier's daemons; auto (the default): the "
                    "neighbour's node's CPU, never the first workflow node's; none: any")
    ap.add_argument("--validate-repeat", type=int, default=1, metavar="R",
                    help="runs per validated placement (qos-plan validate --repeat; "
                    "default 1)")
    ap.add_argument("--validate-after-repeat", type=int, metavar="R",
                    help="runs per placement validating the calibrated model (default: "
                    "--validate-repeat)")
    ap.add_argument("--validate-no-calibrate", action="store_true",
                    help="validate once per node count, without calibrating")
    ap.add_argument("--runs-only", action="store_true",
                    help="skip (b) and (c): only --validate")
    ap.add_argument("--tables", type=Path, metavar="RESULTS.json",
                    help="only write the tables of a results file again (no cluster)")
    ap.add_argument("--demo", action="store_true",
                    help="what scripts/demo shows: one run with and one without the "
                    "reservation, beside the neighbour")
    a = ap.parse_args(argv)
    if a.demo:
        a.runs, a.modes = 1, "placed,reserved"
    if a.tables:
        res = json.loads(a.tables.read_text())
        text = tables(res)
        a.tables.with_suffix(".md").write_text(text)
        if res.get("runs"):
            plot(res, a.tables.parent / "deadline.png")
        print(text)
        return 0
    if a.validate_after_repeat is not None and a.validate_no_calibrate:
        print("--validate-after-repeat: there is no after with --validate-no-calibrate; "
              "give one of them", file=sys.stderr)
        return 1
    for flag, r in (("--validate-repeat", a.validate_repeat),
                    ("--validate-after-repeat", a.validate_after_repeat)):
        if r is not None and not 1 <= r <= 100:
            print(f"{flag}: {r} is not 1 to 100 runs a placement", file=sys.stderr)
            return 1
    if not a.least_slack > LEAST_ABOVE:
        # At 1 / DEADLINE_MARGIN or less the deadline's stretch is 1: the least is the
        # contract in full (NaN too is refused here).
        print(f"--least-slack: {a.least_slack} leaves the least reservation the whole "
              f"contract; give more than {LEAST_ABOVE:g}", file=sys.stderr)
        return 1
    if a.least_slack > LEAST_MOST:
        print(f"--least-slack: {a.least_slack} times the prediction is a deadline no run "
              f"of this benchmark waits for; give at most {LEAST_MOST:g}", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("benchmarks/loop/run.py: error: needs root (it starts the local cluster)",
              file=sys.stderr)
        return 1
    modes = [m for m in a.modes.split(",") if m]
    if set(modes) - set(MODES):
        print(f"--modes: use some of {','.join(MODES)}", file=sys.stderr)
        return 1
    loop = Loop(a.dir, parse_rate(a.shared_bandwidth, "--shared-bandwidth"))
    loop.up()
    try:
        # Separate hosts have CPUs of their own; these nodes share the machine's. Each
        # node is given one, from the profile on (which then measures one node's CPU,
        # as every run uses it): the neighbour's stream (its dd, its qosfs mount) on its
        # node does not slow the workflow's node-local tiers, as between hosts. The
        # daemons, the shared tier's servers, serve everyone and run anywhere.
        pins = node_cpus(a.node_cpus, loop.cluster.node_names(), loop.spare)
        loop.cluster.pin_cpus(pins)
        daemons = {"none": "", "auto": pins.get(loop.spare, "")}.get(a.daemon_cpus,
                                                                     a.daemon_cpus)
        loop.cluster.pin_daemon_cpus(daemons)
        if daemons:
            pins = {**pins, "daemons": daemons}
        if pins:
            print("CPUs: " + ", ".join(f"{n} on {c}" for n, c in pins.items()), flush=True)
        saved = a.dir / "profile" / "profile.csv"
        if saved.exists() and not a.reprofile:
            prof = {"profile": str(saved), "table": (saved.parent / "speeds.md").read_text()}
            print(f"the cluster's profile from {saved} (--reprofile measures it again)")
        else:
            prof = profile_cluster(a.dir, train=False)
        print(prof["table"], flush=True)
        ref = loop.train(a.scale, Path(str(prof["profile"])))
        model = loop.model(ref)
        best = loop.fastest_held(model)
        deadline = SLACK * best.makespan
        print(f"{ref}: fastest placement {best.tiers} on {best.nodes} nodes, predicted "
              f"{best.makespan:.1f} s; deadline {deadline:.1f} s", flush=True)
        res: dict[str, Any] = {
            "workflow": ref, "nodes": best.nodes, "placement": best.tiers,
            "predicted_s": best.makespan, "deadline_s": deadline, "streams": a.streams,
            "shared_bandwidth_Bps": loop.bandwidth, "scale": a.scale,
            "profile": prof["table"], "runs": [],
            "least_deadline_s": a.least_slack * best.makespan, "least_slack": a.least_slack}
        res["node_cpus"] = pins
        neighbour = "" if a.runs_only else loop.neighbour(a.streams)
        try:
            if a.runs_only:
                raise _Skip
            res["neighbour"] = {"alone_off_Bps": loop.neighbour_alone(neighbour, False),
                                "alone_on_Bps": loop.neighbour_alone(neighbour, True)}
            print(f"neighbour alone: {res['neighbour']['alone_off_Bps'] / MB:.1f} MB/s "
                  f"(enforcement off), {res['neighbour']['alone_on_Bps'] / MB:.1f} (on)",
                  flush=True)
            for k in range(a.runs):
                for m in modes:          # interleaved: no mode always on a warmer machine
                    d = res["least_deadline_s"] if m == "least" else deadline
                    r = loop.one_run(m, ref, model, d, best.nodes, neighbour, k)
                    res["runs"].append(r)
                    print(f"  {m:8s} run {k + 1}: {r['makespan_s']:6.1f} s "
                          f"(deadline {d:.1f}: {'met' if r['met'] else 'MISSED'}), "
                          f"neighbour {r['neighbour_Bps'] / MB:5.1f} MB/s, reserved "
                          f"{r['reservation_Bps'] / MB:.1f} MB/s", flush=True)
        except _Skip:
            pass
        finally:
            if neighbour:
                loop.cancel(neighbour)
            loop.enforcement(True)
        a.out.mkdir(parents=True, exist_ok=True)
        if a.validate:
            counts = [int(x) for x in a.validate.split(",")]
            res["validation"] = []
            for wf in [w for w in a.validate_workflows.split(",") if w]:
                if wf == "kgenome":
                    c, _, i = a.genome_shape.partition("x")
                    wref = loop.train_genome(a.genome_scale, GenomeShape(int(c), int(i)),
                                             Path(str(prof["profile"])))
                elif wf == "loop":
                    wref = ref
                else:
                    raise SystemExit(f"--validate-workflows: {wf!r} is not loop or kgenome")
                res["validation"] += validation(loop, wref, counts, a.validate_placements,
                                                a.validate_repeat,
                                                not a.validate_no_calibrate,
                                                a.validate_after_repeat)
        stem = "validation" if a.runs_only else "results"
        (a.out / f"{stem}.json").write_text(json.dumps(res, indent=1))
        text = tables(res)
        (a.out / f"{stem}.md").write_text(text)
        if not a.runs_only:
            plot(res, a.out / "deadline.png")
        print(text)
    finally:
        if not a.keep:
            loop.cluster.down()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ClusterError, QosPluginError) as e:
        # A cluster that cannot start, or a planner refusal: one line, not a traceback.
        print(f"benchmarks/loop/run.py: error: {e}", file=sys.stderr)
        sys.exit(1)
