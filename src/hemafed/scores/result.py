"""The result every clinical score returns, and the small input helpers all scores share.

A :class:`ScoreResult` holds four tables indexed by patient id: ``values`` (score value, category
and score-specific columns), ``contributions`` (what each input added, or the rule that fired),
``reasons`` (one plain-language sentence per patient) and ``errors`` (one row per problem found in
a patient's input). A malformed patient is reported in ``errors`` and left unscored; the rest of the
batch is scored.

>>> import pandas as pd
>>> r = ScoreResult("demo", pd.DataFrame({"value": [1.0], "category": ["Low"]}, index=["p1"]),
...                 pd.DataFrame({"a": [1.0]}, index=["p1"]),
...                 pd.DataFrame({"reason": ["a adds 1"]}, index=["p1"]))
>>> r.table().loc["p1", "category"]
'Low'
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ERROR_COLUMNS: tuple[str, ...] = ("patient_id", "column", "reason")


def empty_errors() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="string") for c in ERROR_COLUMNS})


@dataclass(frozen=True)
class ScoreResult:
    """Per-patient output of one clinical score.

    ``values`` always has columns ``value`` (float, NaN when not scored) and ``category``;
    ``contributions`` and ``reasons`` share its index (patient ids); ``errors`` has columns
    ``patient_id``, ``column``, ``reason``.
    """

    score: str
    values: pd.DataFrame
    contributions: pd.DataFrame
    reasons: pd.DataFrame
    errors: pd.DataFrame = field(default_factory=empty_errors)

    def __post_init__(self) -> None:
        for name in ("value", "category"):
            if name not in self.values.columns:
                raise ValueError(f"ScoreResult {self.score!r}: values lacks column {name!r}")
        if not self.values.index.equals(self.contributions.index) or not self.values.index.equals(
                self.reasons.index):
            raise ValueError(f"ScoreResult {self.score!r}: values, contributions and reasons "
                             "must share one patient index")
        if "reason" not in self.reasons.columns:
            raise ValueError(f"ScoreResult {self.score!r}: reasons lacks column 'reason'")
        if tuple(self.errors.columns) != ERROR_COLUMNS:
            raise ValueError(f"ScoreResult {self.score!r}: errors columns must be {ERROR_COLUMNS}")

    def __len__(self) -> int:
        return len(self.values)

    def table(self) -> pd.DataFrame:
        """One wide table: values, ``contrib_<input>`` columns and the reason."""
        contrib = self.contributions.add_prefix("contrib_")
        return pd.concat([self.values, contrib, self.reasons], axis=1)


class ErrorLog:
    """Collects per-patient input problems while a score checks its inputs."""

    def __init__(self, ids: pd.Index) -> None:
        self.ids = ids
        self.rows: list[tuple[str, str, str]] = []
        self.bad = np.zeros(len(ids), dtype=bool)

    def add(self, mask: np.ndarray, column: str, reason: str | Sequence[str]) -> None:
        rows = np.flatnonzero(mask)
        if not len(rows):
            return
        self.bad[rows] = True
        texts = [reason] * len(rows) if isinstance(reason, str) else [reason[int(i)] for i in rows]
        self.rows.extend((str(self.ids[i]), column, t) for i, t in zip(rows, texts, strict=True))

    def frame(self) -> pd.DataFrame:
        if not self.rows:
            return empty_errors()
        return pd.DataFrame(self.rows, columns=list(ERROR_COLUMNS)).astype("string")

    def first_reason(self) -> np.ndarray:
        """Per patient, 'not scored: <first problem>' or ''."""
        out = np.full(len(self.ids), "", dtype=object)
        if not self.rows:
            return out
        pos = {pid: i for i, pid in enumerate(self.ids.astype(str))}
        for pid, col, why in reversed(self.rows):
            out[pos[pid]] = f"not scored: {col} {why}"
        return out


def patient_ids(df: pd.DataFrame, id_column: str = "patient_id") -> pd.Index:
    """Patient ids from ``id_column`` (or the index when the column is absent), as strings."""
    raw = df[id_column] if id_column in df.columns else pd.Series(df.index, index=df.index)
    return pd.Index(raw.astype(str).to_numpy(), name="patient_id")


def numeric(df: pd.DataFrame, column: str, log: ErrorLog, low: float | None = None,
            high: float | None = None, required: bool = False) -> np.ndarray:
    """Column as float array (NaN missing); non-numbers and out-of-range values are logged."""
    n = len(df)
    if column not in df.columns:
        if required:
            log.add(np.ones(n, dtype=bool), column, "is missing (column absent)")
        return np.full(n, np.nan)
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    present = raw.notna().to_numpy()
    not_number = present & np.isnan(values)
    if not_number.any():
        log.add(not_number, column, [f"is not a number: {v!r}" for v in raw.to_numpy()])
    if required:
        log.add(~present, column, "is missing")
    with np.errstate(invalid="ignore"):
        out = np.zeros(n, dtype=bool)
        if low is not None:
            out |= values < low
        if high is not None:
            out |= values > high
    if out.any():
        log.add(out, column, [f"= {v:g} is outside [{low:g}, {high:g}]" if low is not None
                              and high is not None else f"= {v:g} is out of range"
                              for v in values])
    return np.where(out | not_number, np.nan, values)


_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}


def flag(df: pd.DataFrame, column: str | Iterable[str], log: ErrorLog) -> np.ndarray:
    """A 0/1 flag column as float (1, 0, NaN missing); accepts bool, 0/1 and yes/no text.

    Several column names may be given: the first present is used.
    """
    names = [column] if isinstance(column, str) else list(column)
    name = next((c for c in names if c in df.columns), None)
    n = len(df)
    if name is None:
        return np.full(n, np.nan)
    raw = df[name]
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = ~np.isnan(values) & ~np.isin(values, (0.0, 1.0))
    else:
        text = raw.astype("string").str.strip().str.lower()
        values = np.where(text.isin(_TRUE).fillna(False), 1.0,
                          np.where(text.isin(_FALSE).fillna(False), 0.0, np.nan))
        bad = (raw.notna() & ~text.isin(_TRUE | _FALSE | {"na", "nan", ""}).fillna(True)).to_numpy()
    if bad.any():
        log.add(bad, name, [f"expected 0/1 (or true/false), got {v!r}" for v in raw.to_numpy()])
    return np.where(bad, np.nan, values)


def none_where(mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` as an object array with None where ``mask`` is true."""
    out = np.asarray(values, dtype=object).copy()
    out[np.asarray(mask, dtype=bool)] = None
    return out


def k_and(*xs: np.ndarray) -> np.ndarray:
    """Kleene three-valued AND on 1/0/NaN arrays: 0 if any is 0, else NaN if any unknown."""
    stack = np.vstack(xs)
    out = np.where(np.isnan(stack).any(axis=0), np.nan, 1.0)
    return np.where((stack == 0).any(axis=0), 0.0, out)


def k_or(*xs: np.ndarray) -> np.ndarray:
    """Kleene three-valued OR on 1/0/NaN arrays: 1 if any is 1, else NaN if any unknown."""
    stack = np.vstack(xs)
    out = np.where(np.isnan(stack).any(axis=0), np.nan, 0.0)
    return np.where((stack == 1).any(axis=0), 1.0, out)


def k_not(x: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(x), np.nan, 1.0 - x)


def cmp(x: np.ndarray, op: str, threshold: float) -> np.ndarray:
    """``x op threshold`` as 1/0/NaN (NaN where x is NaN)."""
    with np.errstate(invalid="ignore"):
        res = {">=": x >= threshold, ">": x > threshold, "<": x < threshold,
               "<=": x <= threshold}[op]
    return np.where(np.isnan(x), np.nan, res.astype(float))


@dataclass(frozen=True)
class Rule:
    """One row of a rule table: when ``condition`` is true (and no earlier rule fired), the patient
    gets ``category``; ``text`` explains it in plain words."""

    name: str
    category: str
    text: str


def apply_rules(rules: Sequence[Rule], conditions: Sequence[np.ndarray],
                missing_hint: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First-match rule engine with honest missing data.

    Rules are tried in order (the precedence of the published table). The first rule whose
    condition is true fires. If an earlier rule's condition is *unknown* (NaN) the patient's class
    is undetermined: a later rule must not fire, since the unknown one could have taken precedence.
    Returns (category, fired-rule name, reason) arrays; undetermined patients get category None and
    a reason naming the rule that could not be decided and its inputs (``missing_hint``).
    """
    n = len(conditions[0]) if conditions else 0
    category = np.full(n, None, dtype=object)
    fired = np.full(n, None, dtype=object)
    reason = np.full(n, "", dtype=object)
    open_ = np.ones(n, dtype=bool)
    for rule, cond, hint in zip(rules, conditions, missing_hint, strict=True):
        fire = open_ & (cond == 1)
        category[fire] = rule.category
        fired[fire] = rule.name
        reason[fire] = rule.text
        unknown = open_ & np.isnan(cond)
        fired[unknown] = "undetermined"
        reason[unknown] = f"undetermined: cannot decide '{rule.text}' because {hint} is missing"
        open_ &= ~(fire | unknown)
    return category, fired, reason
