"""Federated Cox proportional hazards by exact Newton-Raphson on secure sums.

Each Newton round sends the current ``beta`` (public) to the sites:

* **unstratified, or stratified by a column**: the ``cox_risk_set_sums`` query returns, per
  stratum and grid event time, the risk-set sums ``S0 = sum exp(xb)``, ``S1 = sum x exp(xb)``,
  ``S2 = sum x x' exp(xb)``, the number of events ``d``, the sum of ``x`` over events and, for
  Efron ties, the same exp-weighted sums over the tied events. These are additive over sites,
  so the hub forms the pooled log partial likelihood, gradient and Hessian exactly as a pooled fit.
  ``S2`` blocks travel as upper triangles; after the first round the hub knows the pooled event
  counts and asks only for grid times with an event (``time_index``) and for Efron tie sums
  only where two or more events tie (``tie_index``): the other rows add nothing, so the fit is
  unchanged while each reply shrinks; the event counts and event covariate sums do not depend on
  ``beta`` and come in the first round only (MDS, 16 covariates: 499k numbers per reply before,
  178k now).
* **stratified by site**: each site is its own stratum, and stratum terms add up; the
  ``cox_site_derivatives`` query returns the site's own log-likelihood, gradient and Hessian, and
  the secure sum of those is the stratified fit. Per-site risk sets never leave a site.

Sites keep their design matrix and time order between rounds (see
:data:`hemafed.analytics.cox_cache.COX_SITE_CACHE`), so a round costs a few vectorised
cumulative sums per site.

After an unstratified fit, :meth:`FederatedCoxPH.proportional_hazard_test` runs the
Grambsch-Therneau test on scaled Schoenfeld residuals (lifelines' ``proportional_hazard_test``)
from the sums of the last round, with no further round.

Covariates are centred at the midpoints of their public bounds (which leaves the coefficients
unchanged; bounds fixed at approval come from the study spec's ``bounds``, else the schema's
plausible range). Sites report the risk-set sums per public linear-predictor band
(:func:`~hemafed.analytics.cox_math.lp_bands`), each term scaled by its band, at the
finest fixed-point step the encoding allows, so the secure sums keep float precision however
wide the bounds (schema ranges made ``exp(xb)`` span 1e30 and more, and the secure fit failed
with a singular Hessian where the plain-sum fit converged). Divergence is judged on the data's
spread of each covariate within the risk sets (:data:`SEPARATION_LIMIT`), not on the bounds.
Newton (:mod:`hemafed.analytics.newton`, shared by every likelihood fitter) stops once a
step moved every coefficient by less than ``tol`` (1e-6) of its standard error, which leaves
of the order of ``tol**2`` standard errors. The rule is scale-free: the former absolute step
tolerance (1e-10) sat at the noise floor of the fixed-point secure sums (final steps of 5e-11
to 8e-11 on the MDS cohort), so the number of rounds depended on rounding noise.
(The 3.4e-6 relative difference to lifelines once reported at 86 sites was lifelines': with
``precision=1e-10`` it stops on its Newton decrement and returns the point before that last
step, ~2e-6 standard errors short, 3.4e-6 relative for a near-zero coefficient; see
``benchmarks/bench_cox_sites.py``.) Steps are halved when the log-likelihood falls, unless they
are under :data:`~hemafed.analytics.newton.WHOLE_STEP_SE` standard errors (where rounding noise
in the sums could decide). A singular Hessian (a constant covariate, perfect collinearity) or
diverging coefficients (perfect separation) raise ``ConvergenceError`` naming the covariate.
``penalizer`` adds ``-penalizer/2 * |beta|^2`` on the covariates' own scale (lifelines penalises
standardised covariates, so penalised fits differ).

>>> # cph = FederatedCoxPH(ties="efron").fit(federation, "os_time", "os_status", "age + hb")
>>> # cph.summary  # the columns of lifelines' CoxPHFitter.summary
>>> # cph.proportional_hazard_test("rank")  # test_statistic, p, -log2(p) per covariate
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics import cox_math, results
from hemafed.analytics.concordance import (
    concordance_from_histograms,
    concordance_request,
    federated_concordance,
)
from hemafed.analytics.design import DesignSpec, Term, beyond_coefficient_bound, parse_formula
from hemafed.analytics.fitter import FederatedFitter, new_rows_design
from hemafed.analytics.km import time_grid_counts
from hemafed.analytics.newton import Derivatives, NewtonFit, NewtonRule, newton_maximise
from hemafed.analytics.survival_grid import check_grid, lattice_grid, query_params
from hemafed.cohort.model import Cohort
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation.api import Federation, SumRequest, secure_sums

log = logging.getLogger(__name__)

SEPARATION_LIMIT = 30.0
"""A coefficient whose effect per data standard deviation of its covariate exceeds exp(30)
diverges. The standard deviation is what the data imply, not the public bounds: the square root
of the Hessian's diagonal at beta = 0 per event, i.e. the covariate's spread within the risk sets
(from the first round's secure sums). The former rule multiplied |beta| by the half-width of the
declared range, so wide public bounds (a schema's plausible range) refused ordinary fits."""

def _singular_covariate(hess: np.ndarray, names: list[str]) -> str | None:
    """Name the covariate a (near-)singular Hessian cannot identify, or None if it is fine."""
    if not np.all(np.isfinite(hess)):
        raise ConvergenceError("the log-likelihood's Hessian is not finite (an empty risk set "
                               "or overflowing exp(x beta)); check the covariates and bounds")
    scale = np.sqrt(np.abs(np.diag(hess)))
    if np.any(scale == 0):
        return names[int(np.flatnonzero(scale == 0)[0])]
    corr = hess / np.outer(scale, scale)
    w, v = np.linalg.eigh(-corr)
    if w[0] > 1e-10 * max(1.0, float(w[-1])):
        return None
    return names[int(np.argmax(np.abs(v[:, 0])))]


def check_hessian(hess: np.ndarray, names: list[str]) -> None:
    """Refuse a Newton step from a singular Hessian, naming the covariate at fault (shared by
    the Cox-type fitters)."""
    bad = _singular_covariate(hess, names)
    if bad is not None:
        raise ConvergenceError(
            f"the Hessian is singular: covariate {bad!r} is constant or collinear with "
            f"others in the pooled complete cases; drop or recode it")


def check_separation(beta: np.ndarray, data_scale: np.ndarray, names: list[str]) -> None:
    """Refuse a ``beta`` whose effect per data standard deviation (``data_scale``, from the
    first round's Hessian) exceeds :data:`SEPARATION_LIMIT`, naming the covariate."""
    effect = np.abs(beta) * data_scale
    if effect.max() > SEPARATION_LIMIT:
        raise ConvergenceError(
            f"coefficient of {names[int(np.argmax(effect))]!r} diverges (perfect "
            f"separation or monotone likelihood); drop or merge that covariate")


def maximise_partial_likelihood(derivatives: Derivatives,
                                first: tuple[float, np.ndarray, np.ndarray],
                                data_scale: np.ndarray, names: list[str], tol: float,
                                max_rounds: int) -> NewtonFit:
    """Newton from ``beta = 0`` (whose ``first`` derivatives the caller has) with the Cox
    family's checks: a singular Hessian, and separation on the data's scale, both named. The
    fitters on Cox-type partial likelihoods (start-stop Cox, Fine-Gray) share this; raises
    ``ConvergenceError`` when the fit does not converge in ``max_rounds`` secure sums."""
    fit = newton_maximise(derivatives, np.zeros(len(names)),
                          NewtonRule(tol=tol, max_rounds=max_rounds), first=first,
                          check_beta=lambda b: check_separation(b, data_scale, names),
                          check_hessian=lambda h: check_hessian(h, names))
    if not fit.converged:
        raise ConvergenceError(f"Newton-Raphson did not converge in {max_rounds} rounds")
    return fit


class FederatedCoxPH(FederatedFitter):
    """Cox regression over a federation, shaped like lifelines' ``CoxPHFitter``.

    ``strata``: None, ``"site"`` (each site its own baseline hazard) or a categorical cohort
    column with ``strata_levels``. ``tol``: the fit has converged once the Newton step just taken
    (before any halving) moved every coefficient by less than ``tol`` of its standard error;
    Newton converges quadratically, so the coefficients are then of the order of ``tol**2``
    standard errors from the optimum. After ``fit``: ``summary``, ``params_``,
    ``standard_errors_``, ``variance_matrix_``, ``log_likelihood_``, ``concordance_index_``,
    ``rounds``, ``plot()``, ``to_json()``, ``print_summary()``.
    """

    def __init__(self, ties: str = "efron", strata: str | None = None,
                 strata_levels: Iterable[str] | None = None, penalizer: float = 0.0,
                 alpha: float = 0.05, tol: float = 1e-6, max_rounds: int = 50) -> None:
        if ties not in ("efron", "breslow"):
            raise InvalidInput(f"ties must be 'efron' or 'breslow', got {ties!r}")
        if strata is not None and strata != "site" and not strata_levels:
            raise InvalidInput(f"strata column {strata!r} needs its public strata_levels")
        if penalizer < 0:
            raise InvalidInput(f"penalizer must be >= 0, got {penalizer}")
        self.ties, self.strata, self.penalizer = ties, strata, float(penalizer)
        self.strata_levels = [str(v) for v in strata_levels] if strata_levels else None
        self.alpha, self.tol, self.max_rounds = alpha, tol, max_rounds
        self.rounds = 0
        self.params_: pd.Series | None = None
        self.baseline_hazard_: pd.DataFrame | None = None
        """Breslow's baseline hazard at the covariates' public centres (unstratified fits)."""
        self.numbers_per_round_: list[int] = []
        """Numbers each site returned in each round (the secure-sum payload size)."""
        self.at_risk_: np.ndarray | None = None
        """Pooled number at risk per stratum and grid time (from the first round, at beta 0)."""
        self._last_sums: dict[str, np.ndarray] | None = None
        self._event_sums: dict[str, np.ndarray] | None = None
        self._rows_request: dict[str, list[int]] = {}
        self._federation: Federation | None = None  # only while fitting
        self._concordance: float | None = None  # carried with the last Newton round

    # --- one round: loglik, gradient, Hessian at beta from secure sums ------------------------
    def _derivatives(self, beta: np.ndarray, with_concordance: int = 0
                     ) -> tuple[float, np.ndarray, np.ndarray, float]:
        """One Newton round at ``beta``; with ``with_concordance`` (its ``lp_bins``) the
        concordance histogram at the same ``beta`` travels in the same aggregation (kept in
        ``_concordance``): one round trip fewer for the fit's last round."""
        params = self._request | {"beta": [float(b) for b in beta]}
        efron = self.ties == "efron"
        if self._federation is None:
            raise InvalidInput("the model is fitted: its federation is no longer held")
        query = "cox_site_derivatives" if self.strata == "site" else "cox_risk_set_sums"
        if self.strata != "site":
            params |= self._rows_request
            if self._event_sums is not None:
                params["event_sums"] = False
        parts: list[SumRequest] = [(query, params, None)]
        if with_concordance:
            parts.append(("cox_concordance_histogram",
                          concordance_request(self._request, beta, with_concordance), None))
        results = secure_sums(self._federation, parts, study=self._study)
        agg = results[0]
        if with_concordance:
            self._concordance = concordance_from_histograms(results[1]["events"],
                                                            results[1]["later"])
        if self.strata == "site":
            ll, g, h = float(agg["loglik"][0]), agg["grad"], agg["hess"]
            events = float(agg["d"].sum())
        else:
            sums = cox_math.expand_cox_sums(agg.values, self._grid.size,
                                   self._rows_request.get("time_index"),
                                   self._rows_request.get("tie_index"))
            sums = cox_math.combine_bands(sums, cox_math.lp_bands(self.spec.half_width, beta))
            if self._event_sums is None:
                # d and xsum do not depend on beta: the first round's are kept for the rest
                self._event_sums = {"d": sums["d"], "xsum": sums["xsum"]}
                self._narrow_rows(sums["d"])
                self.at_risk_ = sums["s0"] if not beta.any() else None
            sums |= self._event_sums
            ll, g, h = cox_math.cox_derivatives(sums, beta, efron)
            events = float(sums["d"].sum())
            self._last_sums = sums
        self.rounds += 1
        self.numbers_per_round_.append(int(sum(v.size for v in agg.values.values())))
        self.n_, self.excluded_ = int(agg["n"][0]), int(agg["excluded"][0])
        if self.penalizer:
            ll -= 0.5 * self.penalizer * float(beta @ beta)
            g = g - self.penalizer * beta
            h = h - self.penalizer * np.eye(beta.size)
        return ll, g, h, events

    def _narrow_rows(self, d: np.ndarray) -> None:
        """After the first round the pooled event counts are known: later rounds ask only for
        grid times with an event, and Efron tie sums only where two or more events tie (all
        other rows contribute nothing to the likelihood, so this is exact), and no longer for
        the event counts and covariate sums, which do not change with ``beta``."""
        events = d.sum(axis=0)
        time_index = np.flatnonzero(events > 0)
        request: dict[str, list[int]] = {}
        if time_index.size < self._grid.size:
            request["time_index"] = [int(i) for i in time_index]
        if self.ties == "efron":
            tie_index = np.flatnonzero((d >= 2).any(axis=0))
            if tie_index.size < time_index.size:
                request["tie_index"] = [int(i) for i in tie_index]
        self._rows_request = request

    def _check_beta(self, beta: np.ndarray, names: list[str]) -> None:
        """Refuse a candidate ``beta`` that diverges: beyond the sites' coefficient bound, or
        an effect per data standard deviation beyond :data:`SEPARATION_LIMIT`."""
        beyond = beyond_coefficient_bound(beta, self.spec.half_width)
        if beyond is not None:
            raise ConvergenceError(
                f"coefficient of {names[beyond]!r} diverges beyond the sites' bound "
                f"(MAX_LP_TERM times its public half-width): separation, or public "
                f"bounds too wide; drop that covariate or narrow its bounds")
        check_separation(beta, self.data_scale_, names)

    def _check_flat(self, moved: np.ndarray, names: list[str]) -> None:
        """The likelihood did not change but a coefficient moved (in data standard
        deviations): a monotone likelihood, refused naming the covariate."""
        moved = moved * self.data_scale_
        if float(moved.max()) > 1e-4:
            raise ConvergenceError(
                f"coefficient of {names[int(np.argmax(moved))]!r} diverges (perfect "
                f"separation or monotone likelihood); drop or merge that covariate")

    def fit(self, federation: Federation, duration_col: str = "os_time",
            event_col: str = "os_status", formula: str | Iterable[str | Term] | DesignSpec = "",
            *, grid: Iterable[float] | None = None, time_mapping: str = "exact",
            steps_per_unit: float = 365.25, concordance: bool = True, lp_bins: int = 256,
            study: str = "default", levels: Mapping[str, Sequence[str]] | None = None,
            lattice: float | None = None) -> FederatedCoxPH:
        """Fit by Newton-Raphson; ``formula`` is ``"age + hb + sex"``, a list, or a DesignSpec.

        ``levels``: ``{column: [reference, level2, ...]}`` of categorical covariates (public,
        R's treatment coding; see :func:`~hemafed.analytics.design.parse_formula`).

        ``lattice``: steps per year of a public lattice fixed at the study's approval (the
        spec's ``lattice``). The grid is then that whole lattice
        (:func:`~hemafed.analytics.survival_grid.lattice_grid`) with each time moved up to
        its interval's end (``time_mapping="up"``), and no time histogram is asked: the fit is
        the pooled Cox fit on times rounded up to the lattice. Its per-time event counts stay
        under the sites' minimum-cell rule (docs/security.md, attack L): small cohorts need
        DP."""
        if not formula:
            raise InvalidInput("give the covariates: a formula such as 'age + hb' or a list")
        spec = parse_formula(formula, levels=levels)
        names = list(spec.names)
        grid_events = None
        if lattice is not None:
            if grid is not None:
                raise InvalidInput("give a grid or a lattice, not both")
            g, time_mapping = np.asarray(lattice_grid(float(lattice))), "up"
        elif grid is not None:
            g = check_grid(list(grid))
        else:
            g, grid_events = time_grid_counts(federation, duration_col, event_col,
                                              steps_per_unit=steps_per_unit, events_only=True,
                                              study=study)
        extra: dict[str, Any] = {"design": spec.to_params(), "ties": self.ties}
        if self.strata not in (None, "site"):
            extra |= {"strata_col": self.strata, "strata_levels": self.strata_levels}
        self._federation, self._study, self.spec = federation, study, spec
        self._request = query_params(duration_col, event_col, g, time_mapping=time_mapping, **extra)
        self._grid, self._rows_request = g, {}
        if grid_events is not None and self.ties == "efron":
            # the grid's histogram already tells where events may tie (over at least the rows
            # the fit uses), so the first round asks for Efron tie sums only there
            tie_index = np.flatnonzero(grid_events >= 2)
            if tie_index.size < g.size:
                self._rows_request = {"tie_index": [int(i) for i in tie_index]}
        self.duration_col, self.event_col, self.rounds = duration_col, event_col, 0
        self.numbers_per_round_ = []
        self._last_sums = self._event_sums = None
        self._concordance = None
        self.at_risk_ = None

        beta = np.zeros(spec.width)
        ll, grad, hess, events = self._derivatives(beta)
        self.events_ = int(events)
        if events < spec.width + 1 or events < 2:
            raise InvalidInput(f"too few events ({int(events)}) for {spec.width} covariate(s); "
                               f"a Cox model needs more events than covariates")
        self.log_likelihood_null_ = ll
        # the covariates' spread within the risk sets (the data's, from this round's sums)
        info0 = -np.diag(hess) - self.penalizer
        self.data_scale_ = np.sqrt(np.maximum(info0, 0.0) / max(events, 1.0))
        fit = newton_maximise(
            lambda b, final: self._derivatives(b, lp_bins if final and concordance else 0)[:3],
            beta, NewtonRule(tol=self.tol, max_rounds=self.max_rounds),
            first=(ll, grad, hess), check_hessian=lambda h: check_hessian(h, names),
            check_beta=lambda b: self._check_beta(b, names),
            flat_likelihood=lambda moved: self._check_flat(moved, names))
        if not fit.converged:
            raise ConvergenceError(f"Newton-Raphson did not converge in {self.max_rounds} rounds; "
                                   f"check the covariates for separation or raise max_rounds")
        beta, ll, grad, hess = fit.beta, fit.loglik, fit.gradient, fit.hessian
        bad = _singular_covariate(hess, names)
        if bad is not None:
            raise ConvergenceError(f"the Hessian is singular at the optimum for covariate {bad!r}")
        cov = fit.covariance
        self.params_ = pd.Series(beta, index=pd.Index(names, name="covariate"), name="coef")
        self.variance_matrix_ = pd.DataFrame(cov, index=names, columns=names)
        self.standard_errors_ = pd.Series(np.sqrt(np.diag(cov)), index=self.params_.index,
                                          name="se")
        self.log_likelihood_ = ll
        self.gradient_ = grad
        self.baseline_hazard_ = self._breslow() if self.strata is None else None
        if not concordance:
            self.concordance_index_ = float("nan")
        elif self._concordance is not None:
            self.concordance_index_ = self._concordance
        else:
            self.concordance_index_ = federated_concordance(federation, self._request, beta,
                                                            lp_bins, study)
        log.info("federated Cox converged in %d rounds (%d covariates)", self.rounds, spec.width)
        self._federation = None  # a fitted model keeps its numbers, not the connection
        return self

    def _need_fit(self) -> pd.Series:
        if self.params_ is None:
            raise InvalidInput("call fit(...) first")
        return self.params_

    @property
    def summary(self) -> pd.DataFrame:
        params = self._need_fit()
        return results.coefficient_table(list(params.index), params.to_numpy(),
                                         self.standard_errors_.to_numpy(), self.alpha)

    @property
    def hazard_ratios_(self) -> pd.Series:
        return np.exp(self._need_fit()).rename("exp(coef)")

    def log_likelihood_ratio_test(self) -> tuple[float, int, float]:
        """Likelihood-ratio test against the null model: (statistic, df, p)."""
        params = self._need_fit()
        stat = 2 * (self.log_likelihood_ - self.log_likelihood_null_)
        return stat, len(params), float(stats.chi2.sf(stat, len(params)))

    def proportional_hazard_test(
            self, time_transform: str | Sequence[str] = "rank") -> pd.DataFrame:
        """Grambsch-Therneau test of proportional hazards on scaled Schoenfeld residuals, as
        lifelines' ``proportional_hazard_test`` computes it (1-df chi-squared per covariate).

        No further round is needed: the statistic is
        ``T_k = (D * (R @ V)_k)^2 / (D * V_kk * sum_j d_j (g_j - gbar)^2)`` with
        ``R = sum_j (g_j - gbar) (xsum_j - d_j E[x | R(t_j)])``, and the last Newton round
        already returned the pooled per-time event sums ``xsum_j``, counts ``d_j`` and risk-set
        sums (hence ``E[x | R(t_j)]``, Efron-averaged over ties) at the fitted ``beta``; ``V`` is
        the variance matrix. ``time_transform``: ``"rank"`` (events' rank; tied events share
        their mid-rank, where lifelines' result depends on row order), ``"km"`` (1 - pooled
        Kaplan-Meier), ``"identity"``, ``"log"``, ``"all"`` or a list of these. Unstratified
        fits only. Returns ``test_statistic``, ``p`` and ``-log2(p)`` per covariate (indexed by
        ``(covariate, transform)`` when several transforms are asked for).
        """
        params = self._need_fit()
        if self.strata is not None:
            raise InvalidInput("proportional_hazard_test supports unstratified fits only; refit "
                               "without strata (or test each stratum's own fit)")
        sums = self._last_sums
        if sums is None or self.at_risk_ is None:
            raise InvalidInput("the fit kept no risk-set sums; refit with this version")
        names = ["km", "rank", "identity", "log"] if time_transform == "all" else (
            [time_transform] if isinstance(time_transform, str) else list(time_transform))
        bad = [t for t in names if t not in ("km", "rank", "identity", "log")]
        if bad or not names:
            raise InvalidInput(f"time_transform must be 'rank', 'km', 'identity', 'log', 'all' "
                               f"or a list of them, got {time_transform!r}")
        d = sums["d"][0]
        has = d > 0
        d_ev, t_ev = d[has], self._grid[has]
        total = float(d_ev.sum())
        resid = sums["xsum"][0][has] - d_ev[:, None] * cox_math.event_means(sums, self.ties == "efron")[0][has]
        cov = self.variance_matrix_.to_numpy()
        rows = []
        for name in names:
            if name == "identity":
                g = t_ev
            elif name == "log":
                g = np.log(t_ev)
            elif name == "rank":
                g = np.cumsum(d_ev) - (d_ev - 1) / 2.0
            else:
                at_risk = self.at_risk_[0][has]
                g = 1.0 - np.cumprod(1.0 - d_ev / at_risk)
            gc = g - float(np.sum(d_ev * g)) / total
            u = total * (gc @ resid) @ cov
            stat = u**2 / (total * np.diag(cov) * float(np.sum(d_ev * gc**2)))
            rows.append(stat)
        stat_all = np.concatenate(rows)
        p = stats.chi2.sf(stat_all, 1)
        with np.errstate(divide="ignore"):
            table = pd.DataFrame({"test_statistic": stat_all, "p": p, "-log2(p)": -np.log2(p)})
        covariates = list(params.index)
        if len(names) == 1:
            table.index = pd.Index(covariates, name="covariate")
        else:
            table.index = pd.MultiIndex.from_tuples(
                [(c, n) for n in names for c in covariates], names=["covariate", "transform"])
            table = table.sort_index(level=0, sort_remaining=False)
        return table

    def print_summary(self, decimals: int = 3) -> str:
        """The summary as text (returned, not printed: library code prints nothing)."""
        self._need_fit()
        stat, df, p = self.log_likelihood_ratio_test()
        head = [f"federated Cox PH ({self.ties} ties, strata={self.strata})",
                f"duration col = {self.duration_col!r}, event col = {self.event_col!r}",
                f"observations = {self.n_}, events = {self.events_}, "
                f"excluded (incomplete) = {self.excluded_}, rounds = {self.rounds}",
                f"partial log-likelihood = {self.log_likelihood_:.{decimals}f}",
                f"concordance = {self.concordance_index_:.{decimals}f}",
                f"log-likelihood ratio test = {stat:.{decimals}f} on {df} df, p = {p:.3g}", ""]
        return "\n".join(head) + self.summary.round(decimals).to_string()

    @property
    def confidence_intervals_(self) -> pd.DataFrame:
        """Lower and upper confidence limits of each coefficient (lifelines' columns)."""
        summary = self.summary
        level = f"{100 * (1 - self.alpha):g}%"
        return pd.DataFrame({f"{level} lower-bound": summary[f"coef lower {level}"],
                             f"{level} upper-bound": summary[f"coef upper {level}"]})

    def _breslow(self) -> pd.DataFrame:
        """Breslow's baseline hazard at each grid time with an event, ``d_j / S0_j``, from the
        last round's risk-set sums (at the fitted ``beta``; no further secure sum). The sums are
        taken on covariates centred at their public centres, so this is the hazard of a patient
        at those centres (lifelines' is at the data's means: see ``baseline_hazard_``)."""
        sums = self._last_sums
        if sums is None:
            raise InvalidInput("the fit kept no risk-set sums")
        d = np.asarray(sums["d"])[0]
        scale = np.broadcast_to(np.asarray(sums.get("log_scale", 0.0)), np.shape(sums["d"]))[0]
        has = d > 0
        hazard = d[has] * np.exp(-scale[has]) / np.asarray(sums["s0"])[0][has]
        return pd.DataFrame({"baseline hazard": hazard}, index=pd.Index(self._grid[has]))

    @property
    def baseline_covariates_(self) -> pd.Series:
        """The covariate values the baseline hazard is for: the public centres of their bounds
        (lifelines uses the data's means, which would cost one more secure sum; only the
        baseline and ``predict_partial_hazard`` depend on the reference, by the constant factor
        ``exp((mean - centre) @ beta)``, and survival predictions do not)."""
        params = self._need_fit()
        return pd.Series(np.asarray(self.spec.center, dtype=float), index=params.index,
                         name="baseline")

    def _need_baseline(self) -> pd.DataFrame:
        self._need_fit()
        if self.baseline_hazard_ is None:
            raise InvalidInput("the baseline hazard is kept for unstratified fits only; refit "
                               "without strata to predict survival")
        return self.baseline_hazard_

    @property
    def baseline_cumulative_hazard_(self) -> pd.DataFrame:
        """Breslow's cumulative baseline hazard (lifelines' column name), at the covariates'
        public centres (:attr:`baseline_covariates_`)."""
        return self._need_baseline().cumsum().set_axis(["baseline cumulative hazard"], axis=1)

    @property
    def baseline_survival_(self) -> pd.DataFrame:
        return np.exp(-self.baseline_cumulative_hazard_).set_axis(["baseline survival"], axis=1)

    def predict_log_partial_hazard(self, data: pd.DataFrame | Cohort) -> pd.Series:
        """``(x - baseline_covariates_) @ beta`` per row (NaN where a covariate is missing)."""
        params = self._need_fit()
        x, rows = new_rows_design(data, self.spec, "prediction data")
        out = np.full(rows.size, np.nan)
        out[rows] = (x - self.baseline_covariates_.to_numpy()) @ params.to_numpy()
        index = data.index if isinstance(data, pd.DataFrame) else pd.RangeIndex(rows.size)
        return pd.Series(out, index=index)

    def predict_partial_hazard(self, data: pd.DataFrame | Cohort) -> pd.Series:
        """``exp((x - baseline_covariates_) @ beta)`` per row: lifelines' partial hazard times
        ``exp((mean - centre) @ beta)``, one constant (see :attr:`baseline_covariates_`)."""
        return np.exp(self.predict_log_partial_hazard(data))

    def predict_cumulative_hazard(self, data: pd.DataFrame | Cohort,
                                  times: Sequence[float] | None = None) -> pd.DataFrame:
        """Cumulative hazard per row (columns) at ``times`` (rows; default the baseline's
        times), a step function of time as lifelines'."""
        base = self.baseline_cumulative_hazard_.iloc[:, 0]
        if times is None:
            at = base.to_numpy()
            index = base.index
        else:
            t = np.asarray(list(times), dtype=float)
            k = np.searchsorted(base.index.to_numpy(dtype=float), t, side="right")
            at = np.where(k > 0, base.to_numpy()[np.maximum(k - 1, 0)], 0.0)
            index = pd.Index(t)
        partial = self.predict_partial_hazard(data)
        return pd.DataFrame(np.outer(at, partial.to_numpy()), index=index, columns=partial.index)

    def predict_survival_function(self, data: pd.DataFrame | Cohort,
                                  times: Sequence[float] | None = None) -> pd.DataFrame:
        """Survival ``exp(-H0(t) exp((x - centre) @ beta))`` per row (columns) at ``times``
        (rows), as lifelines' ``predict_survival_function`` (it does not depend on the
        baseline's reference point)."""
        return np.exp(-self.predict_cumulative_hazard(data, times))

    def plot(self, ax: Any = None) -> Any:
        """Coefficients with their confidence intervals, like lifelines' ``CoxPHFitter.plot``."""
        ci = self.confidence_intervals_
        return results.coefficient_plot(
            self.summary["coef"], ci.iloc[:, 0], ci.iloc[:, 1], ax=ax,
            xlabel=f"log(HR) ({100 * (1 - self.alpha):g}% CI)")

    def _payload(self) -> dict[str, Any]:
        self._need_fit()
        return {
            "kind": "cox_ph", "ties": self.ties, "strata": self.strata,
            "penalizer": self.penalizer, "duration_col": self.duration_col,
            "event_col": self.event_col, "design": self.spec.to_params(),
            "summary": self.summary, "log_likelihood": self.log_likelihood_,
            "concordance_index": self.concordance_index_, "rounds": self.rounds,
            "n": self.n_, "events": self.events_, "excluded": self.excluded_}
