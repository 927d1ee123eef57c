"""Third attack review (issue 13): a curious hub sending protocol-valid requests to the network
catalogue, through real site directories (the shipped policy template), the real site node and
secure aggregation.

G: the catalogue plan pins the counted column, its disease areas and the counted fields (a hub
   could ask the catalogue's sites for per-site counts by sex, by IPSS-M risk group, or of
   other fields, under an approval that names disease areas and six fields).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from test_attack_review_2 import Probe, make_sites

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.cohort.schema import SEX
from hemafed.demo import LocalSites
from hemafed.secure.hub import SumOutcome
from hemafed.service.catalogue import approve_catalogue, catalogue_spec_text, parse_plan
from hemafed.site.store import load_cohort
from hemafed.study.derived import IPSSM_CATEGORIES

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
    assert set(codes.values()) == {None}
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
    assert set(codes.values()) == {"outside_plan"}, codes
