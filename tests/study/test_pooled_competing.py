"""The pooled Aalen-Johansen reference of the report agrees with lifelines when times are untied."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from lifelines import AalenJohansenFitter

from hemafed.analytics.survival_kinds import pooled_competing
from hemafed.study.spec import Analysis

CAUSES = [["amlt_time", "amlt_status"], ["os_time", "os_status"]]


def _cohort(seed: int, n: int = 300) -> Any:
    rng = np.random.default_rng(seed)
    os_time = rng.exponential(4.0, n)
    amlt = rng.random(n) < 0.3
    amlt_time = np.where(amlt, os_time * rng.uniform(0.2, 0.9, n), os_time)
    frame = pd.DataFrame({"amlt_time": amlt_time, "amlt_status": amlt.astype(float),
                          "os_time": os_time, "os_status": (rng.random(n) < 0.7).astype(float)})
    return SimpleNamespace(patients=frame)


def _lifelines_curves(cohorts: list[Any]) -> list[dict[str, Any]]:
    p = pd.concat([c.patients for c in cohorts], ignore_index=True)
    cause = np.where(p.amlt_status == 1, 1, np.where(p.os_status == 1, 2, 0))
    time = np.where(p.amlt_status == 1, p.amlt_time, np.minimum(p.amlt_time, p.os_time))
    curves = []
    for k in (1, 2):
        cif = AalenJohansenFitter(calculate_variance=False).fit(time, cause, event_of_interest=k)
        ref = cif.cumulative_density_.iloc[:, 0]
        curves.append({"x": list(ref.index[1:]), "y": list(ref.to_numpy()[1:])})
    return curves


def test_pooled_reference_matches_lifelines_without_ties() -> None:
    cohorts = [_cohort(1), _cohort(2)]
    doc = {"curves": _lifelines_curves(cohorts)}
    a = Analysis("cif", "competing", "cif", {"causes": CAUSES})
    out = pooled_competing(a, doc, cohorts)
    assert float(out["max absolute difference of the cumulative incidence"]) < 1e-12
    doc["curves"][1]["y"][10] += 0.01  # a wrong federated curve is caught
    out = pooled_competing(a, doc, cohorts)
    assert abs(float(out["max absolute difference of the cumulative incidence"]) - 0.01) < 1e-9
