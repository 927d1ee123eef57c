"""VCF intake: VAF from AF or AD, gene from ANN / CSQ / GENE, and specific errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hemafed.cohort.io.vcf import read_vcf, write_vcf
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput, ValidationFailed

HEADER = """##fileformat=VCFv4.2
##contig=<ID=17>
##contig=<ID=2>
{info}##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">
##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Depth">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{samples}
"""

MUTS = pd.DataFrame({
    "patient_id": ["p1", "p1"], "gene": ["TP53", "SF3B1"], "vaf": [0.45, None],
    "protein_change": [None, None], "effect": ["missense_variant", None], "chrom": ["17", "2"],
    "pos": [7577538, 198266834], "ref": ["C", "T"], "alt": ["T", "C"], "depth": [800, 600]})


def _write(tmp_path: Path, body: str, info: str = "", samples: str = "TUMOR") -> Path:
    path = tmp_path / "calls.vcf"
    path.write_text(HEADER.format(info=info, samples=samples) + body)
    return path


def test_written_vcf_reads_back_with_af_and_validates_into_a_cohort(tmp_path: Path) -> None:
    path = write_vcf(MUTS, tmp_path / "p1.vcf", "TUMOR")
    muts = read_vcf(path, "p1")
    assert muts["gene"].tolist() == ["TP53", "SF3B1"]
    assert muts["vaf"].iloc[0] == 0.45  # FORMAT/AF (32-bit float) read back to the written decimal
    assert pd.isna(muts["vaf"].iloc[1])
    assert muts["depth"].tolist() == [800, 600]
    assert muts["effect"].iloc[0] == "missense_variant"
    patients = pd.DataFrame({"patient_id": ["p1"], "disease": ["MDS"], "panel": ["m"]})
    cohort = validate_cohort(patients, muts, {"m": ["TP53", "SF3B1"]})
    assert str(cohort.mutations["pos"].dtype) == "Int64"


def test_vaf_is_computed_from_ad_when_af_is_absent(tmp_path: Path) -> None:
    path = write_vcf(MUTS, tmp_path / "p1.vcf", "TUMOR", with_af=False)
    muts = read_vcf(path, "p1")
    # AD written as (800 - 360, 360): 360 / 800 = 0.45 by hand
    assert muts["vaf"].iloc[0] == pytest.approx(360 / 800)


def test_snpeff_ann_multiallelic_and_filtered_records(tmp_path: Path) -> None:
    info = '##INFO=<ID=ANN,Number=.,Type=String,Description="Functional annotations">\n' \
           '##FILTER=<ID=LowQual,Description="low">\n'
    ann = ("ANN=T|missense_variant|MODERATE|TP53|ENSG1|transcript|ENST1|protein_coding|5/11|"
           "c.743G>A|p.Arg248Gln,G|stop_gained|HIGH|TP53|ENSG1|transcript|ENST1|protein_coding|"
           "5/11|c.743G>C|p.Arg248*")
    body = (f"17\t7577538\t.\tC\tT,G\t.\tPASS\t{ann}\tAD:DP\t50,30,20:100\n"
            f"2\t198266834\t.\tT\tC\t.\tLowQual\tANN=C|missense_variant|MODERATE|SF3B1\tAD\t5,5\n")
    muts = read_vcf(_write(tmp_path, body, info), "p1")
    assert muts["alt"].tolist() == ["T", "G"]
    assert muts["protein_change"].tolist() == ["p.Arg248Gln", "p.Arg248*"]
    assert muts["effect"].tolist() == ["missense_variant", "stop_gained"]
    # biallelic fraction of each ALT against REF: 30/(50+30), 20/(50+20)
    assert muts["vaf"].tolist() == pytest.approx([30 / 80, 20 / 70])
    assert len(read_vcf(_write(tmp_path, body, info), "p1", pass_only=False)) == 3


def test_vep_csq_fields_are_read_by_name(tmp_path: Path) -> None:
    info = ('##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from '
            'Ensembl VEP. Format: Allele|Consequence|IMPACT|SYMBOL|HGVSp">\n')
    body = "17\t7577538\t.\tC\tT\t.\t.\tCSQ=T|missense_variant|MODERATE|TP53|ENSP1:p.Arg248Gln\tAD\t70,30\n"
    muts = read_vcf(_write(tmp_path, body, info), "p1")
    assert (muts["gene"].iloc[0], muts["protein_change"].iloc[0]) == ("TP53", "p.Arg248Gln")
    assert muts["vaf"].iloc[0] == pytest.approx(0.3)


def test_bad_header_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bad.vcf").write_text("17\t7577538\t.\tC\tT\t.\t.\t.\n")
    with pytest.raises(InvalidInput, match=r"bad\.vcf: not a valid VCF/BCF"):
        read_vcf(tmp_path / "bad.vcf", "p1")


def test_missing_or_ambiguous_sample_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "", samples="TUMOR\tNORMAL")
    with pytest.raises(InvalidInput, match="sample 'BLOOD' is not in the VCF; samples: TUMOR, NORMAL"):
        read_vcf(path, "p1", sample="BLOOD")
    with pytest.raises(InvalidInput, match=r"holds 2 samples \(TUMOR, NORMAL\); pass sample="):
        read_vcf(path, "p1")


def test_vcf_without_ad_or_af_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noad.vcf"
    path.write_text("##fileformat=VCFv4.2\n##contig=<ID=17>\n"
                    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS\n"
                    "17\t5\t.\tC\tT\t.\t.\t.\tGT\t0/1\n")
    with pytest.raises(InvalidInput, match="neither FORMAT/AF nor FORMAT/AD is declared"):
        read_vcf(path, "p1")


def test_variant_without_gene_annotation_is_reported(tmp_path: Path) -> None:
    body = "17\t7577538\t.\tC\tT\t.\t.\t.\tAD\t70,30\n"
    with pytest.raises(ValidationFailed, match=r"row 1, column 'INFO': 17:7577538 C>T has no gene"):
        read_vcf(_write(tmp_path, body), "p1")
