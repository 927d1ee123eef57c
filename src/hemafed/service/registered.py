"""A registered model as an object: what ``Client.model(name, version)`` returns.

The registry (:class:`hemafed.service.models.ModelVersion`) stores a fitted model's result
document (its tables, stats, options) with its lineage (spec hash -> run -> version). From
that document a Cox or logistic model can honestly give its coefficients, hazard or odds ratios
and a linear predictor on a design the caller supplies; nothing more: the registry holds no
baseline hazard (so no survival curve) and no boosted trees (so no boosted prediction), and
this class says so rather than guess.

>>> m = RegisteredModel.from_document({"name": "s.cox", "version": 1, "kind": "cox",
...     "spec_sha256": "ab", "run": 3, "payload": {"title": "Cox", "options": {},
...     "tables": {"summary": {"index": ["age"], "columns": ["coef", "exp(coef)"],
...                            "data": [[0.5, 1.6487]]}}}})
>>> import pandas as pd
>>> float(m.linear_predictor(pd.DataFrame({"age": [2.0]})).iloc[0])
1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.documents import frame_from_json
from hemafed.errors import InvalidInput

LINEAR_KINDS = ("cox", "logistic")
"""Kinds whose stored coefficients define a linear predictor."""

INTERCEPT = "const"
"""The logistic table's intercept row (statsmodels' name)."""


@dataclass(frozen=True)
class RegisteredModel:
    """One model version of the hub's registry, with its lineage and stored document."""

    name: str
    version: int
    kind: str
    spec_sha256: str
    run: int
    title: str
    options: Mapping[str, Any]
    tables: Mapping[str, pd.DataFrame]
    document: Mapping[str, Any]
    """The registry's document as the hub sent it (:meth:`to_dict`)."""

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> RegisteredModel:
        """Build from ``GET /api/models/{name}/{version}``'s JSON."""
        try:
            payload = doc.get("payload") or {}
            tables = {str(k): frame_from_json(v) for k, v in (payload.get("tables") or {}).items()
                      if isinstance(v, Mapping) and "columns" in v}
            return cls(str(doc["name"]), int(doc["version"]), str(doc["kind"]),
                       str(doc["spec_sha256"]), int(doc["run"]), str(payload.get("title") or ""),
                       dict(payload.get("options") or {}), tables, dict(doc))
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"not a registered model document: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The stored document (tables as JSON, stats, options) and its lineage."""
        return dict(self.document)

    @property
    def lineage(self) -> dict[str, Any]:
        """Spec hash -> run -> model version."""
        return {"spec_sha256": self.spec_sha256, "run": self.run, "name": self.name,
                "version": self.version}

    @property
    def coefficients(self) -> pd.DataFrame:
        """The coefficient table (Cox: lifelines' columns; logistic: statsmodels')."""
        if self.kind not in LINEAR_KINDS or "summary" not in self.tables:
            raise InvalidInput(f"model {self.name} v{self.version} is a {self.kind} model: the "
                               "registry stores no coefficient table for it")
        return self.tables["summary"]

    @property
    def hazard_ratios(self) -> pd.DataFrame:
        """A Cox model's ``exp(coef)`` with its 95% interval."""
        if self.kind != "cox":
            raise InvalidInput(f"model {self.name} is a {self.kind} model, not a Cox model: "
                               "it has no hazard ratios")
        t = self.coefficients
        return t[[c for c in t.columns if c.startswith("exp(coef)")]]

    def linear_predictor(self, design: pd.DataFrame) -> pd.Series:
        """``X @ coef`` (plus the intercept for logistic) for design columns named as the
        coefficient rows (a categorical level's indicator column by its row name).

        A Cox linear predictor is relative to all covariates at zero (the registry has no
        baseline hazard, so this ranks risk; it is not a survival probability).
        """
        t = self.coefficients
        names = [str(n) for n in t.index if str(n) != INTERCEPT]
        missing = [n for n in names if n not in design.columns]
        if missing:
            raise InvalidInput(f"the design lacks column(s) {', '.join(missing)} of model "
                               f"{self.name} v{self.version}")
        try:
            x = design[names].to_numpy(dtype=float)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"design columns must be numeric: {e}") from e
        coef = t.loc[names, "coef"].to_numpy(dtype=float)
        lp = x @ coef
        if INTERCEPT in t.index:
            lp = lp + float(t.loc[INTERCEPT, "coef"])
        return pd.Series(lp, index=design.index, name="linear_predictor")

    def predict_proba(self, design: pd.DataFrame) -> pd.Series:
        """A logistic model's probability of the outcome for each row of ``design``."""
        if self.kind != "logistic":
            raise InvalidInput(f"model {self.name} is a {self.kind} model: only a logistic "
                               "model's stored coefficients give a probability")
        return (1.0 / (1.0 + np.exp(-self.linear_predictor(design)))).rename("probability")
