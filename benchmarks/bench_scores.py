"""Times IPSS-M on a synthetic cohort of 100,000 patients (goal: under 2 seconds).

Run: ``.venv/bin/python benchmarks/bench_scores.py [n]``. Prints the wall-clock time.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from hemafed.scores.ipssm import ALL_GENES, ipssm_from_calculator_table


def synthetic_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {
        "ID": [f"p{i}" for i in range(n)], "HB": rng.uniform(5, 15, n).round(1),
        "PLT": rng.uniform(5, 600, n).round(), "BM_BLAST": rng.uniform(0, 19, n).round(1),
        "CYTO_IPSSR": rng.choice(["Very Good", "Good", "Intermediate", "Poor", "Very Poor"], n),
        "TP53mut": rng.choice(["0", "1", "2 or more"], n, p=[0.85, 0.1, 0.05]),
        "TP53maxvaf": rng.uniform(0, 0.9, n),
    }
    for f in ("del5q", "del7_7q", "del17_17p", "complex", "TP53loh", *ALL_GENES):
        v = (rng.random(n) < 0.1).astype(float)
        v[rng.random(n) < 0.05] = np.nan
        cols[f] = v
    return pd.DataFrame(cols)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    table = synthetic_table(n)
    start = time.perf_counter()
    result = ipssm_from_calculator_table(table)
    elapsed = time.perf_counter() - start
    sys.stdout.write(f"IPSS-M for {len(result):,} patients: {elapsed:.2f} s\n")


if __name__ == "__main__":
    main()
