"""Public reference facts the genomics code needs: GRCh38 chromosome lengths, the HbF loci planted
in the virtual cohort, and a small gene table for naming the nearest gene of a hit.

Positions are GRCh38 (1-based). The three HbF lead variants are the published positive controls
of SCD GWAS (Lettre 2008, Bhatnagar 2011): BCL11A rs1427407, HBS1L-MYB rs9399137 and the Xmn1-HBG2
site rs7482144. Their coordinates and the gene spans below were transcribed by hand from dbSNP /
Ensembl GRCh38 and are used as documented stand-ins: the simulator places a simulated causal
variant at each position, and nothing here is used to interpret real data clinically.
"""

from __future__ import annotations

from dataclasses import dataclass

GRCH38_LENGTHS: dict[str, int] = {
    "1": 248956422, "2": 242193529, "3": 198295559, "4": 190214555, "5": 181538259,
    "6": 170805979, "7": 159345973, "8": 145138636, "9": 138394717, "10": 133797422,
    "11": 135086622, "12": 133275309, "13": 114364328, "14": 107043718, "15": 101991189,
    "16": 90338345, "17": 83257441, "18": 80373285, "19": 58617616, "20": 64444167,
    "21": 46709983, "22": 50818468, "X": 156040895, "Y": 57227415,
}
"""Autosome and sex-chromosome lengths of GRCh38 (primary assembly)."""

GRCH37_LENGTHS: dict[str, int] = {
    "1": 249250621, "2": 243199373, "3": 198022430, "4": 191154276, "5": 180915260,
    "6": 171115067, "7": 159138663, "8": 146364022, "9": 141213431, "10": 135534747,
    "11": 135006516, "12": 133851895, "13": 115169878, "14": 107349540, "15": 102531392,
    "16": 90354753, "17": 81195210, "18": 78077248, "19": 59128983, "20": 63025520,
    "21": 48129895, "22": 51304566, "X": 155270560, "Y": 59373566,
}

BUILD_LENGTHS = {"GRCh38": GRCH38_LENGTHS, "GRCh37": GRCH37_LENGTHS}


@dataclass(frozen=True)
class Locus:
    """A planted positive control: lead variant id, GRCh38 position and the gene it is named by."""

    rsid: str
    chrom: str
    pos: int
    gene: str

    def __post_init__(self) -> None:
        if self.chrom not in GRCH38_LENGTHS or not 0 < self.pos <= GRCH38_LENGTHS[self.chrom]:
            raise ValueError(f"{self.rsid}: {self.chrom}:{self.pos} is not on GRCh38")


HBF_LOCI: tuple[Locus, ...] = (
    Locus("rs1427407", "2", 60490908, "BCL11A"),
    Locus("rs9399137", "6", 135097880, "HBS1L-MYB"),
    Locus("rs7482144", "11", 5254781, "HBG2"),
)

# (symbol, chrom, start, end), GRCh38: the genes of the planted regions and a few landmarks on
# the null segments, enough for "nearest gene" in reports of the virtual cohort
GENES: tuple[tuple[str, str, int, int], ...] = (
    ("BCL11A", "2", 60450520, 60554467), ("PAPOLG", "2", 60756247, 60824485),
    ("REL", "2", 60881491, 60931612), ("HBS1L", "6", 134960378, 135054822),
    ("MYB", "6", 135181315, 135219173), ("AHI1", "6", 135283532, 135497786),
    ("HBB", "11", 5225464, 5229395), ("HBD", "11", 5232838, 5234483),
    ("HBG1", "11", 5248269, 5249857), ("HBG2", "11", 5253188, 5254781),
    ("HBE1", "11", 5268345, 5269945), ("OR51B5", "11", 5342363, 5343310),
    ("APOL1", "22", 36253010, 36267530), ("G6PD", "X", 154531390, 154547572),
    ("DARC", "1", 159204875, 159206500), ("HMOX1", "22", 35381096, 35394207),
    ("KLF1", "19", 12884422, 12887201), ("SOX6", "11", 15966449, 16739590),
    ("ANTXR1", "2", 69013171, 69259748), ("FHIT", "3", 59747277, 61251459),
    ("CDH13", "16", 82626969, 83800640), ("PTPRD", "9", 8314246, 10613002),
    ("CSMD1", "8", 2935353, 4994972), ("RBFOX1", "16", 5239802, 7713340),
    ("LRP1B", "2", 140231423, 142131016), ("MACROD2", "20", 13995369, 16053197),
)


def nearest_gene(chrom: str, pos: int, max_distance: int = 1_000_000) -> str:
    """The gene of :data:`GENES` overlapping or nearest to ``chrom:pos`` ('' if none within range)."""
    best, best_d = "", max_distance + 1
    for symbol, c, start, end in GENES:
        if c != str(chrom):
            continue
        d = 0 if start <= pos <= end else min(abs(pos - start), abs(pos - end))
        if d < best_d:
            best, best_d = symbol, d
    return best
