"""The concordance site query: ``cox_concordance_histogram``, events and comparable subjects
per grid time and linear-predictor bin, from which the hub computes Harrell's C."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hemafed.analytics.cox_queries import CoxParams
from hemafed.analytics.survival_grid import reverse_cumsum_above
from hemafed.cohort.model import Cohort
from hemafed.federation import checks
from hemafed.federation.queries import Params, Query, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes


@dataclass(frozen=True, kw_only=True)
class ConcordanceParams(CoxParams):
    """``cox_concordance_histogram``: the keys of ``cox_risk_set_sums`` (the hub sends no
    strata) and the number of public linear-predictor bins."""

    QUERY = "cox_concordance_histogram"
    lp_bins: int = 256

    @classmethod
    def from_mapping(cls, params: Params) -> ConcordanceParams:
        cls.known(params)
        return cls(**cls.cox_fields(params),
                   lp_bins=checks.positive_int(params, "lp_bins", 256, cap=10_000, low=2))

    def lp_edges(self) -> np.ndarray:
        """Public bin edges of the centred linear predictor, from the design bounds and beta."""
        span = float(np.sum(np.abs(self.beta_array) * self.design.half_width)) or 1.0
        return np.linspace(-span, span, self.lp_bins + 1)

    def lp_bin(self, x: np.ndarray) -> np.ndarray:
        """The bin of each row's linear predictor ``x @ beta`` (rows of the centred design)."""
        nb = self.lp_bins
        return np.clip(np.searchsorted(self.lp_edges(), x @ self.beta_array, side="right") - 1,
                       0, nb - 1)


def _conc_compute(cohort: Cohort, params: ConcordanceParams) -> dict[str, np.ndarray]:
    data = params.site_data(cohort)
    rows = data.rows
    nb, m = params.lp_bins, data.grid.size
    lp_bin = params.lp_bin(rows.x)
    at_risk_count, on_grid = data.at_risk_count, data.on_grid
    # comparable to an event at t_j (lifelines' rule): exits after t_j, or censored at t_j
    later_count = np.where(rows.event & (on_grid >= 0), on_grid, at_risk_count)
    acc = np.zeros((m + 1, nb))
    np.add.at(acc, (later_count, lp_bin), 1.0)
    events = np.zeros((m, nb))
    ev = rows.event & (on_grid >= 0)
    np.add.at(events, (on_grid[ev], lp_bin[ev]), 1.0)
    return {"events": events, "later": reverse_cumsum_above(acc)}


def _conc_declare(params: ConcordanceParams) -> dict[str, Statistic]:
    mp, m, nb = params.max_patients, len(params.grid), params.lp_bins
    return {"events": Statistic((m, nb), 0, mp, is_count=True),
            "later": Statistic((m, nb), 0, mp, sensitivity=math.sqrt(m), is_count=True)}


def _conc_changes(cohort: Cohort, params: ConcordanceParams) -> np.ndarray:
    """The site-only cells of the concordance table's risk-set changes: ``later[j] -
    later[j+1]`` per linear-predictor bin is the events at ``t_{j+1}`` (the ``events`` table,
    under the rule) plus the patients censored in between, so the censorings per (interval,
    bin) are cells, and so are the first and last comparable sets per bin."""
    data = params.site_data(cohort)
    rows = data.rows
    nb = params.lp_bins
    lp_bin = params.lp_bin(rows.x)
    ev = rows.event & (data.on_grid >= 0)
    later_count = np.where(ev, data.on_grid, data.at_risk_count)
    return risk_set_changes(np.zeros(rows.time.size, dtype=np.intp), later_count, ev,
                            data.grid.size, lp_bin, nb)


COX_CONCORDANCE_HISTOGRAM = register(Query(
    "cox_concordance_histogram", "1", compute=_conc_compute, declare=_conc_declare,
    params_type=ConcordanceParams, risk_set_changes=_conc_changes,
    description="events and comparable subjects per grid time and linear-predictor bin"))


