"""The minimum-cell rule and the per-time counts of Fine-Gray and time-varying Cox (issue 13).

As ``test_lattice_min_cell.py`` does for ``cox``: through real site directories under the
shipped policy template (minimum-cell rule on, ``min_cell_size`` 5, plans required), the real
site node and secure aggregation, about 40 patients a site. A non-DP Fine-Gray or time-varying
Cox fit whose spec fixes the monthly ``lattice`` is refused ``min_cell_size`` there (the per-time
counts stay under the rule on the lattice: attack L of the fourth review). With the rule off,
the lattice Fine-Gray equals R's ``cmprsk::crr`` on the pooled rows with every exit time rounded
up to the month, and the lattice time-varying Cox equals lifelines' ``CoxTimeVaryingFitter``
and R's ``coxph(Surv(start, stop, event))`` on the pooled rows split at the rounded switch
times. The rounding and the split are computed here, not by hemafed. The same requests on a
grid the hub chose (weekly) are refused naming ``min_cell_size``, and without a lattice each
fit is refused at its time histogram.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hemafed.analytics.design import parse_formula
from hemafed.analytics.survival_grid import lattice_grid
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites, build_sites
from hemafed.errors import HemafedError
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.secure.identity import FederationManifest
from hemafed.site import policy as site_policy
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analytics"))
from r_datasets import needs_r, run_r_batch

FORMULA = ["age", "hb"]
CAUSES = [["amlt_time", "amlt_status"], ["os_time", "os_status"]]
SWITCH = ["amlt_time", "amlt_status"]
COLUMNS = [*FORMULA, "amlt_time", "amlt_status", "os_time", "os_status"]
PROTECTIVE = ("min_cell_size", "enforce_min_cell", "min_subgroup_size", "max_cells",
              "require_dp", "refuse_differencing", "allow_non_secure", "privacy_budget",
              "require_plan")


def _spec(study_id: str, lattice: float | None) -> StudySpec:
    fg: dict[str, Any] = {"id": "fg", "kind": "finegray", "causes": CAUSES,
                          "formula": " + ".join(FORMULA)}
    tv: dict[str, Any] = {"id": "tv", "kind": "cox_tv", "duration": "os_time",
                          "event": "os_status", "formula": " + ".join(FORMULA),
                          "switch": SWITCH}
    if lattice is not None:
        fg["lattice"] = tv["lattice"] = lattice
    return StudySpec.from_mapping({"study_id": study_id, "requester": "tester",
                                   "analyses": [fg, tv]})


def _template_sites(root: Path, spec: StudySpec, **policy: Any) -> LocalSites:
    """Three small sites (about 40 patients each) under the template's protective settings
    (``policy`` replaces some of them)."""
    template = yaml.safe_load(site_policy._TEMPLATE.format(site_id="template"))
    assert template["enforce_min_cell"] is True and template["min_cell_size"] == 5
    assert template["max_lattice_steps_per_unit"] == 12
    cohorts = split_sites(generate("MDS", 120, 13), 3, 13)
    return build_sites(root, cohorts, spec,
                       policy_overrides={**{k: template[k] for k in PROTECTIVE}, **policy})


def _run_study(fed: LocalSites, spec: StudySpec) -> dict[str, dict[str, Any]]:
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    result = run_in_process("hemafed.study.hub:study_hub_main", site_handler,
                            fed.site_configs(), config)
    return {a["id"]: a for a in result["analyses"]}


def _refusals(fed: LocalSites) -> list[str]:
    return [str(e["reason"]) for d in fed.site_dirs.values()
            for e in AuditLog(d / "audit.log").entries() if "[policy:" in str(e["reason"])]


def _summary(doc: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(**{k: doc["tables"]["summary"][k] for k in ("data", "index", "columns")})


def _up(t: pd.Series | np.ndarray) -> np.ndarray:
    """Times moved up to the end of their month (computed here, not by hemafed)."""
    return np.ceil(np.asarray(t, dtype=float) * 12 - 1e-7) / 12


def _complete(fed: LocalSites) -> pd.DataFrame:
    pooled = pd.concat([load_cohort(d).patients for d in fed.site_dirs.values()],
                       ignore_index=True)
    return pooled.dropna(subset=COLUMNS).reset_index(drop=True)


def _first_exit(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Fine-Gray's exit: AML transformation if it happened, else death, else censored (the
    earliest listed time), by hand."""
    aml = frame["amlt_status"].astype(float).to_numpy() == 1
    dead = frame["os_status"].astype(float).to_numpy() == 1
    t_aml, t_os = (frame[c].astype(float).to_numpy() for c in ("amlt_time", "os_time"))
    time = np.where(aml, t_aml, np.where(dead, t_os, np.minimum(t_aml, t_os)))
    return time, np.where(aml, 1, np.where(dead, 2, 0))


def _split_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """tmerge's split on the rounded times: (0, s'] with z = 0, then (s', T'] with z = 1."""
    rows = []
    for r in frame.itertuples():
        t, s = float(_up([r.os_time])[0]), float(_up([r.amlt_time])[0])
        base = {"age": float(r.age), "hb": float(r.hb)}
        if int(r.amlt_status) == 1 and s < t:
            if s > 0:
                rows.append(base | {"start": 0.0, "stop": s, "event": 0, "z": 0.0})
            rows.append(base | {"start": s, "stop": t, "event": int(r.os_status), "z": 1.0})
        else:
            rows.append(base | {"start": 0.0, "stop": t, "event": int(r.os_status), "z": 0.0})
    return pd.DataFrame(rows)


def _months_with_few(fed: LocalSites, time_of: Any) -> bool:
    """Whether some site has a month holding 1 to 4 of its own events (the rule, applied to
    the per-time counts, would refuse it)."""
    for d in fed.site_dirs.values():
        p = load_cohort(d).patients.dropna(subset=COLUMNS)
        counts = pd.Series(np.ceil(time_of(p) * 12 - 1e-7)).value_counts()
        if ((counts > 0) & (counts < 5)).any():
            return True
    return False


def _aml_times(p: pd.DataFrame) -> np.ndarray:
    time, cause = _first_exit(p)
    return np.asarray(time[cause == 1])


def _deaths(p: pd.DataFrame) -> np.ndarray:
    return np.asarray(p.loc[p["os_status"] > 0, "os_time"].astype(float).to_numpy())


@pytest.fixture(scope="module")
def monthly(tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[LocalSites, StudySpec, dict[str, dict[str, Any]]]:
    """The monthly-lattice study on the small sites with the minimum-cell rule off (the
    lattice fits, for the comparisons with R and lifelines)."""
    spec = _spec("lattice-fg-tv", 12)
    fed = _template_sites(tmp_path_factory.mktemp("lattice-fg-tv"), spec,
                          enforce_min_cell=False)
    return fed, spec, _run_study(fed, spec)


@pytest.fixture(scope="module")
def ruled(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalSites, StudySpec]:
    """The same study and sites under the template's rule (``min_cell_size`` 5)."""
    spec = _spec("lattice-fg-tv-ruled", 12)
    return _template_sites(tmp_path_factory.mktemp("lattice-fg-tv-ruled"), spec), spec


@pytest.mark.slow
def test_both_fits_on_the_plan_lattice_are_refused_on_small_template_sites(
        ruled: tuple[LocalSites, StudySpec]) -> None:
    fed, spec = ruled
    assert _months_with_few(fed, _aml_times) and _months_with_few(fed, _deaths)
    before = len(_refusals(fed))
    docs = _run_study(fed, spec)
    for key in ("fg", "tv"):
        assert docs[key]["status"] == "failed", key
        assert "min_cell_size" in docs[key]["error"], docs[key]["error"]
    new = _refusals(fed)[before:]
    assert new and all("[policy:min_cell_size" in r for r in new), new


@needs_r
@pytest.mark.slow
def test_fine_gray_on_the_plan_lattice_equals_crr_with_the_rule_off(
        monthly: tuple[LocalSites, StudySpec, dict[str, dict[str, Any]]]) -> None:
    fed, _, docs = monthly
    fg = docs["fg"]
    assert fg["status"] == "ok", fg.get("error")
    cc = _complete(fed)
    time, cause = _first_exit(cc)
    frame = cc[FORMULA].astype(float).assign(ftime=_up(time), fstatus=cause)
    ref = run_r_batch({"crr": (
        "X <- as.matrix(d[, c('age', 'hb')])\n"
        "f <- crr(d$ftime, d$fstatus, X, failcode = 1, gtol = 1e-13)\n"
        "out <- data.frame(coef = f$coef, se = sqrt(diag(f$var)), n = f$n)", frame)})["crr"]
    summary = _summary(fg)
    np.testing.assert_allclose(summary["coef"].astype(float).to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(summary["se(coef)"].astype(float).to_numpy(), ref["se"],
                               rtol=1e-6)
    assert fg["stats"]["n"] == int(ref["n"].iloc[0]) == len(frame)
    assert fg["stats"]["events"] == int((cause == 1).sum())
    assert fg["stats"]["competing events"] == int((cause == 2).sum())


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Column z have very low variance")
def test_cox_tv_on_the_plan_lattice_equals_lifelines_with_the_rule_off(
        monthly: tuple[LocalSites, StudySpec, dict[str, dict[str, Any]]]) -> None:
    from lifelines import CoxTimeVaryingFitter

    fed, spec, docs = monthly
    tv = docs["tv"]
    assert tv["status"] == "ok", tv.get("error")
    rows = _split_rows(_complete(fed))
    assert rows["z"].sum() > 0 and len(rows) == tv["stats"]["rows"]
    ref = CoxTimeVaryingFitter().fit(rows.assign(id=np.arange(len(rows))), id_col="id",
                                     event_col="event", start_col="start", stop_col="stop",
                                     # its default step (0.95) overshoots on these rows
                                     fit_options={"precision": 1e-14, "step_size": 0.5})
    order = [*FORMULA, "z"]
    summary = _summary(tv)
    np.testing.assert_allclose(summary["coef"].astype(float).to_numpy(),
                               ref.params_[order].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(summary["se(coef)"].astype(float).to_numpy(),
                               ref.standard_errors_[order].to_numpy(), rtol=1e-6)
    # the study's own pooled reference (demo and report) rounds and splits the same way
    from hemafed.study.pooled import compare

    check = compare(spec.analyses[1], tv, [load_cohort(d) for d in fed.site_dirs.values()])
    assert check is not None
    assert float(check["max relative difference, coefficients"]) < 1e-5


@needs_r
@pytest.mark.slow
def test_cox_tv_on_the_plan_lattice_equals_r_coxph_with_the_rule_off(
        monthly: tuple[LocalSites, StudySpec, dict[str, dict[str, Any]]]) -> None:
    fed, _, docs = monthly
    rows = _split_rows(_complete(fed))
    ref = run_r_batch({"coxph": (
        "m <- coxph(Surv(start, stop, event) ~ age + hb + z, data = d, ties = 'efron',\n"
        "           control = coxph.control(eps = 1e-13, iter.max = 100))\n"
        "out <- data.frame(coef = coef(m), se = sqrt(diag(vcov(m))), n = m$n)", rows)})["coxph"]
    summary = _summary(docs["tv"])
    np.testing.assert_allclose(summary["coef"].astype(float).to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(summary["se(coef)"].astype(float).to_numpy(), ref["se"],
                               rtol=1e-6)


def _hub_grid_requests(exchange: Any, site_ids: list[str], config: dict[str, Any]
                       ) -> dict[str, str]:
    """A hub sending the approved models' requests on a grid of its own choosing (weekly,
    moved up): Fine-Gray's censoring table and the time-varying Cox sums."""
    spec = StudySpec.from_mapping(config["spec"])
    federation = SecureFederation(exchange, FederationManifest.from_json(config["manifest"]),
                                  site_ids=site_ids, spec_sha256=spec.sha256,
                                  requester=spec.requester)
    design = parse_formula(" + ".join(FORMULA)).to_params()
    week = lattice_grid(float(config.get("steps", 52.0)))
    requests: dict[str, dict[str, Any]] = {
        "finegray_table": {"causes": CAUSES, "cause": 1, "design": design, "grid": week,
                           "time_mapping": "up"},
        "cox_start_stop_sums": {"duration_col": "os_time", "event_col": "os_status",
                                "grid": week, "time_mapping": "up", "design": design,
                                "switch": SWITCH, "ties": "efron",
                                "beta": [0.0] * (len(FORMULA) + 1)}}
    out = {}
    for query, params in requests.items():
        if query not in config.get("queries", requests):
            continue
        try:
            federation.secure_sum(query, params, study=spec.study_id)
            out[query] = "answered"
        except HemafedError as exc:
            out[query] = str(exc)
    return out


@pytest.mark.slow
def test_the_same_requests_on_a_hub_chosen_finer_grid_are_refused_naming_the_rule(
        ruled: tuple[LocalSites, StudySpec]) -> None:
    fed, spec = ruled
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    before = len(_refusals(fed))
    out = run_in_process(_hub_grid_requests, site_handler, fed.site_configs(), config)
    for query, text in out.items():
        assert text != "answered", query
        assert "min_cell_size" in text, (query, text)
    new = _refusals(fed)[before:]
    assert new and all("[policy:min_cell_size" in r for r in new), new


@pytest.mark.slow
def test_without_a_lattice_both_fits_are_refused_at_their_time_histogram(
        tmp_path: Path) -> None:
    spec = _spec("lattice-none-fg-tv", None)
    docs = _run_study(_template_sites(tmp_path, spec), spec)
    for key in ("fg", "tv"):
        assert docs[key]["status"] == "failed", key
        assert "min_cell_size" in docs[key]["error"], docs[key]["error"]


def test_the_plan_lattice_of_fine_gray_and_cox_tv_is_the_whole_lattice_moved_up() -> None:
    from hemafed.study.plan import StudyPlan

    month = lattice_grid(12.0)
    for kind_spec in (_spec("lattice-plan-fg-tv", 12),):
        plan = StudyPlan.from_spec(kind_spec)
        assert plan.on_plan_lattice({"grid": month, "time_mapping": "up"}) == 12.0
        assert plan.on_plan_lattice({"grid": month[:-1], "time_mapping": "up"}) is None
        assert plan.on_plan_lattice({"grid": lattice_grid(52.0), "time_mapping": "up"}) is None
        assert plan.on_plan_lattice({"grid": month, "time_mapping": "exact"}) is None
    for kind in ("finegray", "cox_tv"):
        only = StudySpec.from_mapping({"study_id": f"only-{kind}", "requester": "tester",
                                       "analyses": [a for a in _spec("x", 12).raw["analyses"]
                                                    if a["kind"] == kind]})
        assert StudyPlan.from_spec(only).lattices == frozenset({12.0}), kind
    bare = StudyPlan.from_spec(_spec("lattice-plan-none", None))
    assert bare.on_plan_lattice({"grid": month, "time_mapping": "up"}) is None


@pytest.mark.parametrize("value", [7, "12"])
def test_a_fine_gray_or_cox_tv_lattice_must_be_a_public_one(value: Any) -> None:
    from hemafed.errors import InvalidInput

    with pytest.raises(InvalidInput, match="lattice must be one of the public lattices"):
        _spec("lattice-bad-fg-tv", value)


def test_a_lattice_is_only_the_lattice_of_the_analyses_that_fixed_it() -> None:
    """A Cox analysis's lattice is not the lattice of a Fine-Gray analysis without one (nor of
    its sums): the officer approved the monthly grid for the Cox model only."""
    from hemafed.study.plan import StudyPlan

    spec = StudySpec.from_mapping({"study_id": "lattice-cox-only", "requester": "tester",
                                   "analyses": [
                                       {"id": "cox", "kind": "cox", "duration": "os_time",
                                        "event": "os_status", "formula": "age + hb",
                                        "lattice": 12},
                                       {"id": "fg", "kind": "finegray", "causes": CAUSES,
                                        "formula": "age + hb"}]})
    plan = StudyPlan.from_spec(spec)
    month = {"grid": lattice_grid(12.0), "time_mapping": "up"}
    assert plan.on_plan_lattice(month, "cox_risk_set_sums") == 12.0
    assert plan.on_plan_lattice(month, "finegray_table") is None
    assert plan.on_plan_lattice(month, "finegray_sums") is None
    both = StudyPlan.from_spec(_spec("lattice-both", 12))
    for query in ("finegray_table", "finegray_sums", "cox_start_stop_sums"):
        assert both.on_plan_lattice(month, query) == 12.0, query


@pytest.mark.slow
def test_a_fine_gray_table_on_a_cox_lattice_is_under_the_rule_through_the_site(
        tmp_path: Path) -> None:
    spec = StudySpec.from_mapping({"study_id": "lattice-cox-only-sites", "requester": "tester",
                                   "analyses": [
                                       {"id": "cox", "kind": "cox", "duration": "os_time",
                                        "event": "os_status", "formula": " + ".join(FORMULA),
                                        "lattice": 12},
                                       {"id": "fg", "kind": "finegray", "causes": CAUSES,
                                        "formula": " + ".join(FORMULA)}]})
    fed = _template_sites(tmp_path, spec)
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json(), "steps": 12.0,
              "queries": ["finegray_table"]}
    out = run_in_process(_hub_grid_requests, site_handler, fed.site_configs(), config)
    assert "min_cell_size" in out["finegray_table"], out
