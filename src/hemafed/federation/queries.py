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
from hemafed.federation import checks
from hemafed.federation.checks import QueryParams as QueryParams
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
class SiteContext:
    """What the answering site adds to a ``site_aware`` query's parameters: its own id and its
    class minimum for this request (:data:`SITE_ID_PARAM`, :data:`SITE_MIN_CELL_PARAM`)."""

    site_id: str
    min_cell: int = 0


def _site_context(params: Params) -> SiteContext | None:
    if SITE_ID_PARAM not in params:
        return None
    return SiteContext(str(params[SITE_ID_PARAM]), int(params.get(SITE_MIN_CELL_PARAM, 0)))


@dataclass(frozen=True)
class _Typed:
    """``declare``/``compute``/``check_params`` (and ``risk_set_changes``) of a query
    (one with a ``params_type``).

    The query's own function takes the typed parameters; this accepts those or the hub's mapping
    (parsed by ``params_type.from_mapping``, the one check), so every caller of
    ``query.declare(mapping)`` keeps working. ``compute`` of a ``site_aware`` query also gets the
    :class:`SiteContext` (from the mapping's reserved keys when called with a mapping).
    """

    typed: Callable[..., Any]
    params_type: type[QueryParams]
    role: str

    def parse(self, params: Params | QueryParams) -> QueryParams:
        if isinstance(params, self.params_type):
            return params
        if not isinstance(params, Mapping):
            raise InvalidInput(f"parameters of query {self.params_type.QUERY} must be a mapping, "
                               f"got {type(params).__name__}")
        return self.params_type.from_mapping(
            {k: v for k, v in params.items() if k not in RESERVED_PARAMS})

    def __call__(self, *args: Any) -> Any:
        if self.role == "check":
            self.parse(args[0])
            return None
        if self.role == "declare":
            return self.typed(self.parse(args[0]))
        if self.role == "changes":
            return self.typed(args[0], self.parse(args[1]))
        cohort, params, *site = args
        if not site and isinstance(params, Mapping):
            site = [ctx] if (ctx := _site_context(params)) is not None else []
        return self.typed(cohort, self.parse(params), *site)


def _no_check(params: Params) -> None:
    return None


@dataclass(frozen=True)
class Query:
    """A registered site query.

    Every query has a ``params_type`` (required): a frozen :class:`QueryParams` dataclass whose
    ``from_mapping`` checks the hub's parameters once (:meth:`check` builds it); its ``declare``
    takes that object, and its ``compute`` takes ``(cohort, params)``, or ``(cohort, params,
    site)`` with the :class:`SiteContext` when ``site_aware``. Defaults live in the dataclass
    only. Called with the hub's mapping, ``declare``/``compute``/``check_params`` parse it
    first, so both forms work (``check_params`` is that parse, for the hub's own check).

    ``site_aware``: ``compute`` also gets the answering site's id (``check_params`` and
    ``declare`` see only the hub's parameters, so every site and the hub agree on the
    declaration).

    ``risk_set_changes``: for a query whose reply carries risk-set sums over a grid (Cox-type
    estimators), the site-only count table of its own patients whose risk-set membership
    changes between consecutive grid points other than by a released event (censorings,
    competing exits, entries; :func:`hemafed.privacy.disclosure.risk_set_changes`). The site
    checks it under the minimum-cell rule and never releases it (docs/security.md, attack M).
    It takes ``(cohort, params)`` as ``compute`` does.
    """

    name: str
    version: str
    compute: Callable[..., dict[str, np.ndarray]]
    declare: Callable[..., dict[str, Statistic]]
    check_params: Callable[[Params], None] = field(default=_no_check, init=False)
    """The parse of ``params_type`` (set from it; not an argument)."""
    description: str = ""
    site_aware: bool = False
    risk_set_changes: Callable[..., np.ndarray] | None = None
    params_type: type[QueryParams] | None = None

    def __post_init__(self) -> None:
        if self.params_type is None:
            raise ValueError(f"query {self.key}: give it a params_type (a frozen QueryParams "
                             f"dataclass); a query reading an untyped mapping is not registered")
        for role, attr in (("compute", "compute"), ("declare", "declare"),
                           ("check", "check_params")):
            fn = getattr(self, attr) if role != "check" else _no_check
            object.__setattr__(self, attr, _Typed(fn, self.params_type, role))
        if self.risk_set_changes is not None:
            object.__setattr__(self, "risk_set_changes",
                               _Typed(self.risk_set_changes, self.params_type, "changes"))

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def typed(self) -> type[QueryParams]:
        """The query's parameter dataclass (``params_type``, required)."""
        assert self.params_type is not None  # __post_init__ refuses a query without one
        return self.params_type

    def check(self, params: Params) -> QueryParams:
        """Check the hub's parameters: the reserved site keys are refused, then the typed
        parameters are built; returns what ``declare``/``compute`` take."""
        for name in RESERVED_PARAMS:
            if name in params:
                raise InvalidInput(
                    f"query {self.key}: parameter {name!r} is reserved for the answering site, "
                    "which adds it itself; remove it from the request")
        return self.typed.from_mapping(params)

    def run(self, cohort: Cohort, params: Params, *, site_id: str | None = None,
            min_cell: int = 0) -> dict[str, np.ndarray]:
        """Check parameters, compute, and check the result against the declaration.

        ``site_id``: the id of the site running the query (its own, never the hub's word);
        required by ``site_aware`` queries, ignored by the others. ``min_cell``: the site's own
        class minimum for this request (:data:`SITE_MIN_CELL_PARAM`; 0: none), given to
        ``site_aware`` queries.
        """
        return self.run_checked(cohort, self.check(params), site_id=site_id, min_cell=min_cell)

    def run_checked(self, cohort: Cohort, checked_params: QueryParams, *,
                    site_id: str | None = None, min_cell: int = 0) -> dict[str, np.ndarray]:
        """:meth:`run` on parameters :meth:`check` already returned: the site parses a
        request once and computes on the very object its plan check compared."""
        if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 0:
            raise ValueError(f"min_cell must be an int >= 0, got {min_cell!r}")
        if not isinstance(checked_params, self.typed):
            raise TypeError(f"query {self.key}: run_checked takes what check returned, got "
                            f"{type(checked_params).__name__}")
        spec = self.declare(checked_params)
        if self.site_aware and (not isinstance(site_id, str) or not site_id):
            raise InvalidInput(f"query {self.key} needs the answering site's id: run it at a "
                               "site (SiteNode.answer) or pass site_id=")
        site = [SiteContext(site_id, min_cell)] if self.site_aware and site_id else []
        out = self.compute(cohort, checked_params, *site)
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
# Migrated: every query of this module has typed parameters (a ``params_type``).

@dataclass(frozen=True)
class SizeParams(QueryParams):
    """``cohort_size``: only the public bound on the count."""

    QUERY = "cohort_size"
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> SizeParams:
        cls.known(params)
        return cls(checks.max_patients(params))


def _size_declare(p: SizeParams) -> dict[str, Statistic]:
    return {"n": Statistic((1,), 0, p.max_patients, is_count=True)}


register(Query(
    "cohort_size", "1",
    compute=lambda cohort, p: {"n": np.array([len(cohort)], dtype=float)},
    declare=_size_declare, params_type=SizeParams,
    description="number of patients at the site",
))


@dataclass(frozen=True)
class CountsParams(QueryParams):
    """``category_counts``: a categorical column and its declared levels."""

    QUERY = "category_counts"
    column: str
    levels: tuple[str, ...]
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> CountsParams:
        cls.known(params)
        return cls(checks.column(params, "column"), checks.levels(params),
                   checks.max_patients(params))


def _counts_compute(cohort: Cohort, p: CountsParams) -> dict[str, np.ndarray]:
    if p.column not in cohort.patients:
        raise InvalidInput(f"column {p.column!r} is not in the site's cohort")
    values = cohort.patients[p.column].astype("string")
    counts = np.array([(values == lv).fillna(False).sum() for lv in p.levels], dtype=float)
    missing = float(values.isna().sum())
    other = float(len(values)) - counts.sum() - missing
    return {"counts": counts, "missing": np.array([missing]), "other": np.array([other])}


def _counts_declare(p: CountsParams) -> dict[str, Statistic]:
    m = p.max_patients
    return {
        "counts": Statistic((len(p.levels),), 0, m, is_count=True, cells=True),
        "missing": Statistic((1,), 0, m, is_count=True, cells=True),
        "other": Statistic((1,), 0, m, is_count=True, cells=True),
    }


register(Query("category_counts", "1", compute=_counts_compute, declare=_counts_declare,
               params_type=CountsParams,
               description="counts of each declared level of a categorical column, missing, other"))


@dataclass(frozen=True)
class MomentsParams(QueryParams):
    """``moments``: a numeric column within public bounds ``low < high``."""

    QUERY = "moments"
    column: str
    low: float
    high: float
    resolution: float = 1e-6
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> MomentsParams:
        cls.known(params)
        low, high = checks.bounds(params)
        return cls(checks.column(params, "column"), low, high, checks.resolution(params),
                   checks.max_patients(params))


def _moments_compute(cohort: Cohort, p: MomentsParams) -> dict[str, np.ndarray]:
    col = p.column
    if col not in cohort.patients:
        raise InvalidInput(f"column {col!r} is not in the site's cohort")
    x = cohort.patients[col].astype("Float64").dropna().to_numpy(dtype=float)
    if x.size and (x.min() < p.low or x.max() > p.high):
        raise InvalidInput(f"column {col!r} has values outside the declared bounds "
                           f"[{p.low:g}, {p.high:g}]")
    return {"n": np.array([x.size], dtype=float), "sum": np.array([x.sum()]),
            "sum_sq": np.array([np.square(x).sum()])}


def _moments_declare(p: MomentsParams) -> dict[str, Statistic]:
    m, low, high = p.max_patients, p.low, p.high
    amax = max(abs(low), abs(high))
    return {
        "n": Statistic((1,), 0, m, is_count=True),
        "sum": Statistic((1,), min(0.0, low) * m, max(0.0, high) * m, p.resolution,
                         sensitivity=amax),
        "sum_sq": Statistic((1,), 0.0, amax**2 * m, p.resolution, sensitivity=amax**2),
    }


register(Query("moments", "1", compute=_moments_compute, declare=_moments_declare,
               params_type=MomentsParams,
               description="n, sum and sum of squares of a numeric column within public bounds"))


# --- the network catalogue: each site's counts in its own row of one secure sum ---------------

@dataclass(frozen=True)
class CatalogueParams(QueryParams):
    """``catalogue_counts``: the disease-area column and levels, the fields, the sites."""

    QUERY = "catalogue_counts"
    column: str
    levels: tuple[str, ...]
    features: tuple[str, ...]
    sites: tuple[str, ...]
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> CatalogueParams:
        cls.known(params)
        return cls(checks.column(params, "column"), checks.levels(params),
                   checks.names(params, "features"), checks.names(params, "sites"),
                   checks.max_patients(params))


def _catalogue_compute(cohort: Cohort, p: CatalogueParams,
                       site: SiteContext) -> dict[str, np.ndarray]:
    if site.site_id not in p.sites:
        raise InvalidInput(f"site {site.site_id!r} is not among the catalogue request's sites")
    row = p.sites.index(site.site_id)
    patients = cohort.patients
    out = {"patients": np.zeros(len(p.sites)), "areas": np.zeros((len(p.sites), len(p.levels))),
           "fields": np.zeros((len(p.sites), len(p.features)))}
    out["patients"][row] = len(patients)
    if p.column in patients:
        values = patients[p.column].astype("string")
        out["areas"][row] = [float((values == lv).fillna(False).sum()) for lv in p.levels]
    out["fields"][row] = [float(patients[f].notna().sum()) if f in patients else 0.0
                          for f in p.features]
    return out


def _catalogue_declare(p: CatalogueParams) -> dict[str, Statistic]:
    m = p.max_patients
    s, k, f = len(p.sites), len(p.levels), len(p.features)
    # one patient is in one site's row: +1 to its patient count, to at most one disease area
    # and to each field it has a value of (L2 sqrt(f))
    return {"patients": Statistic((s,), 0, m, is_count=True, cells=False),
            "areas": Statistic((s, k), 0, m, is_count=True, cells=True),
            "fields": Statistic((s, f), 0, m, sensitivity=float(np.sqrt(max(f, 1))),
                                is_count=True, cells=False)}


register(Query("catalogue_counts", "1", compute=_catalogue_compute, declare=_catalogue_declare,
               params_type=CatalogueParams, site_aware=True,
               description="the network catalogue: patients, patients per disease area and "
                           "values per field, each site in its own row of the secure sum"))
