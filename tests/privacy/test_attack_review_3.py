"""Third attack review (issue 13): a curious hub sending protocol-valid requests to the network
catalogue, through real site directories (the shipped policy template), the real site node and
secure aggregation.

G: the catalogue plan pins the counted column, its disease areas and the counted fields (a hub
   could ask the catalogue's sites for per-site counts by sex, by IPSS-M risk group, or of
   other fields, under an approval that names disease areas and six fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from attack_sites import SCREEN_SPEC_MAP, Probe, make_sites

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.cohort.schema import SEX
from hemafed.demo import LocalSites
from hemafed.scores.levels import IPSSM_CATEGORIES
from hemafed.secure.hub import SumOutcome
from hemafed.service.catalogue import approve_catalogue, catalogue_spec_text, parse_plan
from hemafed.site.store import load_cohort
from hemafed.study.plan import MAX_PATIENTS

PLAN = parse_plan(catalogue_spec_text(diseases=["MDS", "AML"], epsilon=0.0, min_cell=0))
SITES = ["site-0", "site-1", "site-2"]


@pytest.fixture(scope="module")
def catalogue_sites(tmp_path_factory: pytest.TempPathFactory) -> LocalSites:
    cohorts = split_sites(generate("MDS", 240, 7), 3, 7)
    cohorts = dict(zip(SITES, cohorts.values(), strict=True))
    fed = make_sites(tmp_path_factory.mktemp("ar3"), cohorts, PLAN.spec, require_dp=False,
                     enforce_min_cell=False)
    for d in fed.site_dirs.values():
        approve_catalogue(d, PLAN.spec, budget=3.0, officer="officer")
    return fed


def _params(**change: Any) -> dict[str, Any]:
    return {**PLAN.params(SITES), **change}


def test_g_the_planned_refresh_is_answered_exactly(catalogue_sites: LocalSites) -> None:
    """Control: the plan's own request (a no-noise catalogue) gives each site's true counts."""
    hub = Probe(catalogue_sites, PLAN.spec.study_id, PLAN.spec.sha256)
    outcome, codes = hub.send("catalogue_counts", _params())
    assert isinstance(outcome, SumOutcome), outcome
    assert codes == {None}
    for i, sid in enumerate(SITES):
        p = load_cohort(catalogue_sites.site_dirs[sid]).patients
        assert outcome.values["patients"][i] == len(p)
        assert outcome.values["areas"][i][0] == int((p["disease"].astype(str) == "MDS").sum())


@pytest.mark.parametrize("change", [
    {"column": "sex", "levels": list(SEX)},                        # per-site counts by sex
    {"column": "ipssm_category", "levels": list(IPSSM_CATEGORIES)},  # by IPSS-M risk group
    {"features": ["sex"]},                                         # a subset of the fields
    {"features": ["sex", "age", "hb", "plt", "bm_blast", "os_time", "disease"]},
    {"levels": ["MDS"]},                                           # another level list
], ids=["by-sex", "by-ipssm", "field-subset", "extra-field", "levels"])
def test_g_catalogue_requests_outside_the_plan_are_refused(
        catalogue_sites: LocalSites, change: Mapping[str, Any]) -> None:
    hub = Probe(catalogue_sites, PLAN.spec.study_id, PLAN.spec.sha256)
    outcome, codes = hub.send("catalogue_counts", _params(**change))
    assert not isinstance(outcome, SumOutcome), "the hub got counts the plan does not name"
    assert codes == {"outside_plan"}, codes


# --- H: the GWAS binary trait's threshold and the logistic coefficients ----------------------

GWAS_STUDY = "ar3-gwas"
THRESHOLD = 200.0


@pytest.fixture(scope="module")
def gwas_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, LocalSites, Any, Any]:
    import pandas as pd

    from hemafed.cohort.validate import validate_cohort
    from hemafed.genomics.intake import import_genotypes
    from hemafed.genomics.simulate import CohortDesign, simulate_cohort, write_cohort
    from hemafed.genomics.variants import VariantList
    from hemafed.study.spec import StudySpec

    root = tmp_path_factory.mktemp("ar3-gwas")
    cohort = simulate_cohort(CohortDesign(n_patients=150, n_variants=200, null_segments=4,
                                          seed=23))
    files = root / "files"
    write_cohort(cohort, files)
    spec = StudySpec.from_mapping({"study_id": GWAS_STUDY, "requester": "r", "analyses": [
        {"id": "tcd", "kind": "gwas", "trait": "tcd_velocity", "threshold": THRESHOLD,
         "variant_list": str(files / "variants.tsv"), "covariates": ["age", "sex"]},
        {"id": "tcd_q", "kind": "gwas", "trait": "tcd_velocity",
         "variant_list": str(files / "variants.tsv"), "covariates": ["age", "sex"]}]})
    cohorts = {s: validate_cohort(pd.read_csv(files / s / "patients.csv"))
               for s in cohort.site_ids}
    fed = make_sites(root / "sites", cohorts, spec, require_dp=False)
    vlist = VariantList.read(files / "variants.tsv")
    for s, d in fed.site_dirs.items():
        import_genotypes(d, files / s / "genotypes.bed", vlist, study=GWAS_STUDY,
                         build="GRCh38", min_call_rate=0.5, max_abs_f=1.0)
    return cohort, fed, spec, vlist


def _gwas_params(vlist: Any, threshold: float, m: int) -> dict[str, Any]:
    import numpy as np

    from hemafed.genomics.queries import pack

    return {"study": GWAS_STUDY, "variant_list": vlist.sha256, "max_patients": MAX_PATIENTS,
            "trait": {"column": "tcd_velocity", "threshold": threshold},
            "covariates": ["age", "sex"], "variants": pack(np.arange(m), "<i4"),
            "beta": pack(np.zeros(m * 4))}


def test_h_gwas_threshold_is_the_specs(gwas_world: tuple[Any, LocalSites, Any, Any]) -> None:
    """A hub moving the binary trait's threshold to just below the network's largest value
    makes that one patient the only case: ``case_alt`` is then their genotype at every
    variant asked. The threshold is the spec's."""
    import numpy as np

    cohort, fed, spec, vlist = gwas_world
    hub = Probe(fed, spec.study_id, spec.sha256)
    m = 40
    # control: the spec's threshold is answered
    outcome, codes = hub.send("gwas_logistic", _gwas_params(vlist, THRESHOLD, m))
    assert isinstance(outcome, SumOutcome), outcome
    # the attack (the hub finds the threshold by bisection on the 'cases' sum; the test reads
    # it from the truth to stay short)
    tcd = cohort.patients["tcd_velocity"].astype(float).to_numpy()
    ok = ~np.isnan(cohort.patients["age"].astype(float).to_numpy()) & ~np.isnan(tcd)
    top = int(np.nanargmax(np.where(ok, tcd, np.nan)))
    second = float(np.sort(tcd[ok])[-2])
    outcome, codes = hub.send("gwas_logistic",
                              _gwas_params(vlist, (second + tcd[top]) / 2, m))
    if isinstance(outcome, SumOutcome):  # the leak, as it was
        leaked = outcome.values["case_alt"]
        truth = np.maximum(cohort.dosage[:m, top], 0)
        assert outcome.values["cases"].max() == 1
        pytest.fail(f"one patient's genotypes leaked: {np.array_equal(leaked, truth)}")
    assert codes == {"outside_plan"}, codes


def test_h_gwas_logistic_coefficients_are_bounded(
        gwas_world: tuple[Any, LocalSites, Any, Any]) -> None:
    """A coefficient of 1e6 on scaled age turns the fitted probability into a step at a
    hub-chosen age (two steps isolate one patient in ``grad``); the plan bounds it as it bounds
    every iterated coefficient vector."""
    import numpy as np

    from hemafed.genomics.queries import pack

    _, fed, spec, vlist = gwas_world
    hub = Probe(fed, spec.study_id, spec.sha256)
    params = _gwas_params(vlist, THRESHOLD, 2)
    params["beta"] = pack(np.array([0.0, 1e6, 0.0, 0.0] * 2))
    outcome, codes = hub.send("gwas_logistic", params)
    assert not isinstance(outcome, SumOutcome), "a step-function coefficient was answered"
    assert codes == {"outside_plan"}, codes


def _own_rule_gy(cohort: Any, j: int, min_cell: int) -> tuple[float, int]:
    """Independent reference from the raw cohort: ``gy`` of variant ``j`` summed over the sites
    whose carrier, non-carrier and missing-call classes are each 0 or >= ``min_cell``, and the
    number of sites that do not meet that (their contribution is left out)."""
    import numpy as np

    from hemafed.cohort.schema import FIELDS

    f = FIELDS["tcd_velocity"]
    center, half = (f.low + f.high) / 2, (f.high - f.low) / 2
    total, excluded = 0.0, 0
    for site in cohort.site_ids:
        g, pts = cohort.site_part(site)
        ok = pts["tcd_velocity"].notna() & pts["age"].notna() & pts["sex"].notna()
        gj = g[j, ok.to_numpy()]
        sizes = [int((gj > 0).sum()), int((gj == 0).sum()), int((gj < 0).sum())]
        if any(0 < c < min_cell for c in sizes):
            excluded += 1
            continue
        y = (pts.loc[ok, "tcd_velocity"].astype(float).to_numpy() - center) / half
        total += float(np.maximum(gj, 0) @ y)
    return total, excluded


def test_i_gwas_rare_variant_sums_are_not_released_exactly(
        gwas_world: tuple[Any, LocalSites, Any, Any]) -> None:
    """The hub picks the variants: a variant carried by two patients of the network gave
    ``gy`` = the sum of those two patients' (scaled) traits, a cell of two, under a policy
    whose min_cell_size is 5. Each site now applies its own class minimum (carriers,
    non-carriers, missing calls among the analysed patients): a site below it contributes zeros
    for that variant and a 1 in the secure ``excluded`` sum; nobody is refused by name."""
    import numpy as np

    from hemafed.genomics.queries import pack
    from hemafed.site.store import load_policy

    cohort, fed, spec, vlist = gwas_world
    policy = load_policy(next(iter(fed.site_dirs.values())))
    assert policy.enforce_min_cell and policy.min_cell_size == 5
    carriers = (cohort.dosage > 0).sum(axis=1)
    j = int(np.flatnonzero(carriers == carriers[carriers > 0].min())[0])
    assert carriers[j] < policy.min_cell_size  # a rare variant the hub chose
    params = _gwas_params(vlist, THRESHOLD, 1)
    params["variants"] = pack(np.array([j]), "<i4")
    del params["beta"]
    params["trait"] = {"column": "tcd_velocity", "threshold": None}
    hub = Probe(fed, spec.study_id, spec.sha256)
    outcome, codes = hub.send("gwas_linear", params)
    assert isinstance(outcome, SumOutcome), codes  # answered, never refused per variant
    assert codes == {None}
    expected, n_excluded = _own_rule_gy(cohort, j, policy.min_cell_size)
    assert n_excluded >= 1
    assert outcome.values["excluded"][0] == n_excluded
    assert outcome.values["gy"][0] == pytest.approx(expected, abs=1e-9)
    # the carriers' traits are not in the released sum: it holds no carrier's genotype at all
    assert outcome.values["gg"][0] == 0.0 and outcome.values["gy"][0] == 0.0
    # control: a common variant is summed in full at every site
    common = int(np.flatnonzero(np.abs(carriers - cohort.dosage.shape[1] / 2)
                                == np.abs(carriers - cohort.dosage.shape[1] / 2).min())[0])
    params["variants"] = pack(np.array([common]), "<i4")
    outcome, _ = hub.send("gwas_linear", params)
    assert isinstance(outcome, SumOutcome)
    full, n_common = _own_rule_gy(cohort, common, policy.min_cell_size)
    assert n_common == 0 and outcome.values["excluded"][0] == 0
    assert outcome.values["gy"][0] == pytest.approx(full, abs=1e-9)


# --- J: the imaging screen's horizon -----------------------------------------------------------

def test_j_imaging_screen_horizon_is_the_specs(tmp_path: Path) -> None:
    """Two screens whose horizons bracket one patient's follow-up time (known to the hub
    from the study's own time histogram) give that patient's feature value by difference of
    ``sum0`` (event-free beyond the horizon); the horizon is the spec's."""
    import numpy as np
    import pandas as pd

    from hemafed.imaging.runtime import load_imaging_queries
    from hemafed.study.spec import StudySpec

    load_imaging_queries()
    spec = StudySpec.from_mapping(SCREEN_SPEC_MAP)
    cohorts = split_sites(generate("MDS", 240, 5), 3, 5)
    fed = make_sites(tmp_path, cohorts, spec, require_dp=False, enforce_min_cell=False)
    hub = Probe(fed, spec.study_id, spec.sha256)
    base = {"features": ["hb"], "outcome": "os_status", "time": "os_time",
            "bounds": {"hb": [0.0, 25.0]}, "max_patients": MAX_PATIENTS}
    outcome, codes = hub.send("imaging_screen", {**base, "horizon": 2.0})  # the spec's
    assert isinstance(outcome, SumOutcome), (outcome, codes)
    pooled = pd.concat([load_cohort(d).patients for d in fed.site_dirs.values()])
    ok = pooled["hb"].notna() & pooled["os_time"].notna() & pooled["os_status"].notna()
    t = np.sort(pooled.loc[ok, "os_time"].astype(float).to_numpy())
    i = int(np.flatnonzero((np.diff(t)[:-1] > 1e-3) & (np.diff(t)[1:] > 1e-3))[0]) + 1
    h1, h2 = (t[i - 1] + t[i]) / 2, (t[i] + t[i + 1]) / 2  # one patient's time between
    first, codes1 = hub.send("imaging_screen", {**base, "horizon": float(h1)})
    second, codes2 = hub.send("imaging_screen", {**base, "horizon": float(h2)})
    if isinstance(first, SumOutcome) and isinstance(second, SumOutcome):  # the leak, as it was
        hb = float(first.values["sum0"][0] - second.values["sum0"][0])
        truth = float(pooled.loc[ok & (pooled["os_time"].astype(float) == t[i]), "hb"].iloc[0])
        pytest.fail(f"one patient's hb by difference: {hb:.4f} (truth {truth:.4f}), "
                    f"n0 difference {first.values['n0'][0] - second.values['n0'][0]:g}")
    assert codes1 == codes2 == {"outside_plan"}


# --- batched sums (branch batch, read only): the register a batch's parts go through ---------


def test_batch_retry_of_two_non_dp_parts_over_fewer_sites_is_refused(tmp_path: Path) -> None:
    """A batch's parts are guarded one by one with the site's release register. After a
    one-shot batch of two non-DP parts over A, B, C, a (falsely reported) dropout's retry over
    A, B conflicts at its first part: the exception for a retried one-shot attempt covers that
    request's own record only, so a batch yields no difference (a single request yields one)."""
    from hemafed.site.participants import ReleaseRegister

    reg = ReleaseRegister(tmp_path / "released.json")
    for key in ("part0", "part1"):
        assert reg.conflict("S", key, ["A", "B", "C"], one_shot=True) is None
        reg.record("S", key, ["A", "B", "C"], one_shot=True)
    assert reg.conflict("S", "part0", ["A", "B"], one_shot=False) == ["A", "B", "C"]
    # a single one-shot request, retried over fewer sites, is allowed (the documented gap)
    single = ReleaseRegister(tmp_path / "single.json")
    single.record("S", "only", ["A", "B", "C"], one_shot=True)
    assert single.conflict("S", "only", ["A", "B"], one_shot=False) is None


def test_g_no_noise_refresh_over_another_site_set_is_refused(
        catalogue_sites: LocalSites) -> None:
    """A no-noise catalogue refresh is a non-DP release of study ``catalogue``: once released
    over three sites, a refresh over two of them is refused by the participants rule (the
    catalogue cannot follow a membership change without ``refuse_differencing: false``)."""
    from hemafed.federation.queries import get_query

    hub = Probe(catalogue_sites, PLAN.spec.study_id, PLAN.spec.sha256)
    outcome, _ = hub.send("catalogue_counts", _params())
    assert isinstance(outcome, SumOutcome)
    two = PLAN.params(SITES[:2])
    got = hub.ask("catalogue_counts", two, specs=get_query("catalogue_counts").declare(two),
                  sites=SITES[:2])
    assert not isinstance(got, SumOutcome), got
    assert "rule 'participants'" in str(got) and "nothing is revealed" in str(got), got
