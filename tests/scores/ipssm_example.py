"""The IPSS-M authors' published example patients (shared by the IPSS-M tests)."""

from __future__ import annotations

__all__ = ["EXAMPLE"]

# inst/extdata/IPSSMexample.csv of papaemmelab/ipssm, typed in by hand.
EXAMPLE = """ID,HB,PLT,BM_BLAST,del5q,del7_7q,complex,CYTO_IPSSR,del17_17p,TP53mut,TP53maxvaf,TP53loh,MLL_PTD,FLT3,ASXL1,BCOR,BCORL1,CBL,CEBPA,DNMT3A,ETV6,EZH2,IDH1,IDH2,KRAS,NF1,NPM1,NRAS,RUNX1,SETBP1,SF3B1,SRSF2,STAG2,U2AF1,ETNK1,GATA2,GNB1,PHF6,PPM1D,PRPF8,PTPN11,WT1
pp347,9.6,281,9,0,0,0,Good,0,0,NA,0,0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,NA,0,NA,0,0,NA,0,0
pp564,7.5,23,16,1,1,1,Very Poor,0,1,0.85,1,0,0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0
zeroScore,10,10,10,0,0,0,Very Good,0,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0
"""
