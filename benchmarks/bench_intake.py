"""Intake speed: a 100,000-patient canonical CSV through ``read_cohort`` and a 10,000-resource FHIR
bundle through ``read_fhir_bundle``. Self-contained synthetic data (numpy, seed 7).

Run: ``.venv/bin/python benchmarks/bench_intake.py [--patients 100000] [--resources 10000]``.
Prints a markdown table with machine information. Goals: CSV < 10 s, FHIR < 20 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hemafed.cohort.io import read_cohort
from hemafed.cohort.io.fhir import read_fhir_bundle, write_fhir_bundle
from hemafed.cohort.validate import validate_cohort

PANEL = ("TP53", "SF3B1", "ASXL1", "RUNX1", "TET2", "DNMT3A", "SRSF2", "NPM1", "FLT3", "KRAS")


def synthetic_tables(n: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical patient and mutation tables of ``n`` synthetic patients (not real people)."""
    rng = np.random.default_rng(seed)
    disease = rng.choice(["MDS", "AML", "MM", "SCD"], size=n, p=[0.4, 0.3, 0.2, 0.1])
    myeloid = np.isin(disease, ["MDS", "AML"])

    def maybe(values: np.ndarray, p_missing: float = 0.05) -> np.ndarray:
        out = values.astype(float)
        out[rng.random(n) < p_missing] = np.nan
        return out

    os_time = np.round(rng.exponential(3.0, n), 3)
    patients = pd.DataFrame({
        "patient_id": [f"P{i:07d}" for i in range(n)],
        "disease": disease,
        "sex": rng.choice(["M", "F"], size=n),
        "age": np.round(rng.uniform(18, 90, n), 1),
        "hb": maybe(np.round(rng.uniform(6, 15, n), 1)),
        "plt": maybe(np.round(rng.uniform(10, 400, n), 0)),
        "anc": maybe(np.round(rng.uniform(0.1, 8, n), 2)),
        "bm_blast": np.where(myeloid, np.round(rng.uniform(0, 30, n), 1), np.nan),
        "ldh": maybe(np.round(rng.uniform(100, 900, n), 0)),
        "os_time": np.minimum(os_time, 60.0),
        "os_status": rng.integers(0, 2, n),
        "panel": np.where(myeloid, "myeloid", ""),
    })
    carriers = np.flatnonzero(myeloid & (rng.random(n) < 0.5))
    mutations = pd.DataFrame({
        "patient_id": patients["patient_id"].to_numpy()[carriers],
        "gene": rng.choice(PANEL, size=len(carriers)),
        "vaf": np.round(rng.uniform(0.02, 0.9, len(carriers)), 3),
    })
    return patients, mutations


def _timed(fn, *args, **kw):  # type: ignore[no-untyped-def]
    """(result, (wall seconds, CPU seconds)); CPU time shows the cost on a busy shared machine."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, (time.perf_counter() - start, time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--resources", type=int, default=10_000)
    args = parser.parse_args()
    rows: list[tuple[str, str, tuple[float, float], float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        patients, mutations = synthetic_tables(args.patients)
        patients.to_csv(d / "patients.csv", index=False)
        mutations.to_csv(d / "mutations.csv", index=False)
        cohort, secs = _timed(read_cohort, d / "patients.csv", panels={"myeloid": PANEL})
        rows.append(("read_cohort (canonical CSV)", f"{len(cohort):,} patients", secs, 10.0))
        cohort, secs = _timed(read_cohort, d / "patients.csv", mutations=d / "mutations.csv",
                              panels={"myeloid": PANEL})
        rows.append(("read_cohort (canonical CSV + mutation table)",
                     f"{len(cohort):,} patients, {len(cohort.mutations):,} mutations", secs, 10.0))

        # about ``resources`` entries: Patient, Condition and ~8 Observations per patient, plus
        # a panel and variant Observations for the myeloid ones (~10.6 resources per patient)
        small_p, small_m = synthetic_tables(max(1, round(args.resources / 10.64)), seed=11)
        small = validate_cohort(small_p, small_m, {"myeloid": PANEL})
        path = write_fhir_bundle(small, d / "bundle.json")
        n_res = len(json.loads(path.read_text())["entry"])
        for validate in (True, False):
            back, secs = _timed(read_fhir_bundle, path, validate=validate)
            what = "R4B model check" if validate else "validate=False"
            rows.append((f"read_fhir_bundle ({what})",
                         f"{n_res:,} resources, {len(back):,} patients", secs, 20.0))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {os.cpu_count()} CPU(s) (nproc), Python {platform.python_version()}, "
          f"{platform.system()} {platform.machine()}, pandas {pd.__version__}, "
          f"load average at the end {load:.1f}\n")
    print("| step | size | wall s | CPU s | goal (s) | met (wall) |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for step, size, (wall, cpu), goal in rows:
        print(f"| {step} | {size} | {wall:.2f} | {cpu:.2f} | {goal:.0f} | "
              f"{'yes' if wall < goal else 'no'} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
