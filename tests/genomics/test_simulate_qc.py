"""The virtual cohort (deterministic, structured, loci in place), the HWE exact test against full
enumeration, and the CLI (a refused import is one line, exit 1)."""

from __future__ import annotations

import shutil
from math import comb, factorial
from pathlib import Path

import numpy as np
from genomics_world import STUDY, World
from typer.testing import CliRunner

from hemafed.cli import app
from hemafed.genomics.loci import HBF_LOCI
from hemafed.genomics.qc import hwe_exact
from hemafed.genomics.simulate import CohortDesign, simulate_cohort

TINY = CohortDesign(n_patients=60, n_variants=200, site_sizes=(2, 1), null_segments=2,
                    segment_length=100_000, seed=5)


def _hwe_by_enumeration(het: int, hom1: int, hom2: int) -> float:
    """P of every het count as likely or less likely than observed (Levene's distribution)."""
    n = het + hom1 + hom2
    rare = min(2 * hom1 + het, 2 * hom2 + het)

    def prob(h: int) -> float:
        r, c = (rare - h) // 2, n - h - (rare - h) // 2
        return (factorial(n) / (factorial(r) * factorial(h) * factorial(c)) * 2 ** h
                / comb(2 * n, rare))

    probs = {h: prob(h) for h in range(rare % 2, rare + 1, 2)}
    obs = probs[het]
    return sum(p for p in probs.values() if p <= obs * (1 + 1e-9))


def test_hwe_exact_equals_full_enumeration() -> None:
    cases = [(57, 14, 29), (0, 50, 0), (10, 0, 40), (3, 1, 96), (45, 349, 5), (1, 0, 0),
             (20, 20, 20), (0, 30, 30)]
    ours = hwe_exact(*(np.array(x) for x in zip(*cases, strict=True)))
    for (het, a, b), p in zip(cases, ours, strict=True):
        assert abs(p - min(1.0, _hwe_by_enumeration(het, a, b))) < 1e-12, (het, a, b)


def test_virtual_cohort_is_deterministic_structured_and_planted(world: World) -> None:
    a, b = simulate_cohort(TINY), simulate_cohort(TINY)
    np.testing.assert_array_equal(a.dosage, b.dosage)
    assert a.patients.equals(b.patients)
    assert not np.array_equal(simulate_cohort(CohortDesign(**{**TINY.__dict__, "seed": 6})).dosage,
                              a.dosage)
    c = world.cohort
    v = c.variants.set_index("id")
    for locus in HBF_LOCI:
        assert (str(v.loc[locus.rsid, "chrom"]), int(v.loc[locus.rsid, "pos"])) == (locus.chrom,
                                                                                  locus.pos)
    # sites differ in ancestry: the share of AFR_E rises from the first to the last site
    east = [np.mean(c.population[c.site == s] == "AFR_E") for s in c.site_ids]
    assert east[-1] - east[0] > 0.3
    sizes = [int(np.sum(c.site == s)) for s in c.site_ids]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > 3 * sizes[-1]
    assert (c.dosage == -1).any() and set(np.unique(c.dosage)) <= {-1, 0, 1, 2}


def test_cli_import_refusal_is_one_line(world: World, tmp_path: Path) -> None:
    site_dir = shutil.copytree(world.sites.site_dirs["site3"], tmp_path / "site3")
    files = shutil.copytree(world.files / "site3", tmp_path / "files")
    (files / "genotypes.bed").write_bytes((files / "genotypes.bed").read_bytes()[:100])
    args = ["genomics", "import", str(site_dir), str(files / "genotypes.bed"), "--variant-list",
            str(world.files / "variants.tsv"), "--study", STUDY, "--build", "GRCh38"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "import refused" in res.output and "truncated" in res.output
