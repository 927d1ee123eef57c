"""Genotype file readers: PLINK 1 (bed/bim/fam, via ``bed-reader``), PLINK 2 (pgen/pvar/psam, via
``pgenlib``) and VCF/BCF (via ``cyvcf2``), each to one :class:`RawGenotypes` (ALT allele counts,
variants x samples, ``-1`` missing) after checking that the files belong together.

Every refusal is one ``InvalidInput`` naming the file and the reason (a truncated .bed, a .fam
whose sample count does not match, a VCF on another build ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.errors import InvalidInput
from hemafed.genomics.loci import BUILD_LENGTHS
from hemafed.genomics.variants import normalise_chrom

_BED_MAGIC = b"\x6c\x1b\x01"
FORMATS = ("plink1", "pgen", "vcf")


@dataclass(frozen=True)
class RawGenotypes:
    """Genotypes as read: ``dosage`` (variants x samples, int8 ALT counts, -1 missing),
    ``variants`` (chrom, pos, id, ref, alt), ``samples`` (sample ids), ``build`` if the file
    states one."""

    dosage: np.ndarray
    variants: pd.DataFrame
    samples: tuple[str, ...]
    source: str
    build: str | None = None

    def __post_init__(self) -> None:
        if self.dosage.shape != (len(self.variants), len(self.samples)):
            raise InvalidInput(f"{self.source}: {self.dosage.shape} genotypes for "
                               f"{len(self.variants)} variants x {len(self.samples)} samples")
        if len(set(self.samples)) != len(self.samples):
            dup = pd.Series(self.samples)[pd.Series(self.samples).duplicated()].iat[0]
            raise InvalidInput(f"{self.source}: sample id {dup!r} appears twice")


def _table(path: Path, ncol: int, what: str) -> pd.DataFrame:
    if not path.exists():
        raise InvalidInput(f"{path}: the {what} file is missing")
    try:
        t = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment=None)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InvalidInput(f"{path}: not a whitespace-separated {what} file ({exc})") from None
    if t.shape[1] != ncol:
        raise InvalidInput(f"{path}: {t.shape[1]} columns, a {what} file has {ncol}")
    return t


def read_plink1(prefix: str | Path) -> RawGenotypes:
    """Read ``prefix``.bed/.bim/.fam; the counted allele (bim column 5, A1) is taken as ALT."""
    from bed_reader import open_bed

    prefix = Path(str(prefix).removesuffix(".bed"))
    bed, bim, fam = (Path(f"{prefix}.{ext}") for ext in ("bed", "bim", "fam"))
    fam_t, bim_t = _table(fam, 6, ".fam"), _table(bim, 6, ".bim")
    if not bed.exists():
        raise InvalidInput(f"{bed}: the .bed file is missing")
    n, m = len(fam_t), len(bim_t)
    with open(bed, "rb") as fh:
        magic = fh.read(3)
    if magic != _BED_MAGIC:
        raise InvalidInput(f"{bed}: not a variant-major PLINK 1 .bed (bad magic bytes)")
    expected = 3 + m * ((n + 3) // 4)
    size = bed.stat().st_size
    if size != expected:
        raise InvalidInput(f"{bed}: {size} bytes where {m} variants ({bim.name}) x {n} samples "
                           f"({fam.name}) need {expected}: the .bed is truncated or the "
                           ".fam/.bim do not belong to it")
    pos = pd.to_numeric(bim_t[3], errors="coerce")
    if pos.isna().any():
        raise InvalidInput(f"{bim}: row {int(np.flatnonzero(pos.isna())[0]) + 1}: position is not "
                           "an integer")
    with open_bed(str(bed), count_A1=True, num_threads=1) as reader:
        val = reader.read(dtype="int8", order="C")
    dosage = np.ascontiguousarray(val.T)
    dosage[dosage < 0] = -1
    variants = pd.DataFrame({"chrom": bim_t[0].map(normalise_chrom), "pos": pos.astype(np.int64),
                             "id": bim_t[1], "ref": bim_t[5].str.upper(),
                             "alt": bim_t[4].str.upper()})
    return RawGenotypes(dosage, variants, tuple(fam_t[1]), str(bed))


def read_pgen(prefix: str | Path) -> RawGenotypes:
    """Read ``prefix``.pgen/.pvar/.psam (biallelic hard calls; ALT counts)."""
    import pgenlib

    prefix = Path(str(prefix).removesuffix(".pgen"))
    pgen, pvar, psam = (Path(f"{prefix}.{ext}") for ext in ("pgen", "pvar", "psam"))
    for p in (pgen, pvar, psam):
        if not p.exists():
            raise InvalidInput(f"{p}: file missing (a PLINK 2 fileset has .pgen, .pvar, .psam)")
    try:
        sam = pd.read_csv(psam, sep="\t", dtype=str)
        var = pd.read_csv(pvar, sep="\t", dtype={"#CHROM": str, "ID": str}, comment=None,
                          skiprows=_header_lines(pvar))
    except (ValueError, pd.errors.ParserError) as exc:
        raise InvalidInput(f"{psam} / {pvar}: cannot parse ({exc})") from None
    iid = "IID" if "IID" in sam else sam.columns[0]
    need = {"#CHROM", "POS", "ID", "REF", "ALT"}
    if not need <= set(var) or iid not in sam:
        raise InvalidInput(f"{pvar}: header must hold {sorted(need)}; {psam}: an IID column")
    n, m = len(sam), len(var)
    try:
        reader = pgenlib.PgenReader(str(pgen).encode(), raw_sample_ct=n)
        if reader.get_variant_ct() != m:
            raise InvalidInput(f"{pgen}: {reader.get_variant_ct()} variants, {pvar} lists {m}")
        buf = np.empty((m, n), dtype=np.int8)
        reader.read_range(0, m, buf)
        reader.close()
    except RuntimeError as exc:
        raise InvalidInput(f"{pgen}: unreadable or does not match {psam} ({exc})") from None
    buf[buf < 0] = -1
    variants = pd.DataFrame({"chrom": var["#CHROM"].map(normalise_chrom),
                             "pos": var["POS"].astype(np.int64), "id": var["ID"],
                             "ref": var["REF"].str.upper(), "alt": var["ALT"].str.upper()})
    return RawGenotypes(buf, variants, tuple(sam[iid]), str(pgen))


def _header_lines(pvar: Path) -> int:
    count = 0
    with open(pvar) as fh:
        for line in fh:
            if not line.startswith("##"):
                break
            count += 1
    return count


def vcf_build(header: str) -> str | None:
    """The build a VCF header states (``##reference`` or contig ``assembly``/lengths), if any."""
    text = header.lower()
    for build, tags in (("GRCh38", ("grch38", "hg38")), ("GRCh37", ("grch37", "hg19", "b37"))):
        if any(t in text for t in tags):
            return build
    lengths = dict(re.findall(r"##contig=<id=(?:chr)?([0-9xy]+),length=(\d+)", text))
    for build, table in BUILD_LENGTHS.items():
        if lengths and all(table.get(c.upper()) == int(n) for c, n in lengths.items()):
            return build
    return None


def read_vcf(path: str | Path) -> RawGenotypes:
    """Read a VCF/BCF's GT calls as ALT counts (``cyvcf2``); multi-allelic rows keep their comma
    ALT list for the alignment rule to refuse or drop."""
    from cyvcf2 import VCF

    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path}: the VCF file is missing")
    try:
        vcf = VCF(str(path), gts012=True, lazy=True)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: not a readable VCF/BCF ({exc})") from None
    samples = tuple(vcf.samples)
    rows: list[tuple[str, int, str, str, str]] = []
    calls: list[np.ndarray] = []
    try:
        for v in vcf:
            g = np.asarray(v.gt_types, dtype=np.int8)
            g[g == 3] = -1
            alt = ",".join(v.ALT) if v.ALT else "."
            rows.append((v.CHROM, int(v.POS), v.ID or f"{v.CHROM}:{v.POS}", v.REF, alt))
            calls.append(g)
    except Exception as exc:  # cyvcf2 raises bare Exceptions on malformed records
        raise InvalidInput(f"{path}: malformed record after {len(rows)} variant(s) ({exc})") from None
    finally:
        header = vcf.raw_header
        vcf.close()
    variants = pd.DataFrame(rows, columns=["chrom", "pos", "id", "ref", "alt"])
    variants["chrom"] = variants["chrom"].map(normalise_chrom)
    dosage = np.vstack(calls) if calls else np.empty((0, len(samples)), dtype=np.int8)
    return RawGenotypes(dosage, variants, samples, str(path), vcf_build(header))


def genotype_format(path: str | Path, fmt: str | None = None) -> str:
    """The format of a genotype file (``plink1``, ``pgen``, ``vcf``): ``fmt``, else its suffix."""
    p = str(path)
    if fmt is None:
        fmt = ("plink1" if p.endswith((".bed", ".bim", ".fam")) else
               "pgen" if p.endswith((".pgen", ".pvar", ".psam")) else
               "vcf" if re.search(r"\.(vcf(\.gz)?|bcf)$", p) else None)
    if fmt not in FORMATS:
        raise InvalidInput(f"{path}: genotype format {fmt!r} unknown; expected one of {list(FORMATS)}")
    return fmt


def read_genotypes(path: str | Path, fmt: str | None = None) -> RawGenotypes:
    """Read a genotype file by format (``plink1``, ``pgen``, ``vcf``; guessed from the suffix)."""
    p = str(path)
    fmt = genotype_format(path, fmt)
    stem = re.sub(r"\.(bed|bim|fam|pgen|pvar|psam)$", "", p)
    if fmt == "plink1":
        return read_plink1(stem)
    if fmt == "pgen":
        return read_pgen(stem)
    return read_vcf(path)
