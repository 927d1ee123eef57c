"""Federated ComBat harmonisation of radiomic features: site = batch, through secure sums only.

ComBat (Johnson et al. 2007; neuroCombat, Fortin et al. 2018) models feature ``g`` of patient ``j``
at site ``i`` as ``y = alpha_g + x' beta_g + gamma_ig + delta_ig * eps``, with biological
covariates ``x`` kept, and shrinks the site effects ``gamma``, ``delta`` by empirical Bayes.

Only the pooled pieces need the other sites, and they are all sums:

1. ``combat_moments``: per site, the totals ``n``, ``sum x``, ``sum y`` and the *within-site
   centred* cross-products ``Xc'Xc`` and ``Xc'Yc``. Summed over sites they give the pooled
   least-squares covariate effects ``beta`` (the batch indicators are absorbed by the centring)
   and the grand mean ``alpha = (sum y - sum x' beta) / n``: neuroCombat's ``B_hat`` and
   ``grand_mean`` exactly.
2. ``combat_residuals``: per site, the sum of squared within-site residuals at ``beta``; summed,
   divided by ``n``, it is neuroCombat's ``var_pooled``.

The hub thus learns only the pooled ``(alpha, beta, var_pooled)``, which go back to every site.
A site accepts them only as a function of the approved study (:func:`check_pooled`, before it
computes anything): the plan pins the features and covariates (the spec's, in its order), the
arrays must be finite and of the planned shapes, ``0 < var_pooled <= max((high - low)^2 / 4, 1)``
(a pooled within-site residual variance cannot exceed the largest variance a feature within its
public bounds can have), ``alpha + x' beta`` must reach the feature's bounds for some covariate
vector ``x`` within theirs (the grand mean at the pooled covariate mean does) and each covariate's
effect over its public range at most :data:`~hemafed.imaging.combat_params.MAX_EFFECT_SPAN` feature ranges. The harmonised
values must lie within the public bounds of ``h_<feature>`` or nothing is stored, and they are
stored for the requesting study only (:func:`hemafed.imaging.site_features.store_harmonisation`).
Each site then standardises its own data, estimates its own ``gamma_hat``, ``delta_hat`` and
their priors (ComBat's priors are per batch, across features) and runs the empirical-Bayes
iteration locally (:func:`site_adjust`): no site-level effect is ever sent. The result equals
pooled neuroCombat (parametric, EB) on the same data to rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics.fitter import FederatedFitter
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.api import Federation
from hemafed.federation.checks import MAX_PATIENTS, max_patients
from hemafed.federation.queries import Params, Query, Statistic, encodable_resolution, register
from hemafed.imaging.combat_params import check_columns as _check
from hemafed.imaging.combat_params import column_bounds as _bounds
from hemafed.imaging.combat_params import pooled_problem, residuals_problem
from hemafed.site.runtime import (
    register_site_effect,
    register_site_tables,
    register_study_tables,
)

log = logging.getLogger(__name__)

MOMENTS_QUERY = "combat_moments"
RESIDUALS_QUERY = "combat_residuals"
APPLY_QUERY = "combat_apply"
CONVERGENCE = 1e-4
"""Relative change that stops the EB iteration (neuroCombat's ``conv``)."""


def _site_arrays(cohort: Cohort, params: Params) -> tuple[np.ndarray, np.ndarray]:
    """Complete-case ``(Y n x p, X n x q)`` of this site."""
    feats, covs = list(params["features"]), list(params.get("covariates", []))
    cols = [cohort.numeric_column(c, "ComBat") for c in feats + covs]
    data = np.column_stack(cols) if cols else np.zeros((len(cohort), 0))
    data = data[~np.isnan(data).any(axis=1)]
    bounds = _bounds(params, feats + covs)
    outside = (data < bounds[:, 0]) | (data > bounds[:, 1])
    if outside.any():
        col = (feats + covs)[int(np.flatnonzero(outside.any(axis=0))[0])]
        raise InvalidInput(f"column {col!r} has values outside its declared bounds; widen the "
                           "public bounds, nothing is clipped")
    return data[:, :len(feats)], data[:, len(feats):]


# --- site queries -------------------------------------------------------------------------------

def local_moments(y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
    """One site's ComBat moments (see the module docstring)."""
    n = len(y)
    if n == 0:
        return {"n": np.zeros(1), "sum_x": np.zeros(x.shape[1]), "sum_y": np.zeros(y.shape[1]),
                "xx": np.zeros((x.shape[1], x.shape[1])), "xy": np.zeros((x.shape[1], y.shape[1]))}
    xc, yc = x - x.mean(0), y - y.mean(0)
    return {"n": np.array([float(n)]), "sum_x": x.sum(0), "sum_y": y.sum(0),
            "xx": xc.T @ xc, "xy": xc.T @ yc}


def local_residual_ss(y: np.ndarray, x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Sum over this site's patients of squared within-site residuals at ``beta``."""
    if len(y) == 0:
        return np.zeros(y.shape[1])
    r = (y - y.mean(0)) - (x - x.mean(0)) @ beta
    return np.sum(r ** 2, axis=0)


def _moments_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    y, x = _site_arrays(cohort, params)
    return local_moments(y, x)


def _declare_common(params: Params) -> tuple[int, float, np.ndarray, np.ndarray]:
    feats, covs = list(params["features"]), list(params.get("covariates", []))
    b = _bounds(params, feats + covs)
    m = max_patients(params)
    return m, float(params.get("resolution", 1e-10)), b[:len(feats)], b[len(feats):]


def _stat(shape: tuple[int, ...], low: float, high: float, res: float,
          sensitivity: float) -> Statistic:
    """``sensitivity``: the L2 change of the array when one patient is added or removed (each
    patient's contribution is bounded by the public bounds), so a DP request is calibrated."""
    return Statistic(shape, low, high, encodable_resolution(low, high, res),
                     sensitivity=sensitivity)


def _moments_declare(params: Params) -> dict[str, Statistic]:
    m, res, by, bx = _declare_common(params)
    ry, rx = by[:, 1] - by[:, 0], bx[:, 1] - bx[:, 0]
    amax_y = float(np.abs(by).max())
    amax_x = float(np.abs(bx).max()) if len(bx) else 1.0
    rxx = float(np.max(np.outer(rx, rx))) if len(rx) else 1.0
    rxy = float(np.max(np.outer(rx, ry))) if len(rx) else 1.0
    q, p = len(bx), len(by)
    return {
        "n": Statistic((1,), 0, m, is_count=True),
        "sum_x": _stat((q,), -m * amax_x, m * amax_x, res, amax_x * math.sqrt(q)),
        "sum_y": _stat((p,), -m * amax_y, m * amax_y, res, amax_y * math.sqrt(p)),
        # within-site centred cross-products: one patient moves each element by at most the
        # product of the two ranges
        "xx": _stat((q, q), -m * rxx, m * rxx, res, rxx * q),
        "xy": _stat((q, p), -m * rxy, m * rxy, res, rxy * math.sqrt(q * p)),
    }


def _residuals_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    y, x = _site_arrays(cohort, params)
    beta = np.asarray(params["beta"], dtype=float).reshape(x.shape[1], y.shape[1])
    return {"rss": local_residual_ss(y, x, beta)}


def _residuals_declare(params: Params) -> dict[str, Statistic]:
    m, res, by, bx = _declare_common(params)
    beta = np.asarray(params.get("beta", np.zeros((len(bx), len(by)))), dtype=float)
    beta = beta.reshape(len(bx), len(by))
    span = (by[:, 1] - by[:, 0]) + np.abs(beta).T @ (bx[:, 1] - bx[:, 0]) if len(bx) else \
        by[:, 1] - by[:, 0]
    top = float(np.max(span)) ** 2
    return {"rss": _stat((len(by),), 0.0, m * top, res, top * math.sqrt(len(by)))}


register(Query(MOMENTS_QUERY, "1", compute=_moments_compute, declare=_moments_declare,
               check_params=_check,
               description="ComBat: n, sums and within-site centred cross-products of features "
                           "and biological covariates"))
register(Query(RESIDUALS_QUERY, "1", compute=_residuals_compute, declare=_residuals_declare,
               check_params=lambda p: _check_residuals(p),
               description="ComBat: sum of squared within-site residuals at public beta"))


def _check_residuals(params: Params) -> None:
    """The hub-sent ``beta`` (:func:`~hemafed.imaging.combat_params.residuals_problem`; the
    plan check refuses the same, naming ``beta``, at a site with a plan)."""
    problem = residuals_problem(params)
    if problem is not None:
        raise InvalidInput(problem[1])


def check_pooled(params: Params) -> None:
    """:func:`pooled_problem` as an ``InvalidInput`` (the query's own check, for a site
    without a plan; a site with one refuses it in the plan check, :mod:`hemafed.study.plan`)."""
    problem = pooled_problem(params)
    if problem is not None:
        raise InvalidInput(problem[1])


def _check_apply(params: Params) -> None:
    check_pooled(params)
    FederatedComBat.from_parameters(params)


def _apply_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    y, _ = _site_arrays(cohort, params)  # refuses values outside the public bounds
    return {"n": np.array([float(len(y))])}


def _apply_declare(params: Params) -> dict[str, Statistic]:
    return {"n": Statistic((1,), 0, max_patients(params), is_count=True)}


def _apply_effect(site_dir: Any, node: Any, params: Params, study: str) -> None:
    """At the site, after it answered ``combat_apply`` of ``study``: store that study's
    harmonised features (read by that study's later requests only, :func:`_study_tables`)."""
    from hemafed.imaging.site_features import store_harmonisation

    store_harmonisation(site_dir, node.cohort, params, study=study)


register(Query(APPLY_QUERY, "1", compute=_apply_compute, declare=_apply_declare,
               check_params=_check_apply,
               description="ComBat: the pooled parameters back to the site, which stores its "
                           "harmonised features; the reply is the number harmonised"))
register_site_effect(APPLY_QUERY, _apply_effect)


def _join_site_tables(site_dir: Any, cohort: Any) -> Any:
    """The site's stored imaging features and findings, joined (no study's harmonised ones)."""
    from hemafed.imaging.site_features import imaging_cohort, imaging_table

    return imaging_cohort(cohort, imaging_table(site_dir))


def _study_tables(site_dir: Any, cohort: Any, study: str) -> Any:
    """The cohort of one study's requests: with that study's own harmonised features only."""
    from hemafed.imaging.site_features import check_study_provenance, study_cohort

    check_study_provenance(site_dir, study)
    return study_cohort(site_dir, cohort, study)


register_site_tables(_join_site_tables)
register_study_tables(_study_tables)


# --- pooled estimates from sums -----------------------------------------------------------------

def pooled_estimates(moments: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """``(beta q x p, alpha p, n)`` from summed moments; ``InvalidInput`` if not identifiable."""
    n = float(np.asarray(moments["n"]).ravel()[0])
    xx, xy = np.asarray(moments["xx"]), np.asarray(moments["xy"])
    if xx.size:
        if np.linalg.matrix_rank(xx) < xx.shape[0]:
            raise InvalidInput("ComBat: the covariates are collinear or constant within every "
                               "site; drop one")
        beta = np.linalg.solve(xx, xy)
    else:
        beta = np.zeros((0, xy.shape[1]))
    alpha = (np.asarray(moments["sum_y"]) - np.asarray(moments["sum_x"]) @ beta) / n
    return beta, alpha, n


# --- site-local empirical Bayes ------------------------------------------------------------------

@dataclass(frozen=True)
class SiteAdjustment:
    """One site's own ComBat estimates (kept at the site) and its harmonised features."""

    gamma_hat: np.ndarray
    delta_hat: np.ndarray
    gamma_star: np.ndarray
    delta_star: np.ndarray
    harmonised: np.ndarray
    iterations: int


def _eb(s: np.ndarray, conv: float = CONVERGENCE, max_iter: int = 10_000
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Parametric EB shrinkage of one batch's standardised data ``s`` (n x p), as neuroCombat."""
    n = s.shape[0]
    g_hat = s.mean(axis=0)
    d_hat = s.var(axis=0, ddof=1)
    d_hat = np.where(d_hat == 0, 1.0, d_hat)
    g_bar, t2 = g_hat.mean(), g_hat.var(ddof=1)
    m, s2 = d_hat.mean(), d_hat.var(ddof=1)
    a, b = (2 * s2 + m ** 2) / s2, (m * s2 + m ** 3) / s2
    g_old, d_old = g_hat.copy(), d_hat.copy()
    for it in range(1, max_iter + 1):
        g_new = (t2 * n * g_hat + d_old * g_bar) / (t2 * n + d_old)
        sum2 = ((s - g_new) ** 2).sum(axis=0)
        d_new = (0.5 * sum2 + b) / (n / 2.0 + a - 1.0)
        change = max((np.abs(g_new - g_old) / g_old).max(), (np.abs(d_new - d_old) / d_old).max())
        g_old, d_old = g_new, d_new
        if not change > conv:
            return g_hat, d_hat, g_new, d_new, it
    raise InvalidInput("ComBat: the empirical-Bayes iteration did not converge at this site")


def site_adjust(y: np.ndarray, x: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
                var_pooled: np.ndarray) -> SiteAdjustment:
    """Harmonise one site's features ``y`` (n x p) with covariates ``x`` (n x q), locally."""
    if y.shape[0] < 2 or y.shape[1] < 2:
        raise InvalidInput("ComBat needs at least 2 patients per site and 2 features (the priors "
                           "are estimated across features)")
    mod = x @ beta if beta.size else np.zeros_like(y)
    sd = np.sqrt(var_pooled)
    s = (y - alpha - mod) / sd
    g_hat, d_hat, g_star, d_star, it = _eb(s)
    out = (s - g_star) / np.sqrt(d_star) * sd + alpha + mod
    return SiteAdjustment(g_hat, d_hat, g_star, d_star, out, it)


# --- hub ---------------------------------------------------------------------------------------

class FederatedComBat(FederatedFitter):
    """ComBat fitted across sites by two secure sums; the sites finish it locally.

    After :meth:`fit`: ``alpha_`` (grand mean per feature), ``beta_`` (covariate effects,
    covariates x features), ``var_pooled_``, ``n_``, ``sites`` and ``summary``.
    :meth:`site_parameters` is what every site receives; :meth:`transform` is run by a site on
    its own data.
    """

    _fitted_attribute = "beta_"

    def __init__(self) -> None:
        self.features: list[str] = []
        self.covariates: list[str] = []
        self.alpha_: np.ndarray | None = None
        self.beta_: np.ndarray | None = None
        self.var_pooled_: np.ndarray | None = None
        self.n_ = 0
        self.sites: tuple[str, ...] = ()
        self.rounds = 0

    def fit(self, federation: Federation, features: Sequence[str], covariates: Sequence[str],
            bounds: Mapping[str, Sequence[float]], *, study: str = "default",
            max_patients: int = MAX_PATIENTS, library: str | None = None) -> FederatedComBat:
        """Two secure sums over the same sites: moments, then residual sums of squares.
        ``library``: the study's feature library, named in the requests (the sites' plan
        refuses another)."""
        base: dict[str, Any] = {
            "features": list(features), "covariates": list(covariates),
            "bounds": {k: [float(v[0]), float(v[1])] for k, v in bounds.items()
                       if k in set(features) | set(covariates)},
            "max_patients": int(max_patients)}
        if library is not None:
            base["library"] = str(library)
        _check(base)
        first = federation.secure_sum(MOMENTS_QUERY, base, study=study)
        beta, alpha, n = pooled_estimates(first.values)
        if n < 3:
            raise InvalidInput("ComBat: fewer than 3 complete cases over all sites")
        second = federation.secure_sum(RESIDUALS_QUERY, {**base, "beta": beta.tolist()},
                                       study=study)
        if tuple(second.sites) != tuple(first.sites):
            raise InvalidInput(f"ComBat: the second sum covers sites {second.sites}, the first "
                               f"{first.sites}; rerun on one fixed set of sites")
        self.features, self.covariates = list(features), list(covariates)
        self.beta_, self.alpha_, self.n_ = beta, alpha, round(n)
        var = np.asarray(second["rss"]) / n
        self.var_pooled_ = np.where(var == 0, 1.0, var)
        self.sites, self.rounds = tuple(first.sites), 2
        log.info("federated ComBat over %d sites, %d patients, %d features", len(self.sites),
                 self.n_, len(self.features))
        return self

    def apply(self, federation: Federation, bounds: Mapping[str, Sequence[float]], *,
              study: str = "default", max_patients: int = MAX_PATIENTS) -> int:
        """Send the pooled parameters to every site (``combat_apply``): each stores its own
        harmonised ``h_<feature>`` columns, for ``study`` only. Returns the number of patients harmonised, a secure
        sum over the same sites as the fit."""
        # the public bounds of the features, covariates and any declared h_<feature>: the
        # harmonised values a site stores must lie within the latter (else the feature's own)
        keep = {*self.features, *self.covariates, *(f"h_{f}" for f in self.features)}
        params = {**self.site_parameters(), "max_patients": int(max_patients),
                  "bounds": {k: [float(v[0]), float(v[1])] for k, v in bounds.items()
                             if k in keep}}
        res = federation.secure_sum(APPLY_QUERY, params, study=study)
        if tuple(res.sites) != tuple(self.sites):
            raise InvalidInput(f"ComBat: the harmonisation reached sites {res.sites}, the fit "
                               f"covered {self.sites}; rerun on one fixed set of sites")
        self.rounds += 1
        return round(float(res["n"][0]))

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any]) -> FederatedComBat:
        """The fitted model a site rebuilds from :meth:`site_parameters` (what the hub sent)."""
        try:
            model = cls()
            model.features = [str(f) for f in params["features"]]
            model.covariates = [str(c) for c in params["covariates"]]
            p, q = len(model.features), len(model.covariates)
            model.alpha_ = np.asarray(params["alpha"], dtype=float).reshape(p)
            model.beta_ = np.asarray(params["beta"], dtype=float).reshape(q, p)
            model.var_pooled_ = np.asarray(params["var_pooled"], dtype=float).reshape(p)
            model.n_ = int(params.get("n", 0))
            model.sites = tuple(str(s) for s in params.get("sites", ()))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("ComBat parameters are malformed: 'features', 'covariates', "
                               "'alpha', 'beta' and 'var_pooled' of matching shapes") from None
        if not (np.all(np.isfinite(model.alpha_)) and np.all(np.isfinite(model.beta_))
                and np.all(np.isfinite(model.var_pooled_)) and np.all(model.var_pooled_ > 0)):
            raise InvalidInput("ComBat parameters: 'alpha', 'beta' and 'var_pooled' must be "
                               "finite and 'var_pooled' > 0")
        return model

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.alpha_ is None or self.beta_ is None or self.var_pooled_ is None:
            raise InvalidInput("FederatedComBat is not fitted: call fit() first")
        return self.alpha_, self.beta_, self.var_pooled_

    def site_parameters(self) -> dict[str, Any]:
        """The pooled parameters each site needs to harmonise its own data (JSON-ready)."""
        alpha, beta, var = self._fitted()
        return {"features": self.features, "covariates": self.covariates,
                "alpha": alpha.tolist(), "beta": beta.tolist(), "var_pooled": var.tolist(),
                "n": self.n_, "sites": list(self.sites)}

    def transform(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, SiteAdjustment]:
        """At a site: its harmonised features (rows with a missing value are left as they are)."""
        alpha, beta, var = self._fitted()
        missing = [c for c in self.features + self.covariates if c not in frame.columns]
        if missing:
            raise InvalidInput(f"ComBat transform: column(s) {missing} are not in the site's data")
        cols = self.features + self.covariates
        data = frame[cols].astype(float).to_numpy()
        ok = ~np.isnan(data).any(axis=1)
        adj = site_adjust(data[ok, :len(self.features)], data[ok, len(self.features):],
                          alpha, beta, var)
        out = frame.copy()
        values = out[self.features].astype(float).to_numpy()
        values[ok] = adj.harmonised
        out[self.features] = values
        return out, adj

    @property
    def summary(self) -> pd.DataFrame:
        alpha, beta, var = self._fitted()
        table = pd.DataFrame({"grand_mean": alpha, "pooled_sd": np.sqrt(var)},
                             index=pd.Index(self.features, name="feature"))
        for k, c in enumerate(self.covariates):
            table[f"beta_{c}"] = beta[k]
        return table

    def _payload(self) -> dict[str, Any]:
        return {"model": "FederatedComBat", **self.site_parameters()}
