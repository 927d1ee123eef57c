"""A virtual sickle-cell genotype cohort: coalescent genotypes with population structure across
sites and planted fetal-haemoglobin loci, for demos, tests and benchmarks.

Genotypes come from ``msprime`` (Hudson coalescent with recombination, so linkage disequilibrium
decays as in real chromosomes; binary mutation model, so every site is biallelic). The
demography is African-ancestry-like and structured: two African populations that split 2,000
generations ago (``AFR_W``, a large West-Central-African-like population, Ne 20,000; ``AFR_E``,
a smaller one, Ne 8,000) and an admixed population (``AFR_ADM``, half of each, 12 generations
ago). Each site draws its patients from its own mix of the three, so sites differ in ancestry.

The genome is a set of independent segments (one tree sequence each): one around each HbF locus
of :data:`hemafed.genomics.loci.HBF_LOCI` (shifted so that a common simulated variant sits at the
lead SNP's GRCh38 position and carries its rs id: it is the planted causal variant) and null
segments on other chromosomes.

Traits (per patient, deterministic by seed):

* ``hbf`` (%): ``6 + sum_k beta_k g_k + 3.0 * (AFR_E ancestry fraction) + 0.02 (age - 20)
  + 0.6 [female] + N(0, 3^2)``, clipped to [0.1, 60]; ``beta`` = 3.0 (BCL11A), 3.0
  (HBS1L-MYB), 3.0 (Xmn1-HBG2) per allele. The ancestry term is what confounds an analysis that
  ignores population structure.
* ``tcd_velocity`` (cm/s): ``175 - 3.5 * (genetic HbF) + 12 * (AFR_E fraction) + N(0, 25^2)``;
  the binary trait is abnormal transcranial Doppler, ``tcd_velocity >= 200``.

The effects are far larger than real ones so that a few hundred patients show them: this is a
test and demo cohort, not a model of effect sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.genomics.loci import GRCH38_LENGTHS, HBF_LOCI

log = logging.getLogger(__name__)

POPULATIONS = ("AFR_W", "AFR_E", "AFR_ADM")
E_FRACTION = np.array([0.0, 1.0, 0.5])
"""Expected AFR_E ancestry fraction of a patient of each population."""

HBF_BETA = (3.0, 3.0, 3.0)
ABNORMAL_TCD = 200.0
# allele pairs that are not strand-ambiguous (no A/T, C/G), so strand checks are meaningful
_ALLELE_PAIRS = (("A", "C"), ("A", "G"), ("C", "A"), ("C", "T"), ("G", "A"), ("G", "T"),
                 ("T", "C"), ("T", "G"))
_NULL_CHROMS = ("1", "3", "4", "5", "7", "8", "9", "10", "12", "13", "14", "15", "16", "17",
                "18", "19", "20", "21", "22")


@dataclass(frozen=True)
class CohortDesign:
    """Size and structure of a virtual cohort.

    ``site_sizes``: relative size of each site; ``site_mix``: per site, the probabilities of
    drawing a patient from ``AFR_W``, ``AFR_E``, ``AFR_ADM`` (default: a gradient from mostly
    West to mostly East). ``n_variants`` is the target number of variants with MAF >=
    ``min_maf`` over ``null_segments + 3`` segments of ``segment_length`` bp.
    ``missing_rate``: fraction of variants that get sporadic missing calls (1-4 % of patients).
    """

    n_patients: int = 400
    n_variants: int = 3000
    site_sizes: tuple[float, ...] = (0.34, 0.26, 0.18, 0.13, 0.09)
    site_mix: tuple[tuple[float, float, float], ...] | None = None
    null_segments: int = 45
    segment_length: int = 500_000
    min_maf: float = 0.01
    missing_rate: float = 0.02
    seed: int = 19

    def __post_init__(self) -> None:
        if self.n_patients < 10 * len(self.site_sizes):
            raise ValueError(f"n_patients must be >= 10 per site, got {self.n_patients}")
        if self.n_variants < 10 or self.null_segments < 0 or self.segment_length < 10_000:
            raise ValueError("n_variants >= 10, null_segments >= 0, segment_length >= 10 kb")
        if not all(s > 0 for s in self.site_sizes):
            raise ValueError(f"site_sizes must be positive, got {self.site_sizes}")
        if self.site_mix is not None and (
                len(self.site_mix) != len(self.site_sizes)
                or any(len(m) != 3 or min(m) < 0 or abs(sum(m) - 1) > 1e-9 for m in self.site_mix)):
            raise ValueError("site_mix: one (AFR_W, AFR_E, AFR_ADM) probability triple per site")
        if not 0 < self.min_maf < 0.5 or not 0 <= self.missing_rate < 1:
            raise ValueError("min_maf in (0, 0.5), missing_rate in [0, 1)")

    @property
    def n_sites(self) -> int:
        return len(self.site_sizes)

    def mixes(self) -> np.ndarray:
        if self.site_mix is not None:
            return np.asarray(self.site_mix, dtype=float)
        k = self.n_sites
        east = np.linspace(0.05, 0.7, k)
        adm = np.full(k, 0.2)
        return np.column_stack([1 - east - adm, east, adm])


@dataclass(frozen=True)
class VirtualGenotypes:
    """A simulated cohort: ``dosage`` (variants x patients, ALT allele counts, -1 missing),
    ``variants`` (chrom, pos, id, ref, alt), ``patients`` (clinical table, ``patient_id`` as
    the hospital knows it), ``site`` and ``population`` per patient."""

    dosage: np.ndarray
    variants: pd.DataFrame
    patients: pd.DataFrame
    site: np.ndarray
    population: np.ndarray
    causal: tuple[str, ...] = field(default=tuple(locus.rsid for locus in HBF_LOCI))

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(s) for s in self.site))

    def site_part(self, site_id: str) -> tuple[np.ndarray, pd.DataFrame]:
        cols = np.flatnonzero(self.site == site_id)
        return self.dosage[:, cols], self.patients.iloc[cols].reset_index(drop=True)


def _demography():  # type: ignore[no-untyped-def]
    import msprime

    d = msprime.Demography()
    d.add_population(name="AFR_W", initial_size=20_000)
    d.add_population(name="AFR_E", initial_size=8_000)
    d.add_population(name="AFR_ADM", initial_size=20_000)
    d.add_population(name="AFR_ANC", initial_size=14_000)
    d.add_admixture(time=12, derived="AFR_ADM", ancestral=["AFR_W", "AFR_E"],
                    proportions=[0.5, 0.5])
    d.add_population_split(time=2_000, derived=["AFR_W", "AFR_E"], ancestral="AFR_ANC")
    return d


def _segment(counts: Sequence[int], length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (0-based) and diploid ALT counts (sites x individuals) of one segment."""
    import msprime

    samples = {name: int(c) for name, c in zip(POPULATIONS, counts, strict=True) if c}
    ts = msprime.sim_ancestry(samples=samples, demography=_demography(), sequence_length=length,
                              recombination_rate=1e-8, random_seed=seed)
    ts = msprime.sim_mutations(ts, rate=1.2e-8, model=msprime.BinaryMutationModel(),
                               random_seed=seed + 1)
    hap = ts.genotype_matrix().astype(np.int8)
    positions = ts.tables.sites.position.astype(np.int64)
    return positions, hap[:, 0::2] + hap[:, 1::2]


def simulate_cohort(design: CohortDesign = CohortDesign()) -> VirtualGenotypes:
    """Simulate the cohort of ``design`` (deterministic by ``design.seed``)."""
    rng = np.random.default_rng(design.seed)
    n, k = design.n_patients, design.n_sites
    sizes = np.asarray(design.site_sizes) / np.sum(design.site_sizes)
    per_site = np.floor(sizes * n).astype(int)
    per_site[0] += n - per_site.sum()
    site_ids = [f"site{i + 1}" for i in range(k)]
    mixes = design.mixes()
    site_of, pop_of = [], []
    for s in range(k):
        draws = rng.choice(3, size=per_site[s], p=mixes[s])
        site_of += [site_ids[s]] * per_site[s]
        pop_of += list(draws)
    pop = np.asarray(pop_of)
    site = np.asarray(site_of)
    # msprime orders individuals by population; patients are then put back in site order
    counts = np.bincount(pop, minlength=3)
    order = np.argsort(pop, kind="stable")
    col_of_patient = np.empty(n, dtype=int)
    col_of_patient[order] = np.arange(n)

    n_segments = design.null_segments + len(HBF_LOCI)
    per_segment = int(np.ceil(design.n_variants / n_segments))
    blocks: list[np.ndarray] = []
    tables: list[pd.DataFrame] = []
    for j in range(n_segments):
        pos, g = _segment(counts.tolist(), design.segment_length, design.seed * 1000 + j)
        g = g[:, col_of_patient]
        freq = g.mean(axis=1) / 2
        maf = np.minimum(freq, 1 - freq)
        keep = np.flatnonzero(maf >= design.min_maf)
        if j < len(HBF_LOCI):
            locus = HBF_LOCI[j]
            # the planted causal variant: a common variant near the middle of the segment
            common = keep[(maf[keep] >= 0.15) & (maf[keep] <= 0.4)]
            c = common[np.argmin(np.abs(pos[common] - design.segment_length // 2))]
            offset, chrom = locus.pos - 1 - int(pos[c]), locus.chrom
            chosen = np.union1d(rng.choice(keep[keep != c], min(per_segment - 1, keep.size - 1),
                                           replace=False), [c])
        else:
            chrom = _NULL_CHROMS[(j - len(HBF_LOCI)) % len(_NULL_CHROMS)]
            offset = 20_000_000 + 3 * design.segment_length * ((j - len(HBF_LOCI))
                                                                // len(_NULL_CHROMS))
            chosen = np.sort(rng.choice(keep, min(per_segment, keep.size), replace=False))
            c = -1
        if offset + int(pos.max()) + 1 > GRCH38_LENGTHS[chrom]:
            raise ValueError(f"segment {j} does not fit on chromosome {chrom}")
        pairs = rng.integers(0, len(_ALLELE_PAIRS), chosen.size)
        ref = [_ALLELE_PAIRS[p][0] for p in pairs]
        alt = [_ALLELE_PAIRS[p][1] for p in pairs]
        bp = pos[chosen] + offset + 1
        ids = [f"{chrom}:{b}:{r}:{a}" for b, r, a in zip(bp, ref, alt, strict=True)]
        if c >= 0:
            ids[int(np.searchsorted(chosen, c))] = HBF_LOCI[j].rsid
        tables.append(pd.DataFrame({"chrom": chrom, "pos": bp.astype(np.int64), "id": ids,
                                    "ref": ref, "alt": alt}))
        blocks.append(g[chosen].astype(np.int8))
    variants = pd.concat(tables, ignore_index=True)
    # chromosome order, as PLINK wants (segments of one chromosome were drawn apart)
    order = np.lexsort((variants["pos"].to_numpy(),
                        variants["chrom"].map(lambda c: int(c) if c.isdigit() else 99).to_numpy()))
    variants = variants.iloc[order].reset_index(drop=True)
    dosage = np.vstack(blocks)[order]
    causal_rows = [int(np.flatnonzero(variants["id"] == locus.rsid)[0]) for locus in HBF_LOCI]

    causal_g = dosage[causal_rows].astype(float)
    e_frac = E_FRACTION[pop]
    age = np.round(rng.uniform(2.0, 55.0, n), 1)
    female = rng.random(n) < 0.5
    genetic = np.asarray(HBF_BETA) @ causal_g
    hbf = np.clip(6.0 + genetic + 3.0 * e_frac + 0.02 * (age - 20) + 0.6 * female
                  + rng.normal(0, 3.0, n), 0.1, 60.0)
    tcd = np.clip(175.0 - 3.5 * (genetic - genetic.mean()) + 12.0 * e_frac
                  + rng.normal(0, 25.0, n), 40.0, 390.0)
    if design.missing_rate > 0:
        rows = rng.choice(dosage.shape[0], max(1, int(design.missing_rate * dosage.shape[0])),
                          replace=False)
        rows = rows[~np.isin(rows, causal_rows)]
        for r in rows:
            miss = rng.random(n) < rng.uniform(0.01, 0.04)
            dosage[r, miss] = -1
    patients = pd.DataFrame({
        "patient_id": [f"{s.upper()}-{i:05d}" for i, s in enumerate(site)],
        "disease": "SCD", "scd_genotype": "HbSS", "sex": np.where(female, "F", "M"),
        "age": age, "hbf": np.round(hbf, 2), "tcd_velocity": np.round(tcd, 1)})
    log.info("virtual SCD cohort: %d patients, %d variants, %d sites", n, len(variants), k)
    return VirtualGenotypes(dosage, variants, patients, site, np.asarray(POPULATIONS)[pop])


def write_plink1(prefix: str | Path, dosage: np.ndarray, variants: pd.DataFrame,
                 sample_ids: Sequence[str], sex: Sequence[str] | None = None) -> Path:
    """Write ``prefix``.bed/.bim/.fam (ALT = bim column 5, the counted allele A1)."""
    from bed_reader import to_bed

    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    val = dosage.T.astype(np.float32)
    val[val < 0] = np.nan
    sex_code = ([1 if s == "M" else 2 for s in sex] if sex is not None else [0] * len(sample_ids))
    to_bed(str(prefix) + ".bed", val, properties={
        "fid": list(sample_ids), "iid": list(sample_ids), "sex": sex_code,
        "chromosome": variants["chrom"].astype(str).tolist(), "sid": variants["id"].tolist(),
        "bp_position": variants["pos"].astype(int).tolist(),
        "allele_1": variants["alt"].tolist(), "allele_2": variants["ref"].tolist()})
    return prefix.with_suffix(".bed")


def write_vcf(path: str | Path, dosage: np.ndarray, variants: pd.DataFrame,
              sample_ids: Sequence[str], build: str = "GRCh38") -> Path:
    """Write an uncompressed VCF 4.2 of unphased genotypes (``./.`` for missing)."""
    from hemafed.atomic import atomic_path
    from hemafed.genomics.loci import BUILD_LENGTHS

    path = Path(path)
    codes = np.array(["0/0", "0/1", "1/1", "./."])
    chroms = list(dict.fromkeys(variants["chrom"].astype(str)))
    head = ["##fileformat=VCFv4.2", f"##reference={build}"]
    head += [f"##contig=<ID={c},length={BUILD_LENGTHS[build][c]},assembly={build}>" for c in chroms]
    head += ['##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                        *sample_ids])]
    gt = codes[np.where(dosage < 0, 3, dosage)]
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("\n".join(head) + "\n")
        for row, (c, p, i, r, a) in enumerate(variants[["chrom", "pos", "id", "ref", "alt"]]
                                              .itertuples(index=False)):
            fh.write(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\tPASS\t.\tGT\t" + "\t".join(gt[row]) + "\n")
    return path


def variant_list_frame(variants: pd.DataFrame, build: str = "GRCh38") -> pd.DataFrame:
    """The public variant list of the cohort (no genotypes): chrom, pos, id, ref, alt."""
    out = variants[["chrom", "pos", "id", "ref", "alt"]].copy()
    out.attrs["build"] = build
    return out


def write_cohort(cohort: VirtualGenotypes, directory: str | Path, *, vcf_sites: Sequence[str] = (),
                 pooled: bool = True) -> dict[str, Path]:
    """Write one folder per site (PLINK 1 ``genotypes.*``, ``patients.csv``; VCF for the sites in
    ``vcf_sites``), the public ``variants.tsv`` and, if ``pooled``, the pooled PLINK 1 file and
    phenotypes (``pooled.*``) for reference tools. Returns the site folders."""
    from hemafed.genomics.variants import VariantList

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    VariantList.from_frame(cohort.variants, "GRCh38").write(directory / "variants.tsv")
    out: dict[str, Path] = {}
    for site_id in cohort.site_ids:
        g, pts = cohort.site_part(site_id)
        folder = directory / site_id
        folder.mkdir(exist_ok=True)
        write_plink1(folder / "genotypes", g, cohort.variants, pts["patient_id"].tolist(),
                     pts["sex"].tolist())
        if site_id in vcf_sites:
            write_vcf(folder / "genotypes.vcf", g, cohort.variants, pts["patient_id"].tolist())
        pts.to_csv(folder / "patients.csv", index=False)
        out[site_id] = folder
    if pooled:
        write_plink1(directory / "pooled", cohort.dosage, cohort.variants,
                     cohort.patients["patient_id"].tolist(), cohort.patients["sex"].tolist())
        cohort.patients.assign(site=cohort.site, population=cohort.population).to_csv(
            directory / "pooled_patients.csv", index=False)
    return out
