"""A site model's prices: what a placement carries, at the rates its profile measured.

The published rules (``costbuild.py``, QoSFlow's) price cautiously, and the artifact's
makespans are built with them: an edge's read is the consumer's whole read volume,
charged once per predecessor; a stage-in copies every file the stage touches (its own
outputs too) whether or not it is already on the node; a stage-out moves the stage's
inputs with its outputs. Measured against runs here (``qos-plan validate``) those
rules overcharged every phase 1.5-2x: a stage reading two predecessors' outputs was
charged its reads twice, and a stage-in bringing one predecessor's 150 MiB was charged
the 912 MiB its stage touches.

A model built from this product's own measurements (a ``grid`` profile, see
``profile.py``) is priced instead by the movement rules a run follows
(``movement.py``), at the profile's rates (the cost builder's lookups, so a one-node
profile scales as it does there):

* **execution** of a stage on a tier at N nodes: its reads (``read_mib`` at the rate
  of N nodes x its tasks per node reading that much in its read transfer size) plus
  its writes likewise, plus its files (each task's output created and its input files
  opened, ``movement.task_files``, at the tier's per-file rate: the profile's
  ``files`` runs; none where the profile has no such runs), plus one phase start when
  it moves anything;
* **a stage-in copy** from shared tier x onto node-local tier y: the MiB it brings
  onto each node (``movement.copied_from``: a predecessor's whole output files), N
  times, at the rate of one copy per node moving that much, plus a start;
* **a stage-out move** of the stage's outputs to tier y: their MiB (N - 1 times over
  on a fan-out, which gives each node the others'), at the rate of that move for the
  whole job (a fan-out's too: its pipes all pass through the job's first node), plus a
  start.

Profiles read with the published estimator keep the published rules (``carried_of``
returns None). The shared tiers' floor (``capacity.py``) applies on top of these prices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qos_plugin.errors import InputError
from qos_plugin.model.costbuild import MOVE_TRANSFER, Pricer, move_operation
from qos_plugin.model.movement import Volumes, volume_of
from qos_plugin.model.profile import FILE_BYTES, StorageProfile
from qos_plugin.model.template import Stage
from qos_plugin.model.tiers import Tier, move_name

MIB = 1 << 20
# A stage's copy from one tier is priced as one copy per node moving all its sources'
# bytes (a run starts one per source and node, each in 8 ranges: planner/runner.py).
COPIES_PER_NODE = 1


@dataclass
class CarriedPricing:
    """The profile and the stages' volumes (``iodata.stage_volumes``) a site model is
    priced from."""

    profile: StorageProfile
    volumes: Volumes
    _pricer: Pricer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pricer = Pricer(self.profile)

    def start(self, nodes: int) -> float:
        """A phase's start on ``nodes`` nodes (``StorageProfile.phase_start``)."""
        return self.profile.phase_start(nodes)

    def exec_seconds(self, stage: Stage, tier: Tier, nodes: int,
                     files_per_task: int = 0) -> tuple[float, float]:
        """(reads, writes) of ``stage`` on ``tier`` at ``nodes`` nodes, each task
        creating or opening ``files_per_task`` files; the phase's start and the files
        are in the writes (in the reads for a stage that writes nothing)."""
        tpn = stage.tasks_per_node(nodes)
        secs = []
        for op in ("read", "write"):
            mib = volume_of(self.volumes, stage.name, f"{op}_mib")
            if mib <= 0:
                secs.append(0.0)
                continue
            transfer = volume_of(self.volumes, stage.name, f"{op}_transfer_bytes")
            rate = self._pricer.rate(op, tier.name, tier.is_local, nodes, tpn, transfer, mib)
            secs.append(mib / self._measured(rate, op, tier.name,
                                             f"stage {stage.name} {op}s {mib:,.1f} MiB"))
        read, write = secs
        if write > 0 or read > 0:
            # Its phase starts on the nodes its tasks run on (task i on node i % N).
            fixed = self.start(min(nodes, stage.num_tasks)) + \
                self.files_seconds(stage, tier, nodes, files_per_task)
            if write > 0:
                write += fixed
            else:
                read += fixed
        return read, write

    def files_seconds(self, stage: Stage, tier: Tier, nodes: int, files_per_task: int
                      ) -> float:
        """Seconds for the stage's tasks to create and open their files on ``tier`` at
        the profile's per-file rate (its ``files`` runs: MiB/s of one FILE_BYTES
        transfer a file operation), 0 when the profile has none for the tier."""
        if files_per_task <= 0 or ("files", tier.name) not in self.profile.runs:
            return 0.0
        ops = stage.num_tasks * files_per_task
        mib = ops * FILE_BYTES / MIB
        # Per node on every tier: a file operation is a round trip of the node's own
        # client (its qosfs mount to the daemons), which more nodes make side by side.
        rate = self._pricer.rate("files", tier.name, True, nodes,
                                 stage.tasks_per_node(nodes), FILE_BYTES, mib)
        rate = self._measured(rate, "files", tier.name,
                              f"stage {stage.name}'s {ops} file operations")
        return mib / rate

    def move_seconds(self, src: Tier, dst: Tier, mib: np.ndarray, nodes: int) -> np.ndarray:
        """Seconds of a move of ``mib`` MiB in all (per configuration) from ``src`` to
        ``dst`` on ``nodes`` nodes, its start included; 0 where it moves nothing."""
        op = move_operation(src.name, dst.name)
        move = move_name(src.name, dst.name)
        # Not scaled by the node count, a fan-out (node-local to node-local) included: a
        # run's fan-out is srun pipes, and every byte of them passes through the srun
        # processes on the job's first node (planner/slurmrun.py), so the job's fan-outs
        # share one rate however many nodes send. Scaled, a fan-out of 630 MiB on 2
        # nodes was predicted at 8.3 s and took 19.1.
        per_node = False
        # A move between shared tiers is one copy, on the job's first node.
        start = self.start(1 if not (src.is_local or dst.is_local) else nodes)
        out = np.zeros(mib.shape[0])
        for total in np.unique(mib[mib > 0]).tolist():
            rate = self._pricer.rate(op, move, per_node, nodes, COPIES_PER_NODE,
                                     MOVE_TRANSFER, total)
            rate = self._measured(rate, op, move, f"a move of {total:,.1f} MiB")
            out[mib == total] = total / rate + start
        return out

    def _measured(self, rate: float, op: str, storage: str, what: str) -> float:
        if rate == rate and rate > 0:
            return rate
        raise InputError(self.profile.source, f"no {op} run on {storage} ({what})",
                         "measure the tiers with 'qos-plan profile'")


def carried_of(profile: StorageProfile | None, volumes: Volumes | None
               ) -> CarriedPricing | None:
    """The carried prices of a model built from ``profile`` and these volumes: only for
    this product's own measurements (the ``grid`` estimator; see the module)."""
    if profile is None or not volumes or profile.estimator != "grid":
        return None
    return CarriedPricing(profile, volumes)
