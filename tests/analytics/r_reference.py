"""Helpers for tests that compare federated results with R on the pooled data.

``run_r(script, frames)`` writes the frames as CSV in a temporary folder (exported at test time,
never committed), runs ``Rscript`` there and returns the JSON the script writes to
``out.json``; tests call :func:`require_r` first, which skips when R or a package is absent.
``uneven_sites`` splits a frame into uneven sites that include a one-patient site and a site
with no events.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

JSON_WRITER = """
write_json <- function(x, path) {
  enc <- function(v) {
    if (is.list(v)) {
      nm <- names(v)
      parts <- vapply(seq_along(v), function(i) paste0('"', nm[i], '":', enc(v[[i]])), "")
      return(paste0("{", paste(parts, collapse = ","), "}"))
    }
    v <- as.numeric(v)
    s <- ifelse(is.na(v), "null", formatC(v, digits = 17, format = "g"))
    paste0("[", paste(s, collapse = ","), "]")
  }
  writeLines(enc(x), path)
}
"""


@functools.cache
def _has_package(pkg: str) -> bool:
    return subprocess.run(["Rscript", "-e", f"quit(status = !requireNamespace('{pkg}'))"],
                          capture_output=True, timeout=120).returncode == 0


def require_r(*packages: str) -> None:
    """Skip the calling test unless ``Rscript`` and every package are installed."""
    if shutil.which("Rscript") is None:
        pytest.skip("Rscript is not installed (apt-get install r-base-core)")
    for pkg in packages:
        if not _has_package(pkg):
            pytest.skip(f"R package {pkg} is not installed (apt-get install r-cran-{pkg})")


def run_r(script: str, frames: Mapping[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    """Run ``script`` (which calls ``write_json(list(...), "out.json")``) next to the frames."""
    with tempfile.TemporaryDirectory(prefix="hemafed-r-") as tmp:
        for name, frame in (frames or {}).items():
            frame.to_csv(Path(tmp) / f"{name}.csv", index=False)
        (Path(tmp) / "script.R").write_text(JSON_WRITER + script)
        proc = subprocess.run(["Rscript", "script.R"], cwd=tmp, capture_output=True, text=True,
                              timeout=300)
        if proc.returncode != 0:
            raise AssertionError(f"R failed:\n{proc.stderr[-3000:]}")
        return dict(json.loads((Path(tmp) / "out.json").read_text()))


def uneven_sites(df: pd.DataFrame, n_sites: int, event_col: str, seed: int = 3
                 ) -> list[pd.DataFrame]:
    """``n_sites`` uneven sites: the first holds one patient, the second (for ``n_sites > 2``)
    only patients without an event, the rest Dirichlet-sized shares of the others."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    censored = [i for i in order if df[event_col].iloc[i] == 0]
    sites: list[Sequence[int]] = [[censored[0]]]
    used = {censored[0]}
    if n_sites > 2:
        sites.append(censored[1:16])
        used |= set(censored[1:16])
    rest = np.array([i for i in order if i not in used])
    k = n_sites - len(sites)
    shares = rng.dirichlet(np.ones(k) * 1.5)
    cuts = (np.cumsum(shares)[:-1] * len(rest)).astype(int)
    sites.extend(np.split(rest, cuts))
    return [df.iloc[np.sort(np.asarray(s, dtype=int))].reset_index(drop=True) for s in sites]


def r_dataset(name: str, package: str) -> pd.DataFrame:
    """One of R's own data sets (``package::name``), exported at test time."""
    with tempfile.TemporaryDirectory(prefix="hemafed-r-") as tmp:
        script = f"library({package}); write.csv({package}::{name}, 'data.csv', row.names = FALSE)"
        proc = subprocess.run(["Rscript", "-e", script], cwd=tmp, capture_output=True, text=True,
                              timeout=120)
        if proc.returncode != 0:
            raise AssertionError(f"R failed:\n{proc.stderr[-3000:]}")
        return pd.read_csv(Path(tmp) / "data.csv")
