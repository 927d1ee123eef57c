"""Federated descriptive statistics: counts, means, SDs, quantiles, category counts, cross-tables.

Site queries (registered here) return only sums: non-missing count, missing count, sum, sum of
squares and a histogram on *public* bin edges for a numeric column; per-level counts for a
categorical column (the registry's ``category_counts``); a contingency table for two categorical
columns. The hub turns the sums into a table.

Quantiles come from the pooled histogram by linear interpolation within the bin holding the
target rank. This is the resolution trade-off: finer bins give sharper quantiles but more,
smaller released cells (more suppression, more DP noise per cell). The estimate of the q-quantile
lies in the same bin as the pooled order statistic of rank ``ceil(q n)`` (numpy's
``method="inverted_cdf"``), so it is within one bin width of the exact pooled quantile.

Minimum cell size: cells with ``0 < count < min_cell`` are suppressed *after* aggregation (shown
as NA in DataFrames and as ``"<min_cell"`` in :meth:`DescriptiveResult.to_json`); statistics of a
column with fewer than ``min_cell`` values are suppressed too. ``min_cell`` defaults to 5; in a
deployment the site runtime applies each site's own policy value as well (cells it marks in
``AggregateResult.suppressed`` are suppressed here too). Secondary (complementary) suppression is
not done.

>>> from hemafed.federation.local import LocalSumFederation
>>> import pandas as pd
>>> from hemafed.cohort import validate_cohort
>>> c = validate_cohort(pd.DataFrame({"patient_id": list("abcdef"), "disease": ["MDS"] * 6,
...                                   "hb": [8, 9, 10, 11, 12, None]}))
>>> float(describe(LocalSumFederation([c]), ["hb"]).summary.loc["hb", "mean"])
10.0
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics.dp import NoiseRecord, clamp_counts, noise_record
from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import AggregateResult, DPRequest, Federation
from hemafed.federation.queries import (
    Params,
    Query,
    QueryParams,
    Statistic,
    encodable_resolution,
    register,
)

DEFAULT_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)
NUMERIC_QUERY = "numeric_summary"
CATEGORY_QUERY = "category_counts"
CROSSTAB_QUERY = "crosstab"


# --- shared column checks (hub side, from the public schema only) ------------------------------

def numeric_bounds(column: str, bounds: Mapping[str, tuple[float, float]] | None = None
                   ) -> tuple[float, float]:
    """Public bounds of a numeric column: given in ``bounds`` or the schema's plausible range."""
    if column not in FIELDS:
        raise InvalidInput(f"column {column!r} is not a cohort schema field; "
                           f"see hemafed.cohort.schema.FIELDS")
    f = FIELDS[column]
    if f.kind not in ("float", "int"):
        raise InvalidInput(f"column {column!r} is {f.kind}, not numeric; "
                           f"describe it as categorical")
    if bounds and column in bounds:
        low, high = (float(v) for v in bounds[column])
    elif f.low is not None and f.high is not None:
        low, high = float(f.low), float(f.high)
    else:
        raise InvalidInput(f"column {column!r} has no public bounds in the schema; pass "
                           f"bounds={{{column!r}: (low, high)}}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidInput(f"bounds of column {column!r} must be finite with low < high, "
                           f"got ({low}, {high})")
    return low, high


def category_levels(column: str, levels: Mapping[str, Sequence[str]] | None = None
                    ) -> tuple[str, ...]:
    """Public levels of a categorical or boolean column (given, or from the schema).

    A column outside the schema (e.g. a score category the site derives) needs its levels.
    """
    if levels and column in levels:
        out = tuple(str(v) for v in levels[column])
        if not out or len(set(out)) != len(out):
            raise InvalidInput(f"levels of column {column!r} must be non-empty and distinct, "
                               f"got {out}")
        return out
    if column not in FIELDS:
        raise InvalidInput(f"column {column!r} is not a cohort schema field; "
                           f"see hemafed.cohort.schema.FIELDS, or give its levels")
    f = FIELDS[column]
    if f.kind == "category":
        return f.categories
    if f.kind == "bool":
        return ("False", "True")
    raise InvalidInput(f"column {column!r} is {f.kind}; pass levels={{{column!r}: [...]}} "
                       f"to count it as categorical")


def _site_column(cohort: Cohort, column: str) -> pd.Series:
    if column not in cohort.patients:
        # A schema column the site does not record is entirely missing there.
        return pd.Series(pd.NA, index=cohort.patients.index, dtype="object")
    return cohort.patients[column]


codec_resolution = encodable_resolution
"""Kept for callers: the one rule lives in :func:`hemafed.federation.queries.encodable_resolution`."""

# --- site query: numeric summary with histogram ------------------------------------------------
# Migrated: both site queries of this module have typed parameters (a ``params_type``).

MAX_BINS = 10_000
"""Most histogram bins one ``numeric_summary`` request may ask for."""


@dataclass(frozen=True)
class NumericParams(QueryParams):
    """``numeric_summary``: a numeric column, its public bounds and the number of bins."""

    QUERY = NUMERIC_QUERY
    column: str
    low: float
    high: float
    bins: int
    resolution: float = 1e-6
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> NumericParams:
        cls.known(params)
        column = checks.column(params, "column")
        low, high = checks.bounds(params)
        bins = params.get("bins")
        if not isinstance(bins, int) or isinstance(bins, bool) or not 1 <= bins <= MAX_BINS:
            raise InvalidInput(f"parameter 'bins' must be an int in 1..{MAX_BINS}, got {bins!r}")
        return cls(column, low, high, bins, checks.resolution(params),
                   checks.max_patients(params))


def _numeric_compute(cohort: Cohort, p: NumericParams) -> dict[str, np.ndarray]:
    col = p.column
    values = pd.to_numeric(_site_column(cohort, col), errors="coerce").astype("Float64")
    missing = float(values.isna().sum())
    x = values.dropna().to_numpy(dtype=float)
    low, high = p.low, p.high
    if x.size and (x.min() < low or x.max() > high):
        raise InvalidInput(f"column {col!r} has values outside the declared bounds "
                           f"[{low:g}, {high:g}]; widen the bounds, nothing is clipped")
    edges = np.linspace(low, high, p.bins + 1)
    hist = np.histogram(x, bins=edges)[0].astype(float)
    return {"n": np.array([x.size], dtype=float), "missing": np.array([missing]),
            "sum": np.array([x.sum()]), "sum_sq": np.array([np.square(x).sum()]), "hist": hist}


def _numeric_declare(p: NumericParams) -> dict[str, Statistic]:
    m, low, high, res = p.max_patients, p.low, p.high, p.resolution
    amax = max(abs(low), abs(high))
    return {
        "n": Statistic((1,), 0, m, is_count=True, cells=True),
        "missing": Statistic((1,), 0, m, is_count=True, cells=True),
        "sum": Statistic((1,), min(0.0, low) * m, max(0.0, high) * m,
                         codec_resolution(min(0.0, low) * m, max(0.0, high) * m, res),
                         sensitivity=amax),
        "sum_sq": Statistic((1,), 0.0, amax**2 * m, codec_resolution(0.0, amax**2 * m, res),
                            sensitivity=amax**2),
        "hist": Statistic((p.bins,), 0, m, is_count=True, cells=True),
    }


register(Query(NUMERIC_QUERY, "1", compute=_numeric_compute, declare=_numeric_declare,
               params_type=NumericParams,
               description="n, missing, sum, sum of squares and histogram on public bins "
                           "of a numeric column"))


# --- site query: two-way contingency table -----------------------------------------------------

@dataclass(frozen=True)
class CrosstabParams(QueryParams):
    """``crosstab``: two categorical columns and the declared levels of each."""

    QUERY = CROSSTAB_QUERY
    row: str
    col: str
    row_levels: tuple[str, ...]
    col_levels: tuple[str, ...]
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> CrosstabParams:
        cls.known(params)
        return cls(checks.column(params, "row"), checks.column(params, "col"),
                   checks.levels(params, "row_levels"), checks.levels(params, "col_levels"),
                   checks.max_patients(params))


def _crosstab_compute(cohort: Cohort, p: CrosstabParams) -> dict[str, np.ndarray]:
    a = _site_column(cohort, p.row).astype("string")
    b = _site_column(cohort, p.col).astype("string")
    la, lb = p.row_levels, p.col_levels
    ia = a.map({v: i for i, v in enumerate(la)}).to_numpy(dtype=float, na_value=np.nan)
    ib = b.map({v: i for i, v in enumerate(lb)}).to_numpy(dtype=float, na_value=np.nan)
    ok = ~(np.isnan(ia) | np.isnan(ib))
    table = np.zeros((len(la), len(lb)))
    np.add.at(table, (ia[ok].astype(int), ib[ok].astype(int)), 1.0)
    return {"table": table, "excluded": np.array([float((~ok).sum())])}


def _crosstab_declare(p: CrosstabParams) -> dict[str, Statistic]:
    m = p.max_patients
    shape = (len(p.row_levels), len(p.col_levels))
    return {"table": Statistic(shape, 0, m, is_count=True, cells=True),
            "excluded": Statistic((1,), 0, m, is_count=True, cells=True)}


register(Query(CROSSTAB_QUERY, "1", compute=_crosstab_compute, declare=_crosstab_declare,
               params_type=CrosstabParams,
               description="contingency table of two categorical columns on declared levels; "
                           "rows missing either value (or outside the levels) are counted apart"))


# --- hub maths (pure) --------------------------------------------------------------------------

def histogram_quantiles(hist: np.ndarray, edges: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles from binned counts, by linear interpolation within the bin of the target rank.

    >>> histogram_quantiles(np.array([2.0, 2.0]), np.array([0.0, 1.0, 2.0]), [0.5, 0.75]).tolist()
    [1.0, 1.5]
    """
    hist = np.asarray(hist, dtype=float)
    total = hist.sum()
    out = np.full(len(qs), np.nan)
    if total <= 0:
        return out
    cum = np.cumsum(hist)
    for i, q in enumerate(qs):
        target = q * total
        b = int(np.searchsorted(cum, target, side="left"))
        b = min(b, len(hist) - 1)
        while b < len(hist) - 1 and hist[b] <= 0:
            b += 1
        before = cum[b] - hist[b]
        frac = 0.0 if hist[b] <= 0 else min(max((target - before) / hist[b], 0.0), 1.0)
        out[i] = edges[b] + frac * (edges[b + 1] - edges[b])
    return out


def suppress(counts: np.ndarray, min_cell: int, extra: np.ndarray | None = None) -> np.ndarray:
    """Counts as floats with cells ``0 < count < min_cell`` (or marked in ``extra``) set to NaN."""
    c = np.asarray(counts, dtype=float).copy()
    mask = (c > 0) & (c < min_cell)
    if extra is not None:
        mask |= np.asarray(extra, dtype=bool).reshape(c.shape)
    c[mask] = np.nan
    return c


def pearson_chi2(table: np.ndarray) -> tuple[float, int, float, float]:
    """Pearson chi-square (no continuity correction) of a contingency table.

    Rows and columns with zero margins are dropped. Returns ``(chi2, dof, p, min_expected)``;
    NaNs when fewer than two rows or columns remain.
    """
    t = np.asarray(table, dtype=float)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    if t.ndim != 2 or min(t.shape) < 2:
        return math.nan, 0, math.nan, math.nan
    expected = np.outer(t.sum(axis=1), t.sum(axis=0)) / t.sum()
    chi2 = float(np.sum((t - expected) ** 2 / expected))
    dof = (t.shape[0] - 1) * (t.shape[1] - 1)
    return chi2, dof, float(stats.chi2.sf(chi2, dof)), float(expected.min())


# --- results -----------------------------------------------------------------------------------

def _json_cell(v: Any, min_cell: int, count: bool) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return f"<{min_cell}" if count else None
    if isinstance(v, np.integer | np.floating):
        return v.item()
    return v


_COUNT_COLUMNS = {"count", "missing", "other", "excluded"}


def _frame_json(df: pd.DataFrame, min_cell: int, counts: set[str] | None = None
                ) -> list[dict[str, Any]]:
    counts = counts if counts is not None else _COUNT_COLUMNS
    rows = []
    for idx, row in df.reset_index().iterrows():
        del idx
        rows.append({str(k): _json_cell(v, min_cell, str(k) in counts) for k, v in row.items()})
    return rows


@dataclass(frozen=True)
class DescriptiveResult:
    """Pooled descriptive statistics.

    ``summary``: one row per numeric column (count, missing, mean, sd, min bin edge, quantiles);
    ``categories``: one row per (column, level) with count and percent of non-missing;
    ``histograms``: column -> DataFrame of bins (left, right, count). Suppressed cells are NA.
    """

    summary: pd.DataFrame
    categories: pd.DataFrame
    histograms: dict[str, pd.DataFrame]
    min_cell: int
    noise: NoiseRecord = field(default_factory=NoiseRecord)

    def to_json(self) -> str:
        m = self.min_cell
        return json.dumps({
            "min_cell": m,
            "numeric": _frame_json(self.summary, m),
            "categorical": _frame_json(self.categories, m),
            "histograms": {k: _frame_json(v, m) for k, v in self.histograms.items()},
            "dp": self.noise.to_dict(),
        })


@dataclass(frozen=True)
class CrossTabResult:
    """A pooled contingency table with a Pearson chi-square test of independence.

    The test uses the full pooled table (hub-side arithmetic on the released sum); the displayed
    ``table`` has small cells suppressed. ``min_expected`` < 5 warns that the chi-square
    approximation is poor.
    """

    table: pd.DataFrame
    chi2: float
    dof: int
    p_value: float
    min_expected: float
    excluded: float
    min_cell: int
    noise: NoiseRecord = field(default_factory=NoiseRecord)

    @property
    def summary(self) -> pd.DataFrame:
        return pd.DataFrame({"chi2": [self.chi2], "dof": [self.dof], "p": [self.p_value],
                             "min_expected": [self.min_expected]})

    def to_json(self) -> str:
        m = self.min_cell
        table = {str(r): {str(c): _json_cell(v, m, True) for c, v in row.items()}
                 for r, row in self.table.iterrows()}
        excluded = suppress(np.array([self.excluded]), m)[0]
        return json.dumps({"table": table, "chi2": _json_cell(self.chi2, m, False),
                           "dof": self.dof, "p": _json_cell(self.p_value, m, False),
                           "min_expected": _json_cell(self.min_expected, m, False),
                           "excluded": _json_cell(excluded, m, True),
                           "min_cell": m, "dp": self.noise.to_dict()})


# --- hub steps ---------------------------------------------------------------------------------

def _check_min_cell(min_cell: int) -> None:
    if not isinstance(min_cell, int) or min_cell < 1:
        raise InvalidInput(f"min_cell must be an int >= 1, got {min_cell!r}")


def _numeric_row(res: AggregateResult, edges: np.ndarray, qs: Sequence[float], min_cell: int,
                 noisy: bool) -> tuple[dict[str, float], pd.DataFrame]:
    n = float(clamp_counts(res["n"])[0])
    missing = float(clamp_counts(res["missing"])[0])
    hist = clamp_counts(res["hist"])
    row: dict[str, float] = {"count": n, "missing": missing}
    if n >= min_cell and n > 1:
        mean = float(res["sum"][0]) / n
        var = max(float(res["sum_sq"][0]) - n * mean**2, 0.0) / (n - 1)
        row["mean"] = min(max(mean, edges[0]), edges[-1]) if noisy else mean
        row["sd"] = math.sqrt(var)
        for q, v in zip(qs, histogram_quantiles(hist, edges, qs), strict=True):
            row[f"q{q:g}"] = float(v)
    else:
        row.update({"mean": math.nan, "sd": math.nan})
        row.update({f"q{q:g}": math.nan for q in qs})
    sup = res.suppressed
    row["count"] = float(suppress(np.array([n]), min_cell, sup.get("n"))[0])
    row["missing"] = float(suppress(np.array([missing]), min_cell, sup.get("missing"))[0])
    hframe = pd.DataFrame({"left": edges[:-1], "right": edges[1:],
                           "count": suppress(hist, min_cell, sup.get("hist"))})
    return row, hframe


def describe(
    federation: Federation,
    columns: Sequence[str],
    *,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    levels: Mapping[str, Sequence[str]] | None = None,
    bins: int | Mapping[str, int] = 20,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    min_cell: int = 5,
    study: str = "default",
    dp: DPRequest | None = None,
) -> DescriptiveResult:
    """Describe ``columns`` across all sites.

    Numeric columns (schema kind float/int, public bounds from ``bounds`` or the schema) get
    count, missing, mean, SD and histogram quantiles on ``bins`` equal-width bins; categorical and
    boolean columns get counts per level (from ``levels`` or the schema), missing and other.
    One secure sum per column; with ``dp`` each one is a separately charged release.
    """
    _check_min_cell(min_cell)
    if isinstance(columns, str):
        columns = [columns]
    if not columns:
        raise InvalidInput("columns must list at least one cohort column")
    if any(not 0 <= q <= 1 for q in quantiles):
        raise InvalidInput(f"quantiles must lie in [0, 1], got {list(quantiles)}")
    numeric_rows: dict[str, dict[str, float]] = {}
    hists: dict[str, pd.DataFrame] = {}
    cat_rows: list[dict[str, Any]] = []
    released: list[tuple[str, AggregateResult]] = []
    for col in columns:
        if col not in FIELDS and not (levels and col in levels):
            raise InvalidInput(f"column {col!r} is not a cohort schema field; "
                               f"see hemafed.cohort.schema.FIELDS, or give its levels")
        if col in FIELDS and FIELDS[col].kind in ("float", "int") and not (levels and col in levels):
            low, high = numeric_bounds(col, bounds)
            nb = bins.get(col, 20) if isinstance(bins, Mapping) else bins
            params = {"column": col, "low": low, "high": high, "bins": int(nb)}
            res = federation.secure_sum(NUMERIC_QUERY, params, study=study, dp=dp)
            released.append((f"{NUMERIC_QUERY}[{col}]", res))
            edges = np.linspace(low, high, int(nb) + 1)
            numeric_rows[col], hists[col] = _numeric_row(res, edges, quantiles, min_cell,
                                                         dp is not None)
        else:
            lv = category_levels(col, levels)
            res = federation.secure_sum(CATEGORY_QUERY, {"column": col, "levels": list(lv)},
                                        study=study, dp=dp)
            released.append((f"{CATEGORY_QUERY}[{col}]", res))
            counts = clamp_counts(res["counts"])
            known = counts.sum()
            shown = suppress(counts, min_cell, res.suppressed.get("counts"))
            for level, c, s in zip(lv, counts, shown, strict=True):
                pct = 100.0 * c / known if known > 0 and not math.isnan(s) else math.nan
                cat_rows.append({"column": col, "level": level, "count": s, "percent": pct})
            for extra in ("missing", "other"):
                v = float(clamp_counts(res[extra])[0])
                cat_rows.append({"column": col, "level": f"<{extra}>",
                                 "count": float(suppress(np.array([v]), min_cell,
                                                         res.suppressed.get(extra))[0]),
                                 "percent": math.nan})
    summary = pd.DataFrame.from_dict(numeric_rows, orient="index")
    summary.index.name = "column"
    categories = pd.DataFrame(cat_rows, columns=["column", "level", "count", "percent"])
    return DescriptiveResult(summary, categories, hists, min_cell, noise_record(released, dp))


def crosstab(
    federation: Federation,
    row: str,
    col: str,
    *,
    levels: Mapping[str, Sequence[str]] | None = None,
    min_cell: int = 5,
    study: str = "default",
    dp: DPRequest | None = None,
) -> CrossTabResult:
    """Pooled contingency table of two categorical columns with a Pearson chi-square test.

    Matches ``scipy.stats.chi2_contingency(pooled_table, correction=False)`` on the pooled data
    (rows with either value missing or outside the declared levels are excluded and counted).
    """
    _check_min_cell(min_cell)
    if row == col:
        raise InvalidInput(f"crosstab needs two different columns, got {row!r} twice")
    lr, lc = category_levels(row, levels), category_levels(col, levels)
    params = {"row": row, "col": col, "row_levels": list(lr), "col_levels": list(lc)}
    res = federation.secure_sum(CROSSTAB_QUERY, params, study=study, dp=dp)
    table = clamp_counts(res["table"])
    chi2, dof, p, min_exp = pearson_chi2(table)
    shown = suppress(table, min_cell, res.suppressed.get("table"))
    frame = pd.DataFrame(shown, index=pd.Index(lr, name=row), columns=pd.Index(lc, name=col))
    return CrossTabResult(frame, chi2, dof, p, min_exp, float(clamp_counts(res["excluded"])[0]),
                          min_cell, noise_record([(CROSSTAB_QUERY, res)], dp))
