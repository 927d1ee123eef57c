"""The study design that answers a clinician's question: does the federated model beat what my
hospital could train alone, and does it match a pooled analysis?

:func:`compare_site_federated_pooled` holds out part of every site's patients, then trains

(a) one model per site on that site's training part alone ("site alone"),
(b) one federated model over every site's training part (secure sums only),
(c) one model on the pooled training parts (what sharing all data would give),

and scores (d) a published score (IPSS-M mean score computed at the sites, for MDS; or any public
predictor such as a published risk class stored as a column, e.g. ELN 2017 for AML) as a risk
predictor. Optional extra arms (``extra_arms``) are pooled references trained on the pooled
training parts by another implementation, e.g. XGBoost
(:func:`hemafed.learn.validation.xgboost_cox_trainer`). Every arm is
evaluated on the *same* held-out patients of each site (those with a known outcome and a
computable published score). A site's C-index on its own held-out patients is what that site
can compute locally (exact Harrell's C on grid-mapped times); the paired bootstrap resamples
held-out patients within each site, so the interval for "federated - site alone" reflects the
uncertainty of both C-indices on the same patients. The pooled held-out set is also evaluated
federatedly (:func:`hemafed.learn.metrics.evaluate`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics.design import DesignSpec, Term
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation
from hemafed.federation.local import LocalSumFederation
from hemafed.learn.features import federated_bins
from hemafed.learn.gbdt import FederatedGBDT, default_grid
from hemafed.learn.metrics import (
    check_predictor,
    evaluate,
    gbdt_predictor,
    ipssm_predictor,
    predict_risk,
)

log = logging.getLogger(__name__)

ARMS = ("site_alone", "federated", "pooled", "published")

PooledTrainer = Callable[[Cohort], Callable[[Cohort], np.ndarray]]
"""Trains on the pooled training cohort; returns a risk function (higher = worse)."""


def pool_cohorts(cohorts: Mapping[str, Cohort] | Sequence[Cohort]) -> Cohort:
    """One cohort holding every site's patients, mutations and panels (for pooled references)."""
    parts = list(cohorts.values()) if isinstance(cohorts, Mapping) else list(cohorts)
    if not parts:
        raise InvalidInput("pool_cohorts: no cohorts given")
    panels: dict[str, tuple[str, ...]] = {}
    for c in parts:
        for name, genes in c.panels.items():
            if panels.setdefault(name, tuple(genes)) != tuple(genes):
                raise InvalidInput(f"pool_cohorts: panel {name!r} lists different genes at "
                                   f"different sites; give each panel a distinct name")
    patients = pd.concat([c.patients for c in parts], ignore_index=True)
    if patients["patient_id"].duplicated().any():
        raise InvalidInput("pool_cohorts: a patient_id occurs at two sites; pseudonymise per site")
    mutations = pd.concat([c.mutations for c in parts], ignore_index=True)
    return Cohort(patients, mutations, panels)


ELN2017_RISK = {"favorable": 0.0, "intermediate": 1.0, "adverse": 2.0}
"""ELN 2017 genetic risk class as an ordinal risk score (higher = worse)."""

AML_FEATURES = ("age", "sex", "wbc", "hb", "plt", "bm_blast", "secondary", "complex", "t_8_21",
                "inv_16", "t_15_17", "t_9_11", "t_v_11", "t_6_9", "t_9_22", "inv_3", "minus5",
                "minus7", "minus17", "del5q", "gene:NPM1", "gene:FLT3_ITD", "gene:FLT3_TKD",
                "gene:CEBPA", "gene:TP53", "gene:RUNX1", "gene:ASXL1", "gene:DNMT3A",
                "gene:IDH1", "gene:IDH2", "gene:TET2", "gene:NRAS", "gene:KRAS", "gene:WT1",
                "gene:SRSF2", "gene:SF3B1", "gene:U2AF1", "gene:STAG2", "gene:BCOR",
                "gene:EZH2", "gene:KIT", "gene:PTPN11", "gene:ZRSR2", "gene:KMT2A")
"""AML model features present in both Tazi et al. 2022 cohorts (clinical, cytogenetic flags and
genes sequenced by both panels)."""


def with_score_column(cohort: Cohort, column: str, scores: pd.Series) -> Cohort:
    """The cohort with a per-patient public score (e.g. a published risk class already mapped to
    numbers) as the patient column ``column``, matched on ``patient_id``; NaN where absent.

    Lets a published label travel with the site's patients so that the site can evaluate it
    (:func:`hemafed.learn.metrics.column_predictor`)."""
    p = cohort.patients
    if column in p.columns:
        raise InvalidInput(f"with_score_column: the cohort already has a column {column!r}")
    values = pd.to_numeric(scores, errors="coerce")
    values.index = values.index.astype(str)
    patients = p.assign(**{column: p["patient_id"].astype(str).map(values).astype("Float64")})
    return Cohort(patients, cohort.mutations, cohort.panels)


def holdout_split(cohort: Cohort, fraction: float, seed: int | Sequence[int]
                  ) -> tuple[Cohort, Cohort]:
    """Random (training, held-out) split with ``round(fraction * n)`` held-out patients."""
    if not 0 < fraction < 1:
        raise InvalidInput(f"holdout_fraction must be in (0, 1), got {fraction}")
    n = len(cohort)
    n_test = round(fraction * n)
    if n_test < 1 or n - n_test < 1:
        raise InvalidInput(f"a site of {n} patient(s) cannot be split with holdout_fraction "
                           f"{fraction}; merge small sites or change the fraction")
    test = np.zeros(n, dtype=bool)
    test[np.random.default_rng(seed).permutation(n)[:n_test]] = True
    return cohort.select(~test), cohort.select(test)


def concordance_pairs(time_index: np.ndarray, event: np.ndarray,
                      risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(comparable, concordant)`` pair matrices of Harrell's C (lifelines' rules, pure):
    pair (i, j) is comparable when i has an event and j exits later (or is censored at i's
    time); concordant scores 1 when ``risk_i > risk_j`` and 0.5 for tied risks."""
    ti, tj = time_index[:, None], time_index[None, :]
    ev_i, ev_j = event[:, None], event[None, :]
    comparable = ev_i & ((tj > ti) | ((tj == ti) & ~ev_j))
    ri, rj = risk[:, None], risk[None, :]
    concordant = np.where(ri > rj, 1.0, np.where(ri == rj, 0.5, 0.0))
    return comparable.astype(float), concordant


def weighted_concordance(comparable: np.ndarray, concordant: np.ndarray,
                         weights: np.ndarray) -> np.ndarray:
    """Harrell's C under patient multiplicities ``weights`` (``(B, n)``: one per bootstrap)."""
    num = np.einsum("bi,ij,bj->b", weights, comparable * concordant, weights)
    den = np.einsum("bi,ij,bj->b", weights, comparable, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(den > 0, num / den, np.nan))


@dataclass(frozen=True)
class StudyResult:
    """Per-site table (held-out C-index of each arm), federated evaluation of all held-out
    patients (``overall``), the summary, the federated fit's round times, and ``cross_site``:
    the C-index of each site-alone model (rows) on every site's held-out patients (columns)."""

    table: pd.DataFrame
    overall: pd.DataFrame
    summary: dict[str, float]
    round_seconds: list[float] = field(default_factory=list)
    cross_site: pd.DataFrame = field(default_factory=pd.DataFrame)

    def report(self) -> str:
        s = self.summary
        lines = [
            f"mean held-out C-index over {int(s['sites'])} sites: site alone "
            f"{s['c_site_alone']:.3f}, federated {s['c_federated']:.3f}, pooled "
            f"{s['c_pooled']:.3f}" + (f", published {s['c_published']:.3f}"
                                      if "c_published" in s else ""),
            f"federated - site alone: {s['diff_fed_site']:+.3f} (95% CI "
            f"{s['diff_fed_site_low']:+.3f} to {s['diff_fed_site_high']:+.3f})",
            f"federated - pooled: {s['diff_fed_pooled']:+.3f} (95% CI "
            f"{s['diff_fed_pooled_low']:+.3f} to {s['diff_fed_pooled_high']:+.3f})"]
        return "\n".join(lines)


def _time_index(cohort: Cohort, outcome: tuple[str, str], grid: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = cohort.patients
    t = p[outcome[0]].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    e = p[outcome[1]].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    known = ~np.isnan(t) & ~np.isnan(e)
    idx = np.searchsorted(grid, np.nan_to_num(t) - 1e-9, side="left")
    event = (e == 1) & (idx < grid.size)
    return np.minimum(idx, grid.size - 1), event, known


def compare_site_federated_pooled(
        site_cohorts: Mapping[str, Cohort], features: str | Iterable[str | Term] | DesignSpec,
        outcome: tuple[str, str] = ("os_time", "os_status"), holdout_fraction: float = 0.3,
        seed: int = 0, *, n_rounds: int = 50, learning_rate: float = 0.1, max_depth: int = 3,
        min_child_weight: float = 1.0, max_bins: int = 32,
        published: str | Mapping[str, Any] | None = "ipssm",
        horizon: float = 5.0, n_boot: int = 1000, grid: Sequence[float] | None = None,
        federation_factory: Callable[[Mapping[str, Cohort]], Federation] = LocalSumFederation,
        extra_arms: Mapping[str, PooledTrainer] | None = None,
) -> StudyResult:
    """Site alone vs federated vs pooled (vs published score) on every site's held-out patients.

    ``outcome`` is a ``(duration_col, event_col)`` pair (Cox boosting). ``federation_factory``
    builds the federation over the sites' training parts (default: the plain-sum test double).
    ``grid`` is the public time grid of the Cox objective and of the C-index (default: monthly
    to 20 years); times past it count as censored at its end. ``published``: ``"ipssm"``, a
    predictor mapping (e.g. :func:`hemafed.learn.metrics.column_predictor`) or None.
    ``extra_arms``: name -> trainer run once on the pooled training parts; each adds a
    ``c_<name>`` column, its mean and the CI of "federated - <name>" to the summary.
    """
    if isinstance(outcome, str) or len(outcome) != 2:
        raise InvalidInput("outcome must be a (duration_col, event_col) pair: the study "
                           "compares survival risk models by C-index")
    pub: dict[str, Any] | None
    if published is None:
        pub = None
    elif isinstance(published, Mapping):
        pub = check_predictor(published)
    elif published == "ipssm":
        pub = ipssm_predictor()
    else:
        raise InvalidInput(f"published must be 'ipssm', a predictor mapping or None, got "
                           f"{published!r}")
    extras = dict(extra_arms or {})
    clash = sorted(set(extras) & set(ARMS))
    if clash:
        raise InvalidInput(f"extra_arms names {clash} are taken by the study's own arms")
    if len(site_cohorts) < 2:
        raise InvalidInput("the study needs at least two sites")
    names = list(site_cohorts)
    train: dict[str, Cohort] = {}
    test: dict[str, Cohort] = {}
    for k, site in enumerate(names):
        train[site], test[site] = holdout_split(site_cohorts[site], holdout_fraction, [seed, k])
    grid = tuple(grid) if grid is not None else default_grid()
    kw: dict[str, Any] = {"n_rounds": n_rounds, "learning_rate": learning_rate,
                          "max_depth": max_depth, "min_child_weight": min_child_weight,
                          "max_bins": max_bins, "grid": grid}

    fed_train = federation_factory(train)
    fed_model = FederatedGBDT("survival:cox", **kw).fit(fed_train, features, outcome)
    pooled_fed = LocalSumFederation({"pooled": pool_cohorts(train)})
    pooled_model = FederatedGBDT("survival:cox", **kw).fit(
        pooled_fed, features, outcome,
        edges=federated_bins(pooled_fed, fed_model.spec_, max_bins))
    site_models: dict[str, FederatedGBDT | None] = {}
    for site in names:
        try:
            site_models[site] = FederatedGBDT("survival:cox", **kw).fit(
                LocalSumFederation({site: train[site]}), features, outcome)
        except InvalidInput as err:  # e.g. no event at a small site: it cannot train alone
            log.warning("site %s cannot train alone: %s", site, err)
            site_models[site] = None
    extra_models = {}
    if extras:
        pooled_train = pool_cohorts(train)
        extra_models = {name: trainer(pooled_train) for name, trainer in extras.items()}

    rng = np.random.default_rng([seed, 7919])
    g = np.asarray(grid)
    rows, boot = [], {a: np.zeros(n_boot) for a in (*ARMS, *extras)}
    cross: dict[str, dict[str, float]] = {s: {} for s in names}
    for site in names:
        cohort = test[site]
        tix, ev, known = _time_index(cohort, outcome, g)
        risks: dict[str, np.ndarray] = {
            "federated": fed_model.predict_margin(cohort),
            "pooled": pooled_model.predict_margin(cohort)}
        sm = site_models[site]
        risks["site_alone"] = (sm.predict_margin(cohort) if sm is not None
                               else np.zeros(len(cohort)))
        if pub is not None:
            risks["published"] = predict_risk(cohort, pub)
        for name, risk_of in extra_models.items():
            risks[name] = np.asarray(risk_of(cohort), dtype=float)
        keep = known & np.all([~np.isnan(r) for r in risks.values()], axis=0)
        row: dict[str, Any] = {"site": site, "n_train": len(train[site]),
                               "n_test": int(keep.sum()), "events_test": int(ev[keep].sum())}
        weights = rng.multinomial(int(keep.sum()), np.full(int(keep.sum()),
                                                           1.0 / max(int(keep.sum()), 1)),
                                  size=n_boot).astype(float) if keep.any() else None
        for arm, r in risks.items():
            comp, conc = concordance_pairs(tix[keep], ev[keep], r[keep])
            point = weighted_concordance(comp, conc, np.ones((1, int(keep.sum()))))[0] \
                if keep.any() else np.nan
            row[f"c_{arm}"] = float(point)
            if weights is not None and np.isfinite(point):
                boot[arm] += np.nan_to_num(weighted_concordance(comp, conc, weights), nan=point)
        for origin, model in site_models.items():
            if model is None or not keep.any():
                cross[origin][site] = float("nan")
                continue
            comp, conc = concordance_pairs(tix[keep], ev[keep], model.predict_margin(cohort)[keep])
            cross[origin][site] = float(weighted_concordance(
                comp, conc, np.ones((1, int(keep.sum()))))[0])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("site")
    usable = table["c_federated"].notna() & table["c_site_alone"].notna()
    means = {arm: float(table.loc[usable, f"c_{arm}"].mean()) for arm in risks}
    boot_mean = {arm: boot[arm] / max(int(usable.sum()), 1) for arm in risks}

    def ci(a: str, b: str) -> tuple[float, float, float]:
        d = boot_mean[a] - boot_mean[b]
        lo, hi = np.quantile(d, [0.025, 0.975])
        return means[a] - means[b], float(lo), float(hi)

    summary: dict[str, float] = {"sites": float(usable.sum())}
    summary |= {f"c_{arm}": v for arm, v in means.items()}
    for key, (a, b) in {"fed_site": ("federated", "site_alone"),
                        "fed_pooled": ("federated", "pooled")}.items():
        est, lo, hi = ci(a, b)
        summary |= {f"diff_{key}": est, f"diff_{key}_low": lo, f"diff_{key}_high": hi}
    for arm in ("published", *extras):
        if arm in risks:
            est, lo, hi = ci("federated", arm)
            summary |= {f"diff_fed_{arm}": est, f"diff_fed_{arm}_low": lo,
                        f"diff_fed_{arm}_high": hi}

    # the pooled held-out set, evaluated through the federation (secure sums only)
    fed_test = federation_factory(test)
    overall = {}
    start = time.perf_counter()
    for arm, model in (("federated", fed_model), ("pooled", pooled_model)):
        overall[arm] = evaluate(fed_test, gbdt_predictor(model), outcome[0], outcome[1],
                                horizon=horizon).as_dict()
    if pub is not None:
        overall["published"] = evaluate(fed_test, pub, outcome[0], outcome[1],
                                        horizon=horizon).as_dict()
    log.debug("federated evaluation took %.2f s", time.perf_counter() - start)
    cross_site = pd.DataFrame(cross).T.reindex(index=names, columns=names)
    cross_site.index.name, cross_site.columns.name = "trained_at", "held_out_at"
    off = ~np.eye(len(names), dtype=bool)
    summary["c_site_alone_elsewhere"] = float(np.nanmean(cross_site.to_numpy()[off]))
    return StudyResult(table, pd.DataFrame(overall).T, summary, list(fed_model.round_seconds_),
                       cross_site)
