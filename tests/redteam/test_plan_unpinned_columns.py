"""Hole: the plan checks column names only under a fixed set of keys (``column``,
``duration_col``, ``event_col``, ``group_col``, ``strata_col``, ``row``, ``col``, ``outcome``...),
so the columns the newer queries name under other keys are not pinned: the IPTW ``treatment``,
the illness-death ``illness_time``/``illness_status``/``exit_time``/``exit_status``. Under a study
approved for ``hma`` and the AML/OS columns, the hub gets exact, non-DP secure sums over
columns the study never named (here ``transplant`` as the treatment, ``lfs_*`` as the exit).
Through real site directories, the real site node and secure aggregation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from redteam_hub import Probe, make_sites

from hemafed.analytics.design import parse_formula
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import on_day_lattice
from hemafed.secure.hub import SumOutcome
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

pytestmark = pytest.mark.redteam

FORMULA = "age + hb + sex"
SPEC = StudySpec.from_mapping(
    {
        "study_id": "rt-cols",
        "requester": "r",
        "analyses": [
            {"id": "hma", "kind": "iptw", "treatment": "hma", "formula": FORMULA},
            {"id": "ms", "kind": "multistate"},
        ],
    }
)


def test_unplanned_columns_are_answered(tmp_path: Path) -> None:
    fed = make_sites(tmp_path, split_sites(on_day_lattice(generate("MDS", 240, 5)), 3, 5), SPEC)
    hub = Probe(fed, SPEC.study_id, SPEC.sha256)
    design = parse_formula(FORMULA, None).to_params()
    balance = {"design": design, "treatment": "transplant", "gamma": [0.0] * 4, "marginal": 1.0}
    outcome, codes = hub.send("iptw_balance", balance)
    assert isinstance(outcome, SumOutcome), outcome
    assert set(codes.values()) == {None}
    transplanted = 0
    for d in fed.site_dirs.values():
        p = load_cohort(d).patients
        complete = p[["age", "hb", "sex", "transplant"]].notna().all(axis=1)
        transplanted += int((p["transplant"].astype(bool) & complete).sum())
    assert outcome.values["n"][1] == transplanted  # an unapproved column, counted exactly

    grid = [day / 365.25 for day in range(1, 12 * 366)]
    counts = {"grid": grid, "exit_time": "lfs_time", "exit_status": "lfs_status"}
    outcome, codes = hub.send("illness_death_counts", counts)
    assert isinstance(outcome, SumOutcome), outcome
    assert set(codes.values()) == {None}
    assert np.sum(outcome.values["transitions"]) > 0
