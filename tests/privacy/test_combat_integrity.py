"""ComBat integrity at the site (fourth review, ComBat lead): what a hub's ``combat_apply`` may
store, and whose requests read it.

Real site directories, the standard site runtime and secure aggregation (:class:`Probe`, a hub
sending one request at a time). A clinical column stands in for an imaging feature, as in the
third review's screen test: the harmonisation and the screen treat both alike.

* a hostile hub's non-finite, wrong-shaped, non-positive or implausible pooled parameters are
  refused by every site alike, under the parameter's name, and nothing is stored;
* harmonised features are kept per study: study A's apply does not change what study B's screen
  reads, and a study that never applied ComBat has no harmonised features (another study's are
  not read instead).
"""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from attack_sites import SCREEN_SPEC_MAP, Probe, make_sites

from hemafed.atomic import write_text
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import LocalSites
from hemafed.federation.local import LocalSumFederation
from hemafed.imaging.combat import FederatedComBat
from hemafed.secure.hub import SumOutcome
from hemafed.site.store import load_cohort
from hemafed.site.studies import store_spec
from hemafed.study.plan import MAX_PATIENTS
from hemafed.study.spec import StudySpec

FEATURES, COVARIATES = ["hb", "plt"], ["age"]
BOUNDS = {"hb": [0.0, 25.0], "plt": [0.0, 2000.0], "age": [0.0, 120.0]}


def _spec(study_id: str) -> StudySpec:
    raw: dict[str, Any] = copy.deepcopy(SCREEN_SPEC_MAP)
    raw["study_id"] = study_id
    raw["imaging"]["harmonise"]["covariates"] = list(COVARIATES)
    return StudySpec.from_mapping(raw)


SPEC_A, SPEC_B = _spec("ci-a"), _spec("ci-b")


def _approve(sites: LocalSites, spec: StudySpec) -> None:
    """A second study approved at every site (policy entry and stored spec, as `site approve`)."""
    for d in sites.site_dirs.values():
        policy = yaml.safe_load((d / "policy.yaml").read_text())
        policy["studies"].append({
            "study_id": spec.study_id, "spec_sha256": spec.sha256,
            "expires": (dt.date.today() + dt.timedelta(days=365)).isoformat(),
            "approved_by": "test ethics committee"})
        write_text(d / "policy.yaml", yaml.safe_dump(policy, sort_keys=False))
        store_spec(d, spec)


@pytest.fixture()
def sites(tmp_path: Path) -> LocalSites:
    from hemafed.imaging.runtime import load_imaging_queries

    load_imaging_queries()
    cohorts = split_sites(generate("MDS", 240, 5), 3, 5)
    built = make_sites(tmp_path, cohorts, SPEC_A, require_dp=False, enforce_min_cell=False)
    _approve(built, SPEC_B)
    return built


def _honest(sites: LocalSites) -> dict[str, Any]:
    """The pooled parameters an honest federated fit gives on these sites' data."""
    cohorts = {s: load_cohort(d) for s, d in sites.site_dirs.items()}
    model = FederatedComBat().fit(LocalSumFederation(cohorts), FEATURES, COVARIATES, BOUNDS)
    return {**model.site_parameters(), "bounds": BOUNDS, "max_patients": MAX_PATIENTS}


SCREEN = {"features": ["h_hb", "h_plt"], "outcome": "os_status", "time": "os_time",
          "horizon": 2.0, "bounds": {"h_hb": BOUNDS["hb"], "h_plt": BOUNDS["plt"]},
          "max_patients": MAX_PATIENTS}


def _screen(hub: Probe) -> dict[str, np.ndarray]:
    outcome, codes = hub.send("imaging_screen", SCREEN)
    assert isinstance(outcome, SumOutcome), (outcome, codes)
    return {k: np.asarray(v, dtype=float) for k, v in outcome.values.items()}


def test_one_studys_combat_does_not_change_another_studys_screen(sites: LocalSites) -> None:
    hub_a = Probe(sites, SPEC_A.study_id, SPEC_A.sha256)
    hub_b = Probe(sites, SPEC_B.study_id, SPEC_B.sha256)
    honest = _honest(sites)
    outcome, codes = hub_b.send("combat_apply", honest)
    assert isinstance(outcome, SumOutcome), (outcome, codes)
    b_before = _screen(hub_b)
    # study A never applied ComBat: B's harmonised features are not A's to read
    outcome, codes = hub_a.send("imaging_screen", SCREEN)
    assert not isinstance(outcome, SumOutcome) and codes == {"data_do_not_fit"}, codes
    # A applies other (plausible, accepted) parameters: its grand means moved within the bounds
    shifted = {**honest, "alpha": [a + 1.5 for a in honest["alpha"]]}
    outcome, codes = hub_a.send("combat_apply", shifted)
    assert isinstance(outcome, SumOutcome), (outcome, codes)
    a_after = _screen(hub_a)
    b_after = _screen(hub_b)
    for k in b_before:
        np.testing.assert_array_equal(b_after[k], b_before[k], err_msg=k)
    # the control that can disagree: A's own screen reads A's shifted harmonisation (the same
    # patients, other harmonised values)
    assert a_after["n0"][0] == b_before["n0"][0] and a_after["n1"][0] == b_before["n1"][0]
    assert np.all(a_after["sum0"] > b_before["sum0"]) and np.all(a_after["sum1"] > b_before["sum1"])


def _hostile(honest: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Hostile variants of the honest parameters, each with the parameter a site must name."""
    a, b, v = honest["alpha"], honest["beta"], honest["var_pooled"]
    return {
        # JSON has no NaN or infinity (a request carrying them is malformed); as strings they
        # parse to floats
        "nan alpha": ("alpha", {"alpha": ["NaN", a[1]]}),
        "inf beta": ("beta", {"beta": [["inf", b[0][1]]]}),
        "infinite variance": ("var_pooled", {"var_pooled": [v[0], "Infinity"]}),
        "negative variance": ("var_pooled", {"var_pooled": [-1.0, v[1]]}),
        "zero variance": ("var_pooled", {"var_pooled": [0.0, v[1]]}),
        "variance beyond the bounds": ("var_pooled", {"var_pooled": [v[0], 2000.0 ** 2]}),
        "short alpha": ("alpha", {"alpha": [a[0]]}),
        "beta of the wrong shape": ("beta", {"beta": [b[0], b[0]]}),
        "alpha outside the bounds": ("alpha", {"alpha": [a[0], 1e6]}),
        "huge covariate effect": ("beta", {"beta": [[b[0][0], 1e5]]}),
        "features not the spec's": ("features", {"features": ["plt", "hb"]}),
        "covariates not the spec's": ("covariates", {"covariates": []}),
    }


def test_hostile_combat_parameters_are_refused_by_every_site_naming_the_parameter(
        sites: LocalSites) -> None:
    hub = Probe(sites, SPEC_B.study_id, SPEC_B.sha256)
    honest = _honest(sites)
    for case, (name, change) in _hostile(honest).items():
        outcome, codes = hub.send("combat_apply", {**honest, **change}, declared_as=honest)
        assert not isinstance(outcome, SumOutcome), case
        pooled = hub.pooled[-1]
        assert pooled.refused == pooled.sites == len(sites.site_dirs), (case, pooled)
        assert len(pooled.codes) == 1 and pooled.name == name, (case, pooled)
        assert codes == {"outside_plan"}, (case, codes)
        for d in sites.site_dirs.values():
            assert not (d / "imaging" / "harmonised").exists(), case
    # the honest parameters are accepted after all that (the plan's rounds were not used up by
    # requests refused before the query ran) and stored for this study only
    outcome, codes = hub.send("combat_apply", honest)
    assert isinstance(outcome, SumOutcome), (outcome, codes)
    for d in sites.site_dirs.values():
        stored = sorted(p.name for p in (d / "imaging" / "harmonised").iterdir())
        assert stored == ["ci-b.combat.json", "ci-b.parquet"]


def test_a_site_without_a_plan_refuses_the_same_parameters(sites: LocalSites) -> None:
    """The query's own check (a site whose policy has ``require_plan: false``) refuses the same
    parameter problems; only the spec's feature order is the plan's to pin."""
    from hemafed.errors import InvalidInput
    from hemafed.federation.queries import get_query

    honest = _honest(sites)
    query = get_query("combat_apply")
    query.check(honest)
    for name, change in _hostile(honest).values():
        if name in ("features", "covariates"):
            continue
        with pytest.raises(InvalidInput, match=f"'{name}'"):
            query.check({**honest, **change})


def _residuals_request(honest: dict[str, Any]) -> dict[str, Any]:
    """The residual step's request as :meth:`FederatedComBat.fit` sends it."""
    return {"features": list(FEATURES), "covariates": list(COVARIATES), "bounds": BOUNDS,
            "max_patients": MAX_PATIENTS, "beta": honest["beta"]}


def _hostile_residuals(beta: list[list[float]]) -> dict[str, tuple[str, Any]]:
    """Hub-chosen residual-step coefficients (covariates x features), each with the parameter
    every site must name."""
    return {
        # 1e5 x hb's range per unit age over age's range: no honest within-site slope
        "huge covariate effect": ("beta", [[beta[0][0], 1e5]]),
        "huge effect on hb": ("beta", [[-1e4, beta[0][1]]]),
        "beta of the wrong shape": ("beta", [beta[0], beta[0]]),
        "non-finite beta": ("beta", [["inf", beta[0][1]]]),
        "no beta": ("beta", None),
    }


def test_hostile_combat_residuals_beta_is_refused_by_every_site(sites: LocalSites) -> None:
    """``combat_residuals``: the hub-sent ``beta`` is bounded as ``combat_apply``'s (finite,
    covariates x features, each covariate effect over its public range at most
    ``MAX_EFFECT_SPAN`` feature ranges); every site refuses a hostile one alike, in the plan
    check, naming ``beta``; the honest request is answered and equals the pooled residual sum
    of squares computed by hand from the sites' data."""
    hub = Probe(sites, SPEC_B.study_id, SPEC_B.sha256)
    honest = _honest(sites)
    request = _residuals_request(honest)
    # the typed parameters refuse every hostile beta at the hub too, so the probe declares the
    # honest request's statistics (the query's own check refuses the rest, next test)
    for case in ("huge covariate effect", "huge effect on hb", "no beta"):
        name, beta = _hostile_residuals(honest["beta"])[case]
        params = {k: v for k, v in request.items() if k != "beta"}
        if beta is not None:
            params["beta"] = beta
        outcome, codes = hub.send("combat_residuals", params, declared_as=request)
        assert not isinstance(outcome, SumOutcome), case
        pooled = hub.pooled[-1]
        assert pooled.refused == pooled.sites == len(sites.site_dirs), (case, pooled)
        assert pooled.name == name and codes == {"outside_plan"}, (case, pooled, codes)
    outcome, codes = hub.send("combat_residuals", request)
    assert isinstance(outcome, SumOutcome), (outcome, codes)
    # by hand: within-site centred residuals at the honest beta, summed over sites
    beta = np.asarray(honest["beta"], dtype=float)
    want = np.zeros(len(FEATURES))
    for d in sites.site_dirs.values():
        cohort = load_cohort(d)
        data = np.column_stack([cohort.numeric_column(c, "test") for c in FEATURES + COVARIATES])
        data = data[~np.isnan(data).any(axis=1)]
        y, x = data[:, :len(FEATURES)], data[:, len(FEATURES):]
        want += (((y - y.mean(0)) - (x - x.mean(0)) @ beta) ** 2).sum(0)
    np.testing.assert_allclose(np.asarray(outcome.values["rss"], dtype=float), want, rtol=1e-9)


def test_a_site_without_a_plan_refuses_the_same_residuals_beta() -> None:
    from hemafed.errors import InvalidInput
    from hemafed.federation.queries import get_query
    from hemafed.imaging.runtime import load_imaging_queries

    load_imaging_queries()
    query = get_query("combat_residuals")
    honest = {"beta": [[0.01, 2.0]]}
    query.check(_residuals_request(honest))
    for case, (name, beta) in _hostile_residuals(honest["beta"]).items():
        params = {k: v for k, v in _residuals_request(honest).items() if k != "beta"}
        if beta is not None:
            params["beta"] = beta
        with pytest.raises(InvalidInput, match=f"'{name}'"):
            query.check(params)
        assert case
