"""A local (non-DP) Gaussian-copula generator, for use *inside* one site.

A site may want synthetic copies of its own patients (for software testing, teaching, or to
share after the privacy gate of :mod:`hemafed.synth.evaluate`). This generator is written on
numpy/scipy only: every column is mapped to a standard-normal latent through its empirical
distribution (numeric: mid-ranks; categorical, boolean and NA: an ordered encoding with each
level an interval of the normal scale), the latent correlation matrix is estimated, and
sampling draws correlated normals and maps them back (numeric through a quantile table of the
observed values, interpolated). Missingness of numeric columns is its own latent indicator.

It gives no formal privacy guarantee: the quantile table holds (interpolated) observed values.
Release its output only after :meth:`EvaluationReport.passes`.

Deep generator: the maintained CTGAN/TVAE implementations (SDV, ctgan, copulas, rdt) are under
the Business Source License, which this open platform does not accept, so
:mod:`hemafed.synth.tvae` is our own compact TVAE on PyTorch (optional extra ``hemafed[torch]``,
optionally DP-SGD via Opacus for the network). Marginal-based methods (MST, AIM) remain the
stronger choice for end-to-end differential privacy at these cohort sizes.

>>> import pandas as pd
>>> df = pd.DataFrame({"hb": [8.0, 9.5, 11.0, 12.5] * 25, "sex": ["M", "F"] * 50})
>>> GaussianCopulaSynthesizer().fit(df).sample(5, seed=0).shape
(5, 2)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.errors import InvalidInput
from hemafed.synth.domain import enforce_constraints

_QUANTILES = 201


@dataclass(frozen=True)
class _Numeric:
    name: str
    quantiles: np.ndarray
    missing: float
    integer: bool
    decimals: int


@dataclass(frozen=True)
class _Categorical:
    name: str
    levels: tuple[object, ...]
    cumulative: np.ndarray
    dtype: str


def _decimals(x: np.ndarray) -> int:
    for d in range(0, 5):
        if np.allclose(x, np.round(x, d)):
            return d
    return 6


def _normal_scores(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Latent normal of ordered values: uniform within the value's share of (0, 1)."""
    n = codes.size
    order = np.argsort(codes, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n)
    # Ties are spread at random so that levels keep their probability mass.
    jitter = rng.random(n)
    _, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    u = (start[inverse] + jitter * counts[inverse]) / n
    return stats.norm.ppf(np.clip(u, 0.5 / n, 1 - 0.5 / n))


class GaussianCopulaSynthesizer:
    """``GaussianCopulaSynthesizer().fit(frame).sample(n, seed)`` (one site, non-DP)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._columns: list[_Numeric | _Categorical] = []
        self._corr: np.ndarray | None = None
        self._order: list[str] = []

    def fit(self, frame: pd.DataFrame) -> GaussianCopulaSynthesizer:
        if len(frame) < 10:
            raise InvalidInput(f"GaussianCopulaSynthesizer needs >= 10 rows, got {len(frame)}")
        rng = np.random.default_rng(self.seed)
        latents: list[np.ndarray] = []
        self._columns = []
        for name in frame.columns:
            col = frame[name]
            if name == "patient_id":
                continue
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                x = col.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
                seen = x[~np.isnan(x)]
                if seen.size < 2:
                    raise InvalidInput(f"column {name!r} has fewer than 2 observed values")
                q = np.quantile(seen, np.linspace(0, 1, _QUANTILES))
                self._columns.append(_Numeric(name, q, float(np.isnan(x).mean()),
                                              bool(np.allclose(seen, np.round(seen))),
                                              _decimals(seen)))
                filled = np.where(np.isnan(x), np.nanmedian(x), x)
                latents.append(_normal_scores(filled, rng))
                latents.append(_normal_scores(np.isnan(x).astype(float), rng))
            else:
                dtype = "boolean" if pd.api.types.is_bool_dtype(col) else "string"
                text = col.astype("string")
                levels = sorted(set(text.dropna()))
                codes_s = text.map({lv: i for i, lv in enumerate(levels)}).fillna(len(levels))
                codes = codes_s.to_numpy(dtype=float)
                probs = np.bincount(codes.astype(int), minlength=len(levels) + 1) / len(codes)
                self._columns.append(_Categorical(name, (*levels, None), np.cumsum(probs), dtype))
                latents.append(_normal_scores(codes, rng))
        z = np.column_stack(latents)
        corr = np.corrcoef(z, rowvar=False)
        corr = np.nan_to_num(corr, nan=0.0)
        np.fill_diagonal(corr, 1.0)
        w, v = np.linalg.eigh(corr)
        corr = (v * np.clip(w, 1e-6, None)) @ v.T
        d = np.sqrt(np.diag(corr))
        self._corr = corr / np.outer(d, d)
        self._order = [c.name for c in self._columns]
        return self

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        if self._corr is None:
            raise InvalidInput("GaussianCopulaSynthesizer.sample: call fit(frame) first")
        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        z = rng.multivariate_normal(np.zeros(len(self._corr)), self._corr, size=n,
                                    method="cholesky")
        u = stats.norm.cdf(z)
        out: dict[str, pd.Series] = {}
        j = 0
        for spec in self._columns:
            if isinstance(spec, _Numeric):
                grid = np.linspace(0, 1, spec.quantiles.size)
                x = np.interp(u[:, j], grid, spec.quantiles)
                x = np.round(x, spec.decimals)
                missing = u[:, j + 1] > 1 - spec.missing
                out[spec.name] = pd.Series(np.where(missing, np.nan, x)).astype("Float64")
                j += 2
            else:
                idx = np.minimum(np.searchsorted(spec.cumulative, u[:, j], side="right"),
                                 len(spec.levels) - 1)
                values = pd.Series(np.asarray(spec.levels, dtype=object)[idx], dtype="object")
                if spec.dtype == "boolean":
                    out[spec.name] = values.map({"True": True, "False": False}).astype("boolean")
                else:
                    out[spec.name] = values.astype("string")
                j += 1
        return enforce_constraints(pd.DataFrame(out))
