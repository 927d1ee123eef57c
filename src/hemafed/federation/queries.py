"""The site query registry: named, versioned site-side computations with declared outputs.

A *site query* is a pure function ``(cohort, params) -> {name: ndarray}``. Before it runs, its
``declare`` function says, from the parameters alone (nothing patient-level), which arrays it will
return, their shapes and the bounds every element lies in. Secure aggregation encodes each
element in fixed point within those bounds (a value outside is an error, never clipped), and
differential privacy calibrates noise to the declared per-patient sensitivity.

A query declared ``site_aware`` also receives the answering site's own id, under the reserved
parameter :data:`SITE_ID_PARAM`. Only the site puts it there (:meth:`Query.run` with
``site_id=``, called by :class:`~hemafed.site.node.SiteNode` after the policy check, with its own
id); a request that already carries the key is refused, so a hub cannot make a site compute as
another site.

>>> q = get_query("cohort_size")
>>> q.declare({})["n"].shape
(1,)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.checks import max_patients
from hemafed.release import MAX_STEPS as MAX_STEPS
from hemafed.release import Statistic as Statistic
from hemafed.release import encodable_resolution as encodable_resolution

Params = Mapping[str, Any]


SITE_ID_PARAM = "_site_id"
"""Reserved parameter under which a ``site_aware`` query's ``compute`` receives the answering
site's id. The site supplies it; hub-supplied parameters holding it are refused."""

SITE_MIN_CELL_PARAM = "_min_cell"
"""Reserved parameter under which a ``site_aware`` query's ``compute`` receives the answering
site's own class minimum for this request: the policy's ``min_cell_size`` when its
``enforce_min_cell`` is on and the release is not DP, else 0 (no minimum). Queries that sum
per-variant genotypes over patients apply it (:mod:`hemafed.genomics.disclosure`); the hub can
neither set nor lower it."""

RESERVED_PARAMS = (SITE_ID_PARAM, SITE_MIN_CELL_PARAM)


@dataclass(frozen=True)
class Query:
    """A registered site query. ``check_params`` raises ``InvalidInput`` for bad parameters.

    ``site_aware``: ``compute`` also gets the answering site's id as ``params[SITE_ID_PARAM]``
    (``check_params`` and ``declare`` see only the hub's parameters, so every site and the hub
    agree on the declaration).

    ``risk_set_changes``: for a query whose reply carries risk-set sums over a grid (Cox-type
    estimators), the site-only count table of its own patients whose risk-set membership
    changes between consecutive grid points other than by a released event (censorings,
    competing exits, entries; :func:`hemafed.privacy.disclosure.risk_set_changes`). The site
    checks it under the minimum-cell rule and never releases it (docs/security.md, attack M).
    """

    name: str
    version: str
    compute: Callable[[Cohort, Params], dict[str, np.ndarray]]
    declare: Callable[[Params], dict[str, Statistic]]
    check_params: Callable[[Params], None] = field(default=lambda params: None)
    description: str = ""
    site_aware: bool = False
    risk_set_changes: Callable[[Cohort, Params], np.ndarray] | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def check(self, params: Params) -> None:
        """Check the hub's parameters: the reserved site keys are refused, then ``check_params``."""
        for name in RESERVED_PARAMS:
            if name in params:
                raise InvalidInput(
                    f"query {self.key}: parameter {name!r} is reserved for the answering site, "
                    "which adds it itself; remove it from the request")
        self.check_params(params)

    def run(self, cohort: Cohort, params: Params, *, site_id: str | None = None,
            min_cell: int = 0) -> dict[str, np.ndarray]:
        """Check parameters, compute, and check the result against the declaration.

        ``site_id``: the id of the site running the query (its own, never the hub's word);
        required by ``site_aware`` queries, ignored by the others. ``min_cell``: the site's own
        class minimum for this request (:data:`SITE_MIN_CELL_PARAM`; 0: none), given to
        ``site_aware`` queries.
        """
        if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 0:
            raise ValueError(f"min_cell must be an int >= 0, got {min_cell!r}")
        self.check(params)
        spec = self.declare(params)
        if self.site_aware:
            if not isinstance(site_id, str) or not site_id:
                raise InvalidInput(f"query {self.key} needs the answering site's id: run it at a "
                                   "site (SiteNode.answer) or pass site_id=")
            params = {**params, SITE_ID_PARAM: site_id, SITE_MIN_CELL_PARAM: min_cell}
        out = self.compute(cohort, params)
        if set(out) != set(spec):
            raise InvalidInput(f"query {self.key}: returned {sorted(out)}, declared {sorted(spec)}")
        checked: dict[str, np.ndarray] = {}
        for name, stat in spec.items():
            arr = np.asarray(out[name], dtype=float)
            if arr.shape != stat.shape:
                raise InvalidInput(f"query {self.key}: {name!r} has shape {arr.shape}, declared {stat.shape}")
            if not np.all(np.isfinite(arr)):
                raise InvalidInput(f"query {self.key}: {name!r} has non-finite values")
            if arr.size and (arr.min() < stat.low or arr.max() > stat.high):
                raise InvalidInput(
                    f"query {self.key}: {name!r} has values outside its declared bounds "
                    f"[{stat.low:g}, {stat.high:g}]; widen the bound parameter, nothing is clipped")
            checked[name] = arr
        return checked


_REGISTRY: dict[str, Query] = {}


def register(query: Query) -> Query:
    """Add a query to the registry; a name may be registered once per version."""
    if query.key in _REGISTRY:
        raise ValueError(f"query {query.key} is already registered")
    _REGISTRY[query.key] = query
    _REGISTRY.setdefault(query.name, query)
    return query


def get_query(name: str, version: str | None = None) -> Query:
    """Look up ``name`` (latest registered version) or ``name@version``."""
    key = f"{name}@{version}" if version else name
    try:
        return _REGISTRY[key]
    except KeyError:
        known = sorted(k for k in _REGISTRY if "@" in k)
        raise InvalidInput(f"unknown query {key!r}; registered: {', '.join(known)}") from None


def registered() -> list[Query]:
    """Every registered query version."""
    return [q for k, q in sorted(_REGISTRY.items()) if "@" in k]


# --- the first queries: size, counts by category, sums for means and variances ---------------

def _max_patients(params: Params) -> int:
    return max_patients(params)


def _size_declare(params: Params) -> dict[str, Statistic]:
    return {"n": Statistic((1,), 0, _max_patients(params), is_count=True)}


register(Query(
    "cohort_size", "1",
    compute=lambda cohort, params: {"n": np.array([len(cohort)], dtype=float)},
    declare=_size_declare,
    description="number of patients at the site",
))


def _check_column(params: Params, key: str = "column") -> str:
    col = params.get(key)
    if not isinstance(col, str) or not col:
        raise InvalidInput(f"parameter {key!r} must name a cohort column, got {col!r}")
    return col


def _counts_check(params: Params) -> None:
    _check_column(params)
    levels = params.get("levels")
    if not isinstance(levels, list | tuple) or not levels or len(set(map(str, levels))) != len(levels):
        raise InvalidInput("parameter 'levels' must be a non-empty list of distinct category levels")


def _counts_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    col = _check_column(params)
    if col not in cohort.patients:
        raise InvalidInput(f"column {col!r} is not in the site's cohort")
    values = cohort.patients[col].astype("string")
    levels = [str(v) for v in params["levels"]]
    counts = np.array([(values == lv).fillna(False).sum() for lv in levels], dtype=float)
    missing = float(values.isna().sum())
    other = float(len(values)) - counts.sum() - missing
    return {"counts": counts, "missing": np.array([missing]), "other": np.array([other])}


def _counts_declare(params: Params) -> dict[str, Statistic]:
    m = _max_patients(params)
    k = len(params.get("levels", ()))
    return {
        "counts": Statistic((k,), 0, m, is_count=True, cells=True),
        "missing": Statistic((1,), 0, m, is_count=True, cells=True),
        "other": Statistic((1,), 0, m, is_count=True, cells=True),
    }


register(Query("category_counts", "1", compute=_counts_compute, declare=_counts_declare,
               check_params=_counts_check,
               description="counts of each declared level of a categorical column, missing, other"))


def _moments_check(params: Params) -> None:
    _check_column(params)
    low, high = params.get("low"), params.get("high")
    if not isinstance(low, int | float) or not isinstance(high, int | float) or not low < high:
        raise InvalidInput("parameters 'low' < 'high' must bound the column's values (public bounds)")


def _moments_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    col = _check_column(params)
    if col not in cohort.patients:
        raise InvalidInput(f"column {col!r} is not in the site's cohort")
    x = cohort.patients[col].astype("Float64").dropna().to_numpy(dtype=float)
    low, high = float(params["low"]), float(params["high"])
    if x.size and (x.min() < low or x.max() > high):
        raise InvalidInput(f"column {col!r} has values outside the declared bounds [{low:g}, {high:g}]")
    return {"n": np.array([x.size], dtype=float), "sum": np.array([x.sum()]),
            "sum_sq": np.array([np.square(x).sum()])}


def _moments_declare(params: Params) -> dict[str, Statistic]:
    m = _max_patients(params)
    low, high = float(params.get("low", 0.0)), float(params.get("high", 1.0))
    amax = max(abs(low), abs(high))
    res = float(params.get("resolution", 1e-6))
    return {
        "n": Statistic((1,), 0, m, is_count=True),
        "sum": Statistic((1,), min(0.0, low) * m, max(0.0, high) * m, res, sensitivity=amax),
        "sum_sq": Statistic((1,), 0.0, amax**2 * m, res, sensitivity=amax**2),
    }


register(Query("moments", "1", compute=_moments_compute, declare=_moments_declare,
               check_params=_moments_check,
               description="n, sum and sum of squares of a numeric column within public bounds"))


# --- the network catalogue: each site's counts in its own row of one secure sum ---------------

def _catalogue_check(params: Params) -> None:
    _counts_check(params)
    for key in ("features", "sites"):
        v = params.get(key)
        if not isinstance(v, list | tuple) or not v or not all(
                isinstance(x, str) and x for x in v) or len(set(v)) != len(v):
            raise InvalidInput(f"parameter {key!r} must be a non-empty list of distinct names")
    _max_patients(params)


def _catalogue_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    sites = [str(s) for s in params["sites"]]
    me = str(params[SITE_ID_PARAM])
    if me not in sites:
        raise InvalidInput(f"site {me!r} is not among the catalogue request's sites")
    row = sites.index(me)
    col = _check_column(params)
    patients = cohort.patients
    levels = [str(v) for v in params["levels"]]
    features = [str(f) for f in params["features"]]
    out = {"patients": np.zeros(len(sites)), "areas": np.zeros((len(sites), len(levels))),
           "fields": np.zeros((len(sites), len(features)))}
    out["patients"][row] = len(patients)
    if col in patients:
        values = patients[col].astype("string")
        out["areas"][row] = [float((values == lv).fillna(False).sum()) for lv in levels]
    out["fields"][row] = [float(patients[f].notna().sum()) if f in patients else 0.0
                          for f in features]
    return out


def _catalogue_declare(params: Params) -> dict[str, Statistic]:
    m = _max_patients(params)
    s, k, f = (len(params.get(key, ())) for key in ("sites", "levels", "features"))
    # one patient is in one site's row: +1 to its patient count, to at most one disease area
    # and to each field it has a value of (L2 sqrt(f))
    return {"patients": Statistic((s,), 0, m, is_count=True, cells=False),
            "areas": Statistic((s, k), 0, m, is_count=True, cells=True),
            "fields": Statistic((s, f), 0, m, sensitivity=float(np.sqrt(max(f, 1))),
                                is_count=True, cells=False)}


register(Query("catalogue_counts", "1", compute=_catalogue_compute, declare=_catalogue_declare,
               check_params=_catalogue_check, site_aware=True,
               description="the network catalogue: patients, patients per disease area and "
                           "values per field, each site in its own row of the secure sum"))
