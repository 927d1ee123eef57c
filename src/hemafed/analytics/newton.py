"""One Newton-Raphson solver, with one stopping rule, for every federated likelihood fit.

Cox (unstratified, stratified, by site), start-stop Cox, Fine-Gray and logistic regression
all maximise a log-likelihood whose value, gradient and Hessian at a public ``beta`` come from
one secure sum over the sites. What differs between them is only how that one sum is asked and
read (their ``derivatives`` callable) and how divergence shows in their data (their checks);
the iteration itself is this module, so the fits cannot drift apart again.

**The stopping rule.** The fit has converged once the full Newton step just taken moved every
coefficient by less than ``tol`` of its standard error (``|step_j| / sqrt(-H^-1)_jj``, the
Hessian at the point the step started from). Newton converges quadratically, so the estimate
is then of the order of ``tol**2`` standard errors from the optimum. The rule is scale-free,
and at ``tol = 1e-6`` well above the fixed-point rounding noise of the secure sums (an
absolute step tolerance of 1e-10 sat at that noise floor, so the number of rounds depended on
rounding).

**Step halving.** A step is halved while the log-likelihood at its end falls below the current
one (by more than ``loglik_slack`` relative, the rounding of the summed log-likelihood), at
most ``max_halvings`` times, after which it is taken as it is. A step under ``whole_step_se``
standard errors is taken whole without that comparison: the quadratic model is exact enough
there, and the gain it predicts can be smaller than the rounding noise of the sums, so a
comparison would only reject good steps and halve them down to a false convergence.

**Rounds.** ``max_rounds`` caps the calls of ``derivatives`` (secure sums), the first one at
the start value included; a fit that has not converged by then returns ``converged=False`` and
the caller raises its own error (each names its model and what to change).

>>> import numpy as np
>>> quadratic = lambda b, final: (-float((b - 2) @ (b - 2)), -2 * (b - 2), -2 * np.eye(1))
>>> fit = newton_maximise(quadratic, np.zeros(1), NewtonRule(tol=1e-6))
>>> fit.beta.tolist(), fit.rounds, fit.converged
([2.0], 3, True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hemafed.errors import InvalidInput

WHOLE_STEP_SE = 0.01
"""A Newton step under this many standard errors is taken whole, without comparing
log-likelihoods: the quadratic model is accurate there, and the gain such a step predicts
(below ``p * 5e-5``) can be smaller than the rounding noise of the fixed-point secure sums, so a
comparison would only reject good steps (and halve them down to a false convergence)."""

Derivatives = Callable[[np.ndarray, bool], tuple[float, np.ndarray, np.ndarray]]
"""``derivatives(beta, final) -> (loglik, gradient, hessian)`` of the pooled log-likelihood at
``beta``: one secure sum. ``final`` is True when the step being evaluated is below ``tol``, so
that, once accepted, this is the fit's last round: a caller may then ask in the same secure sum
for what it needs at the estimate (Cox's concordance, Fine-Gray's competing-risk sums)."""

BetaCheck = Callable[[np.ndarray], None]
"""Raises ``ConvergenceError`` (naming the covariate) if a candidate ``beta`` diverges; called
before the candidate is sent to the sites, so a diverging fit spends no further secure sum."""

HessianCheck = Callable[[np.ndarray], None]
"""Raises ``ConvergenceError`` (naming the covariate) if the Hessian cannot be inverted."""


@dataclass(frozen=True)
class NewtonRule:
    """The solver's settings, checked once here (see the module docstring for their meaning).

    ``halving=False`` takes every step whole: for noisy (DP) sums, whose log-likelihoods cannot
    be compared. ``tol=0`` never converges and runs exactly ``max_rounds`` rounds (DP fits,
    whose every round is a separately charged release)."""

    tol: float = 1e-6
    max_rounds: int = 50
    whole_step_se: float = WHOLE_STEP_SE
    max_halvings: int = 20
    loglik_slack: float = 1e-12
    halving: bool = True

    def __post_init__(self) -> None:
        if not self.tol >= 0 or self.max_rounds < 1:
            raise InvalidInput(f"tol must be >= 0 and max_rounds >= 1, got tol={self.tol}, "
                               f"max_rounds={self.max_rounds}")
        if not self.whole_step_se >= 0 or self.max_halvings < 0 or not self.loglik_slack >= 0:
            raise InvalidInput("whole_step_se, max_halvings and loglik_slack must be >= 0")


@dataclass(frozen=True)
class NewtonFit:
    """Where the solver stopped: ``beta`` and the log-likelihood, gradient and Hessian there
    (from the last secure sum), the number of secure sums (``rounds``, the first included),
    of Newton steps taken, and whether the stopping rule was met."""

    beta: np.ndarray
    loglik: float
    gradient: np.ndarray
    hessian: np.ndarray
    rounds: int
    steps: int
    converged: bool

    @property
    def covariance(self) -> np.ndarray:
        """The inverse of the observed information ``-H`` at ``beta`` (the model-based variance
        of a maximum-likelihood estimate); check the Hessian first where singularity is
        possible."""
        return np.asarray(np.linalg.inv(-self.hessian))


def step_in_standard_errors(step: np.ndarray, hessian: np.ndarray) -> float:
    """The largest ``|step_j|`` in standard errors ``sqrt(|(-H)^-1_jj|)``: the stopping rule's
    measure of a step."""
    se = np.sqrt(np.abs(np.diag(np.linalg.inv(-hessian))))
    return float(np.max(np.abs(step) / se)) if step.size else 0.0


def newton_maximise(derivatives: Derivatives, start: np.ndarray, rule: NewtonRule, *,
                    first: tuple[float, np.ndarray, np.ndarray] | None = None,
                    check_beta: BetaCheck | None = None,
                    check_hessian: HessianCheck | None = None,
                    flat_likelihood: Callable[[np.ndarray], None] | None = None) -> NewtonFit:
    """Maximise a log-likelihood by Newton-Raphson with step halving from ``start``.

    ``first``: the derivatives at ``start`` when the caller has already asked for them (it
    needs the first round's sums to set up its checks); they count as the first round.
    ``check_hessian`` runs before each step, ``check_beta`` on each candidate before it is
    evaluated. ``flat_likelihood(moved)`` runs after a step that left the log-likelihood
    unchanged (within 1e-10 relative) with the coefficients' absolute moves: a moving
    coefficient on a flat likelihood is a monotone likelihood, which the caller names.
    """
    beta = np.asarray(start, dtype=float)
    if first is None:
        first = derivatives(beta, False)
    ll, grad, hess = first
    rounds, steps, converged = 1, 0, False
    while rounds < rule.max_rounds:
        if check_hessian is not None:
            check_hessian(hess)
        step = np.linalg.solve(-hess, grad)
        step_se = step_in_standard_errors(step, hess)
        final = step_se < rule.tol
        whole = not rule.halving or step_se < rule.whole_step_se
        halvings = 0
        while True:
            cand = beta + step
            if check_beta is not None:
                check_beta(cand)
            ll_new, g_new, h_new = derivatives(cand, final)
            rounds += 1
            if (whole or ll_new >= ll - rule.loglik_slack * max(1.0, abs(ll))
                    or halvings >= rule.max_halvings):
                break
            step, halvings = step / 2, halvings + 1
        moved = np.abs(cand - beta)
        beta, ll_old, ll, grad, hess = cand, ll, ll_new, g_new, h_new
        steps += 1
        if flat_likelihood is not None and abs(ll - ll_old) < 1e-10 * max(1.0, abs(ll)):
            flat_likelihood(moved)
        # (after the flat-likelihood check: on a monotone likelihood the standard errors blow
        # up, so the step looks small in them)
        if final:
            converged = True
            break
    return NewtonFit(beta, float(ll), grad, hess, rounds, steps, converged)
