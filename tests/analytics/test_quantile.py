"""The ``quantile`` kind (analytics/quantile_query.py + analytics/quantile.py) through real site
directories and secure aggregation (in-process transport) over 3 uneven sites, against numpy
on the pooled values (``method="inverted_cdf"``: the read-off's definition); the plan refuses a
request on another lattice; the DP variant runs."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.analytics.quantile import quantile_params, quantiles_from_cdf
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites, run_study_on
from hemafed.errors import HemafedError
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.secure import FederationManifest
from hemafed.study.plan import StudyPlan
from hemafed.study.runner import frame_from_json
from hemafed.study.spec import StudySpec

PROBS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
SPEC = {
    "study_id": "quantiles", "requester": "tester", "analyses": [
        # age has one decimal: on the 0.1 lattice over the schema's bounds [0, 110]
        {"id": "age", "kind": "quantile", "column": "age", "probs": PROBS, "step": 0.1,
         "exact": True},
        # platelets are whole numbers; the spec narrows the schema's [0, 3000]
        {"id": "plt", "kind": "quantile", "column": "plt", "probs": [0.5],
         "bounds": {"plt": [0, 1500]}, "exact": True},
        # haemoglobin (one decimal) on a coarser lattice: rounded up to the next 0.5
        {"id": "hb", "kind": "quantile", "column": "hb", "probs": PROBS, "step": 0.5,
         "exact": True},
        {"id": "age_dp", "kind": "quantile", "column": "age", "probs": [0.5], "step": 1,
         "epsilon": 1.0},
    ]}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 420, 11), 3, 11, size_skew=0.7)
    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(tmp_path_factory.mktemp("sites"), cohorts, spec)
    return cohorts, spec, fed, run_study_on("inprocess", spec, fed)


def _pooled(cohorts: Any, column: str) -> np.ndarray:
    values = pd.concat([c.patients[column] for c in cohorts.values()], ignore_index=True)
    return pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)


def _quantiles(doc: dict[str, Any]) -> np.ndarray:
    return frame_from_json(doc["tables"]["quantiles"])["quantile"].to_numpy(dtype=float)


def test_quantiles_equal_numpy_on_the_pooled_values(study: Any) -> None:
    cohorts, _spec, fed, results = study
    sizes = sorted(len(c.patients) for c in cohorts.values())
    assert len(sizes) == 3 and sizes[0] < sizes[-1]  # uneven sites
    docs = {d["id"]: d for d in results["analyses"]}
    assert all(d["status"] == "ok" for d in docs.values()), [d.get("error") for d in docs.values()]
    age = _pooled(cohorts, "age")
    np.testing.assert_allclose(_quantiles(docs["age"]),
                               np.quantile(age, PROBS, method="inverted_cdf"), atol=1e-9)
    assert docs["age"]["stats"]["n"] == age.size
    assert sorted(docs["age"]["stats"]["sites"]) == sorted(cohorts)
    plt = _pooled(cohorts, "plt")
    assert plt.max() <= 1500
    np.testing.assert_allclose(_quantiles(docs["plt"]),
                               np.quantile(plt, [0.5], method="inverted_cdf"))
    # off the lattice: the pooled quantile rounded up to the next lattice point
    hb = _pooled(cohorts, "hb")
    want = np.ceil(np.round((np.quantile(hb, PROBS, method="inverted_cdf") - 2.0) / 0.5, 6))
    np.testing.assert_allclose(_quantiles(docs["hb"]), 2.0 + 0.5 * want)
    assert not np.allclose(want * 0.5 + 2.0, np.quantile(hb, PROBS, method="inverted_cdf"))
    # the DP variant: a noisy median of the age on the 1-year lattice, released and reported
    dp = docs["age_dp"]
    assert dp["stats"]["epsilon"] == 1.0
    median = float(_quantiles(dp)[0])
    assert median == round(median) and 0 <= median <= 110
    assert abs(median - float(np.quantile(age, 0.5, method="inverted_cdf"))) < 15
    for site_dir in fed.site_dirs.values():  # each site charged its ledger for that release
        lines = (site_dir / "ledger.jsonl").read_text().splitlines()
        charges = [json.loads(line) for line in lines if line.strip()]
        assert [c["query"] for c in charges if c.get("study") == "quantiles"] == \
            ["quantile_cdf@1"]


def test_the_demo_compares_with_the_registered_pooled_reference(study: Any) -> None:
    from hemafed.study.pooled import compare

    cohorts, spec, _fed, results = study
    docs = {d["id"]: d for d in results["analyses"]}
    a = next(a for a in spec.analyses if a.id == "age")
    out = compare(a, docs["age"], list(cohorts.values()))
    assert out is not None and out["pooled engine"] == "numpy inverted_cdf"
    assert float(out["max absolute difference"]) < 1e-9


def test_the_report_draws_the_quantiles(study: Any, tmp_path: Any) -> None:
    from hemafed.study.report import build_report

    _cohorts, _spec, _fed, results = study
    html = build_report(results).write(tmp_path / "report.html").read_text()
    assert "This analysis did not complete" not in html
    assert "inverted_cdf on the lattice" in html


def _other_grid_hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
    spec = StudySpec.from_mapping(config["spec"])
    fed = SecureFederation(exchange, FederationManifest.from_json(config["manifest"]),
                           site_ids=site_ids, spec_sha256=spec.sha256, requester=spec.requester)
    params = {**quantile_params("age", step=0.1), "step": 0.05}  # a finer lattice than approved
    try:
        fed.secure_sum("quantile_cdf", params, study=spec.study_id)
    except HemafedError as exc:
        return {"refused": str(exc)}
    return {"refused": ""}


def test_sites_refuse_another_lattice(study: Any) -> None:
    _cohorts, spec, fed, _results = study
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    out = run_in_process(_other_grid_hub, "hemafed.study.site_runtime:site_handler",
                         fed.site_configs(), config)
    assert "outside the approved study plan ('request')" in out["refused"], out


def test_plan_permits_exactly_the_spec_lattice() -> None:
    plan = StudyPlan.from_spec(StudySpec.from_mapping(SPEC))
    ok = quantile_params("age", step=0.1)
    assert plan.check("quantile_cdf", ok, False) is None
    assert plan.check("quantile_cdf", quantile_params("plt", {"plt": [0, 1500]}), False) is None
    for other in ({**ok, "step": 0.05}, {**ok, "step": 0.2}, {**ok, "low": 50.0},
                  quantile_params("plt"), {**ok, "column": "wbc"}):
        problem = plan.check("quantile_cdf", other, False)
        assert problem is not None and problem[0] == "request", (other, problem)
    assert "age" in plan.columns and "plt" in plan.columns
    assert plan.cap("quantile_cdf") == 2 * 4


def test_without_an_exact_approval_the_cdf_is_released_only_with_dp() -> None:
    spec = {"study_id": "q-dp", "requester": "tester", "analyses": [
        {"id": "age", "kind": "quantile", "column": "age", "step": 0.1, "epsilon": 1.0}]}
    plan = StudyPlan.from_spec(StudySpec.from_mapping(spec))
    params = quantile_params("age", step=0.1)
    assert plan.check("quantile_cdf", params, True) is None
    problem = plan.check("quantile_cdf", params, False)
    assert problem is not None and problem[0] == "dp", problem


def test_read_off_is_numpy_inverted_cdf_on_random_lattice_data() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 60, 333):
        x = rng.integers(0, 40, n).astype(float)
        cdf = np.cumsum(np.bincount(x.astype(int), minlength=41)).astype(float)
        probs = np.linspace(0, 1, 21)
        np.testing.assert_array_equal(quantiles_from_cdf(cdf, np.arange(41.0), probs),
                                      np.quantile(x, probs, method="inverted_cdf"))


def test_a_site_with_one_patient_and_missing_values() -> None:
    from hemafed.analytics.quantile import federated_quantiles
    from hemafed.cohort.model import Cohort
    from hemafed.federation.local import LocalSumFederation

    pooled = generate("MDS", 120, 4)
    pats = pooled.patients.copy()
    pats.loc[pats.index[:9], "hb"] = np.nan
    cohorts = [Cohort(pats.iloc[a:b].reset_index(drop=True))
               for a, b in ((0, 1), (1, 31), (31, len(pats)))]  # 1, 30 and 89 patients
    res = federated_quantiles(LocalSumFederation(cohorts), "hb", PROBS, step=0.1)
    hb = pats["hb"].dropna().to_numpy(dtype=float)
    np.testing.assert_allclose(res.quantiles.to_numpy(),
                               np.quantile(hb, PROBS, method="inverted_cdf"), atol=1e-9)
    assert (res.n, res.missing) == (hb.size, 9)


def test_a_step_that_is_not_a_lattice_is_a_clear_error() -> None:
    from hemafed.errors import InvalidInput

    with pytest.raises(InvalidInput, match="parameter 'step'"):
        quantile_params("age", step=0.3)
    with pytest.raises(InvalidInput, match="parameter 'step'"):
        quantile_params("age", step=0.0001)
