"""Fourth attack review (issue 13): a curious hub sending protocol-valid requests against the
code that landed without review (refusals through the secure sum, the plan lattice's per-time
Cox sums, pinned ``cox_long`` requests, the GWAS site rule, ComBat at the site, the service's
approvals), through real site directories under the shipped policy template, the real site
node and secure aggregation (``Probe`` / ``make_sites`` of the second review).

One test per attack, named by its letter in docs/security.md ("Fourth attack review"): a
defended attack is a passing test (the defence shown); an open one is ``xfail(strict=True)``
with what is left to build.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from attack_sites import SCREEN_SPEC_MAP, Probe, make_sites
from lattice_world import LATTICE_FORMULA, LATTICE_SPEC, _large_exit_cohorts

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites
from hemafed.errors import HemafedError
from hemafed.federation.queries import get_query
from hemafed.secure.codec import unpack_int, unpack_map
from hemafed.secure.hub import SumOutcome
from hemafed.site.store import load_cohort
from hemafed.study.plan import MAX_PATIENTS
from hemafed.study.spec import StudySpec


def _audit_seqs(hub: Probe, start: int) -> dict[str, int]:
    """The audit sequence number each site's masked-input reply carried (the hub's view)."""
    seqs: dict[str, int] = {}
    for site, envelope in hub.replies[start:]:
        body = unpack_map(unpack_map(envelope)["body"])
        if "vector" in body and "audit_seq" in body:
            seqs[site] = unpack_int(body["audit_seq"])
    return seqs


# --- K: refusals through the sum, and a site's audit head ----------------------------------------

HARMONISE_SPEC = copy.deepcopy(SCREEN_SPEC_MAP)
HARMONISE_SPEC["study_id"] = "ar4-combat"
HARMONISE_SPEC["imaging"]["harmonise"]["covariates"] = ["age"]


def _combat_params(sites: list[str]) -> dict[str, Any]:
    """A ``combat_apply`` request with hub-chosen pooled parameters (finite, var > 0)."""
    return {"features": ["hb", "plt"], "covariates": ["age"],
            "bounds": {"hb": [0, 25], "plt": [0, 2000], "age": [0, 120]},
            "alpha": [10.0, 200.0], "beta": [[0.0, 0.0]], "var_pooled": [4.0, 900.0],
            "n": 200, "sites": sites, "max_patients": MAX_PATIENTS}


def test_k_a_site_effect_failure_does_not_mark_the_refusing_site(tmp_path: Path) -> None:
    """A refusal travels through the sum, but every reply also carries the site's audit head.
    ``combat_apply`` is answered by the node (one "allowed" entry) and then runs a site effect
    (storing the harmonised features), which fails at a site with fewer than two imaged
    patients; the failure was audited as one entry more than an answering site writes, so the
    refusing site's ``audit_seq`` was one above the others': the hub read which site refused
    (and that it has fewer than two imaged patients). Every site's log must grow alike."""
    from hemafed.imaging.runtime import load_imaging_queries

    load_imaging_queries()
    spec = StudySpec.from_mapping(HARMONISE_SPEC)
    cohorts = split_sites(generate("MDS", 240, 5), 3, 5)
    target = sorted(cohorts)[2]
    p = cohorts[target].patients
    keep = p.index[p["hb"].notna() & p["plt"].notna() & p["age"].notna()][0]
    p.loc[p.index != keep, "hb"] = np.nan  # one imaged patient at this site
    # an officer who switched the subgroup rule off (it would refuse n = 1 in the node)
    fed = make_sites(tmp_path, cohorts, spec, require_dp=False, enforce_min_cell=False,
                     min_subgroup_size=0)
    hub = Probe(fed, spec.study_id, spec.sha256)
    # control: a refusal made in the node (the plan: a feature the spec does not name)
    start = len(hub.replies)
    outside = {**_combat_params(sorted(cohorts)), "features": ["hb", "bm_blast"],
               "bounds": {"hb": [0, 25], "bm_blast": [0, 100], "age": [0, 120]}}
    outcome, codes = hub.send("combat_apply", outside,
                              declared_as=_combat_params(sorted(cohorts)))
    assert not isinstance(outcome, SumOutcome) and codes == {"outside_plan"}, codes
    assert len(set(_audit_seqs(hub, start).values())) == 1
    # the attack: the site effect fails at one site only
    start = len(hub.replies)
    outcome, codes = hub.send("combat_apply", _combat_params(sorted(cohorts)))
    assert not isinstance(outcome, SumOutcome), outcome
    assert outcome.pooled.refused == 1  # one of three, not which
    seqs = _audit_seqs(hub, start)
    assert sorted(seqs) == sorted(cohorts)
    assert len(set(seqs.values())) == 1, f"the refusing site stands out: {seqs}"
    # the site itself audits why it refused
    from hemafed.site.audit import AuditLog

    last = [str(e["reason"]) for e in AuditLog(fed.site_dirs[target] / "audit.log").entries()]
    assert any("at least 2 patients" in r for r in last[-2:]), last[-2:]


# --- L and M: exact per-time Cox sums on the plan lattice ---------------------------------------

@pytest.fixture(scope="module")
def lattice_sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalSites, StudySpec]:
    """Three small sites (about 40 patients each) under the template policy."""
    cohorts = split_sites(generate("MDS", 120, 13), 3, 13)
    return make_sites(tmp_path_factory.mktemp("ar4-lattice"), cohorts, LATTICE_SPEC), LATTICE_SPEC


def _plan_lattice_cox(beta: list[float]) -> dict[str, Any]:
    from hemafed.analytics.design import parse_formula
    from hemafed.analytics.survival_grid import lattice_grid
    from hemafed.study.plan import MAX_TIME

    return {"beta": beta, "design": parse_formula(" + ".join(LATTICE_FORMULA), None).to_params(),
            "duration_col": "os_time", "event_col": "os_status",
            "grid": lattice_grid(12.0, MAX_TIME), "ties": "efron", "time_mapping": "up"}


def _ask_plan_lattice_cox(fed: LocalSites) -> tuple[Any, set[str | None], Probe]:
    """The plan's own first Newton request (beta = 0, the whole monthly lattice, mapping up),
    non-DP under the template policy (min_cell_size 5), as the hub sees it."""
    hub = Probe(fed, LATTICE_SPEC.study_id, LATTICE_SPEC.sha256)
    params = _plan_lattice_cox([0.0, 0.0])
    start = len(hub.replies)
    outcome = hub.ask("cox_risk_set_sums", params, version="3",
                      specs=get_query("cox_risk_set_sums", "3").declare(params))
    names: set[str | None] = set()
    for _, envelope in hub.replies[start:]:
        body = unpack_map(unpack_map(envelope)["body"])
        if body.get("status") == b"refused":
            names.add(body["name"].decode())
    if getattr(outcome, "pooled", None) is not None:
        names.add(outcome.pooled.name)
    return outcome, names or {None}, hub


def _pooled_months(fed: LocalSites) -> tuple[pd.DataFrame, np.ndarray]:
    """The pooled complete cases and their lattice index (the truth the tests compare with)."""
    pooled = pd.concat([load_cohort(s).patients for s in fed.site_dirs.values()],
                       ignore_index=True).dropna(subset=[*LATTICE_FORMULA, "os_time",
                                                          "os_status"])
    return pooled, np.ceil(pooled["os_time"].astype(float).to_numpy() * 12 - 1e-7)


CENTRE = np.array([55.0, 13.5])
"""The public design bounds' midpoints (age 0-110, hb 2-25): the design's ``x`` is value minus
centre."""


def test_l_plan_lattice_cox_does_not_release_one_patients_covariates(
        lattice_sites: tuple[LocalSites, StudySpec]) -> None:
    """On small sites (about 40 patients each, some month with 1 to 4 of a site's own events),
    the plan-lattice request is refused ``min_cell_size``: the per-time event counts ``d`` are
    under the rule on the lattice too. Before, they were exempt there, and for each month with
    one pooled event the hub read ``xsum`` = that patient's exact (age - 55, hb - 13.5)."""
    fed, _ = lattice_sites
    pooled, month = _pooled_months(fed)
    events = pd.Series(month[pooled["os_status"].astype(float).to_numpy() > 0]).value_counts()
    assert (events == 1).any()  # months a released d and xsum would isolate a patient in
    outcome, names, _ = _ask_plan_lattice_cox(fed)
    assert not isinstance(outcome, SumOutcome)
    assert names == {"min_cell_size"}, names


def _isolated_by_differences(outcome: SumOutcome, fed: LocalSites) -> int:
    """How many patients the hub reads exactly from ``s1[k] - s1[k + 1]`` where ``s0`` drops by
    one (the truth: the pooled cohorts)."""
    pooled, month = _pooled_months(fed)
    d = outcome.values["d"][0]
    assert not np.any((d > 0) & (d < 5))  # no month with one pooled event: L is not the leak
    s0, s1 = outcome.values["s0"][0], outcome.values["s1"][0]
    isolated = 0
    for k in np.flatnonzero(np.round(s0[:-1] - s0[1:]) == 1):
        who = pooled[month == k]
        assert len(who) == 1 and float(who["os_status"].iloc[0]) == 0  # a censoring
        if np.allclose(s1[k] - s1[k + 1] + CENTRE,
                       who[LATTICE_FORMULA].astype(float).to_numpy()[0]):
            isolated += 1
    return isolated


def test_m_risk_set_differences_do_not_isolate_a_patient(tmp_path: Path) -> None:
    """At beta = 0, ``s0[k]`` is the number at risk at month k and ``s1[k]`` their covariate
    sum; ``s1[k] - s1[k+1]`` over a month where ``s0`` drops by one is the covariate vector of
    the one patient (here censored) whose follow-up ended in that month. Every site's own
    per-month event counts are 0 or 5, so the rule on ``d`` passes; the rule on each site's own
    risk-set changes (a lone censoring in month 30, 33 or 36) refuses, by name, every site
    alike. Control: with the rule off the same request is answered and gives the 3 censored
    patients' exact age and hb (the attack, so this test fails on the code without the rule)."""
    fed = make_sites(tmp_path / "on", _large_exit_cohorts(), LATTICE_SPEC)
    outcome, names, _ = _ask_plan_lattice_cox(fed)
    assert not isinstance(outcome, SumOutcome), "answered: exact risk-set sums released"
    assert names == {"min_cell_size"}, names
    assert outcome.pooled.refused == 3
    # the detail stays in the site's audit log, which names the table, never a count
    from hemafed.site.audit import AuditLog

    for site_dir in fed.site_dirs.values():
        reasons = [str(e["reason"]) for e in AuditLog(site_dir / "audit.log").entries()]
        refusal = [r for r in reasons if "[policy:" in r]
        assert len(refusal) == 1 and "risk-set changes" in refusal[0], refusal
        assert "[policy:min_cell_size" in refusal[0], refusal
    off = make_sites(tmp_path / "off", _large_exit_cohorts(), LATTICE_SPEC,
                     enforce_min_cell=False)
    answered, names, _ = _ask_plan_lattice_cox(off)
    assert isinstance(answered, SumOutcome), names
    assert _isolated_by_differences(answered, off) == 3


# --- N: the service's approval flow: a study id that is a path ----------------------------------


@pytest.mark.parametrize("study_id", ["../released", "../federation.approved", "a/../../x"])
def test_n_a_study_id_that_is_a_path_is_not_approved(
        lattice_sites: tuple[LocalSites, StudySpec], study_id: str) -> None:
    """The researcher writes the spec; the site stores an approved spec's text as
    ``studies/<study_id>.json``. A study id ``../released`` would overwrite the site's release
    register (the participants rule's memory: a dict, so read as an empty register) and
    ``../federation.approved`` the pinned manifest. The site console's approval (and
    ``site approve``) check the id before writing anything."""
    from hemafed.service.approval import decide

    fed, _ = lattice_sites
    site = next(iter(fed.site_dirs.values()))
    before = {p: p.read_bytes() for p in site.rglob("*.json")}
    spec = StudySpec.from_mapping({"study_id": study_id, "requester": "r", "analyses": [
        {"id": "d", "kind": "describe", "columns": ["age"]}]})
    with pytest.raises((ValueError, HemafedError), match="study_id"):
        decide(site, spec, "approved", officer="officer")
    assert {p: p.read_bytes() for p in site.rglob("*.json")} == before
    assert not (site / "released.json").exists() or before.get(site / "released.json") \
        == (site / "released.json").read_bytes()


# --- O: the GWAS class minimum's reserved parameter, and the site id ----------------------------


@pytest.mark.parametrize("reserved", [{"_min_cell": 0}, {"_site_id": "site01"}])
def test_o_a_hub_cannot_set_the_sites_class_minimum_or_its_id(
        lattice_sites: tuple[LocalSites, StudySpec], reserved: dict[str, Any]) -> None:
    """``Query.run`` gives site-aware queries (genotype sums, the catalogue) the site's own
    class minimum and id as reserved parameters. A hub sending ``_min_cell: 0`` (the GWAS rule
    off) or another site's ``_site_id`` (another site's slot) in its own parameters is refused,
    by every site alike, before any query runs."""
    fed, spec = lattice_sites
    hub = Probe(fed, spec.study_id, spec.sha256)
    params = {**_plan_lattice_cox([0.0, 0.0]), **reserved}
    outcome = hub.ask("cox_risk_set_sums", params, version="3",
                      specs=get_query("cox_risk_set_sums", "3").declare(
                          _plan_lattice_cox([0.0, 0.0])))
    assert not isinstance(outcome, SumOutcome), outcome
    pooled = outcome.pooled
    assert pooled.refused == len(fed.site_dirs), pooled
    assert {c for c, _ in pooled.codes} <= {"outside_plan", "invalid_parameter"}, pooled


# --- P: the approval binds the study: a changed study under the approved id ----------------------


def test_p_a_changed_study_under_the_approved_id_is_not_answered(
        lattice_sites: tuple[LocalSites, StudySpec]) -> None:
    """A researcher or hub admin changes the approved study after the officers' approval (a
    finer lattice, so that its per-time counts are exempt on a weekly grid) and sends the plan
    request of the changed spec under the approved study id: its hash is not the one pinned at
    the sites, so every site refuses, alike (no plan is derived from the hub's text)."""
    fed, spec = lattice_sites
    changed = dict(spec.raw)
    changed["analyses"] = [{**spec.raw["analyses"][0], "lattice": 52}]
    other = StudySpec.from_mapping(changed)
    assert other.study_id == spec.study_id and other.sha256 != spec.sha256
    from hemafed.analytics.survival_grid import lattice_grid
    from hemafed.study.plan import MAX_TIME

    hub = Probe(fed, other.study_id, other.sha256)
    params = {**_plan_lattice_cox([0.0, 0.0]), "grid": lattice_grid(52.0, MAX_TIME)}
    outcome = hub.ask("cox_risk_set_sums", params, version="3",
                      specs=get_query("cox_risk_set_sums", "3").declare(params))
    assert not isinstance(outcome, SumOutcome), outcome
    assert outcome.pooled.refused == len(fed.site_dirs), outcome.pooled
    assert {c for c, _ in outcome.pooled.codes} == {"policy"}, outcome.pooled
    assert outcome.pooled.name == "spec_hash_mismatch", outcome.pooled


# --- Q: a refused sum and the participants rule --------------------------------------------------


def test_q_a_refusing_site_pins_the_same_participant_set(tmp_path: Path) -> None:
    """The participants check is a protocol rejection the hub sees per site (an absence). If a
    site that refused a sum (its own cell below ``min_cell_size``) did not record the set the
    sum was over, a later non-DP request of the study over another set would be confirmed by
    it alone and refused by the others: the hub would learn which site refused. The refusing
    site records the same set as the answering ones, and the differencing request is refused
    with nothing revealed."""
    from hostile import HostileHub
    from refusal_world import HIST, SPEC, _subset

    from hemafed.demo import build_sites

    full = generate("MDS", 900, 11)
    p = full.patients
    young = list(p.loc[p["age"] < 55, "patient_id"])
    old = list(p.loc[p["age"] >= 55, "patient_id"])
    cohorts = {"site01": _subset(full, old[:150] + young[:20]),
               "site02": _subset(full, old[150:300] + young[20:22]),  # 2 young: below 5
               "site03": _subset(full, old[300:450] + young[22:42])}
    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(tmp_path, cohorts, spec, store_plan=False,
                      policy_overrides={"enforce_min_cell": True})
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    query = get_query("numeric_summary")
    first = hub.ask("numeric_summary", HIST, specs=query.declare(HIST))
    assert not isinstance(first, SumOutcome) and first.pooled.refused == 1, first
    registers = {s: (d / "released.json").read_text() for s, d in fed.site_dirs.items()}
    assert len(set(registers.values())) == 1, registers
    other = {**HIST, "bins": 1}
    second = hub.ask("numeric_summary", other, specs=query.declare(other),
                     sites=["site01", "site02"])
    assert not isinstance(second, SumOutcome), second
    assert "participants" in str(second) and "nothing is revealed" in str(second), second
