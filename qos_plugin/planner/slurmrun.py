"""Slurm mode of ``qos-plan run``: inside an allocation, the run's processes are
srun steps on the job's nodes. The actions, volumes, copies and barriers are the
local mode's (``runner.plan_run`` and ``runner.execute``); only starting the
processes and the tier directories differ:

* a node-local tier's directory is the same path on every node, each node's own
  disk (what the node prolog made, or ``--tier-dir``); task ``i`` runs on the
  allocation's node ``i % N`` (in ``SLURM_JOB_NODELIST`` order);
* each phase of a level starts **one step per node** (``srun --overlap -N1 -n1 -w
  NODE``) running that node's actions at once, a process each (``taskproc run``):
  one step per task would pay srun's start (about 0.1-0.3 s in 22.05) per task,
  and steps with ``--exact`` would queue behind the allocation's one CPU per node;
* a fan-out's copy from node k to node j (node-local tiers are seen only on their
  own node) is two steps joined by a pipe: ``taskproc send`` on k writes the files
  to its standard output, srun carries them to the orchestrator, and into the
  standard input of ``taskproc receive`` on j;
* the phase ends (the barrier) when every step of it has ended.

The orchestrator itself runs where ``qos-plan run`` was started (the batch host).
Steps run ``taskproc`` with the orchestrator's Python and the package it was
imported from (``PYTHONPATH``): the nodes must see both (in the local cluster they
do; the package under ``<dir>/lib`` works with the system Python too, since
``taskproc`` needs the standard library only).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import qos_plugin
from qos_plugin.errors import InputError
from qos_plugin.planner import runner

log = logging.getLogger(__name__)

SRUN = ("srun", "--overlap", "--nodes=1", "--ntasks=1", "--quiet", "--job-name=qos-run")
# The job's directories, as the job sees them (docs/slurm.md, placement.py).
DIR_VARIABLES = ("SLURM_SPANK_QOS_DIRS", "QOS_DIRS")


def job_hosts(env: Mapping[str, str]) -> list[str]:
    """The allocation's nodes, in order (InputError outside an allocation)."""
    if not env.get("SLURM_JOB_ID"):
        raise InputError("--backend slurm", "not inside a Slurm allocation (no SLURM_JOB_ID)",
                         "run it in a job: sbatch -N N --wrap 'qos-plan run ... --backend "
                         "slurm', or under salloc")
    nodelist = env.get("SLURM_JOB_NODELIST", "")
    p = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                       text=True, env=dict(env), check=False)
    hosts = p.stdout.split()
    if p.returncode or not hosts:
        raise InputError("SLURM_JOB_NODELIST", f"{nodelist[:80]!r} names no nodes "
                         f"({p.stderr.strip()[:120]})", "run it inside a Slurm job")
    return hosts


def job_tier_dirs(env: Mapping[str, str]) -> dict[str, Path]:
    """The job's tier directories from its placement (``tier=dir,...``), if any."""
    for var in DIR_VARIABLES:
        text = env.get(var, "")
        if text:
            out = {}
            for item in text.split(","):
                tier, eq, d = item.partition("=")
                if eq and tier and d:
                    out[tier] = Path(d)
            return out
    return {}


class SrunLauncher:
    """Starts a phase's actions as srun steps on the job's nodes (see the module)."""

    def __init__(self, hosts: Sequence[str], workers: int,
                 env: Mapping[str, str] | None = None, python: str = sys.executable) -> None:
        self.hosts = list(hosts)
        self.workers = workers
        root = str(Path(qos_plugin.__file__).resolve().parents[1])
        base = dict(os.environ if env is None else env)
        base["PYTHONPATH"] = os.pathsep.join(p for p in (root, base.get("PYTHONPATH")) if p)
        self.env = base
        self.python = python

    def argv(self, node: int, mode: str) -> list[str]:
        return [*SRUN, f"--nodelist={self.hosts[node]}", self.python, "-m",
                "qos_plugin.planner.taskproc", mode]

    def __call__(self, actions: list[runner.Action]) -> list[list[Any]]:
        per_node: dict[int, list[tuple[int, dict[str, Any]]]] = {}   # node: (action, payload)
        pipes: list[tuple[int, int, int, list[Any]]] = []          # (action, from, to, pairs)
        for i, a in enumerate(actions):
            remote: dict[int, list[Any]] = {}
            here = []
            for pair, src in zip(a.payload.get("pairs", []), a.sources, strict=False):
                if src is None or src == a.node:
                    here.append(pair)
                else:
                    remote.setdefault(src, []).append(pair)
            if a.payload["kind"] != "copy":
                per_node.setdefault(a.node, []).append((i, a.payload))
                continue
            if here or not remote:
                per_node.setdefault(a.node, []).append((i, {**a.payload, "pairs": here}))
            pipes += [(i, k, a.node, pairs) for k, pairs in sorted(remote.items())]
        steps: list[tuple[str, list[int], subprocess.Popen[bytes], list[Any]]] = []
        for node, items in sorted(per_node.items()):
            p = self._start(self.argv(node, "run"))
            self._header(p, {"workers": self.workers, "actions": [x for _, x in items]})
            steps.append((self.hosts[node], [i for i, _ in items], p, []))
        for i, k, j, pairs in pipes:
            sender = self._start(self.argv(k, "send"))
            receiver = subprocess.Popen(self.argv(j, "receive"), stdin=sender.stdout,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env=self.env)
            assert sender.stdout is not None
            sender.stdout.close()        # the receiver's now: it sees the end of the stream
            self._header(sender, {"pairs": pairs})
            steps.append((f"{self.hosts[k]} -> {self.hosts[j]}", [i], receiver, [sender]))
        parts: dict[int, list[list[Any]]] = {}
        failures = []
        for where, ids, p, others in steps:
            out, err = p.communicate()
            for o in others:
                o.wait()
                if o.returncode:
                    failures.append(f"{where}: {self._last(o.stderr)}")
            if p.returncode:
                failures.append(f"{where}: {self._last(None, err)}")
                continue
            got = json.loads(out)
            # A run step prints a result per action; a receive step its one copy's.
            results = [got] if others else got
            for i, res in zip(ids, results, strict=True):
                parts.setdefault(i, []).append(res)
        if failures:
            raise runner.RunFailed(f"the run failed: step on {failures[0]}")
        return [_combine(parts[i]) for i in range(len(actions))]

    def _start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        log.debug("step: %s", " ".join(argv))
        return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env)

    @staticmethod
    def _header(p: subprocess.Popen[bytes], header: dict[str, Any]) -> None:
        assert p.stdin is not None
        p.stdin.write(json.dumps(header).encode() + b"\n")
        p.stdin.close()
        # Written and closed before any step is waited for, so a phase's steps start
        # together; communicate() then only reads (it would flush a closed stdin).
        p.stdin = None

    @staticmethod
    def _last(stream: Any, text: bytes | None = None) -> str:
        data = text if text is not None else (stream.read() if stream else b"")
        lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
        # The process's own line before srun's "task 0: Exited with exit code 1".
        own = [ln for ln in lines if not ln.startswith("srun:")]
        return (own or lines or ["(no message)"])[-1][:300]


def _combine(parts: list[list[Any]]) -> list[Any]:
    """One action's result from its steps' parts (a fan-out from several nodes):
    bytes summed, first start, last end, the host of the first part."""
    return [sum(p[0] for p in parts), sum(p[1] for p in parts), min(p[2] for p in parts),
            max(p[3] for p in parts), parts[0][4]]


def run(spec: runner.RunSpec) -> dict[str, Any]:
    """The Slurm backend: ``spec`` run with srun steps in the current allocation;
    the record of ``runner.run`` with mode ``slurm``, the job and its hosts."""
    env = dict(os.environ)
    hosts = job_hosts(env)
    if spec.nodes > len(hosts):
        raise InputError("--nodes", f"{spec.nodes} is more than the allocation's "
                         f"{len(hosts)} nodes ({','.join(hosts)})",
                         f"give --nodes {len(hosts)} or less, or allocate more nodes")
    hosts = hosts[:spec.nodes]
    launch = SrunLauncher(hosts, spec.workers, env)
    try:
        return runner.execute(spec, runner.plan_run(spec, node_dirs=False), launch, "slurm",
                              {"job": env["SLURM_JOB_ID"], "hosts": hosts})
    except (OSError, ValueError) as e:
        raise runner.RunFailed(f"the run failed: {e}") from e
