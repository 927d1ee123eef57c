"""Evaluation of synthetic patients: fidelity, utility and privacy, and the release gate.

:func:`evaluate` compares a synthetic frame with the real training frame it was made from and a
real *holdout* frame that the generator never saw:

* **fidelity**: per-column total variation distance (TVD) on the public discretisation and
  Kolmogorov-Smirnov statistics of numeric columns; mean and max TVD of all two-way marginals;
  mean absolute difference of Spearman correlations; the largest distance between Kaplan-Meier
  curves on a grid; agreement of Cox log hazard ratios; TVD of IPSS-R categories when the
  columns allow (hb, plt, anc, bm_blast, cyto_ipssr);
* **utility**: train on synthetic, test on real (TSTR) against train on real, test on real
  (TRTR) on the holdout: Cox concordance (lifelines) and a classifier's AUC (scikit-learn);
* **privacy**: distance to the closest training record (DCR) of synthetic records against that
  of holdout records, the share of exact copies, a distance-based membership-inference attack
  (AUC: training members vs holdout non-members, scored by closeness to the synthetic data) and
  an attribute-inference attack (nearest synthetic neighbour on the other columns; advantage =
  accuracy on members - accuracy on non-members).

:meth:`EvaluationReport.passes` is the gate a site applies before synthetic data may leave it.

>>> # report = evaluate(train, synthetic, holdout)
>>> # report.passes({"max_mia_auc": 0.6}), report.to_frame()
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.cohort.schema import OUTCOMES
from hemafed.errors import InvalidInput
from hemafed.synth.domain import SynthDomain

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS: dict[str, float] = {
    "max_mia_auc": 0.6,
    "max_exact_match_rate": 0.01,
    "max_attribute_advantage": 0.1,
    "min_dcr_ratio": 0.5,
}
"""Release gate: every threshold must hold (see :meth:`EvaluationReport.failures`)."""

_OUTCOME_COLUMNS = {c for pair in OUTCOMES.values() for c in pair}


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics by section (``fidelity``, ``utility``, ``privacy``); NaN where not computable."""

    fidelity: Mapping[str, float]
    utility: Mapping[str, float]
    privacy: Mapping[str, float]
    per_column: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: section, metric, value."""
        rows = [(sec, k, float(v)) for sec, d in (("fidelity", self.fidelity),
                                                  ("utility", self.utility),
                                                  ("privacy", self.privacy))
                for k, v in d.items()]
        return pd.DataFrame(rows, columns=["section", "metric", "value"])

    def to_json(self) -> str:
        def clean(d: Mapping[str, float]) -> dict[str, float | None]:
            return {k: (None if not math.isfinite(v) else float(v)) for k, v in d.items()}

        return json.dumps({"fidelity": clean(self.fidelity), "utility": clean(self.utility),
                           "privacy": clean(self.privacy),
                           "per_column": json.loads(self.per_column.to_json(orient="records")),
                           "notes": list(self.notes)})

    def failures(self, thresholds: Mapping[str, float] | None = None) -> list[str]:
        """Reasons the release gate fails (empty when it passes). A metric that could not be
        computed (NaN) fails its threshold: the gate never passes on missing evidence."""
        th = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        checks = {
            "max_mia_auc": ("mia_auc", lambda v, t: v <= t),
            "max_exact_match_rate": ("exact_match_rate", lambda v, t: v <= t),
            "max_attribute_advantage": ("attribute_advantage", lambda v, t: v <= t),
            "min_dcr_ratio": ("dcr_ratio", lambda v, t: v >= t),
        }
        out = []
        for key, limit in th.items():
            if key not in checks:
                raise InvalidInput(f"unknown release threshold {key!r}; known: {sorted(checks)}")
            metric, ok = checks[key]
            value = float(self.privacy.get(metric, float("nan")))
            if not math.isfinite(value) or not ok(value, limit):
                out.append(f"{metric} = {value:.4g} fails {key} = {limit:g}")
        return out

    def passes(self, thresholds: Mapping[str, float] | None = None) -> bool:
        """True when every release threshold holds (default :data:`DEFAULT_THRESHOLDS`)."""
        return not self.failures(thresholds)


# --- fidelity ---------------------------------------------------------------------------------

def _tvd(p: np.ndarray, q: np.ndarray) -> float:
    p = p / max(p.sum(), 1e-12)
    q = q / max(q.sum(), 1e-12)
    return 0.5 * float(np.abs(p - q).sum())


def marginal_tvds(real: pd.DataFrame, synthetic: pd.DataFrame, domain: SynthDomain,
                  order: int = 2) -> dict[tuple[str, ...], float]:
    """TVD of every marginal of ``order`` columns on the public discretisation."""
    a, b = domain.encode(real), domain.encode(synthetic)
    return {c: _tvd(domain.contingency(a, c), domain.contingency(b, c))
            for c in combinations(domain.names, order)}


def _ordinal(frame: pd.DataFrame, columns: Sequence[str],
             levels: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Numbers for rank correlations: numeric as is, booleans 0/1, categories by level order."""
    out = {}
    for c in columns:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
            out[c] = col.astype("Float64")
        else:
            rank = {lv: float(i) for i, lv in enumerate(levels[c])}
            out[c] = col.astype("string").map(rank).astype("Float64")
    return pd.DataFrame(out).astype(float)


def _km_distance(real: pd.DataFrame, synthetic: pd.DataFrame, tcol: str, scol: str) -> float:
    from lifelines import KaplanMeierFitter

    r = real[[tcol, scol]].dropna()
    s = synthetic[[tcol, scol]].dropna()
    if len(r) < 5 or len(s) < 5:
        return float("nan")
    grid = np.linspace(0.0, float(np.quantile(r[tcol].astype(float), 0.95)), 100)
    curves = []
    for d in (r, s):
        km = KaplanMeierFitter().fit(d[tcol].astype(float), d[scol].astype(bool))
        curves.append(km.survival_function_at_times(grid).to_numpy())
    return float(np.max(np.abs(curves[0] - curves[1])))


def _cox_log_hr(frame: pd.DataFrame, covariates: Sequence[str], tcol: str,
                scol: str) -> pd.Series:
    from lifelines import CoxPHFitter

    d = frame[[*covariates, tcol, scol]].dropna().astype(float)
    d = d[d[tcol] > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph = CoxPHFitter(penalizer=1e-4).fit(d, tcol, scol)
    return cph.params_


def _ipssr_tvd(real: pd.DataFrame, synthetic: pd.DataFrame) -> float:
    need = ["hb", "plt", "anc", "bm_blast", "cyto_ipssr"]
    if not all(c in real and c in synthetic for c in need):
        return float("nan")
    from hemafed.scores.ipssr import ipssr

    dists = []
    for d in (real, synthetic):
        frame = d[need].copy()
        frame.insert(0, "patient_id", [f"p{i}" for i in range(len(frame))])
        cats = ipssr(frame).values["category"].dropna().astype(str)
        dists.append(cats.value_counts())
    levels = sorted(set(dists[0].index) | set(dists[1].index))
    p = dists[0].reindex(levels, fill_value=0).to_numpy(dtype=float)
    q = dists[1].reindex(levels, fill_value=0).to_numpy(dtype=float)
    return _tvd(p, q)


# --- shared feature design ----------------------------------------------------------------------

@dataclass(frozen=True)
class _Design:
    """A numeric design learned on the real training frame (imputation, scaling, levels)."""

    numeric: dict[str, tuple[float, float]]
    levels: dict[str, tuple[str, ...]]

    @classmethod
    def learn(cls, frame: pd.DataFrame, columns: Sequence[str]) -> _Design:
        numeric, levels = {}, {}
        for c in columns:
            col = frame[c]
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                x = col.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
                med = float(np.nanmedian(x)) if np.isfinite(x).any() else 0.0
                sd = float(np.nanstd(x)) if np.isfinite(x).sum() > 1 else 1.0
                numeric[c] = (med, sd if sd > 0 else 1.0)
            else:
                levels[c] = tuple(sorted(set(col.astype("string").dropna())))
        return cls(numeric, levels)

    def matrix(self, frame: pd.DataFrame, na_indicators: bool = True) -> np.ndarray:
        parts = []
        for c, (med, sd) in self.numeric.items():
            x = frame[c].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
            parts.append((np.where(np.isnan(x), med, x) - med) / sd)
            if na_indicators:
                parts.append(np.isnan(x).astype(float))
        for c, lv in self.levels.items():
            text = frame[c].astype("string").to_numpy(dtype=object, na_value=None)
            parts.extend((text == v).astype(float) for v in lv)
        return np.column_stack(parts) if parts else np.zeros((len(frame), 0))


def _c_index(train: pd.DataFrame, test: pd.DataFrame, covariates: Sequence[str],
             tcol: str, scol: str) -> float:
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    tr = train[train[tcol].notna() & train[scol].notna()]
    te = test[test[tcol].notna() & test[scol].notna()]
    if len(tr) < 20 or len(te) < 20:
        return float("nan")
    design = _Design.learn(tr, covariates)
    x_tr = design.matrix(tr, na_indicators=False)
    keep = x_tr.std(axis=0) > 0
    cols = [f"x{i}" for i in range(int(keep.sum()))]
    d = pd.DataFrame(x_tr[:, keep], columns=cols)
    d["T"] = tr[tcol].astype(float).to_numpy()
    d["E"] = tr[scol].astype(bool).to_numpy()
    d = d[d["T"] > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cph = CoxPHFitter(penalizer=0.05).fit(d, "T", "E")
    x_te = pd.DataFrame(design.matrix(te, na_indicators=False)[:, keep], columns=cols)
    risk = cph.predict_partial_hazard(x_te).to_numpy()
    return float(concordance_index(te[tcol].astype(float), -risk, te[scol].astype(bool)))


def _auc(train: pd.DataFrame, test: pd.DataFrame, features: Sequence[str], target: str) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    tr = train[train[target].notna()]
    te = test[test[target].notna()]
    y_tr = tr[target].astype(bool).to_numpy()
    y_te = te[target].astype(bool).to_numpy()
    if len(set(y_tr)) < 2 or len(set(y_te)) < 2:
        return float("nan")
    design = _Design.learn(tr, features)
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(design.matrix(tr), y_tr)
    return float(roc_auc_score(y_te, clf.predict_proba(design.matrix(te))[:, 1]))


# --- privacy ------------------------------------------------------------------------------------

def _nearest(reference: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(reference)
    dist, idx = nn.kneighbors(queries)
    return dist[:, 0], idx[:, 0]


def _privacy(train: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame,
             columns: Sequence[str], sensitive: str | None,
             rng: np.random.Generator) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    design = _Design.learn(train, columns)
    x_tr, x_syn, x_ho = (design.matrix(d) for d in (train, synthetic, holdout))
    dcr_syn, _ = _nearest(x_tr, x_syn)
    dcr_ho, _ = _nearest(x_tr, x_ho)
    m = min(len(train), len(holdout))
    members = rng.choice(len(train), m, replace=False)
    non_members = rng.choice(len(holdout), m, replace=False)
    d_mem, _ = _nearest(x_syn, x_tr[members])
    d_non, _ = _nearest(x_syn, x_ho[non_members])
    labels = np.r_[np.ones(m), np.zeros(m)]
    mia = float(roc_auc_score(labels, -np.r_[d_mem, d_non]))
    out = {
        "dcr_synthetic_median": float(np.median(dcr_syn)),
        "dcr_holdout_median": float(np.median(dcr_ho)),
        "dcr_ratio": float(np.median(dcr_syn) / max(np.median(dcr_ho), 1e-12)),
        "exact_match_rate": float(np.mean(dcr_syn < 1e-6)),
        "mia_auc": mia,
    }
    if sensitive is not None and sensitive in columns:
        qi = [c for c in columns if c != sensitive]
        qi_design = _Design.learn(train, qi)
        syn_qi = qi_design.matrix(synthetic)
        secret = synthetic[sensitive].astype("string").to_numpy(dtype=object, na_value=None)
        accs = []
        for frame, rows in ((train, members), (holdout, non_members)):
            sub = frame.iloc[rows]
            _, idx = _nearest(syn_qi, qi_design.matrix(sub))
            truth = sub[sensitive].astype("string").to_numpy(dtype=object, na_value=None)
            accs.append(float(np.mean(secret[idx] == truth)))
        out["attribute_accuracy_members"] = accs[0]
        out["attribute_accuracy_holdout"] = accs[1]
        out["attribute_advantage"] = accs[0] - accs[1]
    return out


# --- the entry point ----------------------------------------------------------------------------

def evaluate(train: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame, *,
             domain: SynthDomain | None = None, duration_col: str = "os_time",
             event_col: str = "os_status", cox_covariates: Sequence[str] | None = None,
             classifier_target: str | None = None, sensitive: str | None = None,
             seed: int = 0) -> EvaluationReport:
    """Fidelity, utility and privacy of ``synthetic`` against real ``train`` and ``holdout``.

    Columns compared: those of ``synthetic`` that ``train`` and ``holdout`` also have (not
    ``patient_id``). ``domain`` (default: :meth:`SynthDomain.for_columns`) discretises for TVDs.
    ``cox_covariates`` default to the numeric non-outcome columns among age, hb, plt, anc,
    bm_blast; ``classifier_target`` and ``sensitive`` default to ``event_col`` when present.
    """
    columns = [c for c in synthetic.columns if c != "patient_id" and c in train and c in holdout]
    if len(columns) < 2:
        raise InvalidInput("evaluate: synthetic and real frames share fewer than two columns")
    if min(len(train), len(holdout), len(synthetic)) < 20:
        raise InvalidInput("evaluate: train, holdout and synthetic need >= 20 rows each")
    rng = np.random.default_rng(seed)
    domain = domain or SynthDomain.for_columns(columns)
    dcols = [c for c in domain.names if c in columns]
    domain = SynthDomain(tuple(domain[c] for c in dcols))
    notes: list[str] = []

    one = marginal_tvds(train, synthetic, domain, 1)
    per_column = []
    for c in dcols:
        row: dict[str, Any] = {"column": c, "tvd": one[(c,)], "ks": float("nan")}
        if domain[c].kind == "numeric":
            a = train[c].astype("Float64").dropna().to_numpy(dtype=float)
            b = synthetic[c].astype("Float64").dropna().to_numpy(dtype=float)
            if a.size and b.size:
                row["ks"] = float(stats.ks_2samp(a, b).statistic)
        per_column.append(row)
    two = list(marginal_tvds(train, synthetic, domain, 2).values())
    levels = {c: (domain[c].levels if c in domain.names and domain[c].kind == "category"
                  else tuple(sorted(set(train[c].astype("string").dropna()))))
              for c in columns}
    corr_r = _ordinal(train, columns, levels).corr(method="spearman").to_numpy()
    corr_s = _ordinal(synthetic, columns, levels).corr(method="spearman").to_numpy()
    iu = np.triu_indices(len(columns), 1)
    diff = np.abs(corr_r[iu] - corr_s[iu])
    fidelity: dict[str, float] = {
        "tvd_1way_mean": float(np.mean(list(one.values()))),
        "tvd_1way_max": float(np.max(list(one.values()))),
        "tvd_2way_mean": float(np.mean(two)) if two else float("nan"),
        "tvd_2way_max": float(np.max(two)) if two else float("nan"),
        "ks_mean": float(np.nanmean([r["ks"] for r in per_column]))
        if any(np.isfinite(r["ks"]) for r in per_column) else float("nan"),
        "corr_diff_mean": float(np.nanmean(diff)) if diff.size else float("nan"),
    }
    for stem, (tcol, scol) in OUTCOMES.items():
        if tcol in columns and scol in columns:
            fidelity[f"km_max_diff_{stem}"] = _km_distance(train, synthetic, tcol, scol)
    has_surv = duration_col in columns and event_col in columns
    if cox_covariates is None:
        cox_covariates = [c for c in ("age", "hb", "plt", "anc", "bm_blast")
                          if c in domain.names and domain[c].kind == "numeric"]
    if has_surv and cox_covariates:
        try:
            hr_r = _cox_log_hr(train, cox_covariates, duration_col, event_col)
            hr_s = _cox_log_hr(synthetic, cox_covariates, duration_col, event_col)
            fidelity["cox_log_hr_max_abs_diff"] = float(np.max(np.abs(hr_r - hr_s)))
            fidelity["cox_hr_sign_agreement"] = float(np.mean(np.sign(hr_r) == np.sign(hr_s)))
        except Exception as exc:  # lifelines raises several types on degenerate data
            notes.append(f"Cox hazard ratios not computed: {exc}")
    fidelity["ipssr_category_tvd"] = _ipssr_tvd(train, synthetic)

    utility: dict[str, float] = {}
    features = [c for c in columns if c not in _OUTCOME_COLUMNS]
    if has_surv and features:
        utility["c_index_trtr"] = _c_index(train, holdout, features, duration_col, event_col)
        utility["c_index_tstr"] = _c_index(synthetic, holdout, features, duration_col, event_col)
    target = classifier_target or (event_col if event_col in columns else None)
    if target is not None and features:
        feats = [c for c in features if c != target]
        utility["auc_trtr"] = _auc(train, holdout, feats, target)
        utility["auc_tstr"] = _auc(synthetic, holdout, feats, target)
    privacy = _privacy(train, synthetic, holdout, columns,
                       sensitive or (event_col if event_col in columns else None), rng)
    return EvaluationReport(fidelity, utility, privacy, pd.DataFrame(per_column), tuple(notes))
