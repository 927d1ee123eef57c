"""Treatment effects from observational data by inverse-probability-of-treatment weighting.

:class:`FederatedIPTW` runs, through secure sums only:

1. a federated propensity model ``treatment ~ confounders`` (the project's
   :class:`~hemafed.analytics.logistic.FederatedLogisticRegression`);
2. stabilised (or plain) weights, computed at each site from the public coefficients;
3. balance diagnostics: standardised mean differences of every confounder before and after
   weighting;
4. a weighted Kaplan-Meier curve per arm (as ``survival::survfit(..., weights=w)``);
5. a weighted Cox model of the treatment with robust (sandwich) standard errors, as
   ``survival::coxph(Surv(time, status) ~ treatment, weights=w, robust=TRUE)``: Newton rounds on
   weighted risk-set sums, then one round for the meat ``sum_i w_i^2 L_i^2`` of the score
   residuals ``L_i`` (R's weighted ``dfbeta`` residuals), a sum over sites of per-site sums.

The analysed rows are those complete in the treatment, the confounders and the outcome; the
propensity model is fitted on the rows complete in the treatment and confounders.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics import results
from hemafed.analytics.design import DesignSpec, Term, parse_formula
from hemafed.analytics.fitter import FederatedFitter
from hemafed.analytics.km import time_grid
from hemafed.analytics.logistic import FederatedLogisticRegression
from hemafed.analytics.newton import NewtonRule, newton_maximise
from hemafed.analytics.weighting_queries import (
    TIES,
    public_params,
    residual_terms,
    weighted_cox_derivatives,
)
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation.api import Federation

log = logging.getLogger(__name__)


def standardised_differences(sums: dict[str, np.ndarray], names: Sequence[str]) -> pd.DataFrame:
    """Means per arm and standardised mean differences before and after weighting.

    Before: ``(m1 - m0) / sqrt((s1^2 + s0^2) / 2)`` with sample variances (``n - 1``); after: the
    same with weighted means and weighted variances ``sum w (x - m)^2 / sum w`` (the convention
    of R's ``tableone::svyCreateTableOne`` up to its ``n / (n - 1)`` design correction, which
    cancels in the ratio when both arms use it).
    """
    n, sw = sums["n"], sums["sw"]
    mean = sums["sx"] / n[:, None]
    var = (sums["sxx"] - n[:, None] * mean**2) / (n[:, None] - 1)
    wmean = sums["swx"] / sw[:, None]
    wvar = sums["swxx"] / sw[:, None] - wmean**2
    with np.errstate(divide="ignore", invalid="ignore"):
        smd = (mean[1] - mean[0]) / np.sqrt((var[1] + var[0]) / 2)
        wsmd = (wmean[1] - wmean[0]) / np.sqrt((wvar[1] + wvar[0]) / 2)
    return pd.DataFrame({"mean_treated": mean[1], "mean_control": mean[0], "smd": smd,
                         "weighted_mean_treated": wmean[1], "weighted_mean_control": wmean[0],
                         "weighted_smd": wsmd}, index=pd.Index(list(names), name="covariate"))


def weight_request(spec: DesignSpec, treatment_col: str, gamma: Sequence[float] | np.ndarray,
                   marginal: float, duration_col: str, event_col: str,
                   grid: Sequence[float] | np.ndarray,
                   max_weight: float | None = None) -> dict[str, Any]:
    """The parameters every ``iptw_*`` request of :meth:`FederatedIPTW.fit` carries (the keys
    of :class:`~hemafed.analytics.weighting_queries.WeightedOutcomeParams`); each query adds
    its own (``beta``, the pooled arrays). ``max_weight`` is left out when ``None``.

    >>> from hemafed.analytics.design import parse_formula
    >>> sorted(weight_request(parse_formula("age"), "hma", [0.1, 0.0], 0.4, "os_time",
    ...                       "os_status", [1.0, 2.0]))
    ['design', 'duration_col', 'event_col', 'gamma', 'grid', 'marginal', 'treatment']
    """
    base: dict[str, Any] = {
        "design": spec.to_params(), "treatment": treatment_col,
        "gamma": [float(v) for v in gamma], "marginal": float(marginal),
        "duration_col": duration_col, "event_col": event_col,
        "grid": [float(t) for t in grid]}
    if max_weight is not None:
        base["max_weight"] = float(max_weight)
    return base


class FederatedIPTW(FederatedFitter):
    """IPTW estimate of a binary treatment's effect on survival, fitted across sites.

    After :meth:`fit`: ``propensity_`` (the fitted logistic model), ``marginal_`` (pooled treated
    share), ``balance_`` (:func:`standardised_differences`), ``effective_sample_size_`` (per
    arm, ``(sum w)^2 / sum w^2``), ``km_`` (weighted survival per arm on the event grid),
    ``km_se_`` (its robust SE, R's ``std.err`` of a weighted ``survfit``: the SE of S itself),
    ``params_`` / ``standard_errors_`` (robust) / ``naive_standard_errors_``, ``summary``
    (lifelines' Cox columns with the robust SE, plus ``se(coef) naive``), ``n_``, ``events_``,
    ``rounds`` and ``sites`` (the sites every secure sum covered).

    ``tol`` and ``max_rounds`` set the weighted Cox fit's Newton rule, the one every fitter
    shares (:mod:`hemafed.analytics.newton`): converged once a full step is under ``tol``
    standard errors, within ``max_rounds + 1`` secure sums (halved steps included).
    """

    def __init__(self, alpha: float = 0.05, stabilized: bool = True, ties: str = "efron",
                 max_rounds: int = 30, tol: float = 1e-6) -> None:
        if ties not in TIES:
            raise InvalidInput(f"ties must be one of {TIES}, got {ties!r}")
        if not 0 < alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        self.alpha, self.stabilized, self.ties = alpha, stabilized, ties
        self.max_rounds, self.tol = max_rounds, tol
        self.params_: pd.Series | None = None
        self.rounds = 0
        self.sites: tuple[str, ...] = ()

    def _sum(self, query: str, params: dict[str, Any]) -> dict[str, np.ndarray]:
        res = self._federation.secure_sum(query, public_params(params), study=self._study)
        self.rounds += 1
        sites = tuple(sorted(res.sites))
        if self.sites and sites != self.sites:
            raise ConvergenceError(f"the contributing sites changed between rounds ({self.sites} "
                                   f"then {sites}); rerun on a stable set of sites")
        self.sites = sites
        return {k: np.asarray(v, dtype=float) for k, v in res.values.items()}

    def fit(self, federation: Federation, treatment_col: str,
            confounders: str | Sequence[str | Term] | DesignSpec,
            duration_col: str = "os_time", event_col: str = "os_status", *,
            grid: Sequence[float] | None = None, steps_per_unit: float = 365.25,
            max_weight: float | None = None, study: str = "default") -> FederatedIPTW:
        """Fit the propensity model, weight, check balance, and fit weighted KM and Cox.

        ``max_weight``: a public cap on every weight (e.g. written in the study spec). Declared
        bounds, hence the fixed-point step of the secure sums, scale with the largest possible
        weight; without a cap it follows from the confounders' bounds and the propensity
        coefficients, which can be loose (1e8 for the schema's platelet range) and then costs
        digits of the robust variance (3e-7 relative on the MDS cohort). A larger weight is
        truncated at the cap (part of the estimand; a site never refuses on its own weights).
        """
        spec = parse_formula(confounders)
        if treatment_col in spec.columns:
            raise InvalidInput(f"treatment {treatment_col!r} is also listed as a confounder")
        self._federation, self._study, self.sites = federation, study, ()
        self.treatment_col, self.duration_col, self.event_col = (treatment_col, duration_col,
                                                                 event_col)
        self.propensity_ = FederatedLogisticRegression(self.alpha).fit(
            federation, treatment_col, spec, study=study)
        self.rounds = self.propensity_.rounds
        gamma = self.propensity_.params_.to_numpy()
        pi = self.propensity_.n_positive_ / self.propensity_.n_
        self.marginal_ = float(pi)
        g = np.asarray(grid, dtype=float) if grid is not None else time_grid(
            federation, duration_col, event_col, steps_per_unit=steps_per_unit,
            events_only=True, study=study)
        self.rounds += grid is None
        base = weight_request(spec, treatment_col, gamma,
                              self.marginal_ if self.stabilized else 1.0, duration_col,
                              event_col, g, max_weight)
        self._base, self._grid, self.spec = base, g, spec

        bal = self._sum("iptw_balance", base)
        self.balance_ = standardised_differences(bal, spec.names)
        self.effective_sample_size_ = pd.Series(bal["sw"] ** 2 / bal["sww"],
                                                index=["control", "treated"], name="ess")
        self.n_ = int(bal["n"].sum())
        if min(bal["n"]) < 1:
            raise InvalidInput(f"treatment {treatment_col!r} has a single arm in the complete "
                               "cases; IPTW needs treated and untreated patients")
        km = self._sum("iptw_km_table", base)
        self.km_table_ = km
        self.km_ = self._km(km)
        inf = self._sum("iptw_km_influence", base | {"w_events": km["w_events"].tolist(),
                                                      "w_at_risk": km["w_at_risk"].tolist()})
        self.km_se_ = pd.DataFrame(np.sqrt(inf["influence_sq"]).T, index=self.km_.index,
                                   columns=list(self.km_.columns))
        self._fit_cox()
        return self

    def _km(self, km: dict[str, np.ndarray]) -> pd.DataFrame:
        cols = {}
        for arm, label in ((0, "control"), (1, "treated")):
            y, d = km["w_at_risk"][arm], km["w_events"][arm]
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = np.where(y > 0, 1.0 - d / y, 1.0)
            cols[label] = np.cumprod(frac)
        return pd.DataFrame(cols, index=pd.Index(self._grid, name="timeline"))

    def _fit_cox(self) -> None:
        efron = self.ties == "efron"
        last: dict[str, dict[str, np.ndarray]] = {}

        def derivatives(b: np.ndarray, final: bool = False
                        ) -> tuple[float, np.ndarray, np.ndarray]:
            last["sums"] = self._sum("iptw_cox_sums", self._base | {"beta": [float(b[0])]})
            ll_b, score, info = weighted_cox_derivatives(last["sums"], float(b[0]), efron)
            return ll_b, np.array([score]), np.array([[-info]])

        def check_information(hess: np.ndarray) -> None:
            if not -hess[0, 0] > 0:
                raise ConvergenceError(f"the weighted information of {self.treatment_col!r} is "
                                       "zero: every event is in one arm")

        def check_beta(b: np.ndarray) -> None:
            if abs(b[0]) > 30:
                raise ConvergenceError(f"the coefficient of {self.treatment_col!r} diverges "
                                       "(monotone likelihood: events in one arm only)")

        first = derivatives(np.zeros(1))
        self.events_ = int(last["sums"]["d"].sum())
        if self.events_ < 2:
            raise InvalidInput(f"too few events ({self.events_}) for a Cox model")
        self.log_likelihood_null_ = first[0]
        fit = newton_maximise(derivatives, np.zeros(1),
                              NewtonRule(tol=self.tol, max_rounds=self.max_rounds + 1),
                              first=first, check_beta=check_beta,
                              check_hessian=check_information)
        if not fit.converged:
            raise ConvergenceError(f"weighted Cox did not converge in {self.max_rounds} rounds")
        beta, ll, info, sums = float(fit.beta[0]), fit.loglik, -fit.hessian[0, 0], last["sums"]
        terms = residual_terms(sums, beta, efron)
        rob = self._sum("iptw_cox_robust", self._base | {"beta": [beta], **terms})
        naive_var = 1.0 / info
        robust_var = float(rob["meat"][0]) * naive_var**2
        self.log_likelihood_ = ll
        self.score_residual_sum_ = float(rob["score"][0])
        idx = pd.Index([self.treatment_col], name="covariate")
        self.params_ = pd.Series([beta], index=idx, name="coef")
        self.standard_errors_ = pd.Series([math.sqrt(robust_var)], index=idx, name="se")
        self.naive_standard_errors_ = pd.Series([math.sqrt(naive_var)], index=idx, name="se")
        log.info("IPTW Cox converged (%d secure sums over %d sites)", self.rounds, len(self.sites))

    def _need_fit(self) -> pd.Series:
        if self.params_ is None:
            raise InvalidInput("call fit(...) first")
        return self.params_

    @property
    def summary(self) -> pd.DataFrame:
        """lifelines' Cox columns with the robust SE in ``se(coef)``, plus the naive SE."""
        params = self._need_fit()
        table = results.coefficient_table(list(params.index), params.to_numpy(),
                                          self.standard_errors_.to_numpy(), self.alpha)
        table["se(coef) naive"] = self.naive_standard_errors_.to_numpy()
        return table

    @property
    def hazard_ratio_(self) -> float:
        return float(np.exp(self._need_fit().iloc[0]))

    def print_summary(self, decimals: int = 3) -> str:
        """The summary as text (returned, not printed)."""
        self._need_fit()
        head = [f"IPTW Cox ({'stabilised' if self.stabilized else 'plain'} weights, "
                f"{self.ties} ties, robust SE)",
                f"treatment = {self.treatment_col!r}, observations = {self.n_}, "
                f"events = {self.events_}, sites = {len(self.sites)}, rounds = {self.rounds}",
                f"max |weighted SMD| = {float(np.nanmax(np.abs(self.balance_['weighted_smd']))):.3f}",
                ""]
        return "\n".join(head) + self.summary.round(decimals).to_string()

    def plot_balance(self, ax: Any = None) -> Any:
        """Love plot: |SMD| of each confounder before and after weighting."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        b = self.balance_
        y = np.arange(len(b))[::-1]
        ax.scatter(np.abs(b["smd"]), y, marker="o", label="unweighted")
        ax.scatter(np.abs(b["weighted_smd"]), y, marker="s", label="weighted")
        ax.axvline(0.1, color="grey", linestyle="--")
        ax.set_yticks(y, list(b.index))
        ax.set_xlabel("|standardised mean difference|")
        ax.legend()
        return ax

    def _payload(self) -> dict[str, Any]:
        params = self._need_fit()
        z = float(params.iloc[0] / self.standard_errors_.iloc[0])
        return {
            "kind": "iptw_cox", "treatment": self.treatment_col, "ties": self.ties,
            "stabilized": self.stabilized, "marginal": self.marginal_,
            "duration_col": self.duration_col, "event_col": self.event_col,
            "design": self.spec.to_params(), "summary": self.summary,
            "balance": self.balance_, "ess": self.effective_sample_size_,
            "propensity": self.propensity_.summary, "n": self.n_, "events": self.events_,
            "rounds": self.rounds, "sites": list(self.sites),
            "p_value": float(2 * stats.norm.sf(abs(z)))}
