"""The long-format start-stop Cox as a study kind (``cox_long``), end to end, against R.

R's own ``survival::heart`` (172 start-stop rows of 103 patients: age, year, surgery and the
time-varying transplant indicator, times in days with one half-day) is exported by Rscript and
split over three uneven real site directories (one site of a single patient, one without
events): the patients through the site intake, each site's rows as its long table
(:func:`hemafed.analytics.mixed.import_measurements`, the supported way). The study spec is run
by the study hub over SecureFederation (in-process transport); the hazard ratios must equal R's
``coxph(Surv(start, stop, event) ~ age + year + surgery + transplant)`` on the pooled rows. The
plan pins the half-day lattice: a request on another grid is refused naming the rule.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analytics"))
from r_datasets import HEART_COX_R, needs_r, r_heart, run_r_batch, split_uneven

from hemafed.analytics.coxph_startstop import LONG_QUERY
from hemafed.analytics.mixed import (
    LongitudinalCohort,
    import_measurements,
)
from hemafed.documents import frame_from_json
from hemafed.errors import HemafedError
from hemafed.study.plan import StudyPlan
from hemafed.study.site_runtime import longitudinal_site_handler
from hemafed.study.spec import Analysis, StudySpec

FORMULA = "age + year + surgery + transplant"
BOUNDS = {"age": [-50.0, 30.0], "year": [-1.0, 8.0], "surgery": [0.0, 1.0],
          "transplant": [0.0, 1.0]}
LONG = {"kind": "cox_long", "formula": FORMULA, "bounds": BOUNDS, "steps_per_unit": 2,
        "max_time": 2000}
SPEC = {"study_id": "heart-long", "requester": "tester", "analyses": [
    {"id": "efron", "title": "Heart transplant (Efron)", **LONG},
    {"id": "breslow", "title": "Heart transplant (Breslow)", **LONG, "ties": "breslow"},
    {"id": "levels", "title": "Surgery as a factor (Breslow)", **LONG, "ties": "breslow",
     "bounds": {k: v for k, v in BOUNDS.items() if k != "surgery"},
     "levels": {"surgery": [0, 1]}}]}
R_FIT = HEART_COX_R


@pytest.fixture(scope="module")
def heart() -> pd.DataFrame:
    return r_heart()


def _cohorts(heart: pd.DataFrame) -> dict[str, LongitudinalCohort]:
    """Three uneven sites (split_uneven on one row per patient), each with its own rows."""
    last = heart.groupby("patient_id", sort=True).tail(1)
    patients = pd.DataFrame({"patient_id": last["patient_id"].to_numpy(), "disease": "MDS",
                             "os_time": last["stop"].to_numpy() / 365.25,
                             "os_status": last["event"].to_numpy()})
    return {name: LongitudinalCohort.attach(
                c, heart[heart["patient_id"].isin(c.patients["patient_id"].astype(str))])
            for name, c in split_uneven(patients, 3).items()}


@pytest.fixture(scope="module")
def federation(heart: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from hemafed.cohort.model import Cohort
    from hemafed.demo import build_sites

    spec = StudySpec.from_mapping(SPEC)
    cohorts = _cohorts(heart)
    sites = build_sites(tmp_path_factory.mktemp("heart-sites"),
                        {s: Cohort(c.patients, c.mutations, c.panels)
                         for s, c in cohorts.items()}, spec)
    for s, c in cohorts.items():
        import_measurements(sites.site_dirs[s], c.measurements, spec.study_id)
    return spec, cohorts, sites


@needs_r
@pytest.mark.slow
def test_cox_long_study_equals_r_over_three_uneven_sites(heart: pd.DataFrame,
                                                          federation: Any) -> None:
    from hemafed.federation.inprocess import run_in_process
    from hemafed.study.pooled import compare

    spec, cohorts, sites = federation
    assert sum(len(c.measurements) for c in cohorts.values()) == len(heart)
    assert min(len(c.patients) for c in cohorts.values()) == 1
    refs = run_r_batch({t: (R_FIT.replace("{ties}", t), heart) for t in ("efron", "breslow")})
    results = run_in_process("hemafed.study.hub:study_hub_main", longitudinal_site_handler,
                             sites.site_configs(), {"spec": dict(spec.raw),
                                                    "manifest": sites.manifest.to_json()})
    docs = {d["id"]: d for d in results["analyses"]}
    assert all(d["status"] == "ok" for d in docs.values()), [d.get("error")
                                                            for d in docs.values()]
    for ties, ref in refs.items():
        doc = docs[ties]
        table = frame_from_json(doc["tables"]["summary"])
        assert list(table.index) == ["age", "year", "surgery", "transplant"]
        np.testing.assert_allclose(table["coef"].astype(float), ref["coef"], rtol=1e-6,
                                   err_msg=ties)
        np.testing.assert_allclose(table["se(coef)"].astype(float), ref["se"], rtol=1e-6,
                                   err_msg=ties)
        stats = doc["stats"]
        assert stats["log_likelihood"] == pytest.approx(float(ref["loglik"].iloc[0]), rel=1e-8)
        assert stats["rows"] == len(heart) == int(ref["n"].iloc[0])
        assert stats["events"] == int(ref["nevent"].iloc[0])
        assert stats["n"] == heart["patient_id"].nunique() and stats["rows excluded"] == 0
        assert stats["sites"] == 3 and stats["newton_rounds"] <= 60
        # the registered pooled reference (lifelines for Efron) agrees with the federated fit
        a = next(x for x in spec.analyses if x.id == ties)
        pooled = compare(a, doc, list(cohorts.values()))
        assert pooled is not None
        assert float(pooled["max absolute difference of the coefficients"]) < 1e-5, pooled
    # surgery declared as a factor (levels, reference 0): R's factor(surgery) coefficient
    lv = frame_from_json(docs["levels"]["tables"]["summary"])
    assert list(lv.index) == ["age", "year", "surgery[1]", "transplant"]
    np.testing.assert_allclose(lv["coef"].astype(float), refs["breslow"]["coef"], rtol=1e-6)
    assert float(compare(spec.analyses[2], docs["levels"], list(cohorts.values()))[
        "max absolute difference of the coefficients"]) < 1e-6
    assert "lifelines" in compare(spec.analyses[0], docs["efron"],
                                  list(cohorts.values()))["pooled engine"]
    from hemafed.study.report import build_report

    html = build_report(results).render()
    assert "Heart transplant (Efron)" in html and "Cox model on start-stop rows" in html
    assert "surgery[1]" in html and "stem-cell" not in html  # the table's names, not the schema's


def test_a_request_off_the_pinned_lattice_is_refused_naming_the_rule(federation: Any) -> None:
    """Through the real site runtime: the planned request is answered, the same request on
    a grid of another lattice (or with another design, column, ties or an extra key) is
    refused as outside the plan, naming the rule."""
    from hemafed.federation.inprocess import run_in_process
    from hemafed.federation.runtime import SecureFederation

    spec, _, sites = federation
    base = {"id_col": "patient_id", "start_col": "start", "stop_col": "stop",
            "event_col": "event", "max_rows_per_patient": 20,
            "design": [{"kind": "numeric", "column": c, "low": lo, "high": hi}
                       for c, (lo, hi) in BOUNDS.items()],
            "ties": "efron", "beta": [0.0, 0.0, 0.0, 0.0]}

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        fed = SecureFederation(exchange, sites.manifest, spec_sha256=spec.sha256,
                               requester="tester")
        out: dict[str, Any] = {}
        for name, params in {
                "planned": base | {"grid": [50.0, 100.5, 1000.0]},
                "quarter_days": base | {"grid": [50.0, 100.25]},
                "beyond_max_time": base | {"grid": [50.0, 2500.0]},
                "other_bounds": base | {"grid": [50.0], "design": [
                    {**d, "high": 20.0} if d["column"] == "age" else d
                    for d in base["design"]]},
                "other_ties": base | {"grid": [50.0], "ties": "breslow", "event_col": "x"},
                "extra_key": base | {"grid": [50.0], "lp_bins": 8},
                # the public default spelt out is the planned request itself (the plan
                # compares typed requests with every default filled in)
                "default_spelt_out": base | {"grid": [50.0], "max_patients": 1_000_000}
        }.items():
            try:
                res = fed.secure_sum(LONG_QUERY, params, study=spec.study_id)
                out[name] = ("answered", sorted(res.sites))
            except HemafedError as exc:
                out[name] = ("refused", str(exc))
        return out

    out = run_in_process(hub, longitudinal_site_handler, sites.site_configs(), {})
    assert out["planned"][0] == "answered", out["planned"]
    for name in ("quarter_days", "beyond_max_time"):
        assert out[name][0] == "refused" and "outside the approved study plan" in out[name][1]
        assert "'lattice'" in out[name][1], out[name]
    for name in ("other_bounds", "other_ties"):
        assert out[name][0] == "refused" and "'request'" in out[name][1], out[name]
    assert out["extra_key"][0] == "refused" and "'lp_bins'" in out["extra_key"][1], out
    assert out["default_spelt_out"] == out["planned"], out["default_spelt_out"]


def test_the_plan_pins_columns_design_and_lattice() -> None:
    """The plan alone (no site): what a cox_long entry permits and what it does not."""
    plan = StudyPlan.from_spec(StudySpec.from_mapping(SPEC))
    from hemafed.study.plan import COARSER_LATTICES, OWN_TABLE_LATTICES

    assert COARSER_LATTICES | {2.0} == OWN_TABLE_LATTICES  # the follow-up lattices, half-units
    events = {"id_col": "patient_id", "start_col": "start", "stop_col": "stop",
              "event_col": "event", "max_rows_per_patient": 20, "steps_per_unit": 2.0,
              "max_time": 2000.0}
    assert plan.check("cox_long_event_times", events, False) is None
    assert plan.check("cox_long_event_times", events | {"steps_per_unit": 365.25},
                      False)[0] == "request"
    assert plan.check("cox_long_event_times", events | {"grid": [1.0]}, False)[0] == "request"
    assert plan.cap("cox_long_sums") == 3 * 60  # three analyses of NEWTON_CAP rounds
    # a spec asking an unlisted lattice (a tenth of a day) no longer validates; a stored
    # spec that bypassed validation is answered nothing all the same
    with pytest.raises(HemafedError, match="steps_per_unit must be one of the public lattices"):
        StudySpec.from_mapping(
            {"study_id": "fine", "analyses": [{"id": "c", **LONG, "steps_per_unit": 10}]})
    base = StudySpec.from_mapping({"study_id": "fine", "analyses": [{"id": "c", **LONG}]})
    fine = StudyPlan.from_spec(dataclasses.replace(base, analyses=(
        Analysis("c", "cox_long", "c", {**LONG, "steps_per_unit": 10}),)))
    assert fine.check("cox_long_event_times", events | {"steps_per_unit": 10.0},
                      False)[0] == "request"
    # the long table's own column names, pinned as the spec names them
    named = StudyPlan.from_spec(StudySpec.from_mapping(
        {"study_id": "named", "analyses": [{"id": "c", **LONG, "id_col": "pid", "stop": "t1"}]}))
    assert named.check("cox_long_event_times", events | {"id_col": "pid", "stop_col": "t1"},
                       False) is None
    assert named.check("cox_long_event_times", events, False)[0] == "request"
    # the follow-up lattices of other kinds stay as they were: a day grid beyond 60 years
    assert plan.check("cox_long_sums", {"grid": [50.0]}, False)[0] == "request"


@needs_r
def test_an_unlisted_lattice_fails_clearly_at_the_hub(federation: Any) -> None:
    from hemafed.federation.local import LocalSumFederation
    from hemafed.kinds import get_kind

    spec = StudySpec.from_mapping({"study_id": "fine", "analyses": [{"id": "c", **LONG}]})
    fine = Analysis("c", "cox_long", "c", {**LONG, "steps_per_unit": 10})  # bypasses validation
    _, cohorts, _ = federation
    with pytest.raises(HemafedError, match="steps_per_unit of a cox_long analysis must be one"):
        get_kind("cox_long").run(LocalSumFederation(cohorts), fine, spec)


@pytest.mark.parametrize(("option", "message"), [
    ({"steps_per_unit": 10}, "steps_per_unit must be one of the public lattices"),
    ({"steps_per_unit": "2"}, "steps_per_unit must be one of the public lattices"),
    ({"max_time": -5}, "max_time must be a positive number"),
    ({"steps_per_unit": 365.25, "max_time": 2000}, "may hold at most 21916 points"),
])
def test_study_validate_refuses_an_unlisted_cox_long_lattice(tmp_path: Path, option: dict,
                                                             message: str) -> None:
    """`hemafed study validate` rejects the lattice the site would refuse, with a message
    naming the option and no traceback; the listed lattice validates."""
    import yaml
    from typer.testing import CliRunner

    from hemafed.cli import app
    from hemafed.study.plan import MAX_GRID_POINTS
    from hemafed.study.spec import OWN_LATTICE_MAX_POINTS

    assert OWN_LATTICE_MAX_POINTS == MAX_GRID_POINTS
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump({"study_id": "s", "analyses": [{"id": "c", **LONG}]}))
    bad.write_text(yaml.safe_dump({"study_id": "s", "analyses": [{"id": "c", **LONG,
                                                                   **option}]}))
    runner = CliRunner()
    ok = runner.invoke(app, ["study", "validate", str(good)])
    assert ok.exit_code == 0, ok.output
    res = runner.invoke(app, ["study", "validate", str(bad)])
    assert res.exit_code == 1
    assert message in res.output
    assert "analysis 'c' (cox_long)" in res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
