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

import dataclasses
import functools
import math
from collections.abc import Mapping

from hemafed.privacy.accounting import noise_multiplier_for as calibrate
from hemafed.release import DPRequest, Statistic


def release_sensitivity(specs: Mapping[str, Statistic]) -> float:
    """L2 sensitivity of releasing all statistics together (add/remove one patient)."""
    return math.sqrt(sum(s.sensitivity**2 for s in specs.values()))


@functools.lru_cache(maxsize=256)
def noise_multiplier_for(epsilon: float, delta: float) -> float:
    """Smallest Gaussian noise multiplier whose single release is (epsilon, delta)-DP.

    Always calibrated with the RDP accountant (hub and sites must agree on the noise, hence on
    the widened bounds of a noisy answer); a site's ledger may compose with PLD, which is
    tighter, so a release calibrated here always fits the budget it was asked for.
    """
    return calibrate(epsilon, delta, "rdp")


def noise_multiplier(dp: DPRequest) -> float:
    """The noise multiplier a request asks for, directly or through (epsilon, delta)."""
    if dp.noise_multiplier is not None:
        return dp.noise_multiplier
    assert dp.epsilon is not None
    return noise_multiplier_for(dp.epsilon, dp.delta)


def release_noise_std(specs: Mapping[str, Statistic], dp: DPRequest) -> dict[str, float]:
    """Noise standard deviation of the whole-federation release, per statistic: 0 for a
    statistic of sensitivity 0 (no site noises it, :func:`noise_share_std`), so a report never
    states a noise level for a value released exactly."""
    sigma = noise_multiplier(dp) * release_sensitivity(specs)
    return {name: (sigma if s.sensitivity > 0 else 0.0) for name, s in specs.items()}


NOISE_BOUND_STDS = 12.0
"""Declared bounds of a noisy site answer are widened by this many noise-share standard
deviations so the fixed-point encoder accepts it (a Gaussian exceeds 12 std w.p. ~4e-33)."""


def noise_share_std(specs: Mapping[str, Statistic], dp: DPRequest, divisor: int) -> dict[str, float]:
    """What each site adds: variance sigma^2 / d, so any >= d contributors add >= sigma^2.

    ``d`` is the number of sites the secure aggregation guarantees in the sum (its quorum): all
    sites of the session, or the threshold ``t`` (see ``SecureFederation(noise_shares=...)``).
    """
    if divisor < 1:
        raise ValueError(f"noise share divisor must be >= 1, got {divisor}")
    sigma = noise_multiplier(dp) * release_sensitivity(specs)
    return {name: (sigma / math.sqrt(divisor) if s.sensitivity > 0 else 0.0)
            for name, s in specs.items()}


def noisy_specs(specs: Mapping[str, Statistic], dp: DPRequest | None,
                divisor: int) -> dict[str, Statistic]:
    """Declarations of a site's noisy answer (bounds widened); hub and sites must agree on them."""
    if dp is None:
        return dict(specs)
    shares = noise_share_std(specs, dp, divisor)
    out: dict[str, Statistic] = {}
    for name, s in specs.items():
        pad = NOISE_BOUND_STDS * shares[name]
        out[name] = dataclasses.replace(s, low=s.low - pad, high=s.high + pad) if pad > 0 else s
    return out
