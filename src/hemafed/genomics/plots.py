"""Manhattan and QQ plots of GWAS p-values (matplotlib), with the genomic inflation lambda.

Both take plain arrays, so the study report can draw them from the results JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hemafed.genomics.gwas import genomic_inflation

GENOME_WIDE = 5e-8


def plot_points(summary: pd.DataFrame, max_points: int = 20_000, seed: int = 0) -> dict[str, Any]:
    """Points for the plots: every p < 1e-3, the rest thinned to ``max_points`` in total."""
    p = summary["p"].to_numpy(dtype=float)
    ok = np.isfinite(p)
    keep = ok & (p < 1e-3)
    rest = np.flatnonzero(ok & ~keep)
    room = max(0, max_points - int(keep.sum()))
    if rest.size > room:
        rest = np.sort(np.random.default_rng(seed).choice(rest, room, replace=False))
    keep[rest] = True
    idx = np.flatnonzero(keep)
    return {"chrom": summary["chrom"].astype(str).to_numpy()[idx].tolist(),
            "pos": summary["pos"].to_numpy()[idx].astype(int).tolist(),
            "mlog10p": (-np.log10(np.maximum(p[idx], 1e-300))).round(4).tolist(),
            "lambda": genomic_inflation(p), "n_tested": int(ok.sum())}


def _rank(c: str) -> int:
    return int(c) if c.isdigit() else {"X": 23, "Y": 24}.get(c, 25)


def manhattan(points: dict[str, Any], title: str = "") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chrom = np.asarray(points["chrom"])
    pos = np.asarray(points["pos"], dtype=float)
    y = np.asarray(points["mlog10p"], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 3.6))
    offset, ticks, labels = 0.0, [], []
    for i, c in enumerate(sorted(set(chrom), key=_rank)):
        sel = chrom == c
        x = pos[sel] - pos[sel].min() + offset
        ax.scatter(x, y[sel], s=4, color="#7b1e2b" if i % 2 else "#34495e", lw=0)
        ticks.append(offset + (x.max() - offset) / 2)
        labels.append(c)
        offset = x.max() + 2e6
    ax.axhline(-np.log10(GENOME_WIDE), color="#c0392b", ls="--", lw=1)
    ax.set_xticks(ticks, labels, fontsize=7)
    ax.set_xlabel("chromosome")
    ax.set_ylabel("-log10 p")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def qq(points: dict[str, Any], title: str = "") -> Any:
    """QQ plot of the thinned points against uniform expectations over all tested variants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = int(points["n_tested"])
    obs = np.sort(np.asarray(points["mlog10p"], dtype=float))[::-1]
    # ranks of the kept points among all n: the top points were all kept (p < 1e-3)
    ranks = np.linspace(1, n, obs.size) if obs.size < n else np.arange(1, n + 1)
    top = min(obs.size, int(np.sum(obs > 3)))
    ranks[:top] = np.arange(1, top + 1)
    exp = -np.log10(ranks / (n + 1))
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(exp, obs, s=5, color="#7b1e2b", lw=0)
    lim = max(exp.max(), 1.0)
    ax.plot([0, lim], [0, lim], color="#9aa5b1", ls="--", lw=1)
    ax.set_xlabel("expected -log10 p")
    ax.set_ylabel("observed -log10 p")
    ax.set_title(f"{title} lambda = {points['lambda']:.3f}".strip(), fontsize=10)
    fig.tight_layout()
    return fig
