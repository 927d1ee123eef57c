"""Shared seeded survival frames of the analytics tests: MDS-like patients with covariate
effects on a 30-day lattice (:func:`make_survival_frame`), split over heterogeneous sites
(:func:`split_sites`), and a treated/untreated frame with confounding (:func:`treated_frame`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.cohort.validate import validate_cohort

__all__ = ["CYTO", "make_survival_frame", "split_sites", "treated_frame"]

CYTO = ("Very Good", "Good", "Intermediate", "Poor", "Very Poor")


def make_survival_frame(n: int = 600, seed: int = 7, days_per_step: int = 30) -> pd.DataFrame:
    """Seeded MDS-like patients: exponential OS with covariate effects, times on a 30-day
    lattice (so ties are frequent), uniform censoring, some missing covariates."""
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(70, 10, n).clip(20, 100), 1)
    hb = np.round(rng.normal(10, 1.8, n).clip(4, 16), 1)
    plt_ = np.round(rng.lognormal(5, 0.7, n).clip(5, 1500))
    sex = rng.choice(["M", "F"], n, p=[0.6, 0.4])
    cyto = rng.choice(CYTO, n, p=[0.05, 0.55, 0.2, 0.1, 0.1])
    lp = (0.03 * (age - 70) - 0.15 * (hb - 10) + 0.3 * (sex == "M")
          + np.select([cyto == "Poor", cyto == "Very Poor"], [0.7, 1.4], 0.0))
    t = rng.exponential(4.0 * np.exp(-lp))
    c = rng.uniform(0.5, 10, n)
    steps = np.maximum(1, np.ceil(np.minimum(t, c) * 365.25 / days_per_step))
    time = steps * days_per_step / 365.25
    df = pd.DataFrame({
        "patient_id": [f"p{i:04d}" for i in range(n)], "disease": "MDS", "sex": sex,
        "age": age, "hb": hb, "plt": plt_, "cyto_ipssr": cyto,
        "os_time": time, "os_status": (t <= c).astype(int)})
    df.loc[rng.choice(n, 12, replace=False), "hb"] = np.nan
    return df


def split_sites(df: pd.DataFrame, n_sites: int = 10, seed: int = 1) -> dict[str, Cohort]:
    """Heterogeneous sites: unequal sizes, assignment correlated with age."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(n_sites) * 2)
    order = np.argsort(df["age"].to_numpy() + rng.normal(0, 8, len(df)))
    cuts = (np.cumsum(weights)[:-1] * len(df)).astype(int)
    return {f"site{i:02d}": validate_cohort(df.iloc[np.sort(idx)].reset_index(drop=True))
            for i, idx in enumerate(np.split(order, cuts))}


def treated_frame(n: int = 700, seed: int = 11) -> pd.DataFrame:
    """Seeded MDS-like patients: treatment more likely when older and anaemic, OS times on a
    30-day lattice (ties), censoring, a few missing haemoglobin values."""
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(70, 9, n).clip(25, 100), 1)
    hb = np.round(rng.normal(10, 1.7, n).clip(4, 16), 1)
    sex = rng.choice(["M", "F"], n, p=[0.6, 0.4])
    eta = -0.3 + 0.04 * (age - 70) - 0.25 * (hb - 10) + 0.3 * (sex == "M")
    hma = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(int)
    lp = 0.03 * (age - 70) - 0.15 * (hb - 10) - 0.35 * hma
    t = rng.exponential(3.5 * np.exp(-lp))
    c = rng.uniform(0.3, 9, n)
    steps = np.maximum(1, np.ceil(np.minimum(t, c) * 365.25 / 30))
    df = pd.DataFrame({"patient_id": [f"p{i:04d}" for i in range(n)], "disease": "MDS",
                       "sex": sex, "age": age, "hb": hb, "hma": hma,
                       "os_time": steps * 30 / 365.25, "os_status": (t <= c).astype(int)})
    df.loc[rng.choice(n, 10, replace=False), "hb"] = np.nan
    return df
