"""The region plot: makespan of every configuration, coloured by region.

Configurations run left to right in region order (lowest median first) and by
makespan inside a region; the marker says the node count. A side table gives each
region's size, median and rule, so a reader can tell which stages matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qos_plugin.model.configtable import ConfigTable
from qos_plugin.model.rules import Region

MARKERS = "os^Dv<>ph*"


def plot_regions(table: ConfigTable, regions: list[Region], path: str | Path,
                 title: str = "Makespan by region") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_regions = len(regions)
    cmap = plt.get_cmap("tab20" if n_regions > 10 else "tab10")
    rules = [_short_rule(r) for r in regions]
    # The side table gets the width its longest rule needs (about 0.06 in per
    # character at 7.5 pt), so no rule is cut off.
    table_in = 2.4 + 0.062 * max((len(t) for t in rules), default=20)
    plot_in = 9.0
    width = plot_in + table_in + 0.6
    fig = plt.figure(figsize=(width, max(6.0, 0.32 * n_regions + 2.5)))
    ax = fig.add_axes((0.8 / width, 0.1, (plot_in - 1.0) / width, 0.8))
    node_values = sorted({int(n) for n in table.nodes})
    x0 = 0
    for reg in regions:
        rows = reg.rows[np.argsort(table.total[reg.rows], kind="stable")]
        xs = np.arange(x0, x0 + rows.size)
        colour = cmap(reg.id % cmap.N)
        for k, n in enumerate(node_values):
            sel = table.nodes[rows] == n
            ax.scatter(xs[sel], table.total[rows][sel], s=22, color=colour,
                       marker=MARKERS[k % len(MARKERS)], edgecolors="none")
        ax.axvline(x0 - 0.5, color="0.85", lw=0.6, zorder=0)
        ax.text(x0 + rows.size / 2 - 0.5, 1.0, str(reg.id), transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=8, color=colour)
        x0 += rows.size
    for k, n in enumerate(node_values):
        ax.scatter([], [], color="0.3", marker=MARKERS[k % len(MARKERS)], label=f"N={n}")
    ax.legend(loc="upper left", fontsize=9, title="nodes")
    ax.set_xlabel("configuration (by region, then makespan)")
    ax.set_ylabel("predicted makespan (s)")
    ax.set_title(title, pad=18)
    ax.grid(axis="y", ls="--", alpha=0.4)

    side = fig.add_axes((plot_in / width, 0.1, table_in / width, 0.8))
    side.axis("off")
    cols = ["region", "size", "median (s)", "rule  (tier = critical; a,b = set; others *)"]
    cells = [[str(r.id), str(r.stats.size), f"{r.stats.median:.1f}", text]
             for r, text in zip(regions, rules, strict=True)]
    fixed = 2.4 / table_in
    tab = side.table(cellText=cells, colLabels=cols, loc="upper left", cellLoc="left",
                     colLoc="left",
                     colWidths=[0.3 * fixed, 0.25 * fixed, 0.45 * fixed, 1.0 - fixed])
    tab.auto_set_font_size(False)
    tab.set_fontsize(7.5)
    for r in regions:
        tab[(r.id + 1, 0)].set_facecolor(cmap(r.id % cmap.N))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short_rule(region: Region) -> str:
    """Fixed and restricted stages; flexible ones are summed up as "others *"."""
    shown = [f"{k}={v}" for k, v in region.rule.items() if v != "*"]
    if any(v == "*" for v in region.rule.values()):
        shown.append("others *")
    return "  ".join(shown)
