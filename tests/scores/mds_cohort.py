"""Builds the authors'-calculator input table of the real MDS IPSS-M cohort from its raw files
(df_clinical, df_mut, maf for VAF, df_cna), for the tests that compare with the published scores.

Kept in tests on purpose: it is a reference construction, independent of the canonical readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.scores.ipssm import ALL_GENES

CYTO = {"Very-Good": "Very Good", "Good": "Good", "Int": "Intermediate", "Poor": "Poor",
        "Very-Poor": "Very Poor"}


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(calculator input table, clinical table with the published scores), both in ID order."""
    clin = pd.read_csv(folder / "df_clinical.tsv", sep="\t")
    mut = pd.read_csv(folder / "df_mut.tsv", sep="\t").set_index("ID").reindex(clin["ID"])
    cna = pd.read_csv(folder / "df_cna.tsv", sep="\t").set_index("ID").reindex(clin["ID"])
    maf = pd.read_csv(folder / "maf.tsv", sep="\t")
    tp53 = maf[maf["GENE"] == "TP53"]
    n_tp53 = tp53.groupby("ID").size().reindex(clin["ID"]).fillna(0).to_numpy()
    vaf = tp53.groupby("ID")["VAF"].max().reindex(clin["ID"]).fillna(0).to_numpy()
    table = pd.DataFrame({
        "ID": clin["ID"].to_numpy(),
        "HB": clin["HB"].to_numpy(), "PLT": clin["PLT"].to_numpy(),
        "BM_BLAST": clin["BM_BLAST"].to_numpy(),
        "CYTO_IPSSR": clin["CYTO_IPSSR"].map(CYTO).to_numpy(),
        "del5q": cna["del5q"].to_numpy(),
        "del7_7q": ((cna["del7"] == 1) | (cna["del7q"] == 1)).astype(int).to_numpy(),
        "del17_17p": ((cna["del17"] == 1) | (cna["del17p"] == 1)).astype(int).to_numpy(),
        "complex": (clin["complex"] == "complex").astype(int).to_numpy(),
        "TP53mut": np.where(n_tp53 >= 2, "2 or more", np.where(n_tp53 == 1, "1", "0")),
        "TP53maxvaf": vaf,
        "TP53loh": clin["chr17"].isin(["cnloh", "del"]).astype(int).to_numpy(),
    })
    for g in ALL_GENES:
        if g == "FLT3":
            table[g] = ((mut["FLT3"] == 1) | (mut["FLT3_ITD"] == 1)).astype(int).to_numpy()
        else:
            table[g] = mut[g].to_numpy()
    table["ANC"] = clin["ANC"].to_numpy()
    table["AGE"] = clin["AGE"].to_numpy()
    return table, clin
