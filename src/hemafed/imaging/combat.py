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
stored for the requesting study only (:func:`store_harmonisation`).
Each site then standardises its own data, estimates its own ``gamma_hat``, ``delta_hat`` and
their priors (ComBat's priors are per batch, across features) and runs the empirical-Bayes
iteration locally (:func:`site_adjust`): no site-level effect is ever sent. The result equals
pooled neuroCombat (parametric, EB) on the same data to rounding.

Each query's parameters are typed (:class:`ComBatMomentsParams`, :class:`ComBatResidualsParams`,
:class:`ComBatApplyParams`, over the shared :class:`ComBatParams`): a site parses the hub's
mapping once, with the checks of :mod:`hemafed.imaging.combat_params`, and refuses any other key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics.fitter import FederatedFitter
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.checks import MAX_PATIENTS
from hemafed.federation.queries import (
    Params,
    Query,
    QueryParams,
    Statistic,
    encodable_resolution,
    register,
)
from hemafed.imaging.combat_params import (
    check_columns,
    column_bounds,
    pooled_problem,
    residuals_problem,
)
from hemafed.imaging.radiomics import FeatureSettings
from hemafed.imaging.radiomics.library import LIBRARIES
from hemafed.imaging.spec import HARMONISED_PREFIX
from hemafed.site.runtime import (
    register_site_effect,
    register_site_tables,
    register_study_tables,
)

log = logging.getLogger(__name__)

MOMENTS_QUERY = "combat_moments"
RESIDUALS_QUERY = "combat_residuals"
APPLY_QUERY = "combat_apply"
RESOLUTION = 1e-10
"""Default fixed-point step (``resolution``) of the moments and residual sums."""
POOLED_PATIENTS_LIMIT = 10**12
"""Largest pooled patient count ``n`` a ``combat_apply`` may carry (many sites of at most
:data:`~hemafed.federation.checks.MAX_PATIENTS_LIMIT` each)."""
CONVERGENCE = 1e-4
"""Relative change that stops the EB iteration (neuroCombat's ``conv``)."""


# --- typed parameters ---------------------------------------------------------------------------

def _refuse(problem: tuple[str, str] | None) -> None:
    """A :mod:`~hemafed.imaging.combat_params` problem as the query's refusal (its detail names
    the parameter, never a value)."""
    if problem is not None:
        raise InvalidInput(problem[1])


def _matrix(value: Any, rows: int, cols: int) -> tuple[tuple[float, ...], ...]:
    """A ``rows x cols`` array the checks of :mod:`~hemafed.imaging.combat_params` accepted,
    as nested tuples of floats (``()`` when ``rows`` is 0)."""
    a = np.asarray(value, dtype=float).reshape(rows, cols)
    return tuple(tuple(float(v) for v in row) for row in a)


def _vector(value: Any, size: int) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(value, dtype=float).reshape(size))


def _settings(params: Params) -> FeatureSettings:
    try:
        return FeatureSettings.from_dict(dict(params["settings"]))
    except (InvalidInput, TypeError, ValueError):
        raise InvalidInput("parameter 'settings' must be IBSI feature settings (the keys of "
                           "the spec's imaging.settings)") from None


def _wire_settings(settings: FeatureSettings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.to_dict().items()}


@dataclass(frozen=True, kw_only=True)
class ComBatParams(QueryParams):
    """What every ComBat query reads: the harmonised ``features`` and the biological
    ``covariates`` (distinct column names), the public ``bounds`` of each (``(column, low,
    high)``; the wire form is a mapping ``{column: [low, high]}``), ``max_patients``, and the
    feature ``library`` and IBSI ``settings`` a request may name (the plan holds them to the
    study's own; ``None``: not named).

    Each query's ``from_mapping`` runs its check of :mod:`hemafed.imaging.combat_params` (the
    one the study plan runs too) and refuses bounds of any other column.
    """

    features: tuple[str, ...]
    covariates: tuple[str, ...] = ()
    bounds: tuple[tuple[str, float, float], ...]
    max_patients: int = MAX_PATIENTS
    library: str | None = None
    settings: FeatureSettings | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        """The features, then the covariates."""
        return self.features + self.covariates

    def column_bounds(self, columns: Sequence[str] | None = None) -> np.ndarray:
        """The public ``[low, high]`` of each of ``columns`` (default :attr:`columns`), a
        ``len(columns) x 2`` array."""
        table = {c: (lo, hi) for c, lo, hi in self.bounds}
        cols = self.columns if columns is None else columns
        return np.asarray([table[c] for c in cols], dtype=float).reshape(len(cols), 2)

    @classmethod
    def _common(cls, params: Params, optional_bounds: Sequence[str] = ()) -> dict[str, Any]:
        """The shared fields of a request its query's check accepted; ``optional_bounds``:
        columns whose bounds the request may add to the features' and covariates'."""
        feats = tuple(params["features"])
        covs = tuple(params.get("covariates", []))
        allowed = (*feats, *covs, *optional_bounds)
        raw = params["bounds"]
        if not set(raw) <= set(allowed):
            also = " (and may give those of h_<feature>)" if optional_bounds else ""
            raise InvalidInput(f"query {cls.QUERY}: parameter 'bounds' must give the features "
                               f"and covariates their public bounds{also}, and no other column")
        cols = [c for c in allowed if c in raw]
        table = column_bounds(params, cols)
        out: dict[str, Any] = {
            "features": feats, "covariates": covs,
            "bounds": tuple((c, float(lo), float(hi)) for c, (lo, hi) in zip(cols, table,
                                                                              strict=True)),
            "max_patients": checks.max_patients(params)}
        if "library" in params:
            out["library"] = checks.choice(params, "library", LIBRARIES)
        if "settings" in params:
            out["settings"] = _settings(params)
        return out

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        out["bounds"] = {c: [lo, hi] for c, lo, hi in self.bounds}
        for key in ("library", "settings"):
            if out[key] is None:  # not named: the plan's (a named one must be the study's)
                del out[key]
        if self.settings is not None:
            out["settings"] = _wire_settings(self.settings)
        return out


@dataclass(frozen=True, kw_only=True)
class ComBatMomentsParams(ComBatParams):
    """``combat_moments``: the shared fields and the fixed-point ``resolution`` of the sums."""

    QUERY = MOMENTS_QUERY
    resolution: float = RESOLUTION

    @classmethod
    def from_mapping(cls, params: Params) -> ComBatMomentsParams:
        cls.known(params)
        check_columns(params)
        return cls(**cls._common(params), resolution=checks.resolution(params, default=RESOLUTION))


@dataclass(frozen=True, kw_only=True)
class ComBatResidualsParams(ComBatParams):
    """``combat_residuals``: the shared fields, the pooled covariate effects ``beta`` of the
    moments step (covariates x features, :func:`~hemafed.imaging.combat_params.residuals_problem`)
    and the ``resolution``."""

    QUERY = RESIDUALS_QUERY
    beta: tuple[tuple[float, ...], ...]
    resolution: float = RESOLUTION

    @classmethod
    def from_mapping(cls, params: Params) -> ComBatResidualsParams:
        cls.known(params)
        _refuse(residuals_problem(params))
        common = cls._common(params)
        return cls(**common, beta=_matrix(params["beta"], len(common["covariates"]),
                                          len(common["features"])),
                   resolution=checks.resolution(params, default=RESOLUTION))


@dataclass(frozen=True, kw_only=True)
class ComBatApplyParams(ComBatParams):
    """``combat_apply``: the pooled ``alpha`` (per feature), ``beta`` (covariates x features)
    and ``var_pooled`` (per feature) every site harmonises with
    (:func:`~hemafed.imaging.combat_params.pooled_problem`), the pooled count ``n`` and the
    ``sites`` of the fit (:meth:`FederatedComBat.site_parameters`); ``bounds`` may add those of
    ``h_<feature>`` (what the stored harmonised values must lie within). ``covariates`` must be
    given (an empty list for none)."""

    QUERY = APPLY_QUERY
    alpha: tuple[float, ...]
    beta: tuple[tuple[float, ...], ...]
    var_pooled: tuple[float, ...]
    n: int = 0
    sites: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, params: Params) -> ComBatApplyParams:
        cls.known(params)
        _refuse(pooled_problem(params))
        if "covariates" not in params:
            raise InvalidInput("parameter 'covariates' must list the covariates of the fit "
                               "(an empty list for none)")
        common = cls._common(params, [f"h_{f}" for f in params["features"]])
        p, q = len(common["features"]), len(common["covariates"])
        try:  # the pooled count: named, never echoed
            n = checks.positive_int(params, "n", 0, POOLED_PATIENTS_LIMIT, low=0)
        except InvalidInput:
            raise InvalidInput("parameter 'n' must be a whole number >= 0 (the pooled "
                               "patient count)") from None
        sites = checks.names(params, "sites", allow_empty=True) if "sites" in params else ()
        return cls(**common, alpha=_vector(params["alpha"], p),
                   beta=_matrix(params["beta"], q, p),
                   var_pooled=_vector(params["var_pooled"], p), n=n, sites=sites)


def _site_arrays(cohort: Cohort, params: ComBatParams) -> tuple[np.ndarray, np.ndarray]:
    """Complete-case ``(Y n x p, X n x q)`` of this site."""
    feats, covs = list(params.features), list(params.covariates)
    cols = [cohort.numeric_column(c, "ComBat") for c in feats + covs]
    data = np.column_stack(cols) if cols else np.zeros((len(cohort), 0))
    data = data[~np.isnan(data).any(axis=1)]
    bounds = params.column_bounds()
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


def _moments_compute(cohort: Cohort, params: ComBatMomentsParams) -> dict[str, np.ndarray]:
    y, x = _site_arrays(cohort, params)
    return local_moments(y, x)


def _declare_common(params: ComBatMomentsParams | ComBatResidualsParams
                    ) -> tuple[int, float, np.ndarray, np.ndarray]:
    return (params.max_patients, params.resolution, params.column_bounds(params.features),
            params.column_bounds(params.covariates))


def _stat(shape: tuple[int, ...], low: float, high: float, res: float,
          sensitivity: float) -> Statistic:
    """``sensitivity``: the L2 change of the array when one patient is added or removed (each
    patient's contribution is bounded by the public bounds), so a DP request is calibrated."""
    return Statistic(shape, low, high, encodable_resolution(low, high, res),
                     sensitivity=sensitivity)


def _moments_declare(params: ComBatMomentsParams) -> dict[str, Statistic]:
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


def _residuals_compute(cohort: Cohort, params: ComBatResidualsParams) -> dict[str, np.ndarray]:
    y, x = _site_arrays(cohort, params)
    beta = np.asarray(params.beta, dtype=float).reshape(x.shape[1], y.shape[1])
    return {"rss": local_residual_ss(y, x, beta)}


def _residuals_declare(params: ComBatResidualsParams) -> dict[str, Statistic]:
    m, res, by, bx = _declare_common(params)
    beta = np.asarray(params.beta, dtype=float).reshape(len(bx), len(by))
    span = (by[:, 1] - by[:, 0]) + np.abs(beta).T @ (bx[:, 1] - bx[:, 0]) if len(bx) else \
        by[:, 1] - by[:, 0]
    top = float(np.max(span)) ** 2
    return {"rss": _stat((len(by),), 0.0, m * top, res, top * math.sqrt(len(by)))}


register(Query(MOMENTS_QUERY, "1", compute=_moments_compute, declare=_moments_declare,
               params_type=ComBatMomentsParams,
               description="ComBat: n, sums and within-site centred cross-products of features "
                           "and biological covariates"))
register(Query(RESIDUALS_QUERY, "1", compute=_residuals_compute, declare=_residuals_declare,
               params_type=ComBatResidualsParams,
               description="ComBat: sum of squared within-site residuals at public beta"))


def check_pooled(params: Params) -> None:
    """:func:`pooled_problem` as an ``InvalidInput`` (the query's own check, for a site
    without a plan; a site with one refuses it in the plan check, :mod:`hemafed.study.plan`)."""
    _refuse(pooled_problem(params))


def _apply_compute(cohort: Cohort, params: ComBatApplyParams) -> dict[str, np.ndarray]:
    y, _ = _site_arrays(cohort, params)  # refuses values outside the public bounds
    return {"n": np.array([float(len(y))])}


def _apply_declare(params: ComBatApplyParams) -> dict[str, Statistic]:
    return {"n": Statistic((1,), 0, params.max_patients, is_count=True)}


def store_harmonisation(site_dir: str | Path, cohort: Cohort, params: Mapping[str, object], *,
                        study: str) -> pd.DataFrame:
    """At a site: harmonise its own features in ``cohort`` with the pooled ComBat ``params``
    the hub sent for ``study`` (:meth:`FederatedComBat.site_parameters`) and store them as that
    study's ``h_<feature>`` table (atomically,
    :func:`hemafed.imaging.site_features.store_study_table`); return the table.

    The parameters are checked first (:func:`check_pooled`), and the harmonised values must lie
    within the public bounds of ``h_<feature>`` (those declared in ``params['bounds']``, else
    the feature's own): otherwise nothing is stored and the refusal names the feature, never a
    value. The site's own ComBat estimates (gamma, delta and their EB posteriors) stay here.
    """
    from hemafed.imaging.site_features import store_study_table, without_harmonised

    check_pooled(params)
    model = FederatedComBat.from_parameters(params)
    base = without_harmonised(cohort)
    frame, _ = model.transform(base.patients)
    imaged = base.patients[model.features].notna().all(axis=1).to_numpy()
    out = pd.DataFrame({"patient_id": frame["patient_id"].astype(str)})
    raw_bounds = params.get("bounds")
    bounds: Mapping[str, Sequence[float]] = raw_bounds if isinstance(raw_bounds, Mapping) else {}
    for f in model.features:
        values = frame[f].astype(float).to_numpy()
        low, high = bounds.get(HARMONISED_PREFIX + f, bounds[f])
        v = values[imaged]
        if not (np.all(np.isfinite(v)) and np.all(v >= float(low)) and np.all(v <= float(high))):
            raise InvalidInput(f"ComBat: harmonised feature {HARMONISED_PREFIX + f!r} would lie "
                               "outside its public bounds; nothing was stored")
        out[HARMONISED_PREFIX + f] = values
    out = out[imaged].reset_index(drop=True)
    store_study_table(site_dir, study, out, params)
    return out


def apply_harmonisation(site_dir: str | Path, params: Mapping[str, object], *,
                        study: str) -> pd.DataFrame:
    """:func:`store_harmonisation` on the site's stored cohort and features (an operator's or a
    test's direct call; in a study the site does it on answering ``combat_apply``)."""
    from hemafed.imaging.site_features import imaging_cohort, imaging_table
    from hemafed.site.store import load_cohort

    site = Path(site_dir)
    return store_harmonisation(site, imaging_cohort(load_cohort(site), imaging_table(site)),
                               params, study=study)


def _apply_effect(site_dir: Any, node: Any, params: Params, study: str) -> None:
    """At the site, after it answered ``combat_apply`` of ``study``: store that study's
    harmonised features (read by that study's later requests only, :func:`_study_tables`)."""
    store_harmonisation(site_dir, node.cohort, params, study=study)


register(Query(APPLY_QUERY, "1", compute=_apply_compute, declare=_apply_declare,
               params_type=ComBatApplyParams,
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
        ComBatMomentsParams.from_mapping(base)  # the sites' own check, before any request
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
