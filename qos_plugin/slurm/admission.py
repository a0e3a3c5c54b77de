"""Admission of a job's reservations against what each tier can sustain.

A site may give a tier the bandwidth it sustains (``[tiers.pfs] bandwidth = "400MB/s"``:
a shared tier's total over its daemons, a node-local tier's per node). The prolog then
starts a job only when, on every daemon it reserves on, the reservations already held
there plus its own fit that daemon's part of the tier; otherwise the job is ended with the
reason rather than started on a promise the tier cannot keep. Each reservation comes
with a limit, the part of the daemon no other job was promised, so a reserved job cannot
take another's floor. Pure: numbers in, decisions out.
"""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Ask:
    """One reservation a job needs: ``bps`` on ``tier`` of ``daemon``, which holds
    ``held`` bytes/s for other jobs there and sustains ``capacity`` (None: not given)."""

    daemon: str
    tier: str
    bps: float
    held: float
    capacity: float | None


@dataclass(frozen=True)
class Decision:
    admitted: bool
    reason: str = ""
    limits: tuple[float, ...] = ()      # bytes/s per ask (0 = unlimited), in ask order


def _rate(bps: float) -> str:
    return f"{bps / MiB:.1f} MiB/s"


def admit(asks: list[Ask]) -> Decision:
    """Admit all of ``asks`` or none: the first that does not fit is the reason."""
    limits = []
    for a in asks:
        if a.capacity is None:
            limits.append(0.0)
            continue
        if a.held + a.bps > a.capacity:
            return Decision(False, f"tier {a.tier} cannot hold the job's reservation on "
                            f"{a.daemon}: {_rate(a.held)} of its {_rate(a.capacity)} are "
                            f"promised to running jobs and the job needs {_rate(a.bps)}; "
                            "submit again later, with a later --qos-deadline, or with "
                            f"--qos-exclude-tier={a.tier}")
        limits.append(a.capacity - a.held)
    return Decision(True, limits=tuple(limits))


def daemon_part(capacity: float | None, shared: bool, n_daemons: int) -> float | None:
    """A daemon's part of a tier's bandwidth: a shared tier's files are striped evenly
    over its daemons; a node-local tier's bandwidth is each node's already."""
    if capacity is None:
        return None
    return capacity / max(1, n_daemons) if shared else capacity
