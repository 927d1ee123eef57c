"""Reads the Tazi et al. 2022 AML cohorts (R write.table format) into canonical columns plus
genes, for the ELN tests. A reference construction kept apart from the canonical readers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FLAGS = {"t(8;21)": "t_8_21", "inv(16)": "inv_16", "t(15;17)": "t_15_17", "t(9;11)": "t_9_11",
         "t(v;11)": "t_v_11", "t(6;9)": "t_6_9", "t(9;22)": "t_9_22", "inv(3)": "inv_3",
         "-5": "minus5", "-7": "minus7", "-17": "minus17", "complex": "complex",
         "ITD": "FLT3_ITD", "CEBPA_bi": "CEBPA_bi"}
CODES = {1: "adverse", 2: "intermediate", 3: "favorable"}


def read_r_table(path: Path) -> pd.DataFrame:
    """R write.table: space separated, quoted header one field short (first field = row name)."""
    return pd.read_csv(path, sep=" ", index_col=0)


def load(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """(patients with canonical flag names and gene columns, published ELN 2017 class)."""
    raw = read_r_table(path)
    out = raw.rename(columns=FLAGS).copy()
    out.insert(0, "patient_id", raw.index.astype(str))
    eln = raw["eln_2017"].map(lambda v: CODES.get(v, v))
    return out.reset_index(drop=True), pd.Series(eln.to_numpy(), index=out["patient_id"])
