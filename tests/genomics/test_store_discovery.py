"""Genotype-store discovery: the hub learns which sites hold genotypes only from the sites'
public declarations (the ``gwas_store`` query), a GWAS covers exactly those sites and says so,
a site without a store refuses under the rule ``no_genotype_store`` alone, and stores on
another build or variant list stop the analysis before any genotype is summed."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from genomics_world import World
from scipy import stats

from hemafed.cohort.validate import validate_cohort
from hemafed.demo import LocalSites, build_sites, run_study_on
from hemafed.errors import HemafedError, InvalidInput, PolicyRefused
from hemafed.federation.api import AggregateResult, DPRequest
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.runtime import SecureFederation
from hemafed.genomics.gwas import FederatedGWAS, store_sites
from hemafed.genomics.intake import import_genotypes
from hemafed.genomics.queries import COUNTS_QUERY
from hemafed.genomics.store import DECLARATION, DECLARED_KEYS, store_dir
from hemafed.genomics.variants import VariantList
from hemafed.site.audit import AuditLog
from hemafed.site.request import SiteRequest
from hemafed.site.store import open_node
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

SITES = ("gs1", "gs2", "gs3", "gs4")
"""Site ids of their own (the session world's site ids stay registered to its directories)."""


def _spec(study: str, variant_list: Path) -> StudySpec:
    return StudySpec.from_mapping({"study_id": study, "requester": "tester", "analyses": [
        {"id": "hbf", "kind": "gwas", "trait": "hbf", "variant_list": str(variant_list),
         "covariates": ["age", "sex"], "n_pcs": 0, "min_mac": 10}]})


@dataclass
class Partial:
    sites: LocalSites
    spec: StudySpec
    source: dict[str, str]  # our site id -> the world's site whose patients it holds

    def run(self, body: Any) -> Any:
        box: list[Any] = []

        def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
            box.append(body(SecureFederation(exchange, self.sites.manifest, site_ids=site_ids,
                                             spec_sha256=self.spec.sha256, requester="tester")))
            return {}

        run_in_process(hub, site_handler, self.sites.site_configs(), {}, raise_errors=True)
        return box[0]


def _sites(world: World, root: Path, study: str) -> tuple[LocalSites, StudySpec, dict[str, str]]:
    spec = _spec(study, world.files / "variants.tsv")
    source = dict(zip(SITES, world.cohort.site_ids, strict=False))
    cohorts = {s: validate_cohort(pd.read_csv(world.files / w / "patients.csv"))
               for s, w in source.items()}
    return build_sites(root, cohorts, spec), spec, source


def _import(world: World, p: LocalSites, site: str, source: str, vlist: VariantList,
            study: str, build: str = "GRCh38") -> None:
    import_genotypes(p.site_dirs[site], world.files / source / "genotypes.bed", vlist,
                     study=study, build=build, min_call_rate=0.5, max_abs_f=1.0)


@pytest.fixture(scope="module")
def partial(world: World, tmp_path_factory: pytest.TempPathFactory) -> Partial:
    """Four sites; the first three import genotypes, the fourth holds clinical data only."""
    study = "gwas-partial"
    sites, spec, source = _sites(world, tmp_path_factory.mktemp("partial"), study)
    for s in SITES[:3]:
        _import(world, sites, s, source[s], world.vlist, study)
    return Partial(sites, spec, source)


@pytest.fixture(scope="module")
def three_of_four(partial: Partial) -> FederatedGWAS:
    return partial.run(lambda fed: FederatedGWAS(model="linear", n_pcs=0).fit(
        fed, VariantList.read(partial.spec.analyses[0].get("variant_list")),
        study=partial.spec.study_id, trait="hbf", study_id=partial.spec.study_id))


def test_the_declaration_is_public_metadata_only(partial: Partial, world: World) -> None:
    d = store_dir(partial.sites.site_dirs["gs1"], partial.spec.study_id)
    doc = json.loads((d / DECLARATION).read_text())
    assert tuple(sorted(doc)) == tuple(sorted(DECLARED_KEYS))
    assert doc == {"study": partial.spec.study_id, "format": "plink1", "build": "GRCh38",
                   "variant_list_sha256": world.vlist.sha256, "n_variants": len(world.vlist)}
    assert not (store_dir(partial.sites.site_dirs["gs4"], partial.spec.study_id)).exists()


def _pooled_fit(world: World, sources: list[str], variant: int) -> tuple[float, float, float, int]:
    parts = [world.cohort.site_part(s) for s in sources]
    g = np.concatenate([d[variant] for d, _ in parts])
    pts = pd.concat([p for _, p in parts], ignore_index=True)
    keep = g >= 0
    x = np.column_stack([np.ones(len(pts)), pts.age, pts.sex == "F", g])[keep].astype(float)
    y = pts.hbf.to_numpy()[keep]
    beta, rss, *_ = np.linalg.lstsq(x, y, rcond=None)
    df = int(keep.sum()) - x.shape[1]
    se = float(np.sqrt(rss[0] / df * np.linalg.inv(x.T @ x)[-1, -1]))
    return float(beta[-1]), se, float(2 * stats.t.sf(abs(beta[-1] / se), df)), int(keep.sum())


def test_a_document_saved_under_the_old_names_loads(three_of_four: FederatedGWAS) -> None:
    # before issue 6 the state held "sites" and "max_iter" (now sites_, max_rounds)
    doc = json.loads(three_of_four.to_json())
    state = doc["state"]
    state["sites"], state["max_iter"] = state.pop("sites_"), state.pop("max_rounds")
    old = FederatedGWAS.from_json(json.dumps(doc))
    assert old.sites_ == ("gs1", "gs2", "gs3") and old.max_rounds == three_of_four.max_rounds
    assert "sites" not in vars(old)
    assert json.loads(old.to_json()) == json.loads(three_of_four.to_json())
    with pytest.warns(DeprecationWarning, match="use .sites_"):
        assert old.sites == old.sites_
    with pytest.warns(DeprecationWarning, match="max_iter= is deprecated; use max_rounds="):
        assert FederatedGWAS(max_iter=7).max_rounds == 7
    # both names with two values: which one was meant is not guessed
    with pytest.raises(InvalidInput, match="not both max_rounds= and max_iter="):
        FederatedGWAS(max_rounds=5, max_iter=7)


def test_gwas_covers_exactly_the_three_sites_with_a_store(partial: Partial, world: World,
                                                           three_of_four: FederatedGWAS) -> None:
    g = three_of_four
    assert g.sites_ == ("gs1", "gs2", "gs3") and g.sites_without_store == ("gs4",)
    assert json.loads(g.to_json())["sites"] == ["gs1", "gs2", "gs3"]
    again = FederatedGWAS.from_json(g.to_json())  # exactly, and with no federation
    pd.testing.assert_frame_equal(again.summary, g.summary, check_exact=True)
    pd.testing.assert_frame_equal(again.qc, g.qc, check_exact=True)
    assert again.sites_ == g.sites_ and again.to_json() == g.to_json()
    held = [partial.source[s] for s in g.sites_]
    index = {v: i for i, v in enumerate(world.vlist.frame["id"])}
    rows = np.linspace(0, len(g.summary) - 1, 25).astype(int)
    differs = 0
    for r in rows:
        s = g.summary.iloc[r]
        beta, se, p, n = _pooled_fit(world, held, index[s["id"]])
        np.testing.assert_allclose([s["beta"], s["se"], s["p"]], [beta, se, p], rtol=1e-9)
        assert s["n"] == n
        # the same fit with the fourth site's patients is another answer
        beta4 = _pooled_fit(world, [*held, partial.source["gs4"]], index[s["id"]])[0]
        differs += not np.isclose(beta4, beta, rtol=1e-6)
    assert differs == len(rows)


def test_site_without_a_store_refuses_naming_the_rule_only(world: World,
                                                            tmp_path: Path) -> None:
    study = "gwas-refusal"
    sites, spec, source = _sites(world, tmp_path / "refusal", study)
    for s in SITES[:3]:
        _import(world, sites, s, source[s], world.vlist, study)
    p = Partial(sites, spec, source)
    params = {"study": study, "variant_list": world.vlist.sha256,
              "max_patients": 1_000_000, "start": 0, "stop": 10}
    # at the hub: the refusal names the rule and how many sites, not which (it came through
    # the secure sum), nothing else
    with pytest.raises(PolicyRefused) as info:
        p.run(lambda fed: fed.secure_sum(COUNTS_QUERY, params, study=study))
    text = str(info.value)
    assert "gs4" not in text and "no_genotype_store" in text
    site_dir = sites.site_dirs["gs4"]
    ref = text.split("under request ")[1].rstrip(")")
    assert text == (f"1 of {len(SITES)} sites refused: the site policy refused it (rule "
                    f"'no_genotype_store') (the sites' audit logs hold the detail under "
                    f"request {ref})")
    assert list(AuditLog(site_dir / "audit.log").entries())[-1]["request_id"] == ref
    # at the site: the same rule, and the detail in the audit log only
    node = open_node(site_dir)
    req = SiteRequest("r-no-store", study, spec.sha256, COUNTS_QUERY, "1", dict(params),
                      "tester", None, 1, True)
    with pytest.raises(PolicyRefused) as direct:
        node.answer(req)
    refusal = direct.value.refusal  # type: ignore[attr-defined]
    assert (refusal.code, refusal.name) == ("policy", "no_genotype_store")
    last = list(node.audit.entries())[-1]
    assert last["decision"] == "refused" and "no genotype store here" in last["reason"]


def test_study_run_restarts_over_the_store_sites_and_says_so(partial: Partial) -> None:
    results = run_study_on("inprocess", partial.spec, partial.sites)
    doc = results["analyses"][0]
    assert doc["status"] == "ok", doc.get("error")
    assert doc["genotype_sites"] == ["gs1", "gs2", "gs3"]
    assert doc["provenance"]["sites covered"] == ["gs1", "gs2", "gs3"]
    assert doc["restarts"][0]["from sites"] == list(SITES)
    assert doc["restarts"][0]["to sites"] == ["gs1", "gs2", "gs3"]


@pytest.mark.slow
def test_three_of_four_in_flower_simulation(partial: Partial,
                                            three_of_four: FederatedGWAS) -> None:
    results = run_study_on("sim", partial.spec, partial.sites)
    doc = results["analyses"][0]
    assert doc["status"] == "ok", doc.get("error")
    assert doc["provenance"]["sites covered"] == ["gs1", "gs2", "gs3"]
    assert doc["stats"]["tested"] == len(three_of_four.summary)


class _Counting:
    def __init__(self, inner: Any) -> None:
        self.inner, self.queries = inner, []

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(self.inner.site_ids)

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        self.queries.append(query)
        return self.inner.secure_sum(query, params, study=study, dp=dp)  # type: ignore[no-any-return]


def test_other_build_or_variant_list_stops_before_any_sum(world: World,
                                                          tmp_path: Path) -> None:
    study = "gwas-mixed"
    sites, spec, source = _sites(world, tmp_path / "mixed", study)
    frame = world.vlist.frame
    _import(world, sites, "gs1", source["gs1"], world.vlist, study)
    _import(world, sites, "gs2", source["gs2"], VariantList.from_frame(frame, "GRCh37"), study,
            build="GRCh37")
    _import(world, sites, "gs3", source["gs3"],
            VariantList.from_frame(frame.iloc[:-5].reset_index(drop=True), "GRCh38"), study)
    _import(world, sites, "gs4", source["gs4"], world.vlist, study)
    p = Partial(sites, spec, source)
    seen: list[str] = []

    def body(fed: SecureFederation) -> None:
        counting = _Counting(fed)
        try:
            FederatedGWAS(model="linear", n_pcs=0).fit(counting, world.vlist, study=study,
                                                       trait="hbf", study_id=study)
        finally:
            seen.extend(counting.queries)

    with pytest.raises(InvalidInput) as info:
        p.run(body)
    text = str(info.value)
    assert "['gs2'] declare genotypes on another genome build" in text
    assert "['gs3'] declare genotypes aligned to another variant list" in text
    assert "gs1" not in text and "gs4" not in text
    assert seen == ["gwas_store"]  # no genotype was summed


def test_no_store_anywhere_is_a_clear_error(partial: Partial, world: World) -> None:
    with pytest.raises(HemafedError, match=r"no site of .* declares a genotype store"):
        partial.run(lambda fed: store_sites(fed, world.vlist, "nothing-imported",
                                            partial.spec.study_id))
