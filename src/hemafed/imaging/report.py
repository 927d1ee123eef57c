"""Report pages for imaging: feature distributions per site before and after harmonisation.

Per-site distributions are site-level statistics, so with real sites :func:`site_report` is
rendered *at a site* from its own data, against the pooled ComBat reference (the grand mean and
pooled SD, which are secure-sum results). :func:`distribution_report` draws every site side by
side; it is for virtual cohorts (demo, benchmarks), where one operator holds all the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hemafed.imaging.combat import FederatedComBat
from hemafed.report.html import Report, Section


def _boxes(section: Section, before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
           feature: str, reference: tuple[float, float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.5, 2.8), sharey=False)
    for ax, data, title in ((axes[0], before, "before"), (axes[1], after, "after ComBat")):
        ax.boxplot([np.asarray(v, dtype=float) for v in data.values()],
                   tick_labels=list(data), showfliers=False)
        ax.set_title(f"{feature}: {title}", fontsize=9)
        ax.tick_params(labelsize=8)
        if reference is not None and title != "before":
            mean, sd = reference
            ax.axhline(mean, color="#7b1e2b", lw=1)
            ax.axhspan(mean - sd, mean + sd, color="#7b1e2b", alpha=0.1)
    section.figure(fig, caption=f"{feature} per site, before and after harmonisation")


def _summary(before: Mapping[str, pd.DataFrame], after: Mapping[str, pd.DataFrame],
             features: Sequence[str]) -> pd.DataFrame:
    rows = []
    for site in before:
        for f in features:
            b, a = before[site][f].astype(float), after[site][f].astype(float)
            rows.append({"site": site, "feature": f, "n": int(b.notna().sum()),
                         "mean before": b.mean(), "sd before": b.std(),
                         "mean after": a.mean(), "sd after": a.std()})
    return pd.DataFrame(rows).set_index(["feature", "site"]).sort_index()


def distribution_report(before: Mapping[str, pd.DataFrame], after: Mapping[str, pd.DataFrame],
                        features: Sequence[str], *, title: str = "Imaging harmonisation",
                        extra: Mapping[str, Any] | None = None, plots: int = 6) -> Report:
    """All sites side by side (virtual cohorts): summary table and box plots of ``plots``
    features; ``extra`` adds provenance (e.g. site-classifier AUC before/after)."""
    report = Report(title, "radiomic features per site, before and after federated ComBat")
    s = report.section("Harmonisation")
    s.provenance({"sites": ", ".join(before), "features": len(features),
                  **(dict(extra) if extra else {})})
    s.table(_summary(before, after, features), caption="per-site mean and SD")
    plots_section = report.section("Distributions")
    for f in list(features)[:plots]:
        _boxes(plots_section, {k: v[f].to_numpy() for k, v in before.items()},
               {k: v[f].to_numpy() for k, v in after.items()}, f)
    return report


def site_report(site_id: str, before: pd.DataFrame, after: pd.DataFrame,
                combat: FederatedComBat, *, plots: int = 6) -> Report:
    """One site's own page: its features before/after against the pooled reference band."""
    report = Report(f"Imaging harmonisation at {site_id}",
                    "this site's radiomic features against the pooled ComBat reference")
    s = report.section("This site")
    s.provenance({"site": site_id, "pooled over sites": ", ".join(combat.sites),
                  "pooled patients": combat.n_, "features": len(combat.features)})
    ref = combat.summary
    table = pd.DataFrame({"mean before": before[combat.features].astype(float).mean(),
                          "mean after": after[combat.features].astype(float).mean(),
                          "pooled grand mean": ref["grand_mean"],
                          "pooled sd": ref["pooled_sd"]})
    s.table(table)
    for f in combat.features[:plots]:
        _boxes(s, {site_id: before[f].to_numpy()}, {site_id: after[f].to_numpy()}, f,
               (float(ref.loc[f, "grand_mean"]), float(ref.loc[f, "pooled_sd"])))
    return report


def write_site_report(site_dir: str | Path, combat: FederatedComBat, *, study: str) -> Path:
    """Render :func:`site_report` of ``study``'s harmonisation into
    ``<site>/imaging/harmonisation.html`` (stays at the site)."""
    from hemafed.imaging.site_features import imaging_cohort, imaging_table
    from hemafed.imaging.spec import HARMONISED_PREFIX
    from hemafed.site.store import load_cohort, site_id_of

    site = Path(site_dir)
    cohort = imaging_cohort(load_cohort(site), imaging_table(site, study=study))
    p = cohort.patients
    before = p[combat.features]
    after = p[[HARMONISED_PREFIX + f for f in combat.features]].set_axis(combat.features, axis=1)
    return site_report(site_id_of(site), before, after, combat).write(
        site / "imaging" / "harmonisation.html")
