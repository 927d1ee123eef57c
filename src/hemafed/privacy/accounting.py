"""Differential-privacy accounting of Gaussian releases (Google's ``dp_accounting``).

The maths the site's ledger (:mod:`hemafed.site.ledger`) and the hub's calibration
(:mod:`hemafed.privacy.calibration`) share: calibrating a noise multiplier to (epsilon, delta)
and composing Gaussian mechanisms. It holds no state and reads no file.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from hemafed.errors import InvalidInput

Accountant = Literal["rdp", "pld"]

# Relative slack on budget comparisons: calibration is exact only to its bisection tolerance.
_REL_TOL = 1e-6


def _fresh_accountant(kind: Accountant) -> dp_accounting.PrivacyAccountant:
    if kind == "rdp":
        return rdp_privacy_accountant.RdpAccountant()
    if kind == "pld":
        return pld_privacy_accountant.PLDAccountant()
    raise InvalidInput(f"unknown accountant {kind!r}; expected 'rdp' or 'pld'")


def composed_epsilon(events: list[tuple[float, int]], delta: float,
                     accountant: Accountant = "rdp") -> float:
    """Epsilon at ``delta`` of Gaussian mechanisms ``(noise_multiplier, count)`` composed.

    Gaussian mechanisms compose *exactly* into one Gaussian mechanism whose noise multiplier
    satisfies ``1 / sigma**2 = sum(count_i / sigma_i**2)`` (Gaussian DP, Dong, Roth & Su 2019;
    under RDP both sides are ``alpha / (2 sigma**2)``), so the accountant is given that one event:
    the cost is the same however long the ledger grows.
    """
    precision = sum(count / noise_multiplier**2 for noise_multiplier, count in events)
    if precision == 0:
        return 0.0
    acc = _fresh_accountant(accountant)
    acc.compose(dp_accounting.GaussianDpEvent(1.0 / math.sqrt(precision)))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def noise_multiplier_for(epsilon: float, delta: float, accountant: Accountant = "rdp") -> float:
    """Smallest Gaussian noise multiplier (sigma per unit L2 sensitivity) that is (eps, delta)-DP.

    Calibrated with ``dp_accounting.calibrate_dp_mechanism`` and the given accountant; the
    bracket starts at the exact analytic Gaussian sigma (Balle & Wang 2018), which no
    accountant can beat.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidInput(f"epsilon must be a finite number > 0, got {epsilon}")
    if not 0 < delta < 1:
        raise InvalidInput(f"delta must be in (0, 1), got {delta}")
    analytic = float(dp_accounting.get_sigma_gaussian(epsilon, delta))
    tol = 1e-7 * analytic
    found = dp_accounting.calibrate_dp_mechanism(
        lambda: _fresh_accountant(accountant),
        dp_accounting.GaussianDpEvent,
        epsilon, delta,
        bracket_interval=dp_accounting.LowerEndpointAndGuess(0.5 * analytic, analytic),
        tol=tol)
    # Bisection returns a value within tol of the optimum, possibly below it; step up by tol.
    return float(found) + tol


def gaussian_sigma(epsilon: float, delta: float, sensitivity: float,
                   accountant: Accountant = "rdp") -> float:
    """Noise standard deviation of an (epsilon, delta)-DP Gaussian mechanism of L2 ``sensitivity``."""
    if not (math.isfinite(sensitivity) and sensitivity >= 0):
        raise InvalidInput(f"sensitivity must be a finite number >= 0, got {sensitivity}")
    return sensitivity * noise_multiplier_for(epsilon, delta, accountant)
