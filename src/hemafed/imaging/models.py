"""Imaging + clinical models: harmonised radiomic features as covariates of the federated
logistic and Cox models (:mod:`hemafed.analytics.logistic`, :mod:`hemafed.analytics.cox`),
with features chosen by the federated univariate screen (:mod:`hemafed.imaging.screen`).

Every step is a secure sum: ComBat moments, the screen, Newton steps. Feature bounds are public
(the study's declared ranges, widened for harmonised values), never read from the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.analytics.design import DesignSpec
from hemafed.analytics.logistic import FederatedLogisticRegression
from hemafed.federation.api import DPRequest, Federation
from hemafed.imaging.combat import FederatedComBat
from hemafed.imaging.screen import federated_screen
from hemafed.imaging.spec import HARMONISED_PREFIX, design
from hemafed.learn.features import fixed_bins
from hemafed.learn.gbdt import FederatedGBDT


def harmonised_bounds(combat: FederatedComBat, bounds: Mapping[str, Sequence[float]],
                      width: float = 10.0) -> dict[str, tuple[float, float]]:
    """Bounds of ``h_<feature>`` suggested by a pooled ComBat fit (itself a secure-sum result).

    Not for study requests: an approved study's ``h_`` bounds are the spec's
    (:meth:`hemafed.imaging.spec.ImagingSpec.harmonised_bounds`) and the sites refuse any other
    (the plan's ``bounds`` rule). This helper is for a study designer choosing bounds to declare
    in a *next* spec, and for local-sum tests.

    A harmonised value is ``alpha + x'beta + sd * z`` with ``z`` about standard normal: the
    bounds are the extremes of ``x'beta`` over the covariates' declared box, ``+- width`` pooled
    SDs. A value beyond them is refused by the model queries, never clipped. Tight bounds matter:
    the federated models scale every covariate by its bounds.
    """
    params = combat.site_parameters()
    alpha = np.asarray(params["alpha"], dtype=float)
    beta = np.asarray(params["beta"], dtype=float).reshape(len(params["covariates"]), len(alpha))
    sd = np.sqrt(np.asarray(params["var_pooled"], dtype=float))
    lo = np.array([float(bounds[c][0]) for c in params["covariates"]]).reshape(-1, 1)
    hi = np.array([float(bounds[c][1]) for c in params["covariates"]]).reshape(-1, 1)
    low_eff = np.minimum(beta * lo, beta * hi).sum(axis=0)
    high_eff = np.maximum(beta * lo, beta * hi).sum(axis=0)
    return {HARMONISED_PREFIX + f: (float(alpha[k] + low_eff[k] - width * sd[k]),
                                    float(alpha[k] + high_eff[k] + width * sd[k]))
            for k, f in enumerate(params["features"])}


@dataclass(frozen=True)
class ImagingModel:
    """A fitted imaging + clinical model and the screen that chose its features."""

    model: FederatedLogisticRegression | FederatedCoxPH | FederatedGBDT
    screen: pd.DataFrame
    features: tuple[str, ...]
    spec: DesignSpec


def _chosen(screen: pd.DataFrame, candidates: Sequence[str], top_k: int) -> tuple[str, ...]:
    """The ``top_k`` screened features, in the candidates' order: the design is then one of
    the ``C(candidates, top_k)`` a study's plan derives from its spec."""
    top = set(screen["feature"].head(top_k))
    return tuple(f for f in candidates if f in top)


def fit_infarct_model(federation: Federation, outcome: str, clinical: Sequence[str],
                      candidates: Sequence[str], bounds: Mapping[str, Sequence[float]], *,
                      top_k: int = 2, study: str = "default") -> ImagingModel:
    """Screen ``candidates`` for the binary ``outcome``; logistic on clinical + top ``top_k``."""
    screen = federated_screen(federation, candidates, outcome, bounds, study=study)
    chosen = _chosen(screen, candidates, top_k)
    spec = design(clinical, chosen, bounds)
    model = FederatedLogisticRegression().fit(federation, outcome, spec, study=study)
    return ImagingModel(model, screen, chosen, spec)


def fit_pfs_model(federation: Federation, duration: str, event: str, clinical: Sequence[str],
                  candidates: Sequence[str], bounds: Mapping[str, Sequence[float]], *,
                  horizon: float = 2.0, top_k: int = 2, study: str = "default") -> ImagingModel:
    """Screen ``candidates`` for progression before ``horizon``; Cox on clinical + top ``top_k``."""
    screen = federated_screen(federation, candidates, event, bounds, time=duration,
                              horizon=horizon, study=study)
    chosen = _chosen(screen, candidates, top_k)
    spec = design(clinical, chosen, bounds)
    model = FederatedCoxPH().fit(federation, duration, event, spec, study=study,
                                 concordance=False)
    return ImagingModel(model, screen, chosen, spec)


def fit_boosted_model(federation: Federation, outcome: str | tuple[str, str],
                      clinical: Sequence[str], candidates: Sequence[str],
                      bounds: Mapping[str, Sequence[float]], *, top_k: int = 2,
                      horizon: float = 2.0, rounds: int = 20, depth: int = 3, bins: int = 16,
                      learning_rate: float = 0.1, dp: DPRequest | None = None,
                      study: str = "default") -> ImagingModel:
    """Screen ``candidates``, then the federated GBDT (:mod:`hemafed.learn.gbdt`) on the
    clinical covariates plus the top ``top_k`` features.

    ``outcome``: a 0/1 column (``binary:logistic``) or ``(duration, event)``
    (``survival:cox``; the screen contrasts an event before ``horizon`` with event-free beyond).
    The bins are :func:`~hemafed.learn.features.fixed_bins` of the design (``bins`` equal-width
    bins over each column's public bound), the edges a study's plan derives from its spec; the
    histograms are exact secure sums, or DP with ``dp``.
    """
    if isinstance(outcome, str):
        screen = federated_screen(federation, candidates, outcome, bounds, study=study)
        objective = "binary:logistic"
        columns: str | tuple[str, str] = outcome
    else:
        duration, event = outcome
        screen = federated_screen(federation, candidates, event, bounds, time=duration,
                                  horizon=horizon, study=study)
        objective, columns = "survival:cox", (duration, event)
    chosen = _chosen(screen, candidates, top_k)
    spec = design(clinical, chosen, bounds)
    model = FederatedGBDT(objective, n_rounds=rounds, learning_rate=learning_rate,
                          max_depth=depth, dp=dp)
    model.fit(federation, spec, columns, edges=fixed_bins(spec, bins), study=study)
    return ImagingModel(model, screen, chosen, spec)
