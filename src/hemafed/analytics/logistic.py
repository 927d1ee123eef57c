"""Federated logistic regression by Newton-Raphson on secure sums.

Each Newton iteration is one secure sum of the site query ``logistic_newton``: for the public
coefficient vector it returns the gradient ``X'(y - p)``, the Hessian ``X'WX`` (``W = p(1-p)``),
the log-likelihood and the counts of the complete cases. The hub solves the Newton step; no
patient-level value, and no single site's sums, reach it.

The design matrix is built at the site from a public :class:`~hemafed.analytics.design.DesignSpec`.
Internally every column is centred and scaled by its public bounds (``z = (x - center) /
half_width``, so ``|z| <= 1``): this bounds every released sum for secure aggregation and DP, and
conditions the Hessian. Estimates and their covariance are mapped back to the original scale
exactly (the maximum-likelihood estimate is invariant under this affine reparametrisation), so
``.summary`` lines up with ``statsmodels`` ``Logit(y, add_constant(X)).fit().summary()``.

>>> import pandas as pd
>>> from hemafed.cohort import validate_cohort
>>> from hemafed.federation.local import LocalSumFederation
>>> c = validate_cohort(pd.DataFrame({"patient_id": list("abcdefgh"), "disease": ["MDS"] * 8,
...     "age": [50, 55, 60, 65, 70, 75, 80, 85],
...     "transplant": [1, 1, 0, 1, 0, 1, 0, 0]}))
>>> m = FederatedLogisticRegression().fit(LocalSumFederation([c]), "transplant", ["age"])
>>> list(m.summary.columns)
['coef', 'std err', 'z', 'P>|z|', '[0.025', '0.975]']
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics.describe import codec_resolution
from hemafed.analytics.design import (
    DesignSpec,
    Term,
    beyond_coefficient_bound,
    check_coefficients,
    complete_case_mask,
    design_matrix,
    parse_formula,
)
from hemafed.analytics.dp import NoiseRecord, nearest_psd, noise_record
from hemafed.analytics.fitter import (
    FederatedFitter,
    deprecated_alias,
    new_rows_design,
    renamed_argument,
)
from hemafed.analytics.newton import NewtonRule, newton_maximise
from hemafed.analytics.results import coefficient_plot
from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import AggregateResult, DPRequest, Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register

log = logging.getLogger(__name__)

NEWTON_QUERY = "logistic_newton"
SUMMARY_COLUMNS: tuple[str, ...] = ("coef", "std err", "z", "P>|z|", "[0.025", "0.975]")
"""The coefficient-table columns of statsmodels' ``Logit(...).fit().summary()``."""

SEPARATION_LIMIT = 30.0
"""A coefficient whose effect per data standard deviation of its covariate exceeds this (on the
log-odds scale) signals separation. The standard deviation is the data's, from the first
round's Hessian at beta = 0 (``X'X / 4``: means and second moments of the complete cases), not
the half-width of the public bounds: that rule refused ordinary fits with wide bounds."""

def data_scale(hess0: np.ndarray) -> np.ndarray:
    """Per covariate the complete cases' standard deviation (scaled units) from ``X'WX`` at
    beta = 0, where ``W = 1/4``: row 0 holds the intercept's sums."""
    h = np.asarray(hess0, dtype=float)
    n = h[0, 0]
    if not n > 0:
        return np.ones(h.shape[0] - 1)
    mean = h[0, 1:] / n
    var = np.diag(h)[1:] / n - mean**2
    return np.sqrt(np.maximum(var, 0.0))


# --- site side ---------------------------------------------------------------------------------

def outcome_vector(cohort: Cohort, outcome: str, positive: Sequence[str] | None) -> np.ndarray:
    """The 0/1 outcome at a site (NaN where missing); raises ``InvalidInput`` if not binary."""
    if outcome not in cohort.patients:
        raise InvalidInput(f"outcome column {outcome!r} is not in the site's cohort")
    col = cohort.patients[outcome]
    if positive is not None:
        text = col.astype("string")
        y = text.isin([str(v) for v in positive]).to_numpy(dtype=float)
        y[text.isna().to_numpy()] = np.nan
        return y
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        y = col.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        seen = y[~np.isnan(y)]
        if seen.size and not np.isin(seen, (0.0, 1.0)).all():
            raise InvalidInput(f"outcome {outcome!r} is not binary (values other than 0/1); "
                               f"pass positive=[...] levels or use a 0/1 column")
        return y
    raise InvalidInput(f"outcome {outcome!r} is categorical; pass positive=[levels counted as 1]")


@dataclass(frozen=True)
class NewtonParams(QueryParams):
    """``logistic_newton``: the public design, the outcome (and its positive levels, if
    categorical) and the coefficients the sums are taken at (intercept first)."""

    QUERY = NEWTON_QUERY
    design: DesignSpec
    outcome: str
    beta: tuple[float, ...]
    positive: tuple[str, ...] | None = None
    resolution: float = 1e-12
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> NewtonParams:
        cls.known(params)
        spec = DesignSpec.from_params(params.get("design"))
        if not isinstance(params.get("outcome"), str):
            raise InvalidInput(f"parameter 'outcome' must name a column, got "
                               f"{params.get('outcome')!r}")
        width = len(spec.names) + 1
        beta = params.get("beta")
        if not isinstance(beta, list | tuple) or len(beta) != width:
            raise InvalidInput(f"parameter 'beta' must list {width} coefficients "
                               "(intercept first)")
        if not all(isinstance(b, int | float) and math.isfinite(b) for b in beta):
            raise InvalidInput("parameter 'beta' must hold finite numbers")
        # the covariates are scaled to [-1, 1] (scaled_design): each half-width is 1
        check_coefficients(beta[1:], np.ones(spec.width), spec.names)
        positive = None if params.get("positive") is None else checks.levels(params, "positive")
        return cls(spec, params["outcome"], tuple(float(b) for b in beta), positive,
                   checks.resolution(params, default=1e-12), checks.max_patients(params))

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        out["design"] = self.design.to_params()
        if self.positive is None:
            del out["positive"]
        return out


def scaled_design(cohort: Cohort, spec: DesignSpec, rows: np.ndarray) -> np.ndarray:
    """Intercept plus centred, bound-scaled covariates (every entry in [-1, 1])."""
    x, _ = design_matrix(cohort, spec, rows)
    z = (x - spec.center) / spec.half_width
    return np.column_stack([np.ones(len(z)), z])


def _newton_compute(cohort: Cohort, params: NewtonParams) -> dict[str, np.ndarray]:
    spec = params.design
    y_all = outcome_vector(cohort, params.outcome, params.positive)
    rows = complete_case_mask(cohort, spec) & ~np.isnan(y_all)
    z = scaled_design(cohort, spec, rows)
    y = y_all[rows]
    eta = z @ np.asarray(params.beta, dtype=float)
    p = 1.0 / (1.0 + np.exp(-eta))
    w = p * (1.0 - p)
    return {
        "gradient": z.T @ (y - p),
        "hessian": (z * w[:, None]).T @ z,
        "loglik": np.array([float(np.sum(y * eta - np.logaddexp(0.0, eta)))]),
        "n": np.array([float(rows.sum())]),
        "n_positive": np.array([float(y.sum())]),
        "excluded": np.array([float(len(rows) - rows.sum())]),
    }


def _newton_declare(params: NewtonParams) -> dict[str, Statistic]:
    m = params.max_patients
    k = len(params.design.names) + 1
    res = params.resolution
    eta_max = float(np.sum(np.abs(np.asarray(params.beta, dtype=float))))
    ll_max = eta_max + math.log(2.0)
    return {
        "gradient": Statistic((k,), -m, m, codec_resolution(-m, m, res),
                              sensitivity=math.sqrt(k)),
        "hessian": Statistic((k, k), -m / 4, m / 4, codec_resolution(-m / 4, m / 4, res),
                             sensitivity=k / 4),
        "loglik": Statistic((1,), -m * ll_max, 0.0, codec_resolution(-m * ll_max, 0.0, res),
                            sensitivity=ll_max),
        "n": Statistic((1,), 0, m, is_count=True),
        "n_positive": Statistic((1,), 0, m, is_count=True),
        "excluded": Statistic((1,), 0, m, is_count=True),
    }


register(Query(NEWTON_QUERY, "1", compute=_newton_compute, declare=_newton_declare,
               params_type=NewtonParams,
               description="gradient, Hessian and log-likelihood of a logistic model at public "
                           "coefficients (complete cases, covariates scaled by public bounds)"))


# --- hub side ----------------------------------------------------------------------------------

def _unscale(spec: DesignSpec) -> np.ndarray:
    """Matrix ``A`` with ``beta_original = A @ beta_scaled`` (intercept first)."""
    k = spec.width
    a = np.zeros((k + 1, k + 1))
    a[0, 0] = 1.0
    a[0, 1:] = -spec.center / spec.half_width
    a[1:, 1:] = np.diag(1.0 / spec.half_width)
    return a


def _check_outcome(outcome: str, positive: Sequence[str] | None) -> None:
    f = FIELDS.get(outcome)
    if f is None:
        raise InvalidInput(f"outcome {outcome!r} is not a cohort schema column")
    if f.kind == "category" and positive is None:
        raise InvalidInput(f"outcome {outcome!r} has levels {list(f.categories)}, not binary; "
                           f"pass positive=[levels counted as 1]")
    if f.kind == "str":
        raise InvalidInput(f"outcome {outcome!r} is a free-text column, not a binary outcome")
    if positive is not None and f.kind == "category":
        unknown = [v for v in positive if v not in f.categories]
        if unknown:
            raise InvalidInput(f"positive level(s) {unknown} are not levels of {outcome!r}: "
                               f"{list(f.categories)}")


def _singular_name(hessian: np.ndarray, names: Sequence[str]) -> str | None:
    """The covariate most involved in the Hessian's near-null direction, if it is near singular."""
    vals, vecs = np.linalg.eigh(hessian)
    if vals[-1] <= 0 or vals[0] > 1e-10 * vals[-1]:
        return None
    direction = np.abs(vecs[:, 0])
    direction[0] = 0.0  # name a covariate, not the intercept, unless only it is involved
    j = int(np.argmax(direction)) if direction.max() > 0 else 0
    return (["const", *names])[j]


class FederatedLogisticRegression(FederatedFitter):
    """Logistic regression fitted across sites by Newton-Raphson on secure sums.

    After :meth:`fit` (lifelines' names, as every fitter): ``params_`` (Series, ``const``
    first), ``variance_matrix_``, ``standard_errors_``, ``confidence_intervals_``, ``summary``
    (statsmodels' coefficient columns), ``log_likelihood_``, ``log_likelihood_null_``,
    ``prsquared``, ``n_``, ``n_positive_``, ``excluded_`` (incomplete cases), ``rounds``
    (secure sums used), ``converged_`` and ``noise`` (DP calibration, when asked for). The
    former statsmodels-style names (``cov_params_``, ``llf``, ``llnull``, ``nobs``,
    ``n_positive``, ``excluded``, ``converged``) still read, with a DeprecationWarning.
    """

    def __init__(self, alpha: float = 0.05) -> None:
        if not 0 < alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.spec: DesignSpec | None = None
        self.rounds = 0

    def fit(self, federation: Federation, outcome_col: str,
            formula: str | Sequence[str | Term] | DesignSpec | None = None, *,
            positive: Sequence[str] | None = None, max_rounds: int | None = None,
            tol: float = 1e-5, study: str = "default", dp: DPRequest | None = None,
            levels: Mapping[str, Sequence[str]] | None = None,
            covariates: str | Sequence[str | Term] | DesignSpec | None = None,
            max_iter: int | None = None) -> FederatedLogisticRegression:
        """Fit ``outcome_col ~ formula`` on the complete cases of every site.

        ``formula``: a formula (``"age + hb + sex"``), a list of schema columns/terms or a
        :class:`DesignSpec`; numeric columns take the schema's public bounds, categorical ones
        their schema levels with the first as reference (see :mod:`hemafed.analytics.design`).
        ``levels``: ``{column: [reference, ...]}`` declared levels of categorical covariates.
        ``positive`` lists the levels of a categorical outcome counted as 1.

        ``tol``: the fit has converged once a full Newton step moved every coefficient by less
        than ``tol`` of its standard error (the rule every fitter shares,
        :mod:`hemafed.analytics.newton`). The default 1e-5 (Cox's is 1e-6) leaves ~1e-10
        standard errors and stops where the former rule (a scaled step under 1e-10, or under
        1e-5 with a flat log-likelihood) did: the same estimates and secure sums in every fit
        of the tests. ``max_rounds`` (36) caps the secure sums, halved steps included. With ``dp``
        every Newton step is a separately charged release, taken whole, and the fit never
        stops on ``tol``: exactly ``max_rounds`` releases are made (Newton from zero needs
        about 6-8), the noisy Hessian is made positive definite (post-processing), and
        ``converged_`` is False. (``covariates=`` and ``max_iter=`` are the former names of
        ``formula=`` and of ``max_rounds - 1``; they still work, with a DeprecationWarning.)
        Raises ``InvalidInput`` for a non-binary outcome or a bad covariate, and
        ``ConvergenceError`` (naming the covariate) for separation or a singular Hessian.
        """
        design: str | Sequence[str | Term] | DesignSpec = renamed_argument(
            "FederatedLogisticRegression.fit", "formula", formula, "covariates", covariates)
        rounds_cap: int = renamed_argument("FederatedLogisticRegression.fit", "max_rounds", max_rounds,
                                      "max_iter", None if max_iter is None else max_iter + 1,
                                      default=36)
        if rounds_cap < 2 or not tol > 0:
            raise InvalidInput(f"max_rounds must be >= 2 and tol > 0, got {rounds_cap}, {tol}")
        max_iter = rounds_cap - 1
        _check_outcome(outcome_col, positive)
        spec = (design if isinstance(design, DesignSpec) and not levels
                else parse_formula(design, levels=levels))
        if outcome_col in spec.columns:
            raise InvalidInput(f"outcome {outcome_col!r} is also listed as a covariate")
        names = list(spec.names)
        base: dict[str, Any] = {"design": spec.to_params(), "outcome": outcome_col}
        if positive is not None:
            base["positive"] = [str(v) for v in positive]
        released: list[tuple[str, AggregateResult]] = []

        def query(beta: np.ndarray) -> AggregateResult:
            res = federation.secure_sum(NEWTON_QUERY, {**base, "beta": [float(b) for b in beta]},
                                        study=study, dp=dp)
            released.append((NEWTON_QUERY, res))
            return res

        beta = np.zeros(spec.width + 1)
        res = query(beta)
        n, n_pos = float(res["n"][0]), float(res["n_positive"][0])
        if dp is not None:  # noisy counts: keep them consistent before they are used
            n = max(n, 1.0)
            n_pos = min(max(n_pos, 0.5), n - 0.5)
        if n < 1:
            raise InvalidInput("no complete cases at any site for this outcome and covariates")
        if n_pos <= 0 or n_pos >= n:
            raise InvalidInput(f"outcome {outcome_col!r} has a single class in the complete cases "
                               f"({n_pos:g} of {n:g} positive); a logistic model needs both")
        scale = data_scale(self._information(res, dp))

        def derivatives(b: np.ndarray, final: bool) -> tuple[float, np.ndarray, np.ndarray]:
            new = query(b)
            return float(new["loglik"][0]), new["gradient"], -self._information(new, dp)

        def check_beta(b: np.ndarray) -> None:
            j = beyond_coefficient_bound(b[1:], np.ones(spec.width))
            if j is not None:
                raise ConvergenceError(
                    f"the coefficient of covariate {names[j]!r} diverges beyond the sites' bound "
                    f"(MAX_LP_TERM on the scaled covariate): perfect or quasi-complete "
                    f"separation, or public bounds too wide; drop it or narrow its bounds")
            scaled = np.abs(b[1:]) * scale
            if scaled.size and scaled.max() > SEPARATION_LIMIT:
                raise ConvergenceError(
                    f"perfect or quasi-complete separation: the coefficient of covariate "
                    f"{names[int(np.argmax(scaled))]!r} diverges; the outcome is (almost) "
                    f"determined by it; drop it, merge levels or use penalised regression")

        def check_hessian(h: np.ndarray) -> None:
            bad = _singular_name(-h, names)
            if bad is not None:
                raise ConvergenceError(
                    f"singular Hessian: covariate {bad!r} is collinear with others or "
                    f"(quasi-)separates the outcome; drop or merge it")

        # DP: every release is noisy, so log-likelihoods are not compared (no halving) and no
        # step is small enough to stop on (tol 0): exactly max_iter + 1 releases
        rule = NewtonRule(tol=tol if dp is None else 0.0, max_rounds=max_iter + 1,
                          halving=dp is None)
        fit = newton_maximise(derivatives, beta, rule, check_beta=check_beta,
                              check_hessian=check_hessian,
                              first=(float(res["loglik"][0]), res["gradient"],
                                     -self._information(res, dp)))
        converged = fit.converged
        if not converged and dp is not None:
            log.warning("DP logistic regression stopped after %d Newton steps without reaching "
                        "tol; the released sums are noisy, estimates carry that noise", max_iter)
        elif not converged:
            raise ConvergenceError(
                f"Newton-Raphson did not converge in {fit.rounds} secure sums; raise max_rounds "
                f"or check for separation")
        final = released[-1][1]
        hess = self._information(final, dp)
        bad = _singular_name(hess, names)
        if bad is not None:
            raise ConvergenceError(f"singular Hessian at the estimate: covariate {bad!r}")
        a = _unscale(spec)
        cov = a @ np.linalg.inv(hess) @ a.T
        coef = a @ fit.beta
        labels = ["const", *names]
        self.spec = spec
        self.outcome_col = outcome_col
        self.positive = None if positive is None else tuple(str(v) for v in positive)
        self.params_ = pd.Series(coef, index=labels, name="coef")
        self.variance_matrix_ = pd.DataFrame(cov, index=labels, columns=labels)
        self.standard_errors_ = pd.Series(np.sqrt(np.diag(cov)), index=labels, name="se")
        self.log_likelihood_ = float(final["loglik"][0])
        p_bar = n_pos / n
        self.log_likelihood_null_ = n_pos * math.log(p_bar) + (n - n_pos) * math.log(1 - p_bar)
        self.prsquared = 1.0 - self.log_likelihood_ / self.log_likelihood_null_
        self.n_, self.n_positive_ = n, n_pos
        self.excluded_ = float(res["excluded"][0])
        self.rounds = len(released)
        self.converged_ = converged
        self.noise: NoiseRecord = noise_record(released, dp)
        log.info("logistic regression converged in %d secure sums", self.rounds)
        return self

    nobs = deprecated_alias("n_", "nobs")
    n_positive = deprecated_alias("n_positive_", "n_positive")
    excluded = deprecated_alias("excluded_", "excluded")
    llf = deprecated_alias("log_likelihood_", "llf")
    llnull = deprecated_alias("log_likelihood_null_", "llnull")
    cov_params_ = deprecated_alias("variance_matrix_", "cov_params_")
    converged = deprecated_alias("converged_", "converged")

    @staticmethod
    def _information(result: AggregateResult, dp: DPRequest | None) -> np.ndarray:
        """The summed Hessian ``X'WX``; a noisy one is made symmetric positive definite."""
        hess = np.asarray(result["hessian"], dtype=float)
        return hess if dp is None else nearest_psd(hess)

    def _check_fitted(self) -> DesignSpec:
        if self.spec is None:
            raise InvalidInput("the model is not fitted; call fit(...) first")
        return self.spec

    @property
    def summary(self) -> pd.DataFrame:
        """Coefficient table with statsmodels' columns: coef, std err, z, P>|z|, [0.025, 0.975]."""
        self._check_fitted()
        b = self.params_.to_numpy()
        se = self.standard_errors_.to_numpy()
        z = b / se
        crit = stats.norm.ppf(1 - self.alpha / 2)
        lo, hi = f"[{self.alpha / 2:g}", f"{1 - self.alpha / 2:g}]"
        return pd.DataFrame({"coef": b, "std err": se, "z": z,
                             "P>|z|": 2 * stats.norm.sf(np.abs(z)),
                             lo: b - crit * se, hi: b + crit * se}, index=self.params_.index)

    @property
    def confidence_intervals_(self) -> pd.DataFrame:
        """Lower and upper confidence limits of each coefficient (statsmodels' ``conf_int``)."""
        summary = self.summary
        return summary.iloc[:, 4:6].set_axis(["lower", "upper"], axis=1)

    def plot(self, ax: Any = None) -> Any:
        """Coefficients (log odds ratios) with their confidence intervals, as the Cox plot."""
        ci = self.confidence_intervals_
        return coefficient_plot(self.summary["coef"], ci["lower"], ci["upper"], ax=ax,
                                xlabel=f"log(OR) ({100 * (1 - self.alpha):g}% CI)")

    def predict_proba(self, data: pd.DataFrame | Cohort) -> np.ndarray:
        """``(n, 2)`` array of ``[P(y=0), P(y=1)]`` (scikit-learn order); NaN for rows missing a
        covariate. ``data`` is a cohort or a frame of schema columns."""
        spec = self._check_fitted()
        x, rows = new_rows_design(data, spec, "predict_proba data")
        b = self.params_.to_numpy()
        p1 = np.full(len(rows), np.nan)
        p1[rows] = 1.0 / (1.0 + np.exp(-(b[0] + x @ b[1:])))
        return np.column_stack([1.0 - p1, p1])

    def _payload(self) -> dict[str, Any]:
        self._check_fitted()
        return {"kind": "logistic_regression", "outcome": self.outcome_col,
                        "positive": self.positive, "summary": self.summary,
                        "cov_params": self.variance_matrix_, "llf": self.log_likelihood_,
                        "llnull": self.log_likelihood_null_, "nobs": self.n_,
                        "n_positive": self.n_positive_, "excluded": self.excluded_,
                        "rounds": self.rounds, "converged": self.converged_,
                        "dp": self.noise.to_dict()}
