"""Hole: the mixed model's ``bounds`` (a mapping per column) and ``max_obs`` are chosen by the hub
per request. The plan pins ``low``/``high`` of a ``column`` only, so neither is checked, and a
site whose data exceed them refuses by itself (``data_do_not_fit``), uncharged and uncounted.

That is the bound-bisection oracle that issue 13 closed for ``moments``/``numeric_summary``:
about 40 requests recover one site's largest outcome measurement (one patient's value) to 1e-9,
and about 14 the number of measurements of its most-measured patient. Through real site
directories (with their measurement tables), the real site node and secure aggregation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from redteam_hub import Probe, make_sites

from hemafed.analytics.mixed import (
    import_measurements,
    longitudinal_site_handler,
    read_measurements,
)
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.study.spec import StudySpec

pytestmark = pytest.mark.redteam

BOUNDS = {"hb_m": [0.0, 25.0], "time": [0.0, 10.0], "age": [0.0, 110.0]}
SPEC = StudySpec.from_mapping(
    {
        "study_id": "rt-lmm",
        "requester": "r",
        "analyses": [
            {
                "id": "lmm",
                "kind": "lmm",
                "outcome": "hb_m",
                "time": "time",
                "covariates": ["age"],
                "bounds": BOUNDS,
            }
        ],
    }
)


def _measurements(patients: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Seeded repeated haemoglobin measurements, 2-8 visits per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    for pid in patients["patient_id"]:
        for v in range(int(rng.integers(2, 9))):
            rows.append(
                {
                    "patient_id": pid,
                    "time": 0.25 * v,
                    "hb_m": float(np.round(rng.normal(10, 1.5), 3)),
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 150, 5), 3, 5)
    fed = make_sites(tmp_path_factory.mktemp("rt-lmm"), cohorts, SPEC, require_dp=False)
    for k, (s, c) in enumerate(cohorts.items()):
        import_measurements(fed.site_dirs[s], _measurements(c.patients, k), SPEC.study_id)
    for config in fed.site_configs():
        longitudinal_site_handler(config)  # the site runtime holds its measurement table
    return fed


def _params(bounds: dict[str, list[float]], max_obs: int = 50) -> dict[str, Any]:
    return {
        "outcome": "hb_m",
        "time": "time",
        "covariates": ["age"],
        "bounds": bounds,
        "theta": [1.0, 0.0, 1.0],
        "max_obs": max_obs,
    }


def test_bisection_on_lmm_bounds_recovers_one_measurement(sites: Any) -> None:
    hub = Probe(sites, SPEC.study_id, SPEC.sha256)
    target = "site03"
    _, codes = hub.send("lmm_reml_sums", _params(BOUNDS))
    assert set(codes.values()) == {None}  # the planned request is answered

    def refused(high: float) -> bool:
        _, codes = hub.send("lmm_reml_sums", _params({**BOUNDS, "hb_m": [0.0, high]}))
        assert codes[target] in (None, "data_do_not_fit"), codes
        return codes[target] == "data_do_not_fit"

    lo, hi, requests = 0.0, 25.0, 0
    while hi - lo > 1e-9:
        mid = (lo + hi) / 2
        requests += 1
        lo, hi = (mid, hi) if refused(mid) else (lo, mid)
    truth = float(read_measurements(sites.site_dirs[target])["hb_m"].max())
    assert requests <= 40
    assert hi == pytest.approx(truth, abs=1e-8)  # one patient's measurement


def test_bisection_on_max_obs_recovers_a_patients_visit_count(sites: Any) -> None:
    hub = Probe(sites, SPEC.study_id, SPEC.sha256)
    target = "site01"
    lo, hi = 0, 64  # refused at lo, answered at hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        _, codes = hub.send("lmm_reml_sums", _params(BOUNDS, max_obs=mid))
        lo, hi = (mid, hi) if codes[target] == "data_do_not_fit" else (lo, mid)
    visits = read_measurements(sites.site_dirs[target])["patient_id"].value_counts()
    assert hi == int(visits.max())
