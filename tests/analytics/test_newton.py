"""The shared Newton-Raphson solver against statsmodels and hand-computed optima.

The likelihoods here are computed directly in numpy (no federation), so each test pins the
solver alone: its estimate and covariance (statsmodels' Logit and Poisson GLM, fitted
independently), its stopping rule and round count, step halving, the DP mode (whole steps, a
fixed number of rounds) and that divergence is refused before a further secure sum. The last
test runs the fitters that use it: each stops at its round cap with its own error.
"""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm
from survival_frames import make_survival_frame, split_sites, treated_frame

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.logistic import FederatedLogisticRegression
from hemafed.analytics.newton import NewtonRule, newton_maximise, step_in_standard_errors
from hemafed.analytics.weighting import FederatedIPTW
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation.local import LocalSumFederation


def _logistic_data(n: int = 500, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.normal(size=n), rng.uniform(-1, 1, n)])
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ [-0.4, 0.8, -1.2])))).astype(float)
    return x, y


class _Logistic:
    """The logistic log-likelihood, counting calls as a federation counts secure sums."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y, self.calls, self.finals = x, y, 0, []

    def __call__(self, beta: np.ndarray, final: bool) -> tuple[float, np.ndarray, np.ndarray]:
        self.calls += 1
        self.finals.append(final)
        eta = self.x @ beta
        p = 1 / (1 + np.exp(-eta))
        ll = float(np.sum(self.y * eta - np.logaddexp(0.0, eta)))
        return ll, self.x.T @ (self.y - p), -(self.x * (p * (1 - p))[:, None]).T @ self.x


def test_logistic_fit_equals_statsmodels() -> None:
    x, y = _logistic_data()
    derivatives = _Logistic(x, y)
    fit = newton_maximise(derivatives, np.zeros(3), NewtonRule())
    ref = sm.Logit(y, x).fit(disp=0, tol=1e-14)
    assert fit.converged and fit.rounds == derivatives.calls == fit.steps + 1
    np.testing.assert_allclose(fit.beta, ref.params, rtol=1e-10)
    np.testing.assert_allclose(fit.covariance, ref.cov_params(), rtol=1e-8)
    assert fit.loglik == pytest.approx(ref.llf, rel=1e-12)
    # only the last round is announced as final, and it is the one that met the rule
    assert derivatives.finals == [False] * (fit.rounds - 1) + [True]


def test_poisson_from_far_needs_halving_and_equals_statsmodels() -> None:
    rng = np.random.default_rng(8)
    x = np.column_stack([np.ones(400), rng.normal(size=400)])
    y = rng.poisson(np.exp(x @ [0.5, 0.3])).astype(float)
    calls: list[np.ndarray] = []

    def derivatives(beta: np.ndarray, final: bool) -> tuple[float, np.ndarray, np.ndarray]:
        calls.append(beta)
        mu = np.exp(x @ beta)
        return float(y @ (x @ beta) - mu.sum()), x.T @ (y - mu), -(x * mu[:, None]).T @ x

    start = np.array([-4.0, 0.0])  # the first full step overshoots far (exp of a large eta)
    fit = newton_maximise(derivatives, start, NewtonRule())
    ref = sm.GLM(y, x, family=sm.families.Poisson()).fit(tol=1e-14)
    assert fit.converged and fit.rounds == len(calls)
    assert fit.rounds > fit.steps + 1  # some step was halved
    np.testing.assert_allclose(fit.beta, ref.params, rtol=1e-10)
    np.testing.assert_allclose(fit.covariance, ref.cov_params(), rtol=1e-8)
    # no halving: the same start overshoots and the log-likelihood falls, as the rule predicts
    whole = newton_maximise(derivatives, start, NewtonRule(halving=False, max_rounds=3))
    assert whole.loglik < fit.loglik - 1.0


def test_stopping_rule_is_the_full_step_in_standard_errors() -> None:
    # loglik -(b - 2)^2 / (2 s^2): se = s, a full Newton step lands on 2 at once, and the step
    # from 2 is zero: three rounds (start, landing, the zero step that meets the rule)
    s = 1e-3

    def derivatives(beta: np.ndarray, final: bool) -> tuple[float, np.ndarray, np.ndarray]:
        return (-float((beta - 2) @ (beta - 2)) / (2 * s * s), -(beta - 2) / s**2,
                -np.eye(1) / s**2)

    fit = newton_maximise(derivatives, np.zeros(1), NewtonRule())
    assert fit.beta.tolist() == [2.0] and fit.rounds == 3 and fit.converged
    assert step_in_standard_errors(np.array([5e-3]), -np.eye(1) / s**2) == pytest.approx(5.0)


def test_round_cap_and_dp_mode_spend_exactly_max_rounds() -> None:
    x, y = _logistic_data()
    capped = _Logistic(x, y)
    fit = newton_maximise(capped, np.zeros(3), NewtonRule(max_rounds=3))
    assert not fit.converged and fit.rounds == capped.calls == 3
    dp = _Logistic(x, y)  # tol 0 never stops on the rule: a fixed number of releases
    fit = newton_maximise(dp, np.zeros(3), NewtonRule(tol=0.0, max_rounds=9, halving=False))
    assert not fit.converged and dp.calls == 9 and fit.steps == 8 and not any(dp.finals)


def test_first_round_given_by_the_caller_counts_and_is_not_repeated() -> None:
    x, y = _logistic_data()
    derivatives = _Logistic(x, y)
    first = derivatives(np.zeros(3), False)
    fit = newton_maximise(derivatives, np.zeros(3), NewtonRule(), first=first)
    assert fit.rounds == derivatives.calls


def test_divergence_is_refused_before_the_next_secure_sum() -> None:
    x, y = _logistic_data()
    y = (x[:, 1] > 0).astype(float)  # x1 separates the outcome: the coefficient diverges
    derivatives = _Logistic(x, y)
    sent: list[float] = []

    def check_beta(beta: np.ndarray) -> None:
        if abs(beta[1]) > 20:
            raise ConvergenceError("coefficient of 'x1' diverges")
        sent.append(float(beta[1]))

    with pytest.raises(ConvergenceError, match="x1"):
        newton_maximise(derivatives, np.zeros(3), NewtonRule(), check_beta=check_beta)
    assert derivatives.calls == len(sent) + 1  # the refused candidate was never evaluated


def test_flat_likelihood_hook_sees_the_moves() -> None:
    # a likelihood flat in beta[1]: Newton on a singular-looking but regularised Hessian
    moves: list[np.ndarray] = []

    def derivatives(beta: np.ndarray, final: bool) -> tuple[float, np.ndarray, np.ndarray]:
        return -float(beta[0] ** 2), np.array([-2 * beta[0], 1e-9]), -np.diag([2.0, 1e-12])

    newton_maximise(derivatives, np.array([1.0, 0.0]), NewtonRule(max_rounds=4),
                    flat_likelihood=moves.append)
    assert moves and moves[-1][1] == pytest.approx(1e3)


@pytest.mark.parametrize("bad", [{"tol": -1.0}, {"max_rounds": 0}, {"max_halvings": -1},
                                 {"whole_step_se": float("nan")}])
def test_bad_rule_is_refused(bad: dict) -> None:
    with pytest.raises(InvalidInput):
        NewtonRule(**bad)


# --- every fitter on the solver: the round cap is the same rule, with each model's error ---

def _sums_of(federation: LocalSumFederation, query: str) -> int:
    return sum(name == query for name, _ in federation.calls)


def test_fitters_stop_at_their_round_cap_with_their_own_error() -> None:
    frame = make_survival_frame()
    fed = LocalSumFederation(split_sites(frame))
    with pytest.raises(ConvergenceError, match="did not converge in 3 rounds"):
        FederatedCoxPH(max_rounds=3).fit(fed, "os_time", "os_status", "age + hb + sex")
    assert _sums_of(fed, "cox_risk_set_sums") == 3
    converged = FederatedCoxPH().fit(fed, "os_time", "os_status", "age + hb + sex")
    assert 3 < converged.rounds < 50

    fed = LocalSumFederation(split_sites(frame))
    with pytest.raises(ConvergenceError, match="did not converge in 3 secure sums"):
        FederatedLogisticRegression().fit(fed, "os_status", "age + hb + sex", max_iter=2)
    assert _sums_of(fed, "logistic_newton") == 3

    fed = LocalSumFederation(split_sites(treated_frame(), 4))
    with pytest.raises(ConvergenceError, match="weighted Cox did not converge in 2 rounds"):
        FederatedIPTW(max_rounds=2).fit(fed, "hma", "age + hb + sex")
    assert _sums_of(fed, "iptw_cox_sums") == 3
