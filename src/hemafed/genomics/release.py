"""Release control of GWAS summary statistics: a minimum minor allele count, the membership-
inference caveat, top hits with nearest genes, and export in the GWAS-SSF tab-separated format.

Genome-wide summary statistics of a small cohort can reveal whether a known person took part
(Homer et al. 2008; Sankararaman et al. 2009): with a person's genotypes, an attacker compares
them with the released allele frequencies or effect sizes over many variants, and the evidence
accumulates with the number of variants released divided by the number of participants. A
minimum minor allele count removes the rarest variants (the most identifying); it does not remove
the risk. Release genome-wide results of a few hundred patients only to approved researchers, or
with differential privacy (``FederatedGWAS(dp=...)``, noise on the pooled sums, charged to every
site's ledger), and state :data:`MEMBERSHIP_CAVEAT` with them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.atomic import write_text
from hemafed.errors import InvalidInput
from hemafed.genomics.loci import nearest_gene

MEMBERSHIP_CAVEAT = (
    "Genome-wide summary statistics of a small cohort allow membership inference: someone holding "
    "a person's genotypes can test whether that person is in the cohort, with power growing with "
    "the number of variants released per participant. Variants below the minimum minor allele "
    "count are withheld; this reduces, but does not remove, the risk. Share with approved "
    "researchers only, or release with differential privacy.")

SSF_COLUMNS = ("chromosome", "base_pair_location", "effect_allele", "other_allele", "beta",
               "standard_error", "effect_allele_frequency", "p_value", "variant_id", "rsid", "n")
"""GWAS-SSF (GWAS Catalog summary-statistics format 1.0) mandatory columns in their order, then
the optional ``variant_id``, ``rsid`` and ``n``."""


def withhold_rare(summary: pd.DataFrame, min_mac: int) -> pd.DataFrame:
    """Rows with minor allele count >= ``min_mac`` (the others are not released)."""
    if min_mac < 0:
        raise InvalidInput(f"min_mac must be >= 0, got {min_mac}")
    return summary[summary["mac"] >= min_mac].reset_index(drop=True)


def top_hits(summary: pd.DataFrame, n: int = 10, threshold: float = 5e-8) -> pd.DataFrame:
    """The ``n`` smallest p-values (all below ``threshold`` first), with the nearest gene."""
    top = summary.nsmallest(n, "p").copy()
    top["nearest_gene"] = [nearest_gene(c, int(p)) for c, p in zip(top["chrom"], top["pos"],
                                                                   strict=True)]
    top["genome_wide"] = top["p"] < threshold
    return top.reset_index(drop=True)


def to_ssf(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary in GWAS-SSF columns (effect allele = ALT; ``#NA`` for missing values)."""
    rsid = summary["id"].where(summary["id"].str.match(r"^rs\d+$"), "#NA")
    return pd.DataFrame({
        "chromosome": summary["chrom"].astype(str), "base_pair_location": summary["pos"],
        "effect_allele": summary["alt"], "other_allele": summary["ref"], "beta": summary["beta"],
        "standard_error": summary["se"], "effect_allele_frequency": summary["a1_freq"],
        "p_value": summary["p"],
        "variant_id": summary["chrom"].astype(str) + "_" + summary["pos"].astype(str) + "_"
                      + summary["ref"] + "_" + summary["alt"],
        "rsid": rsid, "n": summary["n"].astype(int)}, columns=list(SSF_COLUMNS))


def ssf_text(summary: pd.DataFrame, *, min_mac: int) -> str:
    """GWAS-SSF TSV text of the released rows (``mac >= min_mac``), sorted by position."""
    ssf = to_ssf(withhold_rare(summary, min_mac))
    order = np.lexsort((ssf["base_pair_location"].to_numpy(),
                        ssf["chromosome"].map(_chrom_rank).to_numpy()))
    return ssf.iloc[order].to_csv(sep="\t", index=False, na_rep="#NA", float_format="%.6g")


def write_ssf(summary: pd.DataFrame, path: str | Path, *, min_mac: int) -> Path:
    """Write released rows (``mac >= min_mac``), sorted by position, as a GWAS-SSF TSV."""
    write_text(path, ssf_text(summary, min_mac=min_mac))
    return Path(path)


def ssf_metadata(file_name: str, text: str, *, trait: str, n: int, build: str,
                 study_id: str) -> dict[str, object]:
    """The GWAS-SSF YAML metadata of one summary-statistics file."""
    import datetime as dt
    import hashlib

    return {"file_type": "GWAS-SSF v1.0", "data_file_name": file_name,
            "data_file_md5sum": hashlib.md5(text.encode(), usedforsecurity=False).hexdigest(),
            "is_harmonised": False, "is_sorted": True, "genome_assembly": build,
            "coordinate_system": "1-based", "trait_description": [trait],
            "samples": [{"sample_size": int(n), "sample_ancestry": ["not reported"]}],
            "analysis_software": "hemafed federated GWAS (secure sums; equal to PLINK 2 --glm)",
            "gwas_id": study_id, "date_metadata_last_modified": dt.date.today().isoformat(),
            "minimum_minor_allele_count": None, "caveat": MEMBERSHIP_CAVEAT}


def write_study_ssf(analysis: dict[str, object], out_dir: str | Path, study_id: str
                    ) -> list[Path]:
    """``<id>.tsv`` (GWAS-SSF) and ``<id>.tsv-meta.yaml`` of a study's gwas analysis result
    (its ``ssf`` entry), written atomically into ``out_dir``."""
    import yaml

    doc = analysis.get("ssf")
    if not isinstance(doc, dict):
        return []
    out = Path(out_dir)
    name = f"{analysis['id']}.tsv"
    text = str(doc["text"])
    meta = ssf_metadata(name, text, trait=str(doc["trait"]), n=int(doc["n"]),
                        build=str(doc["build"]), study_id=study_id)
    meta["minimum_minor_allele_count"] = int(doc["min_mac"])
    if "dropped_by_site_disclosure_rule" in doc:
        # variants some site left out (its own class minimum): not in the file
        meta["variants_dropped_by_site_disclosure_rule"] = int(
            doc["dropped_by_site_disclosure_rule"])
    write_text(out / name, text)
    write_text(out / f"{name}-meta.yaml", yaml.safe_dump(meta, sort_keys=False))
    return [out / name, out / f"{name}-meta.yaml"]


def _chrom_rank(c: str) -> int:
    return int(c) if c.isdigit() else {"X": 23, "Y": 24, "MT": 25}.get(c, 26)
