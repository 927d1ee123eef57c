"""The site disclosure rule (docs/security.md, hole I) through real site directories whose policy
enforces it (``enforce_min_cell``, ``min_cell_size`` 5), the real site node and secure sums.

Each site leaves out a variant whose carriers, non-carriers or missing calls among its analysed
patients (carriers and non-carriers split by case status under a binary trait), or among its
linked patients outside the analysis, number 1..4; the hub drops every variant some site left
out. The expected dropped set is computed here from the raw simulated genotypes of each site,
and the published result is compared with PLINK 2 on the pooled file restricted to the kept
variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from genomics_world import (
    STUDY,
    World,
    close_to_printed,
    plink2,
    pooled_covariates,
    pooled_phenotypes,
)

from hemafed.cohort.validate import validate_cohort
from hemafed.demo import build_sites
from hemafed.genomics.gwas import FederatedGWAS
from hemafed.genomics.intake import import_genotypes
from hemafed.genomics.ld import window_pairs
from hemafed.genomics.pca import federated_pca, site_scores
from hemafed.genomics.qc import QCFilters, VariantQC
from hemafed.genomics.queries import GRAM_QUERY, LD_QUERY, pack, pair_sums, standardise
from hemafed.genomics.store import load_store, register_site_dir, store_dir
from hemafed.genomics.study import run_gwas_analysis
from hemafed.site.store import load_cohort

MIN_CELL = 5


@pytest.fixture(scope="module")
def ruled(world: World, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The shared world's five sites again, under a policy that enforces the rule."""
    root = tmp_path_factory.mktemp("ruled")
    cohorts = {s: validate_cohort(pd.read_csv(world.files / s / "patients.csv"))
               for s in world.cohort.site_ids}
    sites = build_sites(root / "sites", cohorts, world.spec,
                        policy_overrides={"enforce_min_cell": True, "min_cell_size": MIN_CELL})
    for s, site_dir in sites.site_dirs.items():
        import_genotypes(site_dir, world.files / s / "genotypes.bed", world.vlist, study=STUDY,
                         build="GRCh38", min_call_rate=0.5, max_abs_f=1.0)
    return World(world.cohort, world.files, sites, world.spec, world.vlist)


TCD = 200.0  # the binary trait: tcd_velocity >= 200


def small_classes(g: np.ndarray, pts: pd.DataFrame, *, binary: bool = False,
                  analysed: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per class of the rule, per variant: whether the class numbers 1..4 at one site, from its
    raw genotypes ``g`` (variants x patients) and patients ``pts`` (``analysed``: who the
    query analyses, default all; ``binary``: split by ``tcd_velocity >= 200``)."""
    keep = np.ones(g.shape[1], dtype=bool) if analysed is None else analysed
    case = (pts["tcd_velocity"] >= TCD).to_numpy()

    def small(members: np.ndarray) -> np.ndarray:
        n = members.sum(axis=1)
        return (n > 0) & (n < MIN_CELL)

    a = np.broadcast_to(keep, g.shape)
    out = {"missing": small((g < 0) & a), "outside": small((g > 0) & ~a)
           | small((g == 0) & ~a) | small((g < 0) & ~a)}
    if binary:
        out["carriers"] = small((g > 0) & a & case) | small((g > 0) & a & ~case)
        out["non-carriers"] = small((g == 0) & a & case) | small((g == 0) & a & ~case)
    else:
        out["carriers"], out["non-carriers"] = small((g > 0) & a), small((g == 0) & a)
    return out


def sites_below(world: World, *, binary: bool = False) -> np.ndarray:
    """Per variant, how many sites have a class of 1..4, from the raw simulated genotypes
    (every patient has hbf, tcd_velocity, age and sex: every linked patient is analysed)."""
    out = np.zeros(world.cohort.dosage.shape[0], dtype=int)
    for s in world.cohort.site_ids:
        g, pts = world.cohort.site_part(s)
        assert pts[["hbf", "tcd_velocity", "age", "sex"]].notna().all().all()
        out += np.any(list(small_classes(g, pts, binary=binary).values()), axis=0)
    return out


def _pooled_dosage(world: World) -> np.ndarray:
    from bed_reader import open_bed

    g = open_bed(str(world.files / "pooled.bed"), count_A1=True).read(dtype="int8").T
    return np.where(g < 0, -1, g)


@pytest.fixture(scope="module")
def linear(ruled: World) -> FederatedGWAS:
    return ruled.run(lambda fed: FederatedGWAS(model="linear", n_pcs=4).fit(
        fed, ruled.vlist, study=STUDY, trait="hbf", study_id=STUDY))


def test_qc_counts_which_sites_left_each_variant_out(ruled: World, linear: FederatedGWAS
                                                     ) -> None:
    expected = sites_below(ruled)
    assert 50 < (expected > 0).sum() < len(expected)  # the rule bites, and not everywhere
    assert (expected == 1).sum() > 10 and (expected > 1).sum() > 10
    np.testing.assert_array_equal(linear.qc["site_rule_excluded"].to_numpy(), expected)
    assert not linear.qc["passing"].to_numpy()[expected > 0].any()


def test_the_hbf_positive_controls_survive_the_rule(ruled: World, linear: FederatedGWAS
                                                  ) -> None:
    """The planted HbF loci are common variants: every class at every site holds at least
    ``MIN_CELL`` patients (from the raw genotypes), so the rule keeps them and they are still
    genome-wide significant under it, while it drops hundreds of other variants."""
    from hemafed.genomics.loci import HBF_LOCI
    from hemafed.genomics.release import top_hits

    frame = ruled.vlist.frame
    leads = [int(np.flatnonzero((frame["chrom"].astype(str) == str(locus.chrom))
                                & (frame["pos"] == locus.pos))[0]) for locus in HBF_LOCI]
    assert (sites_below(ruled)[leads] == 0).all()
    assert linear.disclosure_dropped > 100
    hits = top_hits(linear.summary, 30)
    genes = set(hits.loc[hits["genome_wide"], "nearest_gene"])
    assert {"BCL11A", "HBG2"} <= genes and genes & {"HBS1L", "MYB"}


def test_linear_under_the_rule_equals_plink2_on_the_kept_variants(
        ruled: World, linear: FederatedGWAS, tmp_path: Path) -> None:
    expected = sites_below(ruled)
    pooled = _pooled_dosage(ruled)
    counts = np.stack([(pooled == v).sum(axis=1) for v in (0, 1, 2, -1)], axis=1)
    tested = QCFilters().passing(VariantQC.from_counts(counts).frame()) & (expected == 0)
    ids = ruled.vlist.frame["id"].to_numpy()
    assert set(linear.summary["id"]) == set(ids[tested])
    assert linear.disclosure_dropped == (expected > 0).sum()
    assert json.loads(linear.to_json())["dropped_by_site_disclosure_rule"] == (expected > 0).sum()
    # PCA over kept variants only
    assert linear.pca is not None and (expected[linear.pca.variants] == 0).all()
    pcs = site_scores(pooled, linear.pca)
    cov = pooled_covariates(ruled, pcs, tmp_path / "cov.tsv")
    phe = pooled_phenotypes(ruled, tmp_path / "pheno.tsv")
    (tmp_path / "kept.snps").write_text("\n".join(ids[tested]) + "\n")
    plink2("--bfile", str(ruled.files / "pooled"), "--extract", str(tmp_path / "kept.snps"),
           "--pheno", str(phe), "--pheno-name", "hbf", "--covar", str(cov),
           "--covar-variance-standardize", "--glm", "hide-covar", "omit-ref",
           "--out", str(tmp_path / "plk"))
    out = pd.read_csv(tmp_path / "plk.hbf.glm.linear", sep="\t")
    m = linear.summary.merge(out, left_on="id", right_on="ID", validate="1:1")
    assert len(m) == len(linear.summary) == tested.sum()
    assert (m["n"] == m["OBS_CT"]).all()
    for ours, theirs in (("beta", "BETA"), ("se", "SE"), ("stat", "T_STAT")):
        ok = close_to_printed(m[ours], m[theirs])
        assert ok.all(), m.loc[~ok, ["id", ours, theirs]].head()


def test_variant_left_out_by_one_site_is_dropped_and_the_count_stated(
        ruled: World, linear: FederatedGWAS) -> None:
    """A variant that four sites contribute in full and one site leaves out is not published;
    the study result states how many variants the rule dropped."""
    expected = sites_below(ruled)
    ids = ruled.vlist.frame["id"].to_numpy()
    one = ids[expected == 1]
    assert one.size and not set(one) & set(linear.summary["id"])
    analysis = next(a for a in ruled.spec.analyses if a.id == "hbf_nopc")
    result = ruled.run(lambda fed: run_gwas_analysis(fed, analysis, ruled.spec))
    assert result["stats"]["dropped_by_site_disclosure_rule"] == (expected > 0).sum()
    assert not set(one) & {row.split("\t")[2] for row in result["ssf"]["text"].splitlines()[1:]}
    assert result["ssf"]["dropped_by_site_disclosure_rule"] == (expected > 0).sum()


def test_ld_pairs_and_gram_zero_every_pair_with_a_left_out_variant(ruled: World) -> None:
    """At one site: LD pair sums and the PCA cross-product are zero for every pair with a
    variant that site leaves out, exact for the others; the same query without the rule (a DP
    request, min_cell 0) sums every pair."""
    from hemafed.federation.queries import get_query

    site = ruled.cohort.site_ids[-1]  # the smallest site
    register_site_dir(site, ruled.sites.site_dirs[site])
    cohort = load_cohort(ruled.sites.site_dirs[site])
    raw = np.asarray(load_store(store_dir(ruled.sites.site_dirs[site], STUDY)).dosage)
    g, _ = ruled.cohort.site_part(site)
    np.testing.assert_array_equal(raw, g)
    small = np.zeros(g.shape[0], dtype=bool)
    for cls in (g > 0, g == 0, g < 0):
        c = cls.sum(axis=1)
        small |= (c > 0) & (c < MIN_CELL)
    idx = np.concatenate([np.flatnonzero(small)[:20], np.flatnonzero(~small)[:20]])
    idx.sort()
    pairs = window_pairs(np.zeros(idx.size, dtype=int), 40)
    base = {"study": STUDY, "variant_list": ruled.vlist.sha256, "max_patients": 1_000_000}
    params = {**base, "variants": pack(idx, "<i4"), "pairs": pack(pairs, "<i4")}
    q = get_query(LD_QUERY)
    ruled_out = q.run(cohort, params, site_id=site, min_cell=MIN_CELL)
    free = q.run(cohort, params, site_id=site, min_cell=0)
    left = small[idx]
    np.testing.assert_array_equal(ruled_out["excluded"], left.astype(float))
    assert not free["excluded"].any()
    truth = pair_sums(g[idx], pairs)
    hit = left[pairs[:, 0]] | left[pairs[:, 1]]
    assert hit.any() and (~hit).any()
    np.testing.assert_array_equal(ruled_out["pairs"][hit], 0.0)
    np.testing.assert_array_equal(ruled_out["pairs"][~hit], truth[~hit])
    np.testing.assert_array_equal(free["pairs"], truth)
    # the PCA cross-product
    freq = np.clip((np.maximum(g[idx], 0).sum(1) + 1) / (2 * g.shape[1] + 2), 0.01, 0.99)
    gq = get_query(GRAM_QUERY)
    gparams = {**base, "variants": pack(idx, "<i4"), "freq": pack(freq)}
    gram = gq.run(cohort, gparams, site_id=site, min_cell=MIN_CELL)
    z = standardise(g[idx].astype(float), freq)
    full = z @ z.T
    iu = np.triu_indices(idx.size)
    mask = (left[:, None] | left[None, :])[iu]
    np.testing.assert_array_equal(gram["excluded"], left.astype(float))
    np.testing.assert_array_equal(gram["gram"][mask], 0.0)
    np.testing.assert_allclose(gram["gram"][~mask], full[iu][~mask], rtol=1e-12, atol=1e-9)


def test_pca_drops_a_left_out_variant_and_equals_pooled_pca_on_the_rest(ruled: World) -> None:
    """Handed PCA variants one of which some site leaves out, the hub drops it and sums again:
    the PCs are the pooled PCA of the others."""
    expected = sites_below(ruled)
    pooled = _pooled_dosage(ruled)
    counts = np.stack([(pooled == v).sum(axis=1) for v in (0, 1, 2, -1)], axis=1)
    freq_all = VariantQC.from_counts(counts).alt_freq
    kept = np.flatnonzero((expected == 0) & (freq_all > 0.1) & (freq_all < 0.9))[::10][:60]
    bad = np.flatnonzero((expected > 0) & (freq_all > 0.05) & (freq_all < 0.95))[:2]
    idx = np.sort(np.concatenate([kept, bad]))
    base = {"study": STUDY, "variant_list": ruled.vlist.sha256, "max_patients": 1_000_000}
    pca = ruled.run(lambda fed: federated_pca(fed, base, idx, freq_all[idx], 3, study=STUDY))
    np.testing.assert_array_equal(pca.variants, np.sort(kept))
    z = standardise(pooled[pca.variants].astype(float), pca.freq)
    s = np.linalg.svd(z.T, compute_uv=False)
    np.testing.assert_allclose(pca.eigenvalues, s[:3] ** 2, rtol=1e-9)


def test_logistic_under_the_rule_equals_plink2_on_the_kept_variants(
        ruled: World, tmp_path: Path) -> None:
    """Newton and Firth rounds over the kept variants only: the published rows are the kept
    variants (QC's classes, then carriers and non-carriers split by case status), equal to
    PLINK 2 ``--glm no-firth`` on the pooled file restricted to them (where PLINK converges),
    and the dropped count is stated."""
    at_qc, binary = sites_below(ruled), sites_below(ruled, binary=True)
    gwas = ruled.run(lambda fed: FederatedGWAS(model="logistic", n_pcs=0).fit(
        fed, ruled.vlist, study=STUDY, trait="tcd_velocity", threshold=TCD, study_id=STUDY))
    pooled = _pooled_dosage(ruled)
    counts = np.stack([(pooled == v).sum(axis=1) for v in (0, 1, 2, -1)], axis=1)
    passing = QCFilters().passing(VariantQC.from_counts(counts).frame()) & (at_qc == 0)
    tested = passing & (binary == 0)
    assert (passing & (binary > 0)).sum() > 10  # the case split drops variants QC kept
    ids = ruled.vlist.frame["id"].to_numpy()
    assert set(gwas.summary["id"]) == set(ids[tested])
    assert gwas.disclosure_dropped_qc == (at_qc > 0).sum()
    assert gwas.disclosure_dropped == (at_qc > 0).sum() + (passing & (binary > 0)).sum()
    cov = pooled_covariates(ruled, None, tmp_path / "cov.tsv")
    phe = pooled_phenotypes(ruled, tmp_path / "pheno.tsv")
    (tmp_path / "kept.snps").write_text("\n".join(ids[tested]) + "\n")
    plink2("--bfile", str(ruled.files / "pooled"), "--extract", str(tmp_path / "kept.snps"),
           "--pheno", str(phe), "--pheno-name", "tcd", "--covar", str(cov),
           "--covar-variance-standardize", "--glm", "hide-covar", "omit-ref", "no-firth",
           "--out", str(tmp_path / "plk"))
    out = pd.read_csv(tmp_path / "plk.tcd.glm.logistic", sep="\t")
    m = gwas.summary.merge(out, left_on="id", right_on="ID", validate="1:1")
    assert len(m) == tested.sum() > 5 and (m["n"] == m["OBS_CT"]).all()
    m = m[~m["OR"].isna() & ~m["firth"]]
    assert len(m) >= 0.8 * tested.sum()
    np.testing.assert_allclose(m["beta"], np.log(m["OR"]), rtol=1e-4, atol=1e-5)
    full = m[m["call_rate"] == 1]
    np.testing.assert_allclose(full["se"], full["LOG(OR)_SE"], rtol=1e-4)


class _DataChangedAfterRoundOne:
    """The rule-enforcing federation, except that from the second logistic round on one site
    reports a variant left out that it had summed in round 1 (as if its data had changed)."""

    def __init__(self, fed: object) -> None:
        self._fed, self._rounds = fed, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._fed, name)

    def secure_sum(self, query: str, params: dict[str, object], **kw: object) -> object:
        res = self._fed.secure_sum(query, params, **kw)  # type: ignore[attr-defined]
        if query == "gwas_logistic":
            self._rounds += 1
            if self._rounds == 2:
                res.values["excluded"] = res.values["excluded"].copy()
                res.values["excluded"][0] = 1.0
        return res


def test_a_later_round_with_another_excluded_set_fails_the_fit(ruled: World) -> None:
    from hemafed.errors import ConvergenceError

    def body(fed: object) -> object:
        return FederatedGWAS(model="logistic", n_pcs=0, firth="no").fit(
            _DataChangedAfterRoundOne(fed), ruled.vlist, study=STUDY,  # type: ignore[arg-type]
            trait="tcd_velocity", threshold=200.0, study_id=STUDY)

    with pytest.raises(ConvergenceError, match="site disclosure rule left out a variant in a "
                                               "later round"):
        ruled.run(body)


def test_a_dp_request_is_not_under_the_rule(ruled: World) -> None:
    """DP covers a DP release: the sites sum a variant they would leave out without DP, with
    noise, and ``excluded`` (sensitivity 0: no site noises it) stays exactly zero."""
    from hemafed.federation.api import DPRequest

    expected = sites_below(ruled)
    j = int(np.flatnonzero(expected == expected.max())[0])
    base = {"study": STUDY, "variant_list": ruled.vlist.sha256, "max_patients": 1_000_000,
            "trait": {"column": "hbf", "threshold": None}, "covariates": ["age", "sex"],
            "variants": pack(np.array([j]), "<i4"), "missing_variants": pack(np.array([]), "<i4")}
    exact = ruled.run(lambda fed: fed.secure_sum("gwas_linear", base, study=STUDY))
    assert exact["excluded"][0] == expected[j] and exact["gg"][0] == 0.0
    noisy = ruled.run(lambda fed: fed.secure_sum("gwas_linear", base, study=STUDY,
                                                 dp=DPRequest(epsilon=0.5)))
    assert noisy["excluded"][0] == 0.0
    assert noisy.noise_std["excluded"] == 0.0  # reported as not noised
    pooled = _pooled_dosage(ruled)[j]
    gg = float((np.maximum(pooled, 0) ** 2).sum())
    assert noisy.noise_std["gg"] > 0
    assert abs(noisy["gg"][0] - gg) < 6 * noisy.noise_std["gg"]


def test_reported_noise_of_sensitivity_0_statistics_is_zero() -> None:
    """``excluded`` and the ``gwas_store`` table are not noised (sensitivity 0, no site adds
    noise to them): the hub's report says 0 for them, the calibrated sigma for the others, and
    the sigma is the one the sites' noise shares sum to."""
    import math

    from hemafed.federation.api import DPRequest
    from hemafed.federation.queries import get_query
    from hemafed.privacy.calibration import (
        noise_multiplier,
        noise_share_std,
        release_noise_std,
        release_sensitivity,
    )

    dp = DPRequest(epsilon=1.0)
    linear = get_query("gwas_linear").declare({
        "study": STUDY, "variant_list": "x", "max_patients": 100,
        "trait": {"column": "hbf", "threshold": None}, "covariates": ["age"],
        "variants": pack(np.arange(3), "<i4"), "missing_variants": pack(np.array([]), "<i4")})
    store = get_query("gwas_store").declare({"study": STUDY, "variant_list": "x",
                                             "build": "GRCh38", "sites": ["a", "b"]})
    sigma = noise_multiplier(dp) * release_sensitivity(linear)
    reported = release_noise_std(linear, dp)
    assert reported["excluded"] == 0.0
    assert reported["gg"] == pytest.approx(sigma) and sigma > 0
    shares = noise_share_std(linear, dp, 4)
    for name, std in reported.items():
        assert shares[name] * math.sqrt(4) == pytest.approx(std)
    assert release_noise_std(store, dp) == {"store": 0.0}


@pytest.mark.slow
def test_study_report_states_the_variants_the_rule_dropped(ruled: World, tmp_path: Path) -> None:
    """Through the study runner: every gwas analysis states the count, and the report's table
    of the analysis shows it under its plain name; the GWAS-SSF metadata carries it too."""
    import yaml

    from hemafed.demo import run_study_on
    from hemafed.genomics.release import write_study_ssf
    from hemafed.study.report import write_report

    at_qc = sites_below(ruled)
    expected = int((at_qc > 0).sum())
    results = run_study_on("inprocess", ruled.spec, ruled.sites)
    by_id = {a["id"]: a for a in results["analyses"]}
    for a in by_id.values():
        assert a["status"] == "ok", a.get("error")
    assert by_id["hbf"]["stats"]["dropped_by_site_disclosure_rule"] == expected
    # the binary trait: QC's count plus QC-passing variants its case split leaves out
    pooled = _pooled_dosage(ruled)
    counts = np.stack([(pooled == v).sum(axis=1) for v in (0, 1, 2, -1)], axis=1)
    passing = QCFilters().passing(VariantQC.from_counts(counts).frame()) & (at_qc == 0)
    split = int((passing & (sites_below(ruled, binary=True) > 0)).sum())
    assert by_id["tcd"]["stats"]["dropped_by_site_disclosure_rule"] == expected + split
    _, meta = write_study_ssf(by_id["hbf"], tmp_path, STUDY)
    assert yaml.safe_load(meta.read_text())["variants_dropped_by_site_disclosure_rule"] == expected
    html = write_report(results, tmp_path / "report.html").read_text()
    assert "Variants dropped (site disclosure rule)" in html


def _site_query(world: World, site: str, query: str, params: dict[str, object]
                ) -> dict[str, np.ndarray]:
    """One site's answer to ``query`` under the rule (its policy's minimum), before masking."""
    from hemafed.federation.queries import get_query

    register_site_dir(site, world.sites.site_dirs[site])
    cohort = load_cohort(world.sites.site_dirs[site])
    return get_query(query).run(cohort, params, site_id=site, min_cell=MIN_CELL)


def test_binary_trait_splits_carriers_by_case_status(ruled: World) -> None:
    """A site whose carrier cases at a variant are 1..4 (among >= 5 carriers) leaves it out of
    the logistic sums: no ``case_alt`` over a cell of one case. Checked at every site against
    the classes of its raw genotypes and ``tcd_velocity``; kept variants sum exactly."""
    covs = ["age", "sex"]
    hit_somewhere = 0
    for site in ruled.cohort.site_ids:
        g, pts = ruled.cohort.site_part(site)
        unsplit = np.any(list(small_classes(g, pts).values()), axis=0)
        split = np.any(list(small_classes(g, pts, binary=True).values()), axis=0)
        only_split = np.flatnonzero(split & ~unsplit)[:30]
        kept = np.flatnonzero(~split)[:30]
        hit_somewhere += only_split.size
        idx = np.sort(np.concatenate([only_split, kept]))
        params = {"study": STUDY, "variant_list": ruled.vlist.sha256, "max_patients": 1_000_000,
                  "trait": {"column": "tcd_velocity", "threshold": TCD}, "covariates": covs,
                  "variants": pack(idx, "<i4"), "beta": pack(np.zeros(idx.size * 4))}
        res = _site_query(ruled, site, "gwas_logistic", params)
        np.testing.assert_array_equal(res["excluded"], split[idx].astype(float))
        case = (pts["tcd_velocity"] >= TCD).to_numpy()
        truth = np.where(g[idx] < 0, 0, g[idx]) @ case.astype(float)
        left = split[idx]
        np.testing.assert_array_equal(res["case_alt"][left], 0.0)
        np.testing.assert_array_equal(res["case_alt"][~left], truth[~left])
        firth = _site_query(ruled, site, "gwas_firth", params)
        np.testing.assert_array_equal(firth["excluded"], split[idx].astype(float))
    assert hit_somewhere > 10  # variants the unsplit classes would have summed


# --- patients linked but outside the analysis (missing trait) ---------------------------------

GAPS = {"site1": 8, "site3": 6}  # patients per site whose hbf is missing


def _gapped(world: World) -> dict[str, np.ndarray]:
    """Per site, which of its patients (site_part order) miss hbf: a fixed, spread choice."""
    out = {}
    for s in world.cohort.site_ids:
        n = world.cohort.site_part(s)[1].shape[0]
        miss = np.zeros(n, dtype=bool)
        miss[np.linspace(0, n - 1, GAPS.get(s, 0)).astype(int)] = True
        out[s] = miss
    return out


@pytest.fixture(scope="module")
def gapped(world: World, tmp_path_factory: pytest.TempPathFactory) -> World:
    """The ruled world, except that a few patients at two sites have no hbf."""
    root = tmp_path_factory.mktemp("gapped")
    cohorts = {}
    for s, miss in _gapped(world).items():
        pts = pd.read_csv(world.files / s / "patients.csv")
        own = world.cohort.site_part(s)[1]["patient_id"].astype(str).to_numpy()
        pts.loc[pts["patient_id"].astype(str).isin(own[miss]), "hbf"] = np.nan
        cohorts[s] = validate_cohort(pts)
    sites = build_sites(root / "sites", cohorts, world.spec,
                        policy_overrides={"enforce_min_cell": True, "min_cell_size": MIN_CELL})
    for s, site_dir in sites.site_dirs.items():
        import_genotypes(site_dir, world.files / s / "genotypes.bed", world.vlist, study=STUDY,
                         build="GRCh38", min_call_rate=0.5, max_abs_f=1.0)
    return World(world.cohort, world.files, sites, world.spec, world.vlist)


def gapped_below(world: World) -> tuple[np.ndarray, np.ndarray]:
    """Per variant, how many sites leave it out at QC (all linked patients) and in the linear
    association on hbf (complete cases; the patients without hbf as classes of their own)."""
    qc = np.zeros(world.cohort.dosage.shape[0], dtype=int)
    assoc = qc.copy()
    for s, miss in _gapped(world).items():
        g, pts = world.cohort.site_part(s)
        qc += np.any(list(small_classes(g, pts).values()), axis=0)
        assoc += np.any(list(small_classes(g, pts, analysed=~miss).values()), axis=0)
    return qc, assoc


def test_linked_patients_outside_the_analysis_are_classes_too(gapped: World) -> None:
    """At a site where 8 patients lack hbf, a variant carried by 1..4 of them is left out of
    the association sums (else QC counts minus association counts are their genotypes), while
    QC, over every linked patient, still counts it. Against the raw genotypes."""
    site = "site1"
    g, pts = gapped.cohort.site_part(site)
    miss = _gapped(gapped)[site]
    cls = small_classes(g, pts, analysed=~miss)
    inside = cls["carriers"] | cls["non-carriers"] | cls["missing"]
    only_outside = cls["outside"] & ~inside & ~np.any(list(small_classes(g, pts).values()), 0)
    assert only_outside.sum() > 20
    idx = np.arange(g.shape[0])
    params = {"study": STUDY, "variant_list": gapped.vlist.sha256, "max_patients": 1_000_000,
              "trait": {"column": "hbf", "threshold": None}, "covariates": ["age", "sex"],
              "variants": pack(idx, "<i4"), "missing_variants": pack(np.array([]), "<i4")}
    res = _site_query(gapped, site, "gwas_linear", params)
    expected = cls["outside"] | inside
    np.testing.assert_array_equal(res["excluded"], expected.astype(float))
    np.testing.assert_array_equal(res["gg"][expected], 0.0)
    g0 = np.where(g[:, ~miss] < 0, 0, g[:, ~miss]).astype(float)
    np.testing.assert_array_equal(res["gg"][~expected], (g0 ** 2).sum(axis=1)[~expected])
    qc = _site_query(gapped, site, "gwas_counts", {
        "study": STUDY, "variant_list": gapped.vlist.sha256, "max_patients": 1_000_000,
        "start": 0, "stop": g.shape[0]})
    assert not qc["excluded"][only_outside].any()  # QC counts them over all linked patients


def test_linear_with_missing_traits_equals_plink2_on_the_kept_variants(
        gapped: World, tmp_path: Path) -> None:
    """End to end with patients lacking hbf: QC over every linked patient (as PLINK's own QC
    over all samples), association over complete cases, the variants some site leaves out
    dropped; equal to PLINK 2 on the pooled file (hbf NA for those patients) restricted to the
    kept variants."""
    at_qc, in_assoc = gapped_below(gapped)
    gwas = gapped.run(lambda fed: FederatedGWAS(model="linear", n_pcs=0).fit(
        fed, gapped.vlist, study=STUDY, trait="hbf", study_id=STUDY))
    pooled = _pooled_dosage(gapped)
    counts = np.stack([(pooled == v).sum(axis=1) for v in (0, 1, 2, -1)], axis=1)
    plink_qc = VariantQC.from_counts(counts).frame()
    np.testing.assert_array_equal(gwas.qc["site_rule_excluded"], at_qc)
    full = at_qc == 0  # (a left-out variant's pooled counts are partial)
    assert full.sum() > 500
    np.testing.assert_array_equal(gwas.qc["mac"][full], plink_qc["mac"][full])
    np.testing.assert_array_equal(gwas.qc["call_rate"][full], plink_qc["call_rate"][full])
    passing = QCFilters().passing(plink_qc) & (at_qc == 0)
    tested = passing & (in_assoc == 0)
    assert (passing & (in_assoc > 0)).sum() > 20
    ids = gapped.vlist.frame["id"].to_numpy()
    assert set(gwas.summary["id"]) == set(ids[tested])
    assert gwas.disclosure_dropped_association == (passing & (in_assoc > 0)).sum()
    gone = set()
    for s, miss in _gapped(gapped).items():
        gone |= set(gapped.cohort.site_part(s)[1]["patient_id"].astype(str).to_numpy()[miss])
    pts = pd.read_csv(gapped.files / "pooled_patients.csv")
    hbf = pts["hbf"].where(~pts["patient_id"].astype(str).isin(gone))
    phe = tmp_path / "pheno.tsv"
    pd.DataFrame({"#FID": pts.patient_id, "IID": pts.patient_id, "hbf": hbf}).to_csv(
        phe, sep="\t", index=False, na_rep="NA")
    cov = pooled_covariates(gapped, None, tmp_path / "cov.tsv")
    (tmp_path / "kept.snps").write_text("\n".join(ids[tested]) + "\n")
    plink2("--bfile", str(gapped.files / "pooled"), "--extract", str(tmp_path / "kept.snps"),
           "--pheno", str(phe), "--pheno-name", "hbf", "--covar", str(cov),
           "--covar-variance-standardize", "--glm", "hide-covar", "omit-ref",
           "--out", str(tmp_path / "plk"))
    out = pd.read_csv(tmp_path / "plk.hbf.glm.linear", sep="\t")
    m = gwas.summary.merge(out, left_on="id", right_on="ID", validate="1:1")
    assert len(m) == tested.sum() > 20
    assert (m["n"] == m["OBS_CT"]).all() and (m["n"] <= len(pts) - len(gone)).all()
    for ours, theirs in (("beta", "BETA"), ("se", "SE"), ("stat", "T_STAT")):
        ok = close_to_printed(m[ours], m[theirs])
        assert ok.all(), m.loc[~ok, ["id", ours, theirs]].head()
