"""Federated gradient-boosted trees on secure sums of gradient/Hessian histograms.

The hub holds the model; sites hold patients. Everything a site returns is a sum over its
patients, and the hub only sees the sum over sites.

**Bins.** Features get public cut points first (:mod:`hemafed.learn.features`: declared, or a
quantile sketch from a secure fine-grid histogram).

**One boosting round** (the current model is public and travels in the query parameters):

1. *Cox objective only: risk sets.* Query ``gbdt_cox_risk_sets``: each site returns, per public
   grid time ``t_j``, ``S0_j = sum_{T_k >= t_j} exp(f_k)`` over its patients at risk, the events
   ``d_j`` and the sum of the margins of its events. The Breslow partial likelihood couples every
   patient to the risk sets of *all* sites, so a site cannot compute its own patients' gradients
   alone; the hub sums, then broadcasts ``A_j = sum_{l<=j} d_l/S0_l`` and
   ``B_j = sum_{l<=j} d_l/S0_l^2``. With those, patient ``k`` (event ``delta_k``, grid index
   ``j_k``, ``w_k = exp(f_k)``) has gradient ``w_k A_{j_k} - delta_k`` and Hessian
   ``w_k A_{j_k} - w_k^2 B_{j_k}`` (the diagonal Hessian XGBoost uses): these are the exact
   per-patient derivatives of the pooled negative log partial likelihood.
2. *Histograms, one query per tree level.* Query ``gbdt_histograms``: with the model, the partial
   tree and its frontier nodes, each site routes its patients, computes their gradient and
   Hessian (logistic: ``p - y`` and ``p(1-p)``; Cox: from step 1) and returns per frontier node,
   feature and bin (plus a missing slot) the sums of gradients and Hessians.
3. *Hub step.* For every frontier node the hub picks the split from the summed histograms
   (:func:`hemafed.learn.trees.find_split`) and the children's values from their summed ``G/H``.

A tree of depth ``D`` therefore costs ``D`` secure sums (+1 for Cox). The algorithm run on a
single pooled "site" is the pooled histogram GBDT: with the same bins, federated and pooled give
the same splits and leaves (up to floating-point summation order, and the fixed-point resolution
of secure aggregation).

**Explanations.** :meth:`FederatedGBDT.contributions` gives Saabas path contributions (per tree,
the change in node value along the decision path is credited to the split's feature; they sum to
the prediction minus the base value). These are *not* exact TreeSHAP values.
:attr:`FederatedGBDT.feature_importances_` is total split gain per feature.

**DP and bounds.** ``gbdt_histograms`` may be released with DP (``FederatedGBDT(dp=...)``):
given the public model and the broadcast ``A``/``B``, one patient changes a site's sums by its
own gradient and Hessian only, bounded from the parameters alone (``|g| <= exp(M) max|A| + 1``,
``0 <= h <= exp(M) max|A| + exp(2M) max|B|`` with ``M`` the model's margin bound), once per
feature. The declared bounds are those per-patient bounds times the public ``max_patients``:
no hub-supplied total, so no site's data can fall outside them (an approved study requires DP
for these histograms unless its spec opts out, :mod:`hemafed.study.plan`). The other boosting
queries are not DP.

>>> # model = FederatedGBDT("survival:cox", n_rounds=100).fit(
>>> #     federation, ["age", "hb", "gene:TP53"], ("os_time", "os_status"))
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.analytics.design import MAX_LP_TERM, DesignSpec, Term
from hemafed.analytics.fitter import FederatedFitter, renamed_argument
from hemafed.analytics.survival_grid import check_grid
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import DPRequest, Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register
from hemafed.learn.features import (
    BinEdges,
    check_names,
    feature_matrix,
    feature_spec,
    federated_bins,
    site_cached,
)
from hemafed.learn.trees import Tree, TreeBuilder, TreeParams, find_split

log = logging.getLogger(__name__)

OBJECTIVES = ("binary:logistic", "survival:cox")
DEFAULT_RESOLUTION = 1e-9


# --- the outcome ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What the model predicts: a 0/1 label column, or a survival (duration, event) pair on a
    public time grid (times are mapped up to the next grid point; later ones count as censored
    at the last grid point)."""

    objective: str
    label_col: str = ""
    duration_col: str = ""
    event_col: str = ""
    grid: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise InvalidInput(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "binary:logistic" and not self.label_col:
            raise InvalidInput("the logistic objective needs a 0/1 label column")
        if self.objective == "survival:cox":
            if not self.duration_col or not self.event_col:
                raise InvalidInput("the Cox objective needs a (duration_col, event_col) pair")
            check_grid(list(self.grid))

    @property
    def is_cox(self) -> bool:
        return self.objective == "survival:cox"

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.duration_col, self.event_col) if self.is_cox else (self.label_col,)

    def to_params(self) -> dict[str, Any]:
        return {"objective": self.objective, "label_col": self.label_col,
                "duration_col": self.duration_col, "event_col": self.event_col,
                "grid": list(self.grid)}

    @classmethod
    def from_params(cls, p: Any) -> Outcome:
        if isinstance(p, Outcome):
            return p
        if not isinstance(p, Mapping):
            raise InvalidInput("parameter 'outcome' must be a mapping (Outcome.to_params())")
        return cls(str(p.get("objective")), str(p.get("label_col", "")),
                   str(p.get("duration_col", "")), str(p.get("event_col", "")),
                   tuple(float(t) for t in p.get("grid", ())))


def default_grid(max_time: float = 20.0, step: float = 1.0 / 12.0) -> tuple[float, ...]:
    """A public monthly grid (in years) ``step, 2 step, ..., max_time``."""
    n = math.floor(max_time / step + 1e-9)
    return tuple(float(round((k + 1) * step, 12)) for k in range(n))


@dataclass(frozen=True)
class TrainingRows:
    """A site's rows with a known outcome: features (NaN missing), label/event, grid index."""

    x: np.ndarray
    label: np.ndarray
    time_index: np.ndarray


def _numeric_outcome(cohort: Cohort, col: str) -> np.ndarray:
    return cohort.numeric_column(col, "outcome")

def training_rows(cohort: Cohort, spec: DesignSpec, outcome: Outcome) -> TrainingRows:
    """Rows whose outcome is known; raises ``InvalidInput`` for a non-binary label or event."""
    key = "rows:" + json.dumps([spec.to_params(), outcome.to_params()])
    rows: TrainingRows = site_cached(cohort, key, lambda: _training_rows(cohort, spec, outcome))
    return rows


def _training_rows(cohort: Cohort, spec: DesignSpec, outcome: Outcome) -> TrainingRows:
    values = [_numeric_outcome(cohort, c) for c in outcome.columns]
    keep = np.all([~np.isnan(v) for v in values], axis=0)
    x = feature_matrix(cohort, spec, keep)
    label = values[-1][keep]
    bad = (label != 0) & (label != 1)
    if bad.any():
        col = outcome.columns[-1]
        raise InvalidInput(f"outcome column {col!r} must be binary 0/1; some rows hold other "
                           "values")
    if not outcome.is_cox:
        return TrainingRows(x, label, np.zeros(label.size, dtype=np.int64))
    t = values[0][keep]
    if t.size and t.min() < 0:
        raise InvalidInput(f"duration column {outcome.duration_col!r} has negative times")
    grid = np.asarray(outcome.grid)
    idx = np.searchsorted(grid, t - 1e-9 * np.maximum(1.0, np.abs(t)), side="left")
    event = (label == 1) & (idx < grid.size)
    return TrainingRows(x, event.astype(float), np.minimum(idx, grid.size - 1))


# --- the public model in query parameters --------------------------------------------------

def margin(trees: Sequence[Tree], base: float, x: np.ndarray) -> np.ndarray:
    out = np.full(x.shape[0], float(base))
    for t in trees:
        out += t.predict(x)
    return out


def margin_bound(trees: Sequence[Tree], base: float) -> float:
    """Public bound of ``|margin|`` from the model alone."""
    return abs(base) + sum(t.max_abs_leaf() for t in trees)


def _tree_key(prev: int, t: Tree) -> int:
    return hash((prev, t.feature, t.threshold, t.default_left, t.left, t.right, t.value))


def site_margin(cohort: Cohort, rows: TrainingRows, params: ModelParams) -> np.ndarray:
    """The model's margins of the site's training rows, memoised per model prefix so that each
    round costs one new tree's prediction (the site keeps nothing else between rounds)."""
    base = params.model.base
    key = hash((json.dumps([params.design.to_params(), params.outcome.to_params()]), base))
    out = site_cached(cohort, f"margin:{key}", lambda: np.full(rows.x.shape[0], base))

    def add_tree(prev: np.ndarray, tree: Tree) -> Callable[[], np.ndarray]:
        return lambda: prev + tree.predict(rows.x)

    for t in params.model.trees:
        key = _tree_key(key, t)
        out = site_cached(cohort, f"margin:{key}", add_tree(out, t))
    return np.asarray(out)


@dataclass(frozen=True)
class BoostedModel:
    """The public model a boosting query carries (wire key ``model``): base score and trees."""

    base: float = 0.0
    trees: tuple[Tree, ...] = ()

    @property
    def margin_bound(self) -> float:
        return margin_bound(self.trees, self.base)

    def to_params(self) -> dict[str, Any]:
        return {"base": self.base, "trees": [t.to_params() for t in self.trees]}

    @classmethod
    def from_params(cls, m: Any) -> BoostedModel:
        """Parse and check ``params['model']``: its margin bound must be within MAX_LP_TERM."""
        base = m.get("base", 0.0) if isinstance(m, Mapping) else None
        if not isinstance(m, Mapping) or not isinstance(m.get("trees", []), list | tuple) \
                or isinstance(base, bool) or not isinstance(base, int | float) \
                or not math.isfinite(base):
            raise InvalidInput("parameter 'model' must be {'base': float, 'trees': [...]}")
        try:
            trees = tuple(Tree.from_params(t) for t in m.get("trees", []))
        except InvalidInput:
            raise InvalidInput("parameter 'model': every tree must be a mapping of node lists "
                               "(feature, threshold, default_left, left, right, value)") from None
        model = cls(float(base), trees)
        bound = model.margin_bound
        if not bound <= MAX_LP_TERM:
            # as for a Cox beta: the risk weights exp(margin) may span at most e^(2 MAX_LP_TERM)
            raise InvalidInput(f"parameter 'model': its margin bound {bound:g} (base and largest "
                               f"leaves) is above {MAX_LP_TERM:g} (MAX_LP_TERM)")
        return model


_SPECS_SIZE = 32
_SPECS: OrderedDict[str, DesignSpec] = OrderedDict()
"""The last :data:`_SPECS_SIZE` parsed designs (every round of a fit sends the same one); a
bounded LRU, so a hub sending ever new designs cannot grow a site's memory."""
_SPECS_LOCK = threading.Lock()


def _design(params: Params) -> DesignSpec:
    design = params.get("design")
    key = json.dumps(design, default=str)
    with _SPECS_LOCK:
        spec = _SPECS.get(key)
        if spec is not None:
            _SPECS.move_to_end(key)
            return spec
    spec = DesignSpec.from_params(design)
    with _SPECS_LOCK:
        _SPECS[key] = spec
        while len(_SPECS) > _SPECS_SIZE:
            _SPECS.popitem(last=False)
    return spec


def _outcome(params: Params) -> Outcome:
    try:
        return Outcome.from_params(params.get("outcome"))
    except (TypeError, ValueError):
        raise InvalidInput("parameter 'outcome' is malformed: see Outcome.to_params()") from None


@dataclass(frozen=True, kw_only=True)
class ModelParams(QueryParams):
    """What every boosting query carries: the public design, the outcome, the current model."""

    QUERY = "gbdt_label_sums"
    design: DesignSpec
    outcome: Outcome
    model: BoostedModel = BoostedModel()
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def _common(cls, params: Params) -> dict[str, Any]:
        cls.known(params)
        return {"design": _design(params), "outcome": _outcome(params),
                "model": BoostedModel.from_params(params.get("model", {})),
                "max_patients": checks.max_patients(params)}

    @classmethod
    def from_mapping(cls, params: Params) -> ModelParams:
        return cls(**cls._common(params))

    def to_mapping(self) -> dict[str, Any]:
        return {**super().to_mapping(), "design": self.design.to_params(),
                "outcome": self.outcome.to_params(), "model": self.model.to_params()}


@dataclass(frozen=True, kw_only=True)
class RiskSetParams(ModelParams):
    """``gbdt_cox_risk_sets``: the model's parameters and the released sums' resolution."""

    QUERY = "gbdt_cox_risk_sets"
    resolution: float = DEFAULT_RESOLUTION

    @classmethod
    def from_mapping(cls, params: Params) -> RiskSetParams:
        return cls(**cls._common(params),
                   resolution=checks.resolution(params, default=DEFAULT_RESOLUTION))


@dataclass(frozen=True, kw_only=True)
class HistogramParams(RiskSetParams):
    """``gbdt_histograms``: the public bin edges, the tree grown so far and the frontier nodes
    to histogram, and (Cox) the broadcast cumulative risk-set sums ``risk_a``, ``risk_b``, one
    per grid time."""

    QUERY = "gbdt_histograms"
    edges: BinEdges
    tree: Tree
    frontier: tuple[int, ...]
    risk_a: tuple[float, ...] = ()
    risk_b: tuple[float, ...] = ()

    @classmethod
    def from_mapping(cls, params: Params) -> HistogramParams:
        common = cls._common(params)
        edges = BinEdges.from_params(params.get("edges"))
        try:
            check_names(common["design"], edges.names)
        except InvalidInput as exc:
            raise InvalidInput(f"parameter 'edges': {exc}") from None
        try:
            tree = Tree.from_params(params.get("tree"))
        except InvalidInput as exc:
            raise InvalidInput(f"parameter 'tree': {exc}") from None
        frontier = params.get("frontier")
        if not isinstance(frontier, list | tuple) or not frontier or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in frontier) \
                or len(set(frontier)) != len(frontier):
            raise InvalidInput("parameter 'frontier' must list the distinct node ids (ints >= 0) "
                               "to histogram")
        m = len(common["outcome"].grid) if common["outcome"].is_cox else None
        risk_a, risk_b = (checks.numbers(params, key, length=m, allow_empty=m is None, default=())
                          for key in ("risk_a", "risk_b"))
        return cls(**common, resolution=checks.resolution(params, default=DEFAULT_RESOLUTION),
                   edges=edges, tree=tree, frontier=tuple(frontier), risk_a=risk_a,
                   risk_b=risk_b)

    def to_mapping(self) -> dict[str, Any]:
        return {**super().to_mapping(), "edges": self.edges.to_params(),
                "tree": self.tree.to_params()}


# --- query: label sums (logistic base score) ------------------------------------------------

def _label_compute(cohort: Cohort, params: ModelParams) -> dict[str, np.ndarray]:
    rows = training_rows(cohort, params.design, params.outcome)
    return {"n": np.array([float(rows.label.size)]), "positive": np.array([rows.label.sum()])}


def _label_declare(params: ModelParams) -> dict[str, Statistic]:
    mp = params.max_patients
    return {"n": Statistic((1,), 0, mp, is_count=True),
            "positive": Statistic((1,), 0, mp, is_count=True)}


register(Query("gbdt_label_sums", "1", compute=_label_compute, declare=_label_declare,
               params_type=ModelParams, description="rows with a known label, and positives"))


# --- query: Cox risk sets at the current model ----------------------------------------------

def cox_risk_sets(rows: TrainingRows, f: np.ndarray, m: int) -> dict[str, np.ndarray]:
    """``S0_j``, events ``d_j`` per grid time and the sum of the events' margins (pure)."""
    w = np.exp(f)
    s0 = np.cumsum(np.bincount(rows.time_index, weights=w, minlength=m)[::-1])[::-1]
    ev = rows.label == 1
    d = np.bincount(rows.time_index[ev], minlength=m).astype(float)
    return {"s0": s0, "d": d, "event_margin": np.array([float(f[ev].sum())]),
            "n": np.array([float(f.size)])}


def _risk_compute(cohort: Cohort, params: RiskSetParams) -> dict[str, np.ndarray]:
    rows = training_rows(cohort, params.design, params.outcome)
    return cox_risk_sets(rows, site_margin(cohort, rows, params), len(params.outcome.grid))


def _risk_declare(params: RiskSetParams) -> dict[str, Statistic]:
    mp, bound = params.max_patients, params.model.margin_bound
    m, res = len(params.outcome.grid), params.resolution
    e = math.exp(bound)
    # wide public bounds (exp of a large margin bound) coarsen the resolution (see Statistic)
    return {"s0": Statistic((m,), 0, mp * e, res, sensitivity=e * math.sqrt(m)),
            "d": Statistic((m,), 0, mp, is_count=True),
            "event_margin": Statistic((1,), -mp * bound, mp * bound, res, sensitivity=bound),
            "n": Statistic((1,), 0, mp, is_count=True)}


register(Query("gbdt_cox_risk_sets", "1", compute=_risk_compute, declare=_risk_declare,
               params_type=RiskSetParams,
               description="Cox risk-set sums S0 and events per grid time at the current trees"))


# --- query: gradient/Hessian histograms -----------------------------------------------------

def gradients(rows: TrainingRows, f: np.ndarray, outcome: Outcome,
              risk: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per-patient gradient and Hessian of the loss at margins ``f`` (pure)."""
    if not outcome.is_cox:
        p = 1.0 / (1.0 + np.exp(-f))
        return p - rows.label, p * (1.0 - p)
    a = np.asarray(risk["risk_a"], dtype=float)[rows.time_index]
    b = np.asarray(risk["risk_b"], dtype=float)[rows.time_index]
    w = np.exp(f)
    return w * a - rows.label, np.maximum(w * a - w * w * b, 0.0)


def node_histograms(bins: np.ndarray, node: np.ndarray, frontier: Sequence[int],
                    grad: np.ndarray, hess: np.ndarray, slots: int) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    """``(len(frontier), features, slots)`` sums of gradients and Hessians (pure)."""
    p = bins.shape[1]
    lookup = np.full(max(max(frontier), int(node.max(initial=0))) + 1, -1, dtype=np.int64)
    lookup[list(frontier)] = np.arange(len(frontier))
    row_pos = lookup[node]
    sel = row_pos >= 0
    size = len(frontier) * p * slots
    flat = ((row_pos[sel, None] * p + np.arange(p)[None, :]) * slots + bins[sel]).ravel()
    g = np.bincount(flat, weights=np.repeat(grad[sel], p), minlength=size)
    h = np.bincount(flat, weights=np.repeat(hess[sel], p), minlength=size)
    shape = (len(frontier), p, slots)
    return g.reshape(shape), h.reshape(shape)


def _hist_compute(cohort: Cohort, params: HistogramParams) -> dict[str, np.ndarray]:
    edges, outcome = params.edges, params.outcome
    rows = training_rows(cohort, params.design, outcome)
    f = site_margin(cohort, rows, params)
    grad, hess = gradients(rows, f, outcome, {"risk_a": params.risk_a, "risk_b": params.risk_b})
    node = params.tree.route(rows.x)
    bins = site_cached(cohort, "bins:" + json.dumps([params.design.to_params(),
                                                     outcome.to_params(), edges.to_params()]),
                       lambda: edges.bin(rows.x))
    g, h = node_histograms(bins, node, list(params.frontier), grad, hess, edges.missing_bin + 1)
    return {"grad": g, "hess": h}


def _hist_declare(params: HistogramParams) -> dict[str, Statistic]:
    mp, outcome, edges, res = params.max_patients, params.outcome, params.edges, params.resolution
    shape = (len(params.frontier), len(edges.names), edges.missing_bin + 1)
    p = len(edges.names)
    if outcome.is_cox:
        # one patient: g = w A_j - delta in [-1, e^M max|A|], h = max(w A_j - w^2 B_j, 0) in
        # [0, e^M max|A| + e^2M max|B|], from the public model and A, B alone (module docstring)
        w = math.exp(params.model.margin_bound)
        a = max((abs(v) for v in params.risk_a), default=0.0)
        b = max((abs(v) for v in params.risk_b), default=0.0)
        g_unit, h_unit = w * a + 1.0, w * a + w * w * b
    else:
        g_unit, h_unit = 1.0, 0.25
    slack = 1 + 1e-9  # floating-point rounding of the sums
    return {"grad": Statistic(shape, -float(mp), mp * g_unit * slack, res,
                              sensitivity=g_unit * math.sqrt(p)),
            "hess": Statistic(shape, 0.0, mp * h_unit * slack, res,
                              sensitivity=h_unit * math.sqrt(p))}


register(Query("gbdt_histograms", "1", compute=_hist_compute, declare=_hist_declare,
               params_type=HistogramParams,
               description="per frontier node, feature and bin: sums of gradients and Hessians"))


# --- the hub --------------------------------------------------------------------------------

def _as_outcome(objective: str, outcome: str | Sequence[str], grid: Sequence[float] | None
                ) -> Outcome:
    if objective == "binary:logistic":
        if not isinstance(outcome, str):
            raise InvalidInput("the logistic objective takes one label column name as outcome")
        return Outcome(objective, label_col=outcome)
    if isinstance(outcome, str) or len(outcome) != 2:
        raise InvalidInput("the Cox objective takes outcome=(duration_col, event_col)")
    return Outcome(objective, duration_col=str(outcome[0]), event_col=str(outcome[1]),
                   grid=tuple(float(t) for t in (grid if grid is not None else default_grid())))


class FederatedGBDT(FederatedFitter):
    """Histogram gradient-boosted trees trained over a federation.

    ``objective``: ``"binary:logistic"`` (outcome: a 0/1 column) or ``"survival:cox"`` (outcome:
    ``(duration_col, event_col)``; Breslow partial likelihood on a public ``grid``, default
    monthly to 20 years). After ``fit``: ``trees_``, ``base_score_``, ``edges_``, ``spec_``,
    ``feature_names_``, ``feature_importances_`` (total gain), ``loss_`` (Cox: pooled negative
    log partial likelihood before each round and after the last), ``round_seconds_``,
    ``secure_sums_``, ``baseline_cumulative_hazard_`` (Cox, Breslow, on the grid).
    """

    _fitted_attribute = "trees_"

    def __init__(self, objective: str = "binary:logistic", n_rounds: int = 50,
                 learning_rate: float = 0.1, max_depth: int = 3, reg_lambda: float = 1.0,
                 min_child_weight: float = 1.0, gamma: float = 0.0, max_bins: int = 32,
                 grid: Sequence[float] | None = None, dp: DPRequest | None = None) -> None:
        if objective not in OBJECTIVES:
            raise InvalidInput(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if isinstance(n_rounds, bool) or not isinstance(n_rounds, int) or n_rounds < 1:
            raise InvalidInput(f"n_rounds must be a positive int, got {n_rounds!r}")
        self.objective, self.n_rounds, self.max_bins = objective, n_rounds, max_bins
        self.tree_params = TreeParams(max_depth, reg_lambda, min_child_weight, gamma,
                                      learning_rate)
        self.grid = tuple(check_grid(list(grid))) if grid is not None else None
        self.dp = dp
        self.trees_: list[Tree] = []

    # --- training ---------------------------------------------------------------------------
    def fit(self, federation: Federation,
            formula: str | Iterable[str | Term] | DesignSpec | None = None,
            outcome: str | Sequence[str] | None = None, *, edges: BinEdges | None = None,
            study: str = "default",
            features: str | Iterable[str | Term] | DesignSpec | None = None) -> FederatedGBDT:
        """Train ``n_rounds`` trees on the features ``formula``; ``edges`` default to a
        federated quantile sketch. (``features=`` is the former name of ``formula=``.)"""
        design: str | Iterable[str | Term] | DesignSpec = renamed_argument(
            "FederatedGBDT.fit", "formula", formula, "features", features)
        if outcome is None:
            raise InvalidInput("FederatedGBDT.fit: give the outcome")
        spec = feature_spec(design)
        out = _as_outcome(self.objective, outcome, self.grid)
        edges = edges if edges is not None else federated_bins(federation, spec, self.max_bins,
                                                               study=study)
        check_names(spec, edges.names)
        self.spec_, self.outcome_, self.edges_ = spec, out, edges
        self._federation, self._study = federation, study
        self.secure_sums_ = 0
        base = 0.0
        common = {"design": spec.to_params(), "outcome": out.to_params()}
        if not out.is_cox:
            agg = self._sum("gbdt_label_sums", common | {"model": {"base": 0.0, "trees": []}})
            n, pos = float(agg["n"][0]), float(agg["positive"][0])
            if n == 0 or pos in (0.0, n):
                raise InvalidInput(f"label {out.label_col!r} needs both 0 and 1 across sites "
                                   f"(n={n:g}, positives={pos:g})")
            base = math.log(pos / (n - pos))
        self.base_score_ = base
        self.trees_ = []
        self.loss_: list[float] = []
        self.round_seconds_: list[float] = []
        for r in range(self.n_rounds):
            start = time.perf_counter()
            model = {"base": base, "trees": [t.to_params() for t in self.trees_]}
            request = common | {"model": model, "edges": edges.to_params()}
            if out.is_cox:
                request |= self._risk_round(common | {"model": model})
            self.trees_.append(self._grow(request))
            self.round_seconds_.append(time.perf_counter() - start)
            log.debug("boosting round %d done", r + 1)
        if out.is_cox:
            model = {"base": base, "trees": [t.to_params() for t in self.trees_]}
            self._risk_round(common | {"model": model})
            grid = np.asarray(out.grid)
            self.baseline_cumulative_hazard_ = pd.Series(self._hazard, index=pd.Index(
                grid, name="time"), name="baseline_cumulative_hazard")
        log.info("federated GBDT: %d trees, %d secure sums", len(self.trees_), self.secure_sums_)
        return self

    def _sum(self, query: str, params: Mapping[str, Any], dp: DPRequest | None = None) -> Any:
        self.secure_sums_ += 1
        return self._federation.secure_sum(query, params, study=self._study, dp=dp)

    def _risk_round(self, request: dict[str, Any]) -> dict[str, Any]:
        """Step 1 of a Cox round: pooled risk sets, broadcast as cumulative A and B."""
        agg = self._sum("gbdt_cox_risk_sets", request)
        s0, d = agg["s0"], agg["d"]
        if d.sum() < 1:
            raise InvalidInput("no events on the grid at any site: the Cox objective needs events")
        with np.errstate(divide="ignore", invalid="ignore"):
            ra = np.where(d > 0, d / s0, 0.0)
            rb = np.where(d > 0, d / s0**2, 0.0)
            self.loss_.append(float(np.sum(np.where(d > 0, d * np.log(s0), 0.0))
                                    - agg["event_margin"][0]))
        self._hazard = np.cumsum(ra)
        return {"risk_a": [float(v) for v in self._hazard],
                "risk_b": [float(v) for v in np.cumsum(rb)]}

    def _grow(self, request: dict[str, Any]) -> Tree:
        """Grow one tree level by level: one secure histogram sum per level."""
        tp, edges = self.tree_params, self.edges_
        builder = TreeBuilder()
        frontier = [0]
        for depth in range(tp.max_depth):
            agg = self._sum("gbdt_histograms", request | {
                "tree": builder.freeze().to_params(), "frontier": frontier}, dp=self.dp)
            nxt: list[int] = []
            for i, node in enumerate(frontier):
                g, h = agg["grad"][i], agg["hess"][i]
                if depth == 0:
                    builder.value[0] = tp.value(float(g[0].sum()), float(h[0].sum()))
                    builder.cover[0] = float(h[0].sum())
                s = find_split(g, h, edges.n_bins, tp)
                if s is None:
                    continue
                threshold = edges.cuts[s.feature][s.bin]
                nxt.extend(builder.split(node, s, threshold, tp))
            frontier = nxt
            if not frontier:
                break
        return builder.freeze()

    # --- prediction and explanation --------------------------------------------------------
    def _need_fit(self) -> None:
        if not self.trees_:
            raise InvalidInput("call fit(...) first")

    def _x(self, data: Cohort | np.ndarray) -> np.ndarray:
        self._need_fit()
        if isinstance(data, Cohort):
            return feature_matrix(data, self.spec_)
        x = np.asarray(data, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.spec_.width:
            raise InvalidInput(f"expected a matrix with {self.spec_.width} feature columns "
                               f"({', '.join(self.spec_.names)}), got shape {x.shape}")
        return x

    def predict_margin(self, data: Cohort | np.ndarray, n_trees: int | None = None) -> np.ndarray:
        """Raw score (log-odds, or log relative hazard) using the first ``n_trees`` trees."""
        x = self._x(data)
        return margin(self.trees_[:n_trees], self.base_score_, x)

    def predict_proba(self, data: Cohort | np.ndarray) -> np.ndarray:
        """Probability of label 1 (logistic objective)."""
        if self.objective != "binary:logistic":
            raise InvalidInput("predict_proba is for the logistic objective; use "
                               "predict_survival for Cox")
        return 1.0 / (1.0 + np.exp(-self.predict_margin(data)))

    def predict_survival(self, data: Cohort | np.ndarray, times: Sequence[float]) -> np.ndarray:
        """``(n, len(times))`` survival probabilities ``exp(-H0(t) exp(f))`` (Cox objective)."""
        if self.objective != "survival:cox":
            raise InvalidInput("predict_survival is for the Cox objective")
        h0 = self.baseline_cumulative_hazard_
        grid = h0.index.to_numpy()
        pos = np.searchsorted(grid, np.asarray(times, dtype=float) + 1e-12, side="right") - 1
        cum = np.where(pos >= 0, h0.to_numpy()[np.maximum(pos, 0)], 0.0)
        return np.exp(-np.outer(np.exp(self.predict_margin(data)), cum))

    @property
    def feature_names_(self) -> tuple[str, ...]:
        self._need_fit()
        return self.spec_.names

    @property
    def expected_value_(self) -> float:
        """The base value of the explanations: base score + every tree's root value."""
        self._need_fit()
        return self.base_score_ + sum(t.value[0] for t in self.trees_)

    def contributions(self, data: Cohort | np.ndarray) -> pd.DataFrame:
        """Saabas path contributions per patient and feature (not TreeSHAP); each row sums,
        with the ``base`` column, to the margin."""
        x = self._x(data)
        contrib = np.zeros_like(x)
        for t in self.trees_:
            t.route(x, contrib)
        frame = pd.DataFrame(contrib, columns=list(self.spec_.names))
        frame["base"] = self.expected_value_
        if isinstance(data, Cohort):
            frame.index = data.ids
        return frame

    @property
    def feature_importances_(self) -> pd.Series:
        """Total split gain of each feature, summed over trees."""
        self._need_fit()
        total = np.zeros(self.spec_.width)
        for t in self.trees_:
            for f, g in zip(t.feature, t.gain, strict=True):
                if f >= 0:
                    total[f] += g
        return pd.Series(total, index=pd.Index(self.spec_.names, name="feature"),
                         name="total_gain")

    def _payload(self) -> dict[str, Any]:
        self._need_fit()
        return {
            "kind": "gbdt", "objective": self.objective, "outcome": self.outcome_.to_params(),
            "design": self.spec_.to_params(), "edges": self.edges_.to_params(),
            "base_score": self.base_score_, "params": vars(self.tree_params),
            "trees": [t.to_params() for t in self.trees_]}
