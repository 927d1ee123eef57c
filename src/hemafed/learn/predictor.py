"""The public risk score a model-evaluation query carries: one checked type for the four of them.

A :class:`Predictor` is what the hub sends as ``predictor`` (``learn_risk_histogram``,
``learn_eval_sums``, ``learn_site_concordance``) or as each value of ``models``
(``learn_loso_concordance``): a boosted model (``gbdt``: its design, base score and trees, and
for a Cox model its baseline cumulative hazard), the IPSS-M mean score the site computes
(``ipssm``), or a numeric cohort column (``column``); each with public ``bounds`` of the risk
for binning. It is parsed once, at the site, by :meth:`Predictor.from_params`, which names the
parameter that carried it in every refusal; :meth:`Predictor.to_params` gives the hub's form
back.

>>> p = Predictor.from_params({"kind": "column", "column": "ipssr", "bounds": [0, 10]})
>>> p.bounds, p.to_params()["bounds"]
((0.0, 10.0), [0.0, 10.0])
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.analytics.design import DesignSpec
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.learn.features import feature_matrix
from hemafed.learn.gbdt import BoostedModel, margin

__all__ = ["IPSSM_BOUNDS", "PREDICTOR_KINDS", "Predictor"]

PREDICTOR_KINDS = ("gbdt", "ipssm", "column")
IPSSM_BOUNDS = (-6.0, 8.0)
"""Public range used to bin IPSS-M scores (the published scores lie well inside)."""

_KEYS = {"gbdt": {"kind", "bounds", "design", "base", "trees", "hazard_times", "hazard"},
         "ipssm": {"kind", "bounds"}, "column": {"kind", "bounds", "column"}}
"""The keys of each kind's wire form."""


@dataclass(frozen=True)
class Predictor:
    """A public risk score (higher = worse) and the public bounds its values are binned in.

    ``kind`` ``gbdt``: ``design`` and ``model`` (base score and trees; risk = margin), and for
    a Cox model the baseline cumulative hazard ``hazard`` at ``hazard_times`` (then it predicts
    survival too); ``column``: the cohort column holding the score; ``ipssm``: nothing more.
    """

    kind: str
    bounds: tuple[float, float]
    design: DesignSpec | None = None
    model: BoostedModel | None = None
    hazard_times: tuple[float, ...] = ()
    hazard: tuple[float, ...] = ()
    column: str = ""

    def __post_init__(self) -> None:
        boosted = self.design is not None and self.model is not None
        if self.kind not in PREDICTOR_KINDS or boosted != (self.kind == "gbdt") \
                or bool(self.column) != (self.kind == "column") \
                or len(self.hazard) != len(self.hazard_times) \
                or (self.hazard_times and not boosted) or not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"Predictor: a {self.kind!r} predictor has exactly its kind's "
                             "fields (gbdt: design and model, column: column) and bounds "
                             "low < high; build it with Predictor.from_params")

    @property
    def has_survival(self) -> bool:
        """Whether the predictor gives survival probabilities (a boosted Cox model)."""
        return bool(self.hazard_times)

    @classmethod
    def from_params(cls, value: Any, key: str = "predictor") -> Predictor:
        """Parse and check the hub's predictor mapping; a refusal names the parameter ``key``
        that carried it (``predictor``, or ``models`` for a fold model)."""
        if isinstance(value, Predictor):
            return value
        if not isinstance(value, Mapping) or value.get("kind") not in PREDICTOR_KINDS:
            raise InvalidInput(f"parameter {key!r} must be a mapping with kind in "
                               f"{PREDICTOR_KINDS}; build it with gbdt_predictor/ipssm_predictor")
        kind = str(value["kind"])
        unknown = sorted(str(k) for k in value if k not in _KEYS[kind])
        if unknown:
            raise InvalidInput(f"parameter {key!r}: unknown {kind} predictor field "
                               f"{unknown[0]!r}; expected some of {', '.join(sorted(_KEYS[kind]))}")
        try:
            low, high = checks.bounds(_pair(value.get("bounds")))
        except InvalidInput:
            raise InvalidInput(f"parameter {key!r}: its 'bounds' must be [low, high], finite, "
                               "low < high") from None
        if kind == "ipssm":
            return cls(kind, (low, high))
        if kind == "column":
            col = value.get("column")
            if not isinstance(col, str) or not col:
                raise InvalidInput(f"parameter {key!r}: its 'column' must name a cohort column")
            return cls(kind, (low, high), column=col)
        return cls(kind, (low, high), *_boosted(value, key))

    def to_params(self) -> dict[str, Any]:
        """The hub's wire form (what :func:`hemafed.learn.metrics.gbdt_predictor` builds)."""
        out: dict[str, Any] = {"kind": self.kind, "bounds": list(self.bounds)}
        if self.kind == "column":
            out["column"] = self.column
        if self.design is not None and self.model is not None:
            out |= {"design": self.design.to_params(), **self.model.to_params()}
            if self.has_survival:
                out |= {"hazard_times": list(self.hazard_times), "hazard": list(self.hazard)}
        return out

    @property
    def cache_key(self) -> str:
        """The site's memo key of this predictor's risks on one cohort."""
        return "risk:" + json.dumps(self.to_params(), sort_keys=True)

    def risk(self, cohort: Cohort) -> np.ndarray:
        """Risk score of every patient of the site (NaN where it cannot be computed)."""
        if self.model is not None and self.design is not None:
            return margin(self.model.trees, self.model.base, feature_matrix(cohort, self.design))
        if self.kind == "ipssm":
            from hemafed.scores.ipssm import ipssm

            res = ipssm(cohort.patients, cohort.gene_matrix(), cohort.mutations)
            return res.values["score_mean"].to_numpy(dtype=float)
        if self.column not in cohort.patients.columns:
            raise InvalidInput(f"predictor column {self.column!r} is not in the site's cohort")
        return cohort.patients[self.column].astype("Float64").to_numpy(dtype=float,
                                                                        na_value=np.nan)

    def survival(self, risk: np.ndarray, times: Sequence[float] | np.ndarray
                 ) -> np.ndarray | None:
        """``(n, len(times))`` predicted survival, or None when the predictor has no baseline."""
        if not self.has_survival:
            return None
        ht = np.asarray(self.hazard_times, dtype=float)
        hz = np.asarray(self.hazard, dtype=float)
        pos = np.searchsorted(ht, np.asarray(times, dtype=float) + 1e-12, side="right") - 1
        cum = np.where(pos >= 0, hz[np.maximum(pos, 0)], 0.0)
        return np.asarray(np.exp(-np.outer(np.exp(risk), cum)))


def _pair(bounds: Any) -> dict[str, Any]:
    if isinstance(bounds, list | tuple) and len(bounds) == 2:
        return {"low": bounds[0], "high": bounds[1]}
    return {}


def _boosted(value: Mapping[str, Any], key: str
             ) -> tuple[DesignSpec, BoostedModel, tuple[float, ...], tuple[float, ...]]:
    """The design, model and baseline hazard of a ``gbdt`` predictor, checked."""
    try:
        design = DesignSpec.from_params(value.get("design"))
    except InvalidInput:
        raise InvalidInput(f"parameter {key!r}: its 'design' must be a design's terms "
                           "(DesignSpec.to_params())") from None
    try:
        model = BoostedModel.from_params({"base": value.get("base"),
                                          "trees": value.get("trees")})
    except InvalidInput:
        raise InvalidInput(f"parameter {key!r}: its 'base' (a finite number) and 'trees' (node "
                           "lists) must be a boosted model whose margin bound is at most "
                           "MAX_LP_TERM") from None
    if any(f >= design.width for t in model.trees for f in t.feature):
        raise InvalidInput(f"parameter {key!r}: a tree splits on a feature the design does not "
                           "have")
    if ("hazard" in value) != ("hazard_times" in value):
        raise InvalidInput(f"parameter {key!r}: 'hazard' and 'hazard_times' go together")
    if "hazard" not in value:
        return design, model, (), ()
    try:
        times = checks.numbers(value, "hazard_times", low=0.0, increasing=True)
        hazard = checks.numbers(value, "hazard", length=len(times), low=0.0)
    except InvalidInput:
        raise InvalidInput(f"parameter {key!r}: its 'hazard_times' (increasing times >= 0) and "
                           "'hazard' (one cumulative hazard >= 0 per time) must be finite "
                           "numbers") from None
    return design, model, times, hazard
