"""Predicted against measured makespan, one point per validated placement.

The diagonal is a perfect prediction, the band around it the error the targets
allow (15%); the predicted best is a star, the measured best a ring, so a
reader sees at once whether the model picked the right placement.
"""

from __future__ import annotations

from pathlib import Path

from qos_plugin.planner.validation import Comparison

BAND = 0.15


def plot_validation(c: Comparison, path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 6.0))
    lo = min(c.predicted + c.measured)
    hi = max(c.predicted + c.measured)
    # Log axes once makespans span a decade: placements differ by factors.
    log = lo > 0 and hi / lo > 10
    span = [lo / 1.2 if log else max(0.0, lo - 0.1 * (hi - lo)),
            hi * 1.2 if log else hi + 0.1 * (hi - lo) + 1e-9]
    ax.plot(span, span, color="0.3", lw=1, label="predicted = measured")
    ax.fill_between(span, [v * (1 - BAND) for v in span], [v * (1 + BAND) for v in span],
                    color="0.85", label=f"within {BAND:.0%}")
    ax.scatter(c.measured, c.predicted, s=28, color="tab:blue", zorder=3, label="placement")
    b = c.predicted_best
    ax.scatter([c.measured[b]], [c.predicted[b]], marker="*", s=220, color="tab:orange",
               zorder=4, label="predicted best")
    m = c.measured_best
    ax.scatter([c.measured[m]], [c.predicted[m]], s=160, facecolors="none",
               edgecolors="tab:red", linewidths=1.5, zorder=5, label="measured best")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(span[0], span[1])
    ax.set_ylim(span[0], span[1])
    ax.set_xlabel("measured makespan (s)")
    ax.set_ylabel("predicted makespan (s)")
    conc = "-" if c.concordance != c.concordance else f"{c.concordance:.3f}"
    ax.set_title(f"{title}\nconcordance {conc}, median error "
                 f"{100 * c.median_relative_error:.1f}%", fontsize=10)
    ax.grid(ls="--", alpha=0.4)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
