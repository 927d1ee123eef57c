"""Zero-concentrated DP (zCDP) budget arithmetic for marginal-based synthesis.

MST and AIM plan their noise in zCDP: a Gaussian release with noise multiplier ``z`` (noise
standard deviation / L2 sensitivity) is ``1 / (2 z^2)``-zCDP, and zCDP composes by adding rho.
The analyst's (epsilon, delta) is turned into a total rho with the conversion of Canonne, Kamath
and Steinke (2020, Proposition 12), which MST uses too; the site ledgers then charge every
release as a Gaussian event (RDP), which for Gaussians is the same accounting.

>>> rho = rho_for(1.0, 1e-6)
>>> round(rho, 4), round(epsilon_for(rho, 1e-6), 6)
(0.0244, 1.0)
>>> round(noise_multiplier_for_rho(0.5), 3)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable


def delta_for(rho: float, epsilon: float) -> float:
    """Smallest delta such that rho-zCDP implies (epsilon, delta)-DP (CKS 2020, Prop. 12)."""
    if rho < 0 or epsilon < 0:
        raise ValueError(f"need rho >= 0 and epsilon >= 0, got ({rho}, {epsilon})")
    if rho == 0:
        return 0.0
    lo, hi = 1.01, (epsilon + 1.0) / (2.0 * rho) + 2.0
    alpha = lo
    for _ in range(200):
        alpha = (lo + hi) / 2.0
        slope = (2.0 * alpha - 1.0) * rho - epsilon + math.log1p(-1.0 / alpha)
        if slope < 0:
            lo = alpha
        else:
            hi = alpha
    log_delta = ((alpha - 1.0) * (alpha * rho - epsilon) + alpha * math.log1p(-1.0 / alpha)
                 - math.log(alpha - 1.0))
    return min(1.0, math.exp(log_delta))


def _bisect(below: Callable[[float], bool], lo: float, hi: float) -> tuple[float, float]:
    """200 halvings of ``[lo, hi]``, keeping ``below(lo)`` true and ``below(hi)`` false."""
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if below(mid):
            lo = mid
        else:
            hi = mid
    return lo, hi


def rho_for(epsilon: float, delta: float) -> float:
    """Largest rho whose zCDP guarantee implies (epsilon, delta)-DP."""
    if not epsilon > 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got ({epsilon}, {delta})")
    return _bisect(lambda rho: delta_for(rho, epsilon) <= delta, 0.0, epsilon + 1.0)[0]


def epsilon_for(rho: float, delta: float) -> float:
    """Smallest epsilon such that rho-zCDP implies (epsilon, delta)-DP."""
    if rho < 0 or not 0 < delta < 1:
        raise ValueError(f"need rho >= 0 and 0 < delta < 1, got ({rho}, {delta})")
    hi = rho + 2.0 * math.sqrt(rho * math.log(1.0 / delta)) + 1.0
    return _bisect(lambda eps: delta_for(rho, eps) > delta, 0.0, hi)[1]


def noise_multiplier_for_rho(rho: float) -> float:
    """Noise multiplier of a Gaussian release that costs exactly ``rho``."""
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    return 1.0 / math.sqrt(2.0 * rho)


def rho_of_noise_multiplier(noise_multiplier: float) -> float:
    """zCDP cost of a Gaussian release with this noise multiplier."""
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    return 1.0 / (2.0 * noise_multiplier**2)
