"""The site query of marginal-based synthesis: contingency tables over a public domain.

``marginal_counts@1`` takes a public discretisation (:class:`~hemafed.synth.domain.SynthDomain`
as ``domain``) and a list of ``cliques`` (lists of column names) and returns, per clique, the
flattened count table (C order over the clique's columns, NA the last level of each). Adding or
removing one patient changes each table by one in one cell, so each statistic has L1 and L2
sensitivity 1. An optional ``coarsen`` maps a column to a public grouping of its levels (list:
level -> group) for cheaper screening tables.

>>> from hemafed.synth.domain import SynthDomain
>>> p = {"domain": SynthDomain.for_columns(["sex"]).to_params(), "cliques": [["sex"]]}
>>> get_query("marginal_counts").declare(p)["sex"].shape
(3,)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.queries import (
    Params,
    Query,
    QueryParams,
    Statistic,
    get_query,
    register,
)
from hemafed.synth.domain import SynthDomain

QUERY = "marginal_counts"


def clique_key(clique: Sequence[str]) -> str:
    """Name of a clique's statistic in the query result."""
    return "|".join(clique)


def _cliques(params: Params) -> list[tuple[str, ...]]:
    raw = params.get("cliques")
    if not isinstance(raw, list | tuple) or not raw:
        raise InvalidInput("parameter 'cliques' must be a non-empty list of lists of column names")
    out = []
    for c in raw:
        if isinstance(c, str) or not isinstance(c, list | tuple) or not c:
            raise InvalidInput(f"parameter 'cliques': {c!r} is not a non-empty list of columns")
        clique = tuple(str(x) for x in c)
        if len(set(clique)) != len(clique):
            raise InvalidInput(f"parameter 'cliques': {list(clique)} repeats a column")
        out.append(clique)
    if len({clique_key(c) for c in out}) != len(out):
        raise InvalidInput("parameter 'cliques' lists a clique twice")
    return out


def _coarsen(params: Params, domain: SynthDomain) -> dict[str, np.ndarray]:
    raw = params.get("coarsen") or {}
    if not isinstance(raw, Mapping):
        raise InvalidInput("parameter 'coarsen' must map column -> list of group indices")
    out: dict[str, np.ndarray] = {}
    for col, groups in raw.items():
        g = np.asarray(groups, dtype=np.int64)
        if g.shape != (domain[col].size,) or g.min() < 0:
            raise InvalidInput(f"parameter 'coarsen' for {col!r} must give a group >= 0 for "
                               f"each of its {domain[col].size} levels")
        out[str(col)] = g
    return out


def _sizes(domain: SynthDomain, coarsen: Mapping[str, np.ndarray],
           clique: Sequence[str]) -> tuple[int, ...]:
    return tuple(int(coarsen[c].max()) + 1 if c in coarsen else domain[c].size for c in clique)


MAX_CELLS = 1_000_000
"""Most cells one clique's table may have (coarsen a wider one)."""


@dataclass(frozen=True)
class MarginalParams(QueryParams):
    """``marginal_counts``: the public domain, the cliques and an optional coarsening
    (``coarsen``: column -> group of each level, as pairs so the object is hashable)."""

    QUERY = QUERY
    domain: SynthDomain
    cliques: tuple[tuple[str, ...], ...]
    coarsen: tuple[tuple[str, tuple[int, ...]], ...] = ()
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> MarginalParams:
        cls.known(params)
        raw = params.get("domain") or {}
        if not isinstance(raw, Mapping):
            raise InvalidInput("parameter 'domain' must be a synthesis domain "
                               "(SynthDomain.to_params())")
        domain = SynthDomain.from_params(raw)
        coarsen = _coarsen(params, domain)
        cliques = _cliques(params)
        for clique in cliques:
            for c in clique:
                domain[c]
            if int(np.prod(_sizes(domain, coarsen, clique), dtype=np.int64)) > MAX_CELLS:
                raise InvalidInput(f"clique {list(clique)} has more than 10^6 cells; coarsen it")
        return cls(domain, tuple(cliques),
                   tuple((c, tuple(int(x) for x in g)) for c, g in coarsen.items()),
                   checks.max_patients(params))

    @property
    def groups(self) -> dict[str, np.ndarray]:
        """The coarsening as arrays: column -> group index of each level."""
        return {c: np.asarray(g, dtype=np.int64) for c, g in self.coarsen}

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"domain": self.domain.to_params(),
                               "cliques": [list(c) for c in self.cliques],
                               "max_patients": self.max_patients}
        if self.coarsen:
            out["coarsen"] = {c: list(g) for c, g in self.coarsen}
        return out


def _declare(p: MarginalParams) -> dict[str, Statistic]:
    groups = p.groups
    return {clique_key(c): Statistic((int(np.prod(_sizes(p.domain, groups, c))),), 0,
                                     p.max_patients, sensitivity=1.0, is_count=True)
            for c in p.cliques}


def marginal_tables(codes: np.ndarray, domain: SynthDomain,
                    cliques: Sequence[Sequence[str]],
                    coarsen: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Count tables of encoded patients (``domain.encode``) per clique, flattened."""
    coarsen = dict(coarsen or {})
    out: dict[str, np.ndarray] = {}
    for clique in cliques:
        cols = [domain.names.index(c) for c in clique]
        shape = _sizes(domain, coarsen, clique)
        parts = tuple(coarsen[c][codes[:, j]] if c in coarsen else codes[:, j]
                      for c, j in zip(clique, cols, strict=True))
        flat = np.ravel_multi_index(parts, shape) if len(codes) else np.zeros(0, dtype=np.int64)
        out[clique_key(clique)] = np.bincount(flat, minlength=int(np.prod(shape))).astype(float)
    return out


def _compute(cohort: Cohort, p: MarginalParams) -> dict[str, np.ndarray]:
    domain = p.domain
    missing = [c for c in domain.names if c not in cohort.patients]
    if missing:
        raise InvalidInput(f"columns {missing} of the synthesis domain are not in the site's "
                           "cohort")
    codes = domain.encode(cohort.patients)
    return marginal_tables(codes, domain, p.cliques, p.groups)


def query_params(domain: SynthDomain, cliques: Sequence[Sequence[str]],
                 coarsen: Mapping[str, Sequence[int]] | None = None,
                 max_patients: int = checks.MAX_PATIENTS) -> dict[str, Any]:
    """Parameters of ``marginal_counts`` (JSON-able)."""
    params: dict[str, Any] = {"domain": domain.to_params(),
                              "cliques": [list(c) for c in cliques],
                              "max_patients": int(max_patients)}
    if coarsen:
        params["coarsen"] = {k: [int(g) for g in v] for k, v in coarsen.items()}
    return params


def _register() -> Query:
    try:
        return get_query(QUERY, "1")
    except InvalidInput:
        return register(Query(QUERY, "1", compute=_compute, declare=_declare,
                              params_type=MarginalParams,
                              description="contingency tables of cliques of columns over a "
                                          "public discretisation (NA its own level)"))


MARGINAL_COUNTS = _register()
