"""Gene symbols hemafed accepts (HGNC approved symbols and the legacy aliases labs still export).

The list covers myeloid, lymphoid and myeloma sequencing panels in routine use. A symbol outside
it is reported as "unknown gene symbol" at validation; a site with a wider panel extends it with
``extra_genes`` in its site configuration rather than by silently accepting anything.
"""

from __future__ import annotations

# Legacy symbols that public cohorts and older panels still use, mapped to the approved symbol.
ALIASES: dict[str, str] = {
    "MLL": "KMT2A",
    "WHSC1": "NSD2",
    "FAM175A": "ABRAXAS1",
    "H3F3A": "H3-3A",
    "PAPD5": "TENT4B",
    "C17orf97": "LIAT1",
}

# Pseudo-genes for structural events reported by panels as if they were genes.
EVENTS: frozenset[str] = frozenset({"MLL_PTD", "KMT2A_PTD", "FLT3_ITD", "FLT3_TKD"})

_APPROVED = """
ABL1 ABRAXAS1 ARID1A ARID2 ASXL1 ASXL2 ASXL3 ATM ATRX B2M BAP1 BCL10 BCL2 BCL6 BCOR BCORL1 BIRC3
BLM BRAF BRCA1 BRCA2 BRCC3 BTK CALR CARD11 CBL CBLB CBFB CCND1 CCND2 CCND3 CD79A CD79B CDK4 CDKN1B
CDKN2A CDKN2B CDKN2C CEBPA CHEK2 CREBBP CRLF2 CSF1R CSF3R CSNK1A1 CTCF CUL2 CUX1 CXCR4 CYLD DCK
DDX23 DDX3X DDX4 DDX41 DDX54 DHX33 DICER1 DIS3 DNMT3A DNMT3B EED EGFR EGR1 EP300 ETNK1 ETV6 EZH2
FAM46C FANCA FAT1 FBXW7 FGFR3 FLT3 GATA1 GATA2 GATA3 GFI1 GNAS GNB1 H3-3A HBB HBA1 HBA2 HIPK2 HRAS
IDH1 IDH2 IKZF1 IKZF3 IL7R IRF1 IRF4 IRF8 JAK1 JAK2 JAK3 JARID2 KANSL1 KDM5C KDM6A KIT KLF2 KMT2A
KMT2C KMT2D KMT2E KRAS LIAT1 LUC7L2 MAF MAFB MAP2K1 MDM2 MECOM MED12 MGA MPL MYC MYD88 NF1 NF2 NFE2
NFKBIA NIPBL NOTCH1 NOTCH2 NPM1 NRAS NSD2 NXF1 PAX5 PDS5B PHF6 PIGA PIK3CA PML POT1 PPFIA2 PPM1D
PRDM1 PRPF40A PRPF8 PTEN PTPN11 PTPRD PTPRF PTPRT RAC1 RAD21 RAD50 RARA RB1 RBBP4 RIT1 ROBO1 ROBO2
RRAS RUNX1 RUNX1T1 S100B SAMHD1 SETBP1 SETD2 SF1 SF3A1 SF3B1 SH2B3 SMC1A SMC3 SMG1 SPP1 SPRED2
SRCAP SRSF2 STAG1 STAG2 STAT3 STAT5A STAT5B SUZ12 TENT4B TENT5C TERT TET2 TNFAIP3 TP53 TRAF3 U2AF1
U2AF2 UBA1 WT1 XPO1 ZBTB33 ZMYM3 ZNF318 ZRSR2
"""

APPROVED: frozenset[str] = frozenset(_APPROVED.split())
KNOWN: frozenset[str] = APPROVED | frozenset(ALIASES) | EVENTS


def is_known(symbol: str, extra: frozenset[str] = frozenset()) -> bool:
    """True if ``symbol`` is an approved symbol, a legacy alias, a panel event or in ``extra``."""
    return symbol in KNOWN or symbol in extra
