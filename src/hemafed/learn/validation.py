"""Validation of federated survival models across sites: leave-one-site-out, and a pooled
XGBoost reference.

**Leave-one-site-out** answers "how well does a model trained by the network do at a hospital
that did not take part in training?". For each site ``s`` a federated Cox boosting model (a
*fold model*) is trained over the *other* sites (a federation restricted to them); then each
site is evaluated with the fold model trained without it. Two ways to release the evaluation:

- :func:`pooled_leave_one_site_out` (the one to use through secure aggregation): one query,
  ``learn_loso_concordance``, carries *every* fold model keyed by its left-out site; each site
  evaluates the model trained without it (it knows its own id: the query is ``site_aware``, the
  id is added by the site, never taken from the hub) and returns its concordant and comparable
  pair counts. One secure sum over all sites gives the pooled leave-one-site-out C-index
  (summed concordant / summed comparable pairs; pairs are within a site) and nothing per site.
- :func:`leave_one_site_out` releases every held-out site's own C-index (and td-AUC, integrated
  Brier) from a "federation" of that one site. That is a single site's aggregate in the clear:
  under the secure runtime (threshold ``t >= 2``) it cannot run, and the sites' privacy rules
  forbid it unless a site's policy allows releasing its own aggregates. It is therefore allowed
  only on in-memory :class:`~hemafed.federation.local.LocalSumFederation` folds (the hub holds
  the data anyway: tests, benchmarks) or when the caller passes ``per_site_allowed=True``. Its
  mean C-index comes with a t-interval across sites: sites are the unit a new hospital is drawn
  from, so the spread between sites is the uncertainty that matters. The pooled release has no
  such interval: the spread between sites is exactly what it does not release.

Restricting the participants is the caller's job, through ``federation_for(site_ids)``: with
:class:`~hemafed.federation.local.LocalSumFederation`, :func:`local_federations` builds one per
fold from the cohorts; a deployment builds ``SecureFederation(exchange, manifest,
site_ids=...)``.

**XGBoost reference** (:func:`xgboost_cox_trainer`): XGBoost's ``survival:cox`` with
``tree_method="hist"``, trained on pooled data with the same depth, rounds, learning rate,
``lambda``, ``min_child_weight`` and number of bins, on the same grid-mapped times. It is an
independent implementation of the same algorithm (its own quantile sketch, tie handling and
base score), used as a pooled reference in tests and benchmarks. ``xgboost-cpu`` is an optional
dependency, imported only when the trainer is used.

>>> # res = pooled_leave_one_site_out(federation_for, site_ids, ["age", "gene:TP53"])
>>> # res.c_index, res.comparable, res.sites
>>> # res = leave_one_site_out(local_federations(sites), list(sites), ["age", "gene:TP53"])
>>> # res.table["c_index"], res.summary["c_mean"], res.summary["c_low"], res.summary["c_high"]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics.design import DesignSpec, Term
from hemafed.analytics.survival_grid import check_grid
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.queries import Params, Query, SiteContext, Statistic, register
from hemafed.learn.features import feature_matrix, feature_spec
from hemafed.learn.gbdt import FederatedGBDT, Outcome, default_grid, training_rows
from hemafed.learn.metrics import EvalOutcome, EvalParams, EvalRows, evaluate, gbdt_predictor
from hemafed.learn.predictor import Predictor

log = logging.getLogger(__name__)

FederationFor = Callable[[Sequence[str]], Federation]
"""Builds a federation over exactly the given site ids."""

RiskFunction = Callable[[Cohort], np.ndarray]
PooledTrainer = Callable[[Cohort], RiskFunction]
"""Trains on a pooled cohort and returns a risk function (higher = worse) for any cohort."""

_CHUNK = 2048


# --- query: a site's exact Harrell's C ----------------------------------------------------------

def concordance_counts(rows: EvalRows) -> tuple[float, float]:
    """``(2 * concordant, comparable)`` pair counts of Harrell's C (lifelines' rules, pure).

    Pair (i, j) is comparable when i has an event and j exits later, or is censored at i's time;
    it is concordant when ``risk_i > risk_j`` and counts one half for tied risks. Twice the
    concordant count is an integer. Rows are processed in chunks so memory stays ``O(n)``.
    """
    t, ev, r = rows.time_index, rows.event, rows.risk
    conc2 = comp = 0.0
    cases = np.flatnonzero(ev)
    for start in range(0, cases.size, _CHUNK):
        i = cases[start:start + _CHUNK]
        ti, ri = t[i][:, None], r[i][:, None]
        comparable = (t[None, :] > ti) | ((t[None, :] == ti) & ~ev[None, :])
        score2 = np.where(ri > r[None, :], 2.0, np.where(ri == r[None, :], 1.0, 0.0))
        conc2 += float(np.sum(score2 * comparable))
        comp += float(np.sum(comparable))
    return conc2, comp


def _site_concordance(rows: EvalRows) -> dict[str, np.ndarray]:
    conc2, comp = concordance_counts(rows)
    return {"concordant2": np.array([conc2]), "comparable": np.array([comp]),
            "n": np.array([float(rows.risk.size)]),
            "events": np.array([float(rows.event.sum())])}


def _concordance_compute(cohort: Cohort, params: EvalParams) -> dict[str, np.ndarray]:
    return _site_concordance(params.site_rows(cohort))


def _concordance_declare(params: EvalOutcome) -> dict[str, Statistic]:
    mp = float(params.max_patients)
    # one patient takes part in at most 2 (n - 1) pairs
    return {"concordant2": Statistic((1,), 0, 2 * mp * mp, sensitivity=4 * mp, is_count=True),
            "comparable": Statistic((1,), 0, mp * mp, sensitivity=2 * mp, is_count=True),
            "n": Statistic((1,), 0, mp, is_count=True),
            "events": Statistic((1,), 0, mp, is_count=True)}


SITE_CONCORDANCE = register(Query(
    "learn_site_concordance", "1", compute=_concordance_compute, declare=_concordance_declare,
    params_type=EvalParams,
    description="twice the concordant and the comparable pair counts of Harrell's C of a "
                "public predictor on the site's patients (for a site's own C-index)"))


# --- query: leave-one-site-out concordance, every site with the model trained without it ------

@dataclass(frozen=True, kw_only=True)
class LosoParams(EvalOutcome):
    """``learn_loso_concordance``: the outcome, the grid and ``models``, the fold model (a
    :class:`~hemafed.learn.predictor.Predictor`) trained without each site, keyed by that
    site's id (in the hub's order)."""

    QUERY = "learn_loso_concordance"
    models: tuple[tuple[str, Predictor], ...]

    @classmethod
    def from_mapping(cls, params: Params) -> LosoParams:
        cls.known(params)
        common = cls.outcome_fields(params)
        models = params.get("models")
        if not isinstance(models, Mapping) or not models:
            raise InvalidInput("parameter 'models' must map each left-out site id to the "
                               "predictor of the fold model trained without that site")
        if not all(isinstance(site, str) and site for site in models):
            raise InvalidInput("parameter 'models': keys must be site ids (non-empty strings)")
        return cls(**common, models=tuple((site, Predictor.from_params(p, "models"))
                                          for site, p in models.items()))

    def to_mapping(self) -> dict[str, Any]:
        return {**super().to_mapping(),
                "models": {site: p.to_params() for site, p in self.models}}

    def fold_model(self, site_id: str) -> Predictor:
        """The fold model trained without ``site_id``."""
        for site, predictor in self.models:
            if site == site_id:
                return predictor
        raise InvalidInput(f"site {site_id}: parameter 'models' has no fold model trained "
                           f"without this site (it has {sorted(s for s, _ in self.models)}); "
                           "train one fold per site of the federation")


def _loso_compute(cohort: Cohort, params: LosoParams, site: SiteContext) -> dict[str, np.ndarray]:
    # the answering site's own id, added by the site (never the hub's word)
    return _site_concordance(params.rows(cohort, params.fold_model(site.site_id)))


LOSO_CONCORDANCE = register(Query(
    "learn_loso_concordance", "1", compute=_loso_compute, declare=_concordance_declare,
    params_type=LosoParams, site_aware=True,
    description="twice the concordant and the comparable pair counts of Harrell's C of the "
                "fold model trained without the answering site, on the site's patients "
                "(summed: the pooled leave-one-site-out C-index)"))


@dataclass(frozen=True)
class SiteConcordance:
    """A C-index from pair counts, with the number of rows and events it used."""

    c_index: float
    comparable: float
    n: int
    events: int


def site_concordance(federation: Federation, predictor: Mapping[str, Any] | Predictor,
                     duration_col: str = "os_time", event_col: str = "os_status", *,
                     grid: Sequence[float] | None = None, study: str = "default"
                     ) -> SiteConcordance:
    """Harrell's C of ``predictor`` from the summed pair counts of the federation's sites.

    With one site this is that site's exact C-index; with several it counts only pairs within
    a site (a stratified C-index), not the pooled C (see :func:`hemafed.learn.metrics.evaluate`).
    """
    g = check_grid(list(grid) if grid is not None else list(default_grid()))
    agg = federation.secure_sum("learn_site_concordance", {
        "duration_col": duration_col, "event_col": event_col, "grid": [float(t) for t in g],
        "predictor": Predictor.from_params(predictor).to_params()}, study=study)
    comp = float(agg["comparable"][0])
    c = float(agg["concordant2"][0]) / (2.0 * comp) if comp > 0 else float("nan")
    return SiteConcordance(c, comp, round(float(agg["n"][0])),
                           round(float(agg["events"][0])))


# --- leave-one-site-out -------------------------------------------------------------------------

def local_federations(cohorts: Mapping[str, Cohort]) -> FederationFor:
    """``federation_for`` over in-memory cohorts: a plain-sum federation of the named sites."""
    def federation_for(site_ids: Sequence[str]) -> Federation:
        unknown = [s for s in site_ids if s not in cohorts]
        if unknown:
            raise InvalidInput(f"unknown site(s) {unknown}; known: {list(cohorts)}")
        return LocalSumFederation({s: cohorts[s] for s in site_ids})
    return federation_for


@dataclass(frozen=True)
class LeaveOneSiteOut:
    """Per held-out site (rows): the training sites' count, held-out rows and events, the site's
    C-index (and td-AUC / integrated Brier when computed); ``summary``: mean C-index over sites,
    its SD and 95% t-interval across sites; ``models``: the fold models by held-out site."""

    table: pd.DataFrame
    summary: dict[str, float]
    models: Mapping[str, FederatedGBDT] = field(default_factory=dict, repr=False)

    def report(self) -> str:
        s = self.summary
        return (f"leave-one-site-out over {int(s['sites'])} sites: mean held-out-site C-index "
                f"{s['c_mean']:.3f} (95% CI {s['c_low']:.3f} to {s['c_high']:.3f}, SD "
                f"{s['c_sd']:.3f} across sites)")


def mean_with_t_interval(values: Sequence[float] | np.ndarray, level: float = 0.95
                         ) -> tuple[float, float, float, float]:
    """``(mean, sd, low, high)``: t-interval of the mean of finite ``values`` (pure)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (math.nan,) * 4
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1)) * sd / math.sqrt(v.size)
    return mean, sd, mean - half, mean + half


def _check_loso(site_ids: Sequence[str], outcome: tuple[str, str]) -> list[str]:
    if isinstance(outcome, str) or len(outcome) != 2:
        raise InvalidInput("outcome must be a (duration_col, event_col) pair: leave-one-site-out "
                           "validates survival risk models by C-index")
    ids = [str(s) for s in site_ids]
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise InvalidInput(f"leave-one-site-out needs at least two distinct sites, got {ids}")
    return ids


def _fold_models(federation_for: FederationFor, ids: Sequence[str], spec: DesignSpec,
                 outcome: tuple[str, str], grid: tuple[float, ...], study: str,
                 **kw: Any) -> dict[str, FederatedGBDT]:
    """One federated Cox boosting model per site, trained over the other sites."""
    from hemafed.learn.features import fixed_bins

    # the spec's fixed bins (an approved boosting study's plan binds the edges to them)
    edges = fixed_bins(spec, int(kw.get("max_bins", 32)))
    models: dict[str, FederatedGBDT] = {}
    for held in ids:
        others = [s for s in ids if s != held]
        models[held] = FederatedGBDT("survival:cox", grid=grid, **kw).fit(
            federation_for(others), spec, outcome, edges=edges, study=study)
        log.info("leave-one-site-out: fold without site %s trained", held)
    return models


@dataclass(frozen=True)
class PooledLeaveOneSiteOut:
    """The pooled leave-one-site-out C-index: concordant / comparable pairs summed over sites,
    each site's pairs scored by the fold model trained without it.

    ``sites``: the sites whose counts are in the sum (secure aggregation may drop some);
    ``n``/``events``: rows and events summed over them; ``models``: the fold models by held-out
    site (public: they are what the sites received).
    """

    c_index: float
    comparable: float
    n: int
    events: int
    sites: tuple[str, ...]
    models: Mapping[str, FederatedGBDT] = field(default_factory=dict, repr=False)

    def report(self) -> str:
        return (f"leave-one-site-out over {len(self.sites)} sites (pooled release): C-index "
                f"{self.c_index:.3f} from {self.comparable:.0f} comparable pairs, {self.n} "
                f"held-out patients, {self.events} events")


def pooled_leave_one_site_out(
        federation_for: FederationFor, site_ids: Sequence[str],
        features: str | Iterable[str | Term] | DesignSpec,
        outcome: tuple[str, str] = ("os_time", "os_status"), *, n_rounds: int = 50,
        learning_rate: float = 0.1, max_depth: int = 3, reg_lambda: float = 1.0,
        min_child_weight: float = 1.0, max_bins: int = 32, grid: Sequence[float] | None = None,
        study: str = "default") -> PooledLeaveOneSiteOut:
    """Leave-one-site-out through secure aggregation, releasing nothing per site.

    Each fold is trained over ``federation_for(others)``; then ONE secure sum over
    ``federation_for(site_ids)`` of query ``learn_loso_concordance``, whose parameters carry every
    fold model keyed by its left-out site: each site scores its own patients with the model
    trained without it and contributes its pair counts. The result is the pooled C-index
    ``sum(concordant) / sum(comparable)`` (pairs within a site; the comparable-pair-weighted mean
    of the sites' C-indices), never a single site's value.

    Why not per site by default (see :func:`leave_one_site_out`): a site's own C-index, row and
    event counts are that site's aggregate released in the clear; the secure runtime cannot
    aggregate over one site (threshold ``t >= 2``) and the site policies forbid such a release.
    With a secure sum over all sites each site's counts are hidden among the others' (as with
    every secure sum over two sites, each of the two can subtract its own counts).
    """
    ids = _check_loso(site_ids, outcome)
    spec = feature_spec(features)
    g = tuple(check_grid(list(grid))) if grid is not None else default_grid()
    models = _fold_models(federation_for, ids, spec, outcome, g, study, n_rounds=n_rounds,
                          learning_rate=learning_rate, max_depth=max_depth,
                          reg_lambda=reg_lambda, min_child_weight=min_child_weight,
                          max_bins=max_bins)
    agg = federation_for(ids).secure_sum("learn_loso_concordance", {
        "duration_col": outcome[0], "event_col": outcome[1], "grid": [float(t) for t in g],
        "models": {held: gbdt_predictor(m) for held, m in models.items()}}, study=study)
    comp = float(agg["comparable"][0])
    c = float(agg["concordant2"][0]) / (2.0 * comp) if comp > 0 else float("nan")
    return PooledLeaveOneSiteOut(c, comp, round(float(agg["n"][0])),
                                 round(float(agg["events"][0])), tuple(agg.sites), models)


def leave_one_site_out(
        federation_for: FederationFor, site_ids: Sequence[str],
        features: str | Iterable[str | Term] | DesignSpec,
        outcome: tuple[str, str] = ("os_time", "os_status"), *, n_rounds: int = 50,
        learning_rate: float = 0.1, max_depth: int = 3, reg_lambda: float = 1.0,
        min_child_weight: float = 1.0, max_bins: int = 32, grid: Sequence[float] | None = None,
        horizon: float | None = 5.0, study: str = "default",
        per_site_allowed: bool = False) -> LeaveOneSiteOut:
    """Train federated Cox boosting on all sites but one, evaluate at the one left out; repeat;
    release every held-out site's own metrics.

    Per-site release is not the default way to validate: each row is one site's aggregate in
    the clear (a secure sum over one site). It is refused, before any training, unless every
    one-site federation is an in-memory :class:`~hemafed.federation.local.LocalSumFederation`
    or ``per_site_allowed=True`` (the caller vouches that every site's policy allows releasing
    its own aggregates and that the federation can aggregate over one site). Through secure
    aggregation use :func:`pooled_leave_one_site_out`.

    ``federation_for(ids)`` must return a federation over exactly ``ids`` (see
    :func:`local_federations`). Each fold's bins come from a federated quantile sketch over its
    training sites. ``horizon``: time of the td-AUC and end of the integrated Brier score
    computed by the held-out site (``None`` skips them; the C-index is always computed).
    """
    ids = _check_loso(site_ids, outcome)
    singles = {held: federation_for([held]) for held in ids}
    if not per_site_allowed:
        refused = [h for h, f in singles.items() if not isinstance(f, LocalSumFederation)]
        if refused:
            raise InvalidInput(
                f"leave-one-site-out with per-site release would publish sites {refused} "
                "one by one (a single-site aggregate); use pooled_leave_one_site_out, or pass "
                "per_site_allowed=True only if every site's policy allows that release")
    spec = feature_spec(features)
    g = tuple(check_grid(list(grid))) if grid is not None else default_grid()
    models = _fold_models(federation_for, ids, spec, outcome, g, study, n_rounds=n_rounds,
                          learning_rate=learning_rate, max_depth=max_depth,
                          reg_lambda=reg_lambda, min_child_weight=min_child_weight,
                          max_bins=max_bins)
    rows: list[dict[str, Any]] = []
    for held in ids:
        at_site = singles[held]
        predictor = gbdt_predictor(models[held])
        sc = site_concordance(at_site, predictor, outcome[0], outcome[1], grid=g, study=study)
        row: dict[str, Any] = {"site": held, "training_sites": len(ids) - 1, "n_test": sc.n,
                               "events_test": sc.events, "c_index": sc.c_index}
        if horizon is not None:
            ev = evaluate(at_site, predictor, outcome[0], outcome[1], horizon=horizon,
                          study=study)
            row |= {"td_auc": ev.auc, "integrated_brier": ev.integrated_brier}
        rows.append(row)
        log.info("leave-one-site-out: site %s evaluated", held)
    table = pd.DataFrame(rows).set_index("site")
    mean, sd, low, high = mean_with_t_interval(table["c_index"].to_numpy())
    summary = {"sites": float(table["c_index"].notna().sum()), "c_mean": mean, "c_sd": sd,
               "c_low": low, "c_high": high}
    return LeaveOneSiteOut(table, summary, models)


# --- pooled XGBoost reference -------------------------------------------------------------------

def xgboost_cox_trainer(
        features: str | Iterable[str | Term] | DesignSpec, outcome: tuple[str, str] = (
            "os_time", "os_status"), *, n_rounds: int = 50, learning_rate: float = 0.1,
        max_depth: int = 3, reg_lambda: float = 1.0, min_child_weight: float = 1.0,
        max_bins: int = 32, grid: Sequence[float] | None = None, seed: int = 0,
        nthread: int = 1) -> PooledTrainer:
    """A trainer of XGBoost ``survival:cox`` (``tree_method="hist"``) matched to
    :class:`~hemafed.learn.gbdt.FederatedGBDT`'s parameters, on the same grid-mapped times
    (censored past the grid's end) and the same NaN-as-missing feature matrix.

    Returns ``train(cohort) -> risk(cohort)``, the risk being XGBoost's margin (log hazard).
    Raises ``InvalidInput`` when xgboost is not installed.
    """
    spec = feature_spec(features)
    out = Outcome("survival:cox", duration_col=outcome[0], event_col=outcome[1],
                  grid=tuple(check_grid(list(grid))) if grid is not None else default_grid())
    params = {"objective": "survival:cox", "tree_method": "hist", "max_depth": max_depth,
              "eta": learning_rate, "lambda": reg_lambda, "alpha": 0.0, "gamma": 0.0,
              "min_child_weight": min_child_weight, "max_bin": max_bins, "base_score": 1.0,
              "seed": seed, "nthread": nthread, "verbosity": 0}

    def train(cohort: Cohort) -> RiskFunction:
        try:
            import xgboost as xgb
        except ImportError:
            raise InvalidInput("the XGBoost reference needs xgboost: pip install "
                               "xgboost-cpu==3.1.2 (the dev extra)") from None
        rows = training_rows(cohort, spec, out)
        t = np.asarray(out.grid)[rows.time_index]
        label = np.where(rows.label == 1, t, -t)
        booster = xgb.train(params, xgb.DMatrix(rows.x, label=label, missing=np.nan),
                            num_boost_round=n_rounds)

        def risk(target: Cohort) -> np.ndarray:
            x = feature_matrix(target, spec)
            return np.asarray(booster.predict(xgb.DMatrix(x, missing=np.nan),
                                              output_margin=True), dtype=float)
        return risk
    return train
