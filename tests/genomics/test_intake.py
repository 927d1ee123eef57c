"""Genotype intake at the site: readers agree, pseudonyms link, bad files are refused with the file
and the reason, and a refused import leaves the site's store as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from genomics_world import STUDY, World, plink2

from hemafed.errors import InvalidInput
from hemafed.genomics.intake import import_genotypes
from hemafed.genomics.readers import read_pgen, read_plink1, read_vcf
from hemafed.genomics.store import GENOTYPE_DIR, load_store, store_dir
from hemafed.site.store import load_cohort


@pytest.fixture
def site(world: World, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of site2's directory and of its genotype files (to damage)."""
    site_dir = shutil.copytree(world.sites.site_dirs["site2"], tmp_path / "site2")
    files = shutil.copytree(world.files / "site2", tmp_path / "files")
    return site_dir, files


def _bim_edit(files: Path, row: int, col5: str, col6: str) -> None:
    bim = pd.read_csv(files / "genotypes.bim", sep="\t", header=None, dtype=str)
    bim.iloc[row, 4], bim.iloc[row, 5] = col5, col6
    bim.to_csv(files / "genotypes.bim", sep="\t", header=False, index=False)


def test_readers_agree_with_the_simulated_genotypes(world: World, tmp_path: Path) -> None:
    g, pts = world.cohort.site_part("site2")
    bed = read_plink1(world.files / "site2" / "genotypes")
    vcf = read_vcf(world.files / "site2" / "genotypes.vcf")
    np.testing.assert_array_equal(bed.dosage, g)
    np.testing.assert_array_equal(vcf.dosage, g)
    assert bed.samples == vcf.samples == tuple(pts["patient_id"])
    assert vcf.build == "GRCh38" and bed.build is None
    assert (vcf.variants[["ref", "alt"]].to_numpy() == world.vlist.frame[["ref", "alt"]]
            .to_numpy()).all()
    plink2("--bfile", str(world.files / "site2" / "genotypes"), "--make-pgen",
           "--out", str(tmp_path / "pg"))
    pgen = read_pgen(tmp_path / "pg")
    np.testing.assert_array_equal(pgen.dosage, g)


def test_store_is_keyed_by_pseudonyms_of_cohort_patients(world: World) -> None:
    site_dir = world.sites.site_dirs["site2"]
    store = load_store(store_dir(site_dir, STUDY))
    hospital_ids = set(world.cohort.site_part("site2")[1]["patient_id"])
    assert not set(store.samples) & hospital_ids
    assert set(store.samples) <= set(load_cohort(site_dir).ids)
    assert store.build == "GRCh38" and store.variant_list_sha256 == world.vlist.sha256


def test_vcf_and_swapped_bim_import_to_the_same_store(world: World, site: tuple[Path, Path]
                                                      ) -> None:
    site_dir, files = site
    reference = np.asarray(load_store(store_dir(site_dir, STUDY)).dosage).copy()
    import_genotypes(site_dir, files / "genotypes.vcf", world.vlist, study=STUDY,
                     min_call_rate=0.5, max_abs_f=1.0)
    np.testing.assert_array_equal(load_store(store_dir(site_dir, STUDY)).dosage, reference)
    # the .bim now says the counted allele (A1) is the list's REF: the same bits then count
    # REF, and intake recodes that variant to ALT counts, 2 - g
    row = 5
    v = world.vlist.frame.iloc[row]
    _bim_edit(files, row, v["ref"], v["alt"])
    store = import_genotypes(site_dir, files / "genotypes.bed", world.vlist, study=STUDY,
                             build="GRCh38", min_call_rate=0.5, max_abs_f=1.0)
    expected = reference.copy()
    expected[row] = np.where(reference[row] < 0, -1, 2 - reference[row])
    np.testing.assert_array_equal(store.dosage, expected)
    assert store.meta["swapped_alleles"] == 1


def _refused(site_dir: Path, path: Path, world: World, match: str, **kw: object) -> None:
    meta = store_dir(site_dir, STUDY) / "meta.json"
    before = meta.read_bytes()
    dosage = (store_dir(site_dir, STUDY) / "dosage.npy").read_bytes()
    with pytest.raises(InvalidInput, match=match):
        import_genotypes(site_dir, path, world.vlist, study=STUDY, **kw)  # type: ignore[arg-type]
    assert meta.read_bytes() == before
    assert (store_dir(site_dir, STUDY) / "dosage.npy").read_bytes() == dosage
    assert sorted(p.name for p in (site_dir / GENOTYPE_DIR).iterdir()) == [STUDY]


def test_truncated_bed_is_refused(world: World, site: tuple[Path, Path]) -> None:
    site_dir, files = site
    bed = files / "genotypes.bed"
    bed.write_bytes(bed.read_bytes()[:-7])
    _refused(site_dir, bed, world, r"genotypes\.bed: .* truncated", build="GRCh38")


def test_fam_of_another_file_is_refused(world: World, site: tuple[Path, Path]) -> None:
    site_dir, files = site
    fam = files / "genotypes.fam"
    fam.write_text("".join(fam.read_text().splitlines(keepends=True)[:-5]))
    _refused(site_dir, files / "genotypes.bed", world, r"genotypes\.fam.* do not belong",
             build="GRCh38")


def test_allele_mismatch_and_strand_flip_are_refused(world: World, site: tuple[Path, Path]
                                                    ) -> None:
    site_dir, files = site
    v = world.vlist.frame.iloc[10]
    other = next(b for b in "ACGT" if b not in (v["ref"], v["alt"]))
    _bim_edit(files, 10, other, v["ref"])
    _refused(site_dir, files / "genotypes.bed", world,
             rf"genotypes\.bed: allele mismatch at {v['id']}", build="GRCh38")
    comp = str.maketrans("ACGT", "TGCA")
    _bim_edit(files, 10, v["alt"].translate(comp), v["ref"].translate(comp))
    _refused(site_dir, files / "genotypes.bed", world, "strand flip", build="GRCh38")


def test_multiallelic_site_needs_a_rule(world: World, site: tuple[Path, Path]) -> None:
    site_dir, files = site
    lines = (files / "genotypes.vcf").read_text().splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    f = body[0].split("\t")
    extra = "\t".join([f[0], str(int(f[1]) + 1), "multi1", "A", "C,G", *f[5:9],
                       *["1/2"] * (len(f) - 9)]) + "\n"
    (files / "multi.vcf").write_text("".join(head + body[:1] + [extra] + body[1:]))
    _refused(site_dir, files / "multi.vcf", world, r"multi\.vcf: variant multi1 .* multi-allelic")
    store = import_genotypes(site_dir, files / "multi.vcf", world.vlist, study=STUDY,
                             multiallelic="drop", min_call_rate=0.5, max_abs_f=1.0)
    assert store.meta["dropped_multiallelic"] == 1


def test_build_mismatch_and_undeclared_build_are_refused(world: World, site: tuple[Path, Path]
                                                         ) -> None:
    site_dir, files = site
    text = (files / "genotypes.vcf").read_text()
    head, _, body = text.partition("#CHROM")
    head = "\n".join(ln for ln in head.splitlines() if not ln.startswith("##contig"))
    (files / "b37.vcf").write_text(head.replace("GRCh38", "GRCh37") + "\n#CHROM" + body)
    _refused(site_dir, files / "b37.vcf", world, r"b37\.vcf: genotypes on GRCh37")
    _refused(site_dir, files / "genotypes.bed", world, "states no genome build")


def test_sample_qc_stays_at_the_site(world: World, site: tuple[Path, Path]) -> None:
    site_dir, files = site
    vcf = read_vcf(files / "genotypes.vcf")
    store = import_genotypes(site_dir, files / "genotypes.vcf", world.vlist, study=STUDY)
    # default sample QC (call rate >= 0.95, |F| <= 0.2) may exclude a few; recompute by hand
    called = vcf.dosage >= 0
    assert store.meta["sample_qc_excluded"] == len(vcf.samples) - len(store.samples)
    assert (called.mean(axis=0) >= 0.95).sum() >= len(store.samples)
    meta = json.loads((store_dir(site_dir, STUDY) / "meta.json").read_text())
    assert meta["sample_qc"] == {"min_call_rate": 0.95, "max_abs_f": 0.2}
