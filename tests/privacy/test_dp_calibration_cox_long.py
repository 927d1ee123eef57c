"""DP calibration of the long-table start-stop Cox queries (``cox_long_event_times``,
``cox_long_sums``): adding or removing one patient (up to ``max_rows_per_patient`` rows,
intervals and covariate values anywhere inside the public bounds, bounds included) changes each
released statistic by at most its declared L2 sensitivity.

The requests are the ones :class:`~hemafed.analytics.coxph_startstop.CoxStartStopFitter`
really sends (recorded on plain sums: the event-time request, the first and the converged
Newton request); hypothesis draws the neighbouring site. A change above the declaration is an
understated sensitivity (too little noise in a DP release): a privacy bug.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hemafed.analytics.coxph_startstop import LONG_EVENTS_QUERY, LONG_QUERY, CoxStartStopFitter
from hemafed.analytics.mixed import LongitudinalCohort
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import HemafedError
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.queries import get_query

BOUNDS = {"dose": [0.0, 10.0], "on_drug": [0.0, 1.0], "age": [20.0, 90.0]}
FORMULA = "dose + on_drug + age"
MAX_ROWS = 3
MAX_TIME = 400.0


def _site(n: int, seed: int) -> LongitudinalCohort:
    """``n`` patients of 1 to MAX_ROWS contiguous day intervals; ``age`` a baseline column."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pid, cuts = f"p{seed}-{i}", np.sort(rng.choice(np.arange(1, 300), MAX_ROWS, False))
        k = int(rng.integers(1, MAX_ROWS + 1))
        start = 0.0
        for j in range(k):
            rows.append({"patient_id": pid, "start": start, "stop": float(cuts[j]),
                         "event": int(j == k - 1 and rng.random() < 0.6),
                         "dose": float(np.round(rng.uniform(0, 10), 1)),
                         "on_drug": int(j > 0)})
            start = float(cuts[j])
    long = pd.DataFrame(rows)
    ids = long["patient_id"].unique()
    patients = validate_cohort(pd.DataFrame({
        "patient_id": ids, "disease": "MDS", "age": np.round(rng.uniform(30, 85, len(ids)), 1),
        "os_time": 1.0, "os_status": 0}))
    return LongitudinalCohort.attach(patients, long)


@pytest.fixture(scope="module")
def recorded() -> tuple[LongitudinalCohort, list[tuple[str, dict[str, Any]]]]:
    sites = {"a": _site(40, 1), "b": _site(25, 2)}
    fed = LocalSumFederation(sites)
    CoxStartStopFitter().fit(fed, formula=FORMULA, bounds=BOUNDS, steps_per_unit=1.0,
                             max_time=MAX_TIME, max_rows_per_patient=MAX_ROWS)
    sums = [p for q, p in fed.calls if q == LONG_QUERY]
    events = [p for q, p in fed.calls if q == LONG_EVENTS_QUERY]
    assert len(sums) > 2 and len(events) == 1
    requests = [(LONG_EVENTS_QUERY, events[0]), (LONG_QUERY, sums[0]), (LONG_QUERY, sums[-1])]
    assert json.dumps(sums[0]["beta"]) != json.dumps(sums[-1]["beta"])
    return sites["a"], requests


def _value(data: st.DataObject, low: float, high: float) -> float:
    return float(data.draw(st.one_of(st.sampled_from([low, high]), st.floats(
        low, high, allow_nan=False, allow_infinity=False))))


def _neighbour(data: st.DataObject, site: LongitudinalCohort) -> LongitudinalCohort:
    p, long = site.patients, site.measurements
    if data.draw(st.booleans(), label="add"):
        k = data.draw(st.integers(1, MAX_ROWS), label="rows")
        # contiguous intervals on the day lattice (or, sometimes, off it) up to beyond max_time
        cuts = sorted(data.draw(st.lists(st.integers(1, int(MAX_TIME) + 50), min_size=k,
                                         max_size=k, unique=True)))
        off = data.draw(st.sampled_from([0.0, 0.0, 0.5]))
        start, rows = 0.0, []
        event = data.draw(st.integers(0, 1))
        for j, c in enumerate(cuts):
            rows.append({"patient_id": "added", "start": start, "stop": float(c) - off,
                         "event": event if j == k - 1 else 0,
                         "dose": _value(data, *BOUNDS["dose"]),
                         "on_drug": data.draw(st.integers(0, 1))})
            start = float(c) - off
        patient = {"patient_id": "added", "disease": "MDS", "age": _value(data, *BOUNDS["age"]),
                   "os_time": 1.0, "os_status": 0}
        new_p = pd.concat([p.astype(object), pd.DataFrame([patient])], ignore_index=True)
        new_long = pd.concat([long, pd.DataFrame(rows)], ignore_index=True)
    else:
        i = data.draw(st.integers(0, len(p) - 1), label="removed")
        pid = str(p["patient_id"].iloc[i])
        new_p = p.drop(index=p.index[i]).reset_index(drop=True)
        new_long = long[long["patient_id"].astype(str) != pid]
    return LongitudinalCohort.attach(validate_cohort(new_p), new_long)


def _changes(query: str, params: dict[str, Any], a: Any, b: Any
             ) -> dict[str, tuple[float, float]]:
    q = get_query(query)
    specs = q.declare(params)
    ra, rb = q.run(a, params, site_id="s"), q.run(b, params, site_id="s")
    return {name: (float(np.linalg.norm(np.ravel(rb[name] - ra[name]))), s.sensitivity)
            for name, s in specs.items()}


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_patient_moves_each_statistic_by_at_most_its_sensitivity(
        recorded: Any, data: st.DataObject) -> None:
    site, requests = recorded
    other = _neighbour(data, site)
    for query, params in requests:
        try:
            changes = _changes(query, params, site, other)
        except HemafedError:
            continue  # the neighbour's data do not fit this request: refused, nothing released
        for name, (change, sens) in changes.items():
            assert change <= sens * (1 + 1e-9) + 1e-9, (
                f"{query}.{name} moved by {change:.6g} for one patient, declared L2 "
                f"sensitivity {sens:.6g}")


def test_a_patient_with_every_row_at_the_corners(recorded: Any) -> None:
    """The largest patient the bounds admit (MAX_ROWS rows, values at the upper bounds, an
    event on the last lattice point of the grid) against the site without them: the change
    stays within, and is not far below, the declaration of the event sums."""
    site, requests = recorded
    grid = requests[-1][1]["grid"]
    stops = [grid[-1] - 2.0, grid[-1] - 1.0, grid[-1]]
    rows = pd.DataFrame({"patient_id": "corner", "start": [0.0, *stops[:-1]], "stop": stops,
                         "event": [0, 0, 1], "dose": 10.0, "on_drug": 1})
    patient = {"patient_id": "corner", "disease": "MDS", "age": 90.0, "os_time": 1.0,
               "os_status": 0}
    other = LongitudinalCohort.attach(
        validate_cohort(pd.concat([site.patients.astype(object), pd.DataFrame([patient])],
                                  ignore_index=True)),
        pd.concat([site.measurements, rows], ignore_index=True))
    for query, params in requests:
        changes = _changes(query, params, site, other)
        for name, (change, sens) in changes.items():
            assert change <= sens * (1 + 1e-9) + 1e-9, (query, name, change, sens)
        # tight where the corner patient is the worst case: one event, MAX_ROWS rows
        tight = ("events",) if query == LONG_EVENTS_QUERY else ("d", "n", "rows", "s0", "e0")
        for name in tight:
            assert changes[name][0] >= 0.99 * changes[name][1], (query, name, changes[name])
