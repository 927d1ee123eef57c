"""Illness-death Aalen-Johansen against ``survival::survfit(Surv(tstart, tstop, state) ~ 1,
id = id)`` on the pooled counting-process rows: R's mgus2 (MGUS -> plasma-cell malignancy ->
death) over 2, 5 and 10 uneven sites, the secure runtime in process, and the real MDS cohort
(MDS -> AML -> death)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from r_reference import r_dataset, require_r, run_r, uneven_sites

from hemafed.analytics.multistate import FederatedIllnessDeath
from hemafed.cohort.validate import validate_cohort

R_MSTATE = """
library(survival)
d <- read.csv("rows.csv")
d$state <- factor(d$state, levels = c("censor", "AML", "death"))
fit <- survfit(Surv(tstart, tstop, state) ~ 1, data = d, id = id)
write_json(list(time = fit$time, pstate = as.vector(fit$pstate), se = as.vector(fit$std.err),
                n_risk = as.vector(fit$n.risk), n = length(unique(d$id))), "out.json")
"""


def counting_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The module's rules written out as (tstart, tstop, state) rows, independently of it."""
    rows = []
    for i, r in enumerate(df.itertuples()):
        u, su, t, st = r.amlt_time, r.amlt_status, r.os_time, r.os_status
        if su == 1 and u < t:
            rows += [(i, 0.0, u, "AML"), (i, u, t, "death" if st else "censor")]
        elif su == 1:
            rows.append((i, 0.0, u, "AML"))
        else:
            t0 = min(u, t)
            rows.append((i, 0.0, t0, "death" if (st and t <= u) else "censor"))
    return pd.DataFrame(rows, columns=["id", "tstart", "tstop", "state"])


def mgus_frame() -> pd.DataFrame:
    """mgus2 in the schema's columns (months as years on the 1/12 lattice); a carrier for
    the maths: plasma-cell malignancy plays the illness."""
    m = r_dataset("mgus2", "survival").dropna(subset=["ptime", "pstat", "futime", "death"])
    return pd.DataFrame({"patient_id": [f"m{i}" for i in m["id"]], "disease": "MDS",
                         "amlt_time": m["ptime"].to_numpy() / 12.0,
                         "amlt_status": m["pstat"].astype(int).to_numpy(),
                         "os_time": m["futime"].to_numpy() / 12.0,
                         "os_status": m["death"].astype(int).to_numpy()})


@pytest.fixture(scope="module")
def mgus() -> pd.DataFrame:
    require_r("survival")
    return mgus_frame()


@pytest.fixture(scope="module")
def r_ref(mgus: pd.DataFrame) -> dict[str, Any]:
    return run_r(R_MSTATE, {"rows": counting_rows(mgus)})


def _compare(fit: FederatedIllnessDeath, ref: dict[str, Any], rtol: float = 1e-9) -> None:
    times = np.asarray(ref["time"])
    k = times.size
    pstate = np.asarray(ref["pstate"]).reshape(3, k).T
    se = np.asarray(ref["se"]).reshape(3, k).T
    ours = fit.predict(times).to_numpy()
    np.testing.assert_allclose(ours, pstate, rtol=rtol, atol=1e-12)
    grid = fit.state_probabilities_.index.to_numpy()
    pos = np.searchsorted(grid, times + 1e-12, side="right") - 1
    assert fit.standard_errors_ is not None
    ours_se = np.where(pos[:, None] >= 0, fit.standard_errors_.to_numpy()[np.maximum(pos, 0)], 0)
    np.testing.assert_allclose(ours_se, se, rtol=1e-7, atol=1e-12)
    assert fit.n_ == ref["n"][0]


@pytest.mark.parametrize("n_sites", [2, 5, 10])
def test_illness_death_equals_r_pooled(mgus: pd.DataFrame, r_ref: dict[str, Any],
                                       make_federation, n_sites: int) -> None:
    parts = uneven_sites(mgus, n_sites, "os_status")
    fed = make_federation({f"s{i}": validate_cohort(p) for i, p in enumerate(parts)})
    fit = FederatedIllnessDeath(("MGUS", "PCM", "death")).fit(fed, steps_per_unit=12)
    _compare(fit, r_ref)
    assert fit.sites == tuple(sorted(fed.site_ids)) and fit.rounds == 4
    assert json.loads(fit.to_json())["states"] == ["MGUS", "PCM", "death"]
    np.testing.assert_allclose(fit.state_probabilities_.sum(axis=1), 1.0, atol=1e-12)


def test_rules_and_bad_input(make_federation) -> None:
    # hand-computed: 4 patients; one ill then dead, one ill at exit, one censored early for
    # illness (its later death does not count), one dead without illness
    df = pd.DataFrame({"patient_id": list("abcd"), "disease": "MDS",
                       "amlt_time": [1.0, 2.0, 1.0, 3.0], "amlt_status": [1, 1, 0, 0],
                       "os_time": [2.0, 2.0, 4.0, 3.0], "os_status": [1, 1, 1, 1]})
    fed = make_federation([validate_cohort(df)])
    fit = FederatedIllnessDeath().fit(fed, grid=[1.0, 2.0, 3.0, 4.0], variance=False)
    table = fit.event_table
    assert table["at_risk_MDS"].tolist() == [4, 2, 1, 0]
    assert table["at_risk_AML"].tolist() == [0, 1, 0, 0]
    assert table["MDS->AML"].tolist() == [1, 1, 0, 0]
    assert table["AML->death"].tolist() == [0, 1, 0, 0]
    assert table["MDS->death"].tolist() == [0, 0, 1, 0]
    p = fit.state_probabilities_
    # t=1: 1/4 to AML; t=2: MDS 3/4 * (1 - 1/2), AML 1/4 * 0 + 3/8; t=3: MDS -> death
    np.testing.assert_allclose(p.loc[2.0].to_numpy(), [0.375, 0.375, 0.25])
    np.testing.assert_allclose(p.loc[3.0].to_numpy(), [0.0, 0.375, 0.625])
    missing = df.assign(amlt_time=[np.nan, 2.0, 1.0, 3.0], amlt_status=[np.nan, 1, 0, 0])
    fit = FederatedIllnessDeath().fit(make_federation([validate_cohort(missing)]),
                                      grid=[1.0, 2.0, 3.0, 4.0], variance=False)
    assert fit.excluded_ == 1 and fit.n_ == 3
    # a transition off the grid is excluded (never a per-site refusal): the paths with a
    # transition at t=2 are left out
    off = FederatedIllnessDeath().fit(fed, grid=[1.0, 3.0], variance=False)
    assert off.excluded_ == 2 and off.n_ == 2


@pytest.mark.slow
def test_secure_runtime_equals_r(mgus: pd.DataFrame, r_ref: dict[str, Any],
                                 tmp_path_factory) -> None:
    from hemafed.demo import build_sites
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation
    from hemafed.study.site_runtime import site_handler
    from hemafed.study.spec import StudySpec

    spec = StudySpec.from_mapping({"study_id": "ms-test", "requester": "tester",
                                   "analyses": [{"id": "ms", "kind": "multistate"}]})
    parts = uneven_sites(mgus, 5, "os_status")
    sites = build_sites(tmp_path_factory.mktemp("ms-sites"),
                        {f"s{i}": validate_cohort(p) for i, p in enumerate(parts)}, spec)

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, sites.manifest, spec_sha256=spec.sha256,
                               requester="tester")
        fit = FederatedIllnessDeath().fit(fed, steps_per_unit=12, study=spec.study_id)
        return {"p": fit.state_probabilities_.to_numpy().tolist(),
                "se": fit.standard_errors_.to_numpy().tolist(),
                "t": fit.state_probabilities_.index.tolist(), "n": fit.n_}

    out = run_in_process(hub, site_handler, sites.site_configs(), {})
    fit = FederatedIllnessDeath()
    fit.state_probabilities_ = pd.DataFrame(out["p"], index=out["t"])
    fit.standard_errors_ = pd.DataFrame(out["se"], index=out["t"])
    fit.n_ = out["n"]
    _compare(fit, r_ref, rtol=1e-8)


def test_mds_to_aml_to_death_equals_r_pooled(shared_data, make_federation) -> None:
    """The real IPSS-M cohort: MDS -> AML -> death, whole days, 5 uneven sites."""
    from hemafed.cohort.partition import split_sites
    from hemafed.cohort.public import read_mds_ipssm
    from hemafed.demo import on_day_lattice

    require_r("survival")
    cohort = on_day_lattice(read_mds_ipssm(shared_data / "mds-ipssm-cohort").cohort)
    cols = ["amlt_time", "amlt_status", "os_time", "os_status"]
    pooled = cohort.patients[cols].dropna().astype(float).reset_index(drop=True)
    ref = run_r(R_MSTATE, {"rows": counting_rows(pooled)})
    fed = make_federation(split_sites(cohort, 5, seed=4, size_skew=0.8))
    fit = FederatedIllnessDeath().fit(fed)
    _compare(fit, ref, rtol=1e-9)
    assert fit.excluded_ == len(cohort) - len(pooled)
