"""The concordance site query: ``cox_concordance_histogram``, events and comparable subjects
per grid time and linear-predictor bin, from which the hub computes Harrell's C."""

from __future__ import annotations

import math

import numpy as np

from hemafed.analytics.cox_cache import COX_SITE_CACHE
from hemafed.analytics.cox_queries import check_cox_params
from hemafed.analytics.design import DesignSpec
from hemafed.analytics.survival_grid import check_grid, reverse_cumsum_above
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.checks import max_patients
from hemafed.federation.queries import Params, Query, Statistic, register
from hemafed.privacy.disclosure import risk_set_changes


def _conc_check(params: Params) -> None:
    check_cox_params(params)
    bins = params.get("lp_bins", 256)
    if not isinstance(bins, int) or not 2 <= bins <= 10_000:
        raise InvalidInput("parameter 'lp_bins' must be an int in [2, 10000]")


def lp_edges(params: Params) -> np.ndarray:
    """Public bin edges of the centred linear predictor, from the design bounds and beta."""
    spec = DesignSpec.from_params(params["design"])
    beta = np.asarray(params["beta"], dtype=float)
    span = float(np.sum(np.abs(beta) * spec.half_width)) or 1.0
    return np.linspace(-span, span, int(params.get("lp_bins", 256)) + 1)


def _conc_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    data = COX_SITE_CACHE.get(cohort, params)
    rows, beta = data.rows, np.asarray(params["beta"], dtype=float)
    edges = lp_edges(params)
    nb, m = edges.size - 1, data.grid.size
    lp_bin = np.clip(np.searchsorted(edges, rows.x @ beta, side="right") - 1, 0, nb - 1)
    at_risk_count, on_grid = data.at_risk_count, data.on_grid
    # comparable to an event at t_j (lifelines' rule): exits after t_j, or censored at t_j
    later_count = np.where(rows.event & (on_grid >= 0), on_grid, at_risk_count)
    acc = np.zeros((m + 1, nb))
    np.add.at(acc, (later_count, lp_bin), 1.0)
    events = np.zeros((m, nb))
    ev = rows.event & (on_grid >= 0)
    np.add.at(events, (on_grid[ev], lp_bin[ev]), 1.0)
    return {"events": events, "later": reverse_cumsum_above(acc)}


def _conc_declare(params: Params) -> dict[str, Statistic]:
    mp = max_patients(params)
    m, nb = check_grid(params.get("grid")).size, int(params.get("lp_bins", 256))
    return {"events": Statistic((m, nb), 0, mp, is_count=True),
            "later": Statistic((m, nb), 0, mp, sensitivity=math.sqrt(m), is_count=True)}


def _conc_changes(cohort: Cohort, params: Params) -> np.ndarray:
    """The site-only cells of the concordance table's risk-set changes: ``later[j] -
    later[j+1]`` per linear-predictor bin is the events at ``t_{j+1}`` (the ``events`` table,
    under the rule) plus the patients censored in between, so the censorings per (interval,
    bin) are cells, and so are the first and last comparable sets per bin."""
    data = COX_SITE_CACHE.get(cohort, params)
    rows, beta = data.rows, np.asarray(params["beta"], dtype=float)
    edges = lp_edges(params)
    nb = edges.size - 1
    lp_bin = np.clip(np.searchsorted(edges, rows.x @ beta, side="right") - 1, 0, nb - 1)
    ev = rows.event & (data.on_grid >= 0)
    later_count = np.where(ev, data.on_grid, data.at_risk_count)
    return risk_set_changes(np.zeros(rows.time.size, dtype=np.intp), later_count, ev,
                            data.grid.size, lp_bin, nb)


COX_CONCORDANCE_HISTOGRAM = register(Query(
    "cox_concordance_histogram", "1", compute=_conc_compute, declare=_conc_declare,
    check_params=_conc_check, risk_set_changes=_conc_changes,
    description="events and comparable subjects per grid time and linear-predictor bin"))


