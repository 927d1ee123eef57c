"""A batched step through Flower's simulation runtime (Ray, 3 virtual sites): two statistics in
one exchange, and a Cox fit whose last Newton round carries its concordance.

The same hub (:mod:`batch_hub`) runs in Flower's processes and in process; the batch's sums must
equal the separate sums of the same run, the in-process run's, and the plain pooled sums (which
could disagree), and the Cox fit lifelines' on the pooled patients.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from batch_hub import FORMULA, PARTS, SPEC

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.federation.flower.simulation import run_in_simulation
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.local import LocalSumFederation
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

HERE = Path(__file__).parent
HUB, HANDLER = "batch_hub:batch_hub", "hemafed.study.site_runtime:site_handler"


@pytest.mark.slow
def test_a_batched_step_through_flower_simulation_equals_in_process_and_pooled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lifelines import CoxPHFitter

    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(tmp_path / "sites", split_sites(generate("MDS", 450, 5), 3, 5), spec)
    config = {"manifest": fed.manifest.to_json(), "spec_sha256": spec.sha256}
    # Flower's processes (SuperLink, flwr-simulation, Ray workers) import the hub from here
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p))
    stats: dict[str, Any] = {}
    sim = run_in_simulation(HUB, HANDLER, fed.site_configs(), config, timeout=60.0,
                            connect_timeout=60.0, num_cpus=2, client_cpus=0.5, stats=stats,
                            run_timeout=240.0)
    inproc = run_in_process(HUB, HANDLER, fed.site_configs(), config)

    assert sim["sites"] == sorted(fed.site_dirs)
    assert sim["batch_exchanges"] == 1 and sim["batch_round_trips"] == [1, 0]
    assert sim["batch"] == sim["alone"]  # each statistic exactly as if sent alone
    # every exchange the hub made went through Flower (one timed exchange each)
    assert len(stats["exchange_seconds"]) == sim["exchanges"]
    # the Cox fit: time grid + Newton rounds, the concordance riding with the last round
    assert sim["cox_exchanges"] == 1 + sim["cox_rounds"]
    assert sim == inproc  # Flower's transport changes nothing, to the last bit

    plain = LocalSumFederation({s: load_cohort(d) for s, d in fed.site_dirs.items()})
    for (query, params, _), got in zip(PARTS, sim["batch"], strict=True):
        expect = plain.secure_sum(query, params).values
        assert sorted(got) == sorted(expect)
        for name, value in expect.items():
            np.testing.assert_allclose(got[name], np.ravel(value), rtol=0, atol=1e-9)
    assert sim["batch"][1]["n"] == [450.0]

    frame = pd.concat([load_cohort(d).patients for d in fed.site_dirs.values()],
                      ignore_index=True)
    data = frame[[*FORMULA, "os_time", "os_status"]].astype(float).dropna()
    pooled = CoxPHFitter().fit(data, "os_time", "os_status",
                               fit_options={"precision": 1e-14, "r_precision": 1e-15})
    np.testing.assert_allclose(sim["cox_params"], pooled.params_.to_numpy(), rtol=1e-6)
    assert sim["cox_concordance"] == pytest.approx(pooled.concordance_index_, abs=2e-3)
