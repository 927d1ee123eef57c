"""R's own survival datasets as hemafed cohorts over uneven federations, and R as the reference.

Nothing of R's data is committed: :func:`r_frames` runs ``Rscript`` once per test session and
exports lung, veteran, colon (deaths), pbc, myeloid and mgus2 to CSV in a temporary folder, with
each R column poured into a schema column of the same kind (the built-in schema is all the cohort
model accepts; the mapping is below). :func:`split_uneven` deals the rows to 2-10 sites of very
unequal sizes, one of them a single patient and one without any event. :func:`run_r` fits the
reference model with R on the *pooled* frame hemafed's sites hold (the same floats).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.model import Cohort
from hemafed.cohort.validate import validate_cohort

RSCRIPT = shutil.which("Rscript")
needs_r = pytest.mark.skipif(RSCRIPT is None, reason="Rscript (r-base-core) is not installed")

EXPORT = r"""
suppressMessages(library(survival))
out <- commandArgs(TRUE)[1]
w <- function(d, name) write.csv(d, file.path(out, paste0(name, ".csv")), row.names = FALSE)
w(with(lung, data.frame(days = time, os_status = status - 1, age = age,
     sex = ifelse(sex == 1, "M", "F"), bm_blast = ph.ecog, pb_blast = ph.karno,
     ring_sideroblasts = pat.karno, ldh = meal.cal, mono = wt.loss + 30)), "lung")
w(with(veteran, data.frame(days = time, os_status = status, hma = trt == 2,
     cyto_ipssr = c("Very Good", "Good", "Intermediate", "Poor")[as.integer(celltype)],
     bm_blast = karno, anc = diagtime, age = age, secondary = prior == 10)), "veteran")
co <- subset(colon, etype == 2)
w(with(co, data.frame(days = time, os_status = status,
     response = c("CR", "PR", "SD")[as.integer(rx)], sex = ifelse(sex == 1, "M", "F"),
     age = age, del5q = obstruct == 1, del7_7q = perfor == 1, complex = adhere == 1,
     anc = nodes, bm_blast = differ, pb_blast = extent, transplant = surg == 1)), "colon")
w(with(pbc, data.frame(days = time, os_status = as.integer(status == 2), age = age,
     sex = ifelse(sex == "m", "M", "F"), ring_sideroblasts = edema, wbc = bili, anc = albumin,
     mono = protime, ldh = ast, plt = chol, hma = trt == 1)), "pbc")
w(with(myeloid, data.frame(days = futime, os_status = death, hma = trt == "B",
     sex = ifelse(sex == "m", "M", "F"))), "myeloid")
w(with(mgus2, data.frame(months = futime, os_status = death, pmonths = ptime,
     amlt_status = pstat, age = age, sex = as.character(sex), hb = hgb, anc = creat,
     pb_blast = mspike)), "mgus2")
"""

DATASETS = ("lung", "veteran", "colon", "pbc", "myeloid", "mgus2")
STEPS_PER_UNIT = {"mgus2": 12.0}
"""Times are years on a lattice of days (365.25 a year), or of months for mgus2."""

MODELS = {
    "lung": "age + sex + bm_blast + pb_blast + ldh + mono",
    "veteran": "hma + cyto_ipssr + bm_blast + anc + age + secondary",
    "colon": "response + sex + age + del5q + del7_7q + complex + anc + bm_blast + pb_blast "
             "+ transplant",
    "pbc": "age + ring_sideroblasts + wbc + anc + mono + ldh",
    "myeloid": "hma + sex",
    "mgus2": "age + sex + hb + anc + pb_blast",
}
"""One Cox model per dataset, in schema columns (lung: ECOG, Karnofsky, calories, weight loss;
pbc: edema, bilirubin as ``wbc``, albumin, prothrombin time, AST; ...)."""

LEVELS = {"veteran": ("Very Good", "Good", "Intermediate", "Poor"),
          "colon": ("CR", "PR", "SD")}
"""Levels present in a dataset's categorical column (the first is the reference)."""

_CACHE: dict[str, pd.DataFrame] = {}


def r_frames() -> dict[str, pd.DataFrame]:
    """Every dataset as a hemafed patient frame (exported by Rscript once per session)."""
    if _CACHE:
        return _CACHE
    if RSCRIPT is None:
        pytest.skip("Rscript is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([RSCRIPT, "-e", EXPORT, tmp], capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"exporting R's datasets failed:\n{res.stderr[-2000:]}")
        for name in DATASETS:
            df = pd.read_csv(Path(tmp) / f"{name}.csv")
            spu = STEPS_PER_UNIT.get(name, 365.25)
            unit = "months" if name == "mgus2" else "days"
            df.insert(0, "os_time", df.pop(unit) / spu)
            if "pmonths" in df:
                df.insert(1, "amlt_time", df.pop("pmonths") / spu)
            df.insert(0, "patient_id", [f"{name}{i:05d}" for i in range(len(df))])
            df.insert(1, "disease", "MDS")
            _CACHE[name] = df
    return _CACHE


def split_uneven(df: pd.DataFrame, n_sites: int, seed: int = 0) -> dict[str, Cohort]:
    """``n_sites`` sites of very unequal sizes: site00 holds one patient, site01 only censored
    patients (no event); the rest take Dirichlet(0.7) shares. With 2 sites, site00 is a single
    censored patient and site01 the rest."""
    rng = np.random.default_rng(seed)
    event = df["os_status"].to_numpy() == 1
    censored = rng.permutation(np.flatnonzero(~event))
    if n_sites == 2:
        parts = [censored[:1], np.setdiff1d(np.arange(len(df)), censored[:1])]
    else:
        single = rng.choice(np.flatnonzero(event), 1)
        no_events = censored[:5]
        rest = rng.permutation(np.setdiff1d(np.arange(len(df)), np.r_[single, no_events]))
        shares = rng.dirichlet(np.full(n_sites - 2, 0.7))
        cuts = np.clip((np.cumsum(shares)[:-1] * rest.size).astype(int), 1, rest.size - 1)
        parts = [single, no_events, *np.split(rest, np.unique(cuts))]
    return {f"site{i:02d}": validate_cohort(df.iloc[np.sort(p)].reset_index(drop=True))
            for i, p in enumerate(parts)}


def run_r(script: str, frame: pd.DataFrame, timeout: float = 120) -> pd.DataFrame:
    """Run an R ``script`` that reads data frame ``d`` and assigns a data frame ``out``."""
    return run_r_batch({"job": (script, frame)}, timeout)["job"]


def run_r_batch(jobs: dict[str, tuple[str, pd.DataFrame]], timeout: float = 300
                ) -> dict[str, pd.DataFrame]:
    """Several ``(script, frame)`` jobs (see :func:`run_r`) in one R process (R starts slowly)."""
    if RSCRIPT is None:
        pytest.skip("Rscript is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        body = ["suppressMessages({library(survival); library(cmprsk)})"]
        for i, (script, frame) in enumerate(jobs.values()):
            bools = [c for c in frame.columns if pd.api.types.is_bool_dtype(frame[c])]
            frame.astype({c: "Int64" for c in bools}).to_csv(Path(tmp) / f"d{i}.csv",
                                                              index=False)
            body.append(f"local({{ d <- read.csv('{tmp}/d{i}.csv', stringsAsFactors = FALSE)\n"
                        f"{script}\nwrite.csv(out, '{tmp}/out{i}.csv') }})")
        (Path(tmp) / "run.R").write_text("\n".join(body) + "\n")
        res = subprocess.run([RSCRIPT, str(Path(tmp) / "run.R")], capture_output=True,
                             text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"R failed:\n{res.stderr[-2000:]}")
        return {key: pd.read_csv(Path(tmp) / f"out{i}.csv", index_col=0)
                for i, key in enumerate(jobs)}


HEART_COX_R = """
m <- coxph(Surv(start, stop, event) ~ age + year + surgery + transplant, data = d,
           ties = "{ties}", control = coxph.control(eps = 1e-13, iter.max = 100))
out <- data.frame(coef = coef(m), se = sqrt(diag(vcov(m))), n = m$n, nevent = m$nevent,
                  loglik = m$loglik[2])
"""
"""R's start-stop Cox on ``heart`` (``d``), the reference of the long-format fits; ``{ties}``
is ``efron`` or ``breslow``."""


@functools.cache
def _heart() -> pd.DataFrame:
    if RSCRIPT is None:
        pytest.skip("Rscript is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "heart.csv"
        res = subprocess.run([RSCRIPT, "-e", f"library(survival); d <- heart; "
                              f"d$transplant <- as.integer(as.character(d$transplant)); "
                              f"write.csv(d, '{out}', row.names = FALSE)"],
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            pytest.skip(f"R's survival::heart is unavailable: {res.stderr[-300:]}")
        d = pd.read_csv(out)
    d.insert(0, "patient_id", [f"heart{int(i):03d}" for i in d.pop("id")])
    return d


def r_heart() -> pd.DataFrame:
    """R's ``survival::heart`` (start-stop rows, one id per patient as ``patient_id``), exported
    once per session; skips when R or the dataset is unavailable."""
    return _heart().copy()
