"""Gaussian noise calibration for one release of a site query.

All statistics of one query form one Gaussian mechanism on their concatenation, so the L2
sensitivity of the release is the L2 norm of the per-statistic sensitivities, and every
statistic gets the same noise standard deviation sigma = noise_multiplier x sensitivity.
The noise multiplier for a target (epsilon, delta) is found with Google's ``dp_accounting``
(RDP accountant), the same library the site ledgers charge with, so calibration and
accounting cannot disagree.

>>> round(noise_multiplier_for(1.0, 1e-5), 2) > 3
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import dp_accounting

from hemafed.federation.api import DPRequest
from hemafed.federation.queries import Statistic


def release_sensitivity(specs: Mapping[str, Statistic]) -> float:
    """L2 sensitivity of releasing all statistics together (add/remove one patient)."""
    return math.sqrt(sum(s.sensitivity**2 for s in specs.values()))


@functools.lru_cache(maxsize=256)
def noise_multiplier_for(epsilon: float, delta: float) -> float:
    """Smallest Gaussian noise multiplier whose single release is (epsilon, delta)-DP (RDP)."""
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got ({epsilon}, {delta})")

    def make_event(nm: float) -> dp_accounting.DpEvent:
        return dp_accounting.GaussianDpEvent(nm)

    return float(dp_accounting.calibrate_dp_mechanism(
        dp_accounting.rdp.RdpAccountant, make_event, epsilon, delta,
        bracket_interval=dp_accounting.ExplicitBracketInterval(1e-3, 1e3)))


def noise_multiplier(dp: DPRequest) -> float:
    """The noise multiplier a request asks for, directly or through (epsilon, delta)."""
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    assert dp.epsilon is not None
    return noise_multiplier_for(dp.epsilon, dp.delta)


def release_noise_std(specs: Mapping[str, Statistic], dp: DPRequest) -> dict[str, float]:
    """Noise standard deviation of the whole-federation release, per statistic."""
    sigma = noise_multiplier(dp) * release_sensitivity(specs)
    return {name: sigma for name in specs}
