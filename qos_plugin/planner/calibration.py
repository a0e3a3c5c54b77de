"""Calibration: correct a storage profile from measured runs. Pure: a profile,
the model's inputs and measurements in; rate factors and a corrected profile out.

**What is fitted.** One factor per (operation, storage type) of the profile that
the model's tiers use: ``read``, ``write`` and ``files`` (the per-file rate) of each
tier, ``cp`` of each copy between tiers, ``scp`` of each fan-out. A factor multiplies
every measured rate of its rows (all transfer sizes, data sizes, node and task counts alike), so a
tier that runs 3x slower than profiled gets 1/3 on its rates.

**How.** The factors are those whose predictions best match the runs: the
prediction of each run is made again with the corrected profile, exactly as
validation makes it (``prediction.predict``: volumes at the run's scale, the
cost build, the makespan), and a least-squares fit over the log factors
minimises, per run, the errors of every level's stage-in, execution and
stage-out and of the makespan, each as a fraction of the run's measured
makespan (so runs of any length weigh alike, and a phase weighs by its share of
the run). A pull towards factor 1 keeps a factor the runs cannot see from
wandering, and it is the stronger the less the runs exercise the factor.

**The pull.** A key's share is the time the model spends on its operations in
these runs (how much every level's phases grow when its rates are halved) over
the time it predicts for them. A key with no share (its rates change none of the
predicted phases: no run uses it, or it hides behind a longer operation of the
same phase) is not fitted (1); the others are pulled towards 1 with a weight of
:data:`PRIOR` times ``MIN_SHARE / share`` (at least :data:`PRIOR`), so a key the
runs spend a twentieth of their time on or more moves freely and one they barely
touch moves only for a large, consistent error.
Measured (benchmarks/loop, six single runs): with every key pulled alike, kgenome's
fit took ssd-pfs copies to 0.03 and pfs writes to 0.17 of their profiled rates,
operations its six placements barely used; that fitted the runs (median 1.1%) and
reordered fresh placements (concordance 1.0 to 0.8): a rate a run hardly spends
time on is a rate its noise sets.

**Limits.** A factor is the same at every data size: runs at one scale fit the
rates at that scale, and the correction is assumed to hold at the others (a
fixed latency is not a bandwidth; runs at two scales would tell them apart).
A fit cannot separate two operations that only ever occur together in the
same phase of the same runs; it can only fix their combined time.

**Daemon statistics** (optional, :func:`byte_ratios`): the bytes the storage
daemons served for a run's job on each tier, against what the model moves
there. They check the model's volumes, which calibration does not change: a
tier whose ratio is far from 1 is a volume the I/O data got wrong, and a rate
fitted over it would absorb that error.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from qos_plugin.model.iodata import IoData
from qos_plugin.model.movement import Volumes, level_mib
from qos_plugin.model.profile import StorageProfile
from qos_plugin.model.template import WorkflowTemplate
from qos_plugin.model.tiers import TierSet, split_move
from qos_plugin.planner.prediction import Prediction, predict
from qos_plugin.planner.validation import Measurement

log = logging.getLogger(__name__)

RateKey = tuple[str, str]           # (operation, storage type)
# Weight of log(factor) in the fit: a run error of 1% of its makespan outweighs
# a factor 1.5 away from 1 only when PRIOR * ln(1.5) < 0.01.
PRIOR = 0.01
# Factors are kept within [1/LIMIT, LIMIT]: beyond, the profile is not worth
# correcting but measuring again.
LIMIT = 100.0
# A key the model spends less of the runs' predicted time on than this is pulled
# towards 1 the harder (see the module docstring).
MIN_SHARE = 0.05
# A daemon's bytes on a tier this far from the model's are a volume error.
BYTES_TOLERANCE = 0.10


@dataclass(frozen=True)
class Calibration:
    """Fitted rate factors and the fit's error before and after, on its own runs."""

    factors: dict[RateKey, float]     # every key of the tiers (1 where not fitted)
    error_before: float      # median relative makespan error, uncorrected profile
    error_after: float       # the same with the corrected profile
    runs: int
    shares: dict[RateKey, float] = field(default_factory=dict)  # per key (module docstring)
    fitted: tuple[RateKey, ...] = ()  # the keys with a share

    @property
    def at_limit(self) -> list[RateKey]:
        """Fitted keys whose factor reached 1/LIMIT or LIMIT: a profile that far off is
        to be measured again, not corrected."""
        edge = math.log(LIMIT) * (1 - 1e-3)
        return [k for k in self.fitted if abs(math.log(self.factors[k])) >= edge]


def rate_keys(profile: StorageProfile, tiers: TierSet) -> list[RateKey]:
    """The profile's (operation, storage type) pairs that the tiers use."""
    names = set(tiers.names)
    keys = []
    for op, st in sorted(profile.runs):
        ends = split_move(st)
        if (st in names and op in ("read", "write", "files")) or \
                (ends is not None and set(ends) <= names and op in ("cp", "scp")):
            keys.append((op, st))
    return keys


def corrected_profile(profile: StorageProfile, factors: Mapping[RateKey, float]
                      ) -> StorageProfile:
    """``profile`` with the rates of each key times its factor (others as they are)."""
    runs = {k: (x, rates * float(factors.get(k, 1.0))) for k, (x, rates) in profile.runs.items()}
    # A phase's start is not a rate: the runs' starts are what they were.
    return StorageProfile(f"{profile.source} (calibrated)", runs, profile.estimator,
                          profile.phase_start_s, profile.phase_start_more_s)


def _key(placement: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(placement.items()))


class _Problem:
    """The runs grouped by (nodes, scale): one cost build per group and evaluation."""

    def __init__(self, template: WorkflowTemplate, io: IoData, profile: StorageProfile,
                 tiers: TierSet, runs: Sequence[Measurement], cost_nodes: Sequence[int]
                 ) -> None:
        self.template, self.io, self.profile, self.tiers = template, io, profile, tiers
        self.cost_nodes = list(cost_nodes)
        self.runs = list(runs)
        self.groups: dict[tuple[int, float], list[dict[str, str]]] = {}
        for m in self.runs:
            ps = self.groups.setdefault((m.nodes, m.scale), [])
            if all(_key(p) != _key(m.placement) for p in ps):
                ps.append(m.placement)

    def predictions(self, profile: StorageProfile) -> list[Prediction]:
        """The prediction of every run (in run order) with ``profile``."""
        by: dict[tuple[int, float, tuple[tuple[str, str], ...]], Prediction] = {}
        for (nodes, scale), placements in self.groups.items():
            preds = predict(self.template, self.io, profile, self.tiers, nodes, placements,
                            scale, self.cost_nodes)
            for p, pr in zip(placements, preds, strict=True):
                by[(nodes, scale, _key(p))] = pr
        return [by[(m.nodes, m.scale, _key(m.placement))] for m in self.runs]

    def phases(self, profile: StorageProfile) -> list[float]:
        """Every run's level phases (stage-in, execution, stage-out), in order."""
        return [x for p in self.predictions(profile) for lp in p.levels for x in lp]

    def residuals(self, profile: StorageProfile) -> list[float]:
        out: list[float] = []
        for m, p in zip(self.runs, self.predictions(profile), strict=True):
            for lp, lm in zip(p.levels, m.levels, strict=True):
                out += [(a - b) / m.total for a, b in zip(lp, lm, strict=True)]
            out.append((p.total - m.total) / m.total)
        return out

    def median_error(self, profile: StorageProfile) -> float:
        preds = self.predictions(profile)
        return float(np.median([abs(p.total - m.total) / m.total
                                for m, p in zip(self.runs, preds, strict=True)]))


def calibrate(template: WorkflowTemplate, io: IoData, profile: StorageProfile, tiers: TierSet,
              runs: Sequence[Measurement], cost_nodes: Sequence[int] = ()) -> Calibration:
    """Fit the rate factors of ``profile`` to ``runs`` (see the module docstring);
    ``cost_nodes`` as for ``prediction.predict``: the model's training node counts."""
    from scipy.optimize import least_squares  # training-side only, as scikit-learn

    if not runs:
        raise ValueError("no runs to calibrate from")
    if any(m.total <= 0 for m in runs):
        raise ValueError("a run with a makespan of 0 s")
    problem = _Problem(template, io, profile, tiers, runs, cost_nodes)
    shares = _exercised(problem, profile, rate_keys(profile, tiers))
    keys = [k for k, share in shares.items() if math.isfinite(share) and share > 0]
    before = problem.median_error(profile)
    if not keys:
        return Calibration({k: 1.0 for k in shares}, before, before, len(runs), shares, ())

    pull = np.array([PRIOR * max(1.0, MIN_SHARE / shares[k]) for k in keys])

    def of(theta: np.ndarray) -> StorageProfile:
        return corrected_profile(profile, dict(zip(keys, np.exp(theta).tolist(), strict=True)))

    def fun(theta: np.ndarray) -> np.ndarray:
        return np.asarray(problem.residuals(of(theta)) + (pull * theta).tolist())

    bound = math.log(LIMIT)
    # Costs are maxima of per-operation times, so the fit is piecewise smooth:
    # a finite-difference step of a few percent sees past the kinks.
    fit = least_squares(fun, np.zeros(len(keys)), bounds=(-bound, bound), diff_step=0.02,
                        x_scale=1.0, max_nfev=200 * max(1, len(keys)))
    factors = {k: 1.0 for k in shares} | dict(zip(keys, np.exp(fit.x).tolist(), strict=True))
    log.info("calibration: %d runs, %d of %d factors fitted, %s", len(runs), len(keys),
             len(shares), fit.message)
    after = problem.median_error(corrected_profile(profile, factors))
    return Calibration(factors, before, after, len(runs), shares, tuple(keys))


def _exercised(problem: _Problem, profile: StorageProfile, keys: Sequence[RateKey]
               ) -> dict[RateKey, float]:
    """Per key, the share of the runs' predicted time the model spends on its
    operations: how much every level's phases grow when its rates are halved (which
    doubles a time spent at that rate alone), over the predicted phases. Over the
    prediction, not the measurement: a profile far too fast makes every rate's time
    a sliver of the runs', and would pull every factor to 1 just where they must move
    (runs 500 times slower than predicted fitted nothing)."""
    base = np.array(problem.phases(profile))
    predicted = float(base.sum())
    if predicted <= 0:
        return {k: 0.0 for k in keys}
    return {k: float(np.abs(np.array(problem.phases(corrected_profile(profile, {k: 0.5})))
                            - base).sum() / predicted) for k in keys}


def expected_tier_mib(template: WorkflowTemplate, tiers: TierSet, volumes: Volumes,
                      placement: Mapping[str, str], nodes: int, scale: float) -> dict[str, float]:
    """MiB the model moves on each tier in a run of ``placement`` (every phase, every
    move on both its tiers, as a daemon serving the tier would count it)."""
    columns = [np.array([tiers.index(placement[s])]) for s in template.stage_names]
    mib = level_mib(template, tiers, columns, volumes)
    one, n = np.array([0]), np.array([float(nodes)])
    # (1, 3, T) per level: summed over levels, then over the phases.
    total = sum(mib.at(k, one, n)[0].sum(axis=0) for k in range(len(template.levels))) * scale
    return {t: float(total[i]) for i, t in enumerate(tiers.names)}


def byte_ratios(expected_mib: Mapping[str, float], daemon_bytes: Mapping[str, float]
                ) -> dict[str, float]:
    """Per tier the daemons counted bytes for: what they served over what the model
    moves there (1 = the volumes are right; NaN where the model moves nothing)."""
    out = {}
    for tier, served in daemon_bytes.items():
        exp = expected_mib.get(tier, 0.0) * (1 << 20)
        out[tier] = served / exp if exp > 0 else float("nan")
    return out


def volume_warnings(ratios: Mapping[str, float]) -> list[str]:
    """The tiers whose daemon bytes say the model's volumes are off."""
    return [f"tier {t}: the daemons served {r:.2f}x the bytes the model moves there"
            for t, r in sorted(ratios.items()) if not abs(r - 1) <= BYTES_TOLERANCE]
