"""Federated PCA equals pooled PCA (numpy SVD, PLINK 2 --pca) up to sign; population structure
inflates the GWAS without PCs and not with them; the HbF positive controls are found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bed_reader import open_bed
from genomics_world import STUDY, World, plink2

from hemafed.genomics.gwas import FederatedGWAS
from hemafed.genomics.ld import PruneRule, federated_indep_pairwise
from hemafed.genomics.loci import HBF_LOCI
from hemafed.genomics.pca import choose_pca_variants, site_scores
from hemafed.genomics.queries import standardise
from hemafed.genomics.store import load_store, store_dir


@pytest.fixture(scope="module")
def fits(world: World) -> dict[int, FederatedGWAS]:
    def body(fed):  # type: ignore[no-untyped-def]
        return {k: FederatedGWAS(model="linear", n_pcs=k).fit(
            fed, world.vlist, study=STUDY, trait="hbf", study_id=STUDY) for k in (0, 4)}
    return world.run(body)


def _pooled(world: World) -> np.ndarray:
    g = open_bed(str(world.files / "pooled.bed")).read(dtype="int8").T
    return np.where(g < 0, -1, g)


def test_pcs_equal_pooled_svd_up_to_sign(world: World, fits: dict[int, FederatedGWAS]) -> None:
    pca = fits[4].pca
    assert pca is not None and pca.variants.size > 100
    assert pca.sites == tuple(sorted(world.sites.site_dirs))
    z = standardise(_pooled(world)[pca.variants].astype(float), pca.freq)
    u, s, _ = np.linalg.svd(z.T, full_matrices=False)
    np.testing.assert_allclose(pca.eigenvalues, s[:4] ** 2, rtol=1e-9)
    # each site computes its own patients' scores; stacked in pooled order they are U up to sign
    scores = []
    for site_id in world.cohort.site_ids:
        store = load_store(store_dir(world.sites.site_dirs[site_id], STUDY))
        scores.append(site_scores(np.asarray(store.dosage), pca))
    fed_u = np.vstack(scores)
    signs = np.sign(np.sum(fed_u * u[:, :4], axis=0))
    np.testing.assert_allclose(fed_u, u[:, :4] * signs, atol=1e-6)


def test_pcs_equal_plink2_pca_up_to_sign(world: World, fits: dict[int, FederatedGWAS],
                                         tmp_path: Path) -> None:
    pca = fits[4].pca
    assert pca is not None
    ids = world.vlist.frame["id"].iloc[pca.variants]
    (tmp_path / "pca.snps").write_text("\n".join(ids) + "\n")
    plink2("--bfile", str(world.files / "pooled"), "--extract", str(tmp_path / "pca.snps"),
           "--pca", "4", "--out", str(tmp_path / "plk"))
    vec = pd.read_csv(tmp_path / "plk.eigenvec", sep="\t")
    val = np.loadtxt(tmp_path / "plk.eigenval")
    ours = site_scores(_pooled(world), pca)
    theirs = vec[[f"PC{i + 1}" for i in range(4)]].to_numpy()
    signs = np.sign(np.sum(ours * theirs, axis=0))
    # PLINK prints 6 significant digits: unit-length eigenvectors of the GRM, eigenvalues / p
    np.testing.assert_allclose(ours, theirs * signs, atol=2e-6)
    np.testing.assert_allclose(pca.grm_eigenvalues, val, rtol=1e-5)


def test_structure_inflates_without_pcs_and_not_with_them(fits: dict[int, FederatedGWAS]
                                                          ) -> None:
    lam0, lam4 = fits[0].genomic_lambda, fits[4].genomic_lambda
    assert lam0 > 1.2, lam0
    assert 0.95 <= lam4 <= 1.10, lam4


def test_hbf_positive_controls_genome_wide_significant(fits: dict[int, FederatedGWAS]) -> None:
    s = fits[4].summary.set_index("id")
    for locus in HBF_LOCI:
        row = s.loc[locus.rsid]
        assert row["pos"] == locus.pos and str(row["chrom"]) == locus.chrom
        assert row["p"] < 5e-8, (locus.rsid, row["p"])
        assert row["beta"] > 0


def _plink_prune(world: World, tmp: Path, candidates: np.ndarray, rule: str) -> list[str]:
    ids = world.vlist.frame["id"].iloc[candidates]
    (tmp / "cand.snps").write_text("\n".join(ids) + "\n")
    plink2("--bfile", str(world.files / "pooled"), "--extract", str(tmp / "cand.snps"),
           "--indep-pairwise", *rule.split(), "--out", str(tmp / "ld"))
    return (tmp / "ld.prune.in").read_text().split()


def test_ld_pruning_keeps_plink2_indep_pairwise_set(world: World, fits: dict[int, FederatedGWAS],
                                                    tmp_path: Path) -> None:
    """The PCA variants are the r^2-pruned set of plink2 --indep-pairwise 50 5 0.2 on the
    pooled file (same candidates), and another window/step/threshold keeps plink2's set too."""
    fit = fits[4]
    assert fit.pca is not None and fit.pca_prune == PruneRule(50, 5, 0.2)
    cand = choose_pca_variants(world.vlist.frame, fit.qc, fit.qc["passing"].to_numpy(),
                               min_distance=0, max_variants=len(world.vlist))
    kept = _plink_prune(world, tmp_path, cand, "50 5 0.2")
    assert 100 < len(kept) < 0.9 * cand.size < fit.pca_max_variants
    assert list(world.vlist.frame["id"].iloc[fit.pca.variants]) == kept
    other = world.run(lambda fed: federated_indep_pairwise(
        lambda q, p: fed.secure_sum(q, p, study=STUDY), {
            "study": STUDY, "variant_list": world.vlist.sha256, "max_patients": fit.max_patients},
        world.vlist.frame, fit.qc, cand, PruneRule(20, 3, 0.5), chunk=300))
    assert list(world.vlist.frame["id"].iloc[other]) == _plink_prune(world, tmp_path, cand,
                                                                    "20 3 0.5")


def test_ld_pair_sums_blocked_equal_pair_by_pair_with_missing_calls() -> None:
    """The blocked matrix products equal the direct per-pair sums over patients called at both
    (missing calls included; a block of far-apart pairs takes the pair-by-pair path)."""
    from hemafed.genomics.queries import pair_sums

    rng = np.random.default_rng(5)
    raw = rng.integers(0, 3, size=(300, 57)).astype(np.int8)
    raw[rng.random(raw.shape) < 0.05] = -1
    near = np.array([(a, b) for a in range(290) for b in range(a + 1, min(a + 9, 300))])
    far = np.array([(0, 299), (3, 250), (10, 11)])
    for pairs, span in ((near, 400), (far, 100)):  # blocked, then pair by pair
        want = []
        for a, b in pairs:
            both = (raw[a] >= 0) & (raw[b] >= 0)
            ga, gb = raw[a][both].astype(float), raw[b][both].astype(float)
            want.append([both.sum(), ga.sum(), (ga * ga).sum(), gb.sum(), (gb * gb).sum(),
                         (ga * gb).sum()])
        got = pair_sums(raw, pairs, max_span=span)
        np.testing.assert_array_equal(got, np.array(want))
