"""Variant calls of one sample (VCF/BCF, via pysam) as rows of the canonical mutation table.

``read_vcf`` turns each ALT allele called in the sample into one mutation row: VAF from
``FORMAT/AF``, else computed from ``FORMAT/AD`` as alt / (ref + alt); depth from ``FORMAT/DP``
(else the AD sum); gene, consequence and protein change from the first INFO source found among
``genes_from`` (SnpEff ``ANN``, VEP ``CSQ``, a plain ``GENE`` or dbSNP ``GENEINFO``).
``write_vcf`` writes a mutation table as a small VCF (GENE, AD, AF, DP), e.g. for tests and
exchange with tools that take VCF.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hemafed.atomic import atomic_path
from hemafed.cohort.model import _MUTATION_DTYPES, MUTATION_COLUMNS
from hemafed.errors import InvalidInput, Problem, ValidationFailed

DEFAULT_GENE_SOURCES = "ANN|CSQ|GENE|GENEINFO"
# SnpEff ANN: Allele | Annotation | Impact | Gene_Name | Gene_ID | ... | HGVS.c | HGVS.p | ...
_ANN_ALLELE, _ANN_EFFECT, _ANN_GENE, _ANN_HGVSP = 0, 1, 3, 10


def _float7(x: float) -> float:
    """A float read from a VCF Float (32-bit) field, back to the decimal that was written."""
    return float(f"{float(x):.7g}")


def _csq_fields(header: Any) -> list[str]:
    rec = header.info.get("CSQ")
    match = re.search(r"Format:\s*([^\"]+)", rec.description or "") if rec is not None else None
    return [f.strip() for f in match.group(1).split("|")] if match else []


def _csq_get(parts: list[str], col: dict[str, int], name: str) -> str | None:
    i = col.get(name)
    return (parts[i] or None) if i is not None and i < len(parts) else None


def _annotation(rec: Any, alt: str, sources: Sequence[str], csq: list[str]
                ) -> tuple[str | None, str | None, str | None]:
    """(gene, effect, protein change) for one ALT allele from the first INFO source present."""
    for src in sources:
        if src not in rec.header.info or src not in rec.info:
            continue
        value = rec.info[src]
        items = list(value) if isinstance(value, tuple) else [value]
        if src == "ANN":
            for item in items:
                parts = str(item).split("|")
                if len(parts) > _ANN_GENE and parts[_ANN_ALLELE] in (alt, ""):
                    hgvsp = parts[_ANN_HGVSP] if len(parts) > _ANN_HGVSP else ""
                    return parts[_ANN_GENE] or None, parts[_ANN_EFFECT] or None, hgvsp or None
        elif src == "CSQ" and csq:
            col = {name: i for i, name in enumerate(csq)}
            for item in items:
                parts = str(item).split("|")
                if "Allele" in col and parts[col["Allele"]] not in (alt, "", "-"):
                    continue
                symbol, consequence, csq_p = (_csq_get(parts, col, name)
                                              for name in ("SYMBOL", "Consequence", "HGVSp"))
                return symbol, consequence, csq_p.split(":")[-1] if csq_p else None
        else:
            symbol = str(items[0]).split(":")[0] if src == "GENEINFO" else str(items[0])
            effect = rec.info.get("EFFECT") if "EFFECT" in rec.header.info else None
            return symbol or None, None if effect is None else str(effect), None
    return None, None, None


def read_vcf(
    path: str | Path,
    patient_id: str,
    sample: str | None = None,
    genes_from: str = DEFAULT_GENE_SOURCES,
    *,
    pass_only: bool = True,
) -> pd.DataFrame:
    """The variants of ``sample`` (the only sample when None) as canonical mutation rows.

    Raises ``InvalidInput`` for a missing file, an unreadable header, an absent sample, or a
    header without ``FORMAT/AF`` and ``FORMAT/AD``; ``ValidationFailed`` when variants carry no
    gene annotation in any of ``genes_from`` (INFO keys separated by ``|``; row is the 1-based
    record). Records whose FILTER is not PASS are skipped when ``pass_only``.
    """
    import pysam

    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    try:
        vf = pysam.VariantFile(str(path))
    except (ValueError, OSError) as exc:
        raise InvalidInput(f"{path}: not a valid VCF/BCF (a header starting with "
                           f"##fileformat=VCFv4.x is needed): {exc}") from exc
    with vf:
        samples = list(vf.header.samples)
        if sample is None:
            if len(samples) != 1:
                raise InvalidInput(f"{path}: holds {len(samples)} samples ({', '.join(samples) or 'none'}); "
                                   "pass sample= to choose one")
            sample = samples[0]
        elif sample not in samples:
            raise InvalidInput(f"{path}: sample {sample!r} is not in the VCF; samples: "
                               f"{', '.join(samples) or 'none'}")
        formats = set(vf.header.formats)
        if not formats & {"AF", "AD"}:
            raise InvalidInput(f"{path}: neither FORMAT/AF nor FORMAT/AD is declared; "
                               "the variant allele fraction cannot be known")
        sources = [s.removeprefix("INFO/") for s in genes_from.split("|") if s]
        csq = _csq_fields(vf.header)
        rows: list[dict[str, Any]] = []
        problems: list[Problem] = []
        for k, rec in enumerate(vf.fetch() if vf.index is not None else vf, start=1):
            if pass_only and list(rec.filter) not in ([], ["PASS"]):
                continue
            call = rec.samples[sample]
            af = call.get("AF") if "AF" in formats else None
            ad = call.get("AD") if "AD" in formats else None
            dp = call.get("DP") if "DP" in formats else None
            for j, alt in enumerate(rec.alts or ()):
                gene, effect, protein = _annotation(rec, alt, sources, csq)
                if gene is None:
                    problems.append(Problem(k, "INFO", f"{rec.chrom}:{rec.pos} {rec.ref}>{alt} has "
                                            f"no gene in INFO {', '.join(sources)}"))
                    continue
                vaf = None
                if af is not None and j < len(af) and af[j] is not None:
                    vaf = _float7(af[j])
                elif ad is not None and len(ad) > j + 1 and ad[0] is not None and \
                        ad[j + 1] is not None and ad[0] + ad[j + 1] > 0:
                    vaf = ad[j + 1] / (ad[0] + ad[j + 1])
                depth = dp if dp is not None else (
                    sum(x for x in ad if x is not None) if ad is not None else None)
                rows.append({"patient_id": patient_id, "gene": gene, "vaf": vaf,
                             "protein_change": protein, "effect": effect, "chrom": rec.chrom,
                             "pos": rec.pos, "ref": rec.ref, "alt": alt, "depth": depth})
    if problems:
        raise ValidationFailed(problems, source=str(path))
    return pd.DataFrame({c: pd.array([r[c] for r in rows], dtype=_MUTATION_DTYPES[c])
                         for c in MUTATION_COLUMNS})


def write_vcf(mutations: pd.DataFrame, path: str | Path, sample: str, *, with_af: bool = True,
              with_ad: bool = True) -> Path:
    """Write mutation rows (with chrom, pos, ref, alt) as a one-sample VCF, atomically.

    ``AD`` is derived as (depth - alt reads, alt reads) with alt reads = round(vaf x depth) when
    both are known; ``AF`` is the VAF. Rows are written in the given order (sort them first
    for an indexable file).
    """
    import pysam

    need = [c for c in ("chrom", "pos", "ref", "alt", "gene") if c not in mutations]
    if need:
        raise InvalidInput(f"write_vcf: mutation table lacks column(s) {', '.join(need)}")
    header = pysam.VariantHeader()
    for chrom in dict.fromkeys(mutations["chrom"].astype(str)):
        header.contigs.add(chrom)
    header.info.add("GENE", 1, "String", "HGNC gene symbol")
    header.info.add("EFFECT", 1, "String", "molecular consequence")
    if with_ad:
        header.formats.add("AD", "R", "Integer", "Allelic depths for the ref and alt alleles")
    if with_af:
        header.formats.add("AF", "A", "Float", "Variant allele fraction")
    header.formats.add("DP", 1, "Integer", "Read depth")
    header.add_sample(sample)
    path = Path(path)
    with atomic_path(path) as tmp, pysam.VariantFile(str(tmp), "w", header=header) as out:
        for m in mutations.to_dict("records"):
            info = {"GENE": str(m["gene"])}
            if not pd.isna(m.get("effect", pd.NA)):
                info["EFFECT"] = str(m["effect"])
            rec = out.new_record(contig=str(m["chrom"]), start=int(m["pos"]) - 1,
                                 alleles=(str(m["ref"]), str(m["alt"])), info=info)
            call = rec.samples[sample]
            vaf, depth = m.get("vaf", pd.NA), m.get("depth", pd.NA)
            if not pd.isna(depth):
                call["DP"] = int(depth)
            if with_af and not pd.isna(vaf):
                call["AF"] = float(vaf)
            if with_ad and not pd.isna(vaf) and not pd.isna(depth):
                alt_reads = round(float(vaf) * int(depth))
                call["AD"] = (int(depth) - alt_reads, alt_reads)
            out.write(rec)
    return path
