"""An approved study as a plan: the requests a site will answer, derived from the spec alone.

A site approves a study specification (:class:`~hemafed.study.spec.StudySpec`); from that text,
and nothing the hub sends later, :meth:`StudyPlan.from_spec` derives what the study's hub steps
(:mod:`hemafed.study.runner` and the estimators it calls) may ask for:

* **queries**: the site queries each analysis kind uses (its registration,
  :class:`hemafed.kinds.AnalysisKind`; :data:`KIND_QUERIES` is the view), nothing else;
* **columns**: every column a request names (``column``, ``duration_col``, ``group_col``,
  causes, cliques, synthetic-data domains ...) is one the spec names, or a score the site
  derives itself;
* **designs**: a model's covariate design (columns, public bounds, levels) is exactly the one
  its formula implies (:func:`hemafed.analytics.design.parse_formula`);
* **bounds**: a column's declared ``low``/``high`` are its public bounds (the spec's ``bounds``
  or the schema's plausible range; a study variable's declared ``low``/``high``), never a
  hub's choice per request: moving a bound cannot
  probe one site's largest value;
* **pinned constants**: the IPTW ``max_weight`` is the spec's and ``gamma`` bounded like
  ``beta``; a mixed model's columns, ``bounds`` and ``max_obs`` are its spec entry's; an
  ``imaging_screen`` screens the spec's imaging features within the spec's imaging bounds
  at a horizon of the spec's imaging analyses; a GWAS trait's threshold and covariate list
  are its analysis's (which fixes the analysed complete-case set) and GWAS coefficients
  are bounded by ``MAX_LP_TERM``; a catalogue counts the approved
  column, disease areas and fields (:meth:`StudyPlan._pinned`);
* **fixed requests**: a kind whose registration lists its exact requests
  (:attr:`hemafed.kinds.AnalysisKind.requests`, e.g. a quantile's column, bounds and lattice)
  is answered for those parameter sets only (element ``request``);
* **pinned iterated requests**: a kind whose registration pins the fixed part of an iterated
  request (:attr:`hemafed.kinds.AnalysisKind.pins`, e.g. a long-table Cox model's columns,
  design, ties and time lattice) is answered only when every pinned key is sent with the
  spec's value and no other key but the iterated ones (``beta``, the grid's points) is sent
  (element ``request``), its ``grid`` on the pinned lattice of the site's own table (element
  ``lattice``: ``steps_per_unit`` one of :data:`OWN_TABLE_LATTICES` (at most
  :data:`MAX_GRID_POINTS` points), points in
  ``[0, max_time]``; a spec pinning another lattice is answered nothing);
* **cohort size bound**: ``max_patients`` is the fixed public constant
  :data:`MAX_PATIENTS`, so it cannot probe a site's cohort size;
* **bins and levels**: a histogram has the spec's number of bins; category levels are the
  spec's, the schema's or the derived score's;
* **grids and vectors**: every time grid (``grid``, ``time_grid``, a model's outcome grid) is
  a set of points of one public lattice ``k / steps_per_unit`` (:data:`COARSER_LATTICES`,
  ``k >= 0``: the lattice starts at 0) with at most :data:`MAX_GRID_POINTS` points in
  ``[0, MAX_TIME]``, and its ``time_mapping`` is one the spec's hub steps use
  (:meth:`StudyPlan.from_spec`: ``exact``, and ``up`` for a model's evaluation grid); times a
  grid cannot hold are counted in the query's ``excluded`` sum, never refused (see
  :mod:`hemafed.analytics.survival_grid`); a ``cox``, ``finegray`` or ``cox_tv``
  analysis's ``lattice`` fixes its grid to the whole lattice with ``time_mapping: up``
  (:meth:`StudyPlan.on_plan_lattice`, for
  the site's ``max_lattice_steps_per_unit`` cap; it also permits ``up``); iterated parameters (Cox/logistic
  ``beta``) may change from round to round but have the design's width and bounded entries
  (each query also bounds ``|beta_j|`` times covariate j's public half-width,
  :func:`hemafed.analytics.design.check_coefficients`);
* **boosting histograms** (``gbdt_histograms``): differentially private unless every boosting
  analysis of the spec sets ``exact_histograms: true``, and binned on the spec's fixed edges
  (``bins`` equal-width bins over each feature's public bounds,
  :func:`hemafed.learn.features.fixed_bins`), never on edges the hub chooses;
* **iteration caps**: per query, at most :meth:`StudyPlan.cap` *distinct* requests per study
  (Newton rounds, boosting rounds x tree depth, synthesis rounds, with room for one retry);
  the identical request asked again (a retry, a re-run) is not counted twice;
* **DP**: a synthesis release (``marginal_counts``) must be differentially private, and so
  must a kind's ``exact_queries`` (boosting histograms, a quantile's cumulative histogram)
  unless every analysis of that kind sets the kind's ``exact_option`` to ``true``
  (:attr:`hemafed.kinds.AnalysisKind.exact_option`; the one check is :func:`_dp_unless_exact`);
  for a kind with fixed requests the rule is per analysis: the requests of an analysis not
  approved exact are DP-only (``dp_requests``).

:meth:`StudyPlan.check` returns ``None`` for a request inside the plan, else the name of the
plan element it breaks (for the refusal, :mod:`hemafed.privacy.refusal`) and the detail (for
the site's audit log). What the rules allow per query is listed in ``docs/queries.md``.

>>> from hemafed.study.spec import StudySpec
>>> spec = StudySpec.from_mapping({"study_id": "s", "analyses": [
...     {"id": "d", "kind": "describe", "columns": ["age"]}]})
>>> plan = StudyPlan.from_spec(spec)
>>> plan.check("numeric_summary", {"column": "age", "low": 0.0, "high": 110.0, "bins": 20}, False)
>>> plan.check("numeric_summary", {"column": "age", "low": 0.0, "high": 70.0, "bins": 20}, False)[0]
'bounds'
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hemafed.errors import InvalidInput
from hemafed.federation.checks import QueryParams
from hemafed.kinds import COARSER_LATTICES, OWN_TABLE_LATTICES, get_kind, registered_kinds
from hemafed.study.kinds import EXACT_HISTOGRAMS_KEY, GWAS_CAP, LMM_CAP, NEWTON_CAP
from hemafed.studyplan.plans import register_planner
from hemafed.studyplan.spec import FORMULA_LEVEL_KINDS, Analysis, StudySpec

__all__ = ["COARSER_LATTICES", "EXACT_HISTOGRAMS_KEY", "GWAS_CAP", "KIND_CAPS", "KIND_QUERIES",
           "LATTICE_KINDS", "LMM_CAP", "MAX_PATIENTS", "NEWTON_CAP", "OWN_TABLE_LATTICES",
           "StudyPlan",
           "on_public_lattice"]

MAX_PATIENTS = 1_000_000
"""The public cohort-size bound every request declares (the hub steps' default)."""

MAX_TIME = 60.0
"""The public follow-up horizon of time grids and histograms (years)."""

MAX_GRID_POINTS = math.floor(MAX_TIME * 365.25) + 1
"""At most one grid point per day of the public horizon."""

MAX_BETA = 1e3
"""Largest absolute coefficient an iterated parameter vector may hold."""

MAX_FINE_BINS = 8192
"""Largest fixed-resolution binning (``fine_bins``, ``lp_bins``) the hub steps use."""

TIME_LATTICE = {"steps_per_unit": 365.25, "max_time": MAX_TIME}
"""The public time lattice of ``time_histogram`` (days in years, up to the horizon)."""

LATTICE_KINDS = frozenset({"cox", "finegray", "cox_tv"})
"""Kinds whose spec option ``lattice`` (one of :data:`COARSER_LATTICES`) fixes the fit's time
grid at approval (:meth:`StudyPlan.on_plan_lattice`)."""

FIXED_WIDTHS = {"iptw_cox_sums": 1, "iptw_cox_robust": 1}
"""Iterated-coefficient widths of queries whose design is fixed by the query itself (the
weighted Cox model of IPTW has the treatment as its one covariate)."""

OWN_DESIGN_QUERIES = frozenset({"gwas_null", "gwas_logistic", "gwas_firth", "combat_residuals",
                                "combat_apply"})
"""Queries whose coefficient vector follows the spec's covariates and PCs, not a formula's
design (the query checks the packed vector's shape itself)."""

KIND_DEFAULT_COLUMNS: dict[str, frozenset[str]] = {
    k.name: frozenset(k.default_columns) for k in registered_kinds() if k.default_columns}
"""Columns a kind's hub step uses when the spec leaves them at their defaults (a view of the
registrations, :mod:`hemafed.study.kinds`)."""

GWAS_DEFAULT_COVARIATES = frozenset({"age", "sex"})
"""The covariates of a ``gwas`` analysis whose spec names none (genomics.study)."""

KIND_QUERIES: dict[str, frozenset[str]] = {
    k.name: frozenset(k.queries) for k in registered_kinds() if k.queries}
"""The site queries each analysis kind's hub step sends (a view of the registrations)."""

IMAGING_CAPS = {"combat_moments": 8, "combat_residuals": 8, "imaging_screen": 8,
                "logistic_newton": NEWTON_CAP, "cox_risk_set_sums": NEWTON_CAP,
                "cox_site_derivatives": NEWTON_CAP, "cox_concordance_histogram": 4,
                "time_histogram": 4, "category_counts": 8, "combat_apply": 8}
"""The queries (and caps, per imaging analysis) a spec's ``imaging`` section implies
(:mod:`hemafed.imaging`); its columns, bounds and designs come from
:func:`hemafed.imaging.spec.plan_parts`."""

IMAGING_QUERIES = frozenset({"combat_moments", "combat_residuals", "combat_apply",
                             "imaging_screen"})
"""Imaging queries whose feature lists and bounds mappings the plan checks
(:func:`hemafed.imaging.spec.plan_problem`)."""

KIND_CAPS: dict[str, dict[str, int]] = {
    k.name: dict(k.caps) for k in registered_kinds() if not callable(k.caps) and k.caps}
"""Iteration caps of the kinds whose requests need no spec-dependent count (per analysis; a
view of the registrations, which also hold the spec-dependent ones)."""

DP_QUERIES = frozenset({"marginal_counts"})
"""Queries the plan allows only as differentially private releases."""

KIND_TIME_MAPPINGS = {k.name: frozenset(k.time_mappings) for k in registered_kinds() if k.time_mappings}
"""``time_mapping`` values a kind's hub steps use besides ``exact`` (the evaluation of a
boosted model maps times up to its public weekly grid)."""

GRID_KEYS = ("grid", "time_grid")
"""Parameter keys holding a time grid (at any depth: a model's outcome carries one)."""

_COLUMN_KEYS = frozenset({"column", "duration_col", "event_col", "group_col", "strata_col",
                          "row", "col", "treatment", "time", "illness_time", "illness_status",
                          "exit_time", "exit_status"})
_COLUMN_LIST_KEYS = frozenset({"covariates", "features", "switch"})
"""Keys whose value lists column names (a list of strings; other shapes are not columns)."""
_LEVEL_KEYS = {"levels": "column", "group_levels": "group_col", "strata_levels": "strata_col",
               "row_levels": "row", "col_levels": "col"}


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _params_type(query: str) -> type[QueryParams] | None:
    """The typed parameters of a registered query (``None``: untyped or not registered)."""
    from hemafed.federation.queries import get_query

    try:
        return get_query(query).params_type
    except InvalidInput:
        return None


def _request(query: str, params: Mapping[str, Any] | QueryParams) -> Mapping[str, Any]:
    """A request as the plan compares it: a typed query's parameters in wire form with every
    default filled in, so a default spelt out and a default left out are one request and no
    key the query ignores is left to compare; an untyped query's mapping as sent.

    A mapping its query refuses is compared as sent (the site refuses it as an invalid
    parameter before the plan sees it; this keeps a direct call total)."""
    if isinstance(params, QueryParams):
        return params.to_mapping()
    typed = _params_type(query)
    if typed is None:
        return params
    try:
        return typed.from_mapping(params).to_mapping()
    except Exception:  # any refusal of the query's own check: compared as sent
        return params


def _terms(formula: Any) -> list[str]:
    if isinstance(formula, str):
        return [t.strip() for t in formula.split("+") if t.strip()]
    if isinstance(formula, list | tuple):
        return [str(t) for t in formula]
    return []


def _analysis_columns(a: Analysis) -> set[str]:
    cols: set[str] = set()
    for key in ("duration", "event", "group", "strata", "outcome", "row", "col", "treatment",
                "trait", "time", "illness_time", "illness_status", "exit_time", "exit_status"):
        v = a.get(key)
        if isinstance(v, str):
            cols.add(v)
    for key in ("columns", "covariates"):
        cols.update(str(c) for c in a.get(key) or ())
    switch = a.get("switch")  # cox_tv: [time column, status column] of the switching event
    if isinstance(switch, list | tuple):
        cols.update(str(c) for c in switch)
    for key in ("formula", "features"):
        cols.update(t for t in _terms(a.get(key)) if not t.startswith("gene:"))
    for pair in a.get("causes") or ():
        if isinstance(pair, list | tuple):
            cols.update(str(c) for c in pair)
    return cols


def _designs(a: Analysis) -> list[str]:
    from hemafed.analytics.design import parse_formula

    out = []
    for key in ("formula", "features"):
        f = a.get(key)
        if f:
            try:
                # the spec's fixed public bounds are part of the design the hub sends
                bounds = a.get("bounds") if key == "formula" else None
                # and its declared levels (the dummy columns, bounds [0, 1], follow from them)
                levels = a.get("levels") if key == "formula" and a.kind in FORMULA_LEVEL_KINDS \
                    else None
                out.append(_canon(parse_formula(f, bounds or None, levels or None).to_params()))
            except InvalidInput:
                continue  # an unusable formula fails at the hub; nothing to permit
    return out


@dataclass(frozen=True)
class StudyPlan:
    """What one approved study permits (see the module docstring). Build with :meth:`from_spec`."""

    study_id: str
    spec_sha256: str
    queries: frozenset[str]
    columns: frozenset[str]
    genes: frozenset[str]
    designs: frozenset[str]
    bounds: Mapping[str, tuple[float, float]]
    levels: Mapping[str, frozenset[tuple[str, ...]]]
    bins: frozenset[int]
    caps: Mapping[str, int]
    dp_required: frozenset[str] = field(default=DP_QUERIES)
    time_mappings: frozenset[str] = frozenset({"exact"})
    edges: frozenset[str] = frozenset()
    max_weights: frozenset[float | None] = frozenset()
    lmm: frozenset[str] = frozenset()
    imaging_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    catalogue: frozenset[str] = frozenset()
    """A catalogue's pinned request part: counted column, its disease areas, counted fields."""
    gwas_traits: frozenset[str] = frozenset()
    """The GWAS analyses' traits with their binary threshold (``None``: quantitative) and
    their covariate lists (canonical ``[column, threshold, covariates]``)."""
    screen_horizons: frozenset[float | None] = frozenset()
    """The imaging analyses' screen horizons (``None``: a 0/1 outcome, no horizon)."""
    imaging: Any = None
    """The imaging section's part (:class:`hemafed.imaging.spec.PlanParts`), if any."""
    fixed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """query -> the only parameter sets (canonical JSON) its kinds' ``requests`` permit."""
    pinned: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """query -> the pinned parts (canonical JSON) its kinds' ``pins`` permit (see
    :meth:`_pinned_request`)."""
    dp_requests: frozenset[str] = frozenset()
    """Fixed requests (canonical ``[query, params]``) of analyses not approved exact: DP only."""
    lattices: frozenset[float] = frozenset()
    """``steps_per_unit`` of the spec's ``lattice`` options (:meth:`on_plan_lattice`)."""
    gwas_stores: frozenset[str] = frozenset()
    """The genotype stores the GWAS analyses read (``genotypes``, default the study id)."""
    lattice_queries: frozenset[tuple[float, str]] = frozenset()
    """``(steps_per_unit, query)``: the queries of the analyses that fixed that lattice (a
    lattice one analysis declares is not another analysis's lattice)."""

    @classmethod
    def from_spec(cls, spec: StudySpec) -> StudyPlan:
        """The plan of an approved spec (the spec alone decides it)."""
        from hemafed.cohort.study_fields import register_variables
        from hemafed.study.derived import DERIVED_LEVELS

        # the spec's study variables: their declared low/high are their public bounds, and
        # their formulas' designs need them registered (idempotent; a conflict is refused)
        declared = spec.variables
        register_variables(declared)

        queries: set[str] = {"cohort_size"}
        columns: set[str] = set(DERIVED_LEVELS) | {"ipssm_score", "ipssr_score"}
        genes: set[str] = set()
        designs: set[str] = set()
        bins: set[int] = set()
        spec_bounds: dict[str, tuple[float, float]] = {}
        spec_levels: dict[str, list[tuple[str, ...]]] = {}
        caps: dict[str, int] = {"cohort_size": 4}
        mappings: set[str] = {"exact"}
        edges: set[str] = set()
        max_weights: set[float | None] = set()
        lmm: set[str] = set()
        catalogue: set[str] = set()
        gwas_traits: set[str] = set()
        gwas_stores: set[str] = set()
        horizons: set[float | None] = set()
        imaging_bounds: dict[str, tuple[float, float]] = {}
        dp_required = set(DP_QUERIES)
        fixed: dict[str, set[str]] = {}
        pinned: dict[str, set[str]] = {}
        dp_requests: set[str] = set()
        lattices: set[float] = set()
        lattice_queries: set[tuple[float, str]] = set()

        def add(query: str, n: int) -> None:
            caps[query] = caps.get(query, 0) + n

        imaging = None
        if "imaging" in spec.raw:
            # the imaging section: harmonisation, the univariate screen and the models on the
            # harmonised features (logistic, Cox), each with Newton-round caps
            from hemafed.imaging.spec import plan_parts

            imaging = plan_parts(spec.raw)
            for query, n in IMAGING_CAPS.items():
                queries.add(query)
                add(query, n * imaging.analyses)
            columns |= imaging.columns
            spec_bounds.update(imaging.feature_bounds)
            for query, n in imaging.gbdt_caps.items():  # model: gbdt (fixed bins, DP or exact)
                queries.add(query)
                add(query, n)
            edges.update(imaging.edges)
            if imaging.gbdt_caps:
                mappings |= KIND_TIME_MAPPINGS["gbdt"]
                if not imaging.gbdt_exact:
                    dp_required.add("gbdt_histograms")
            designs.update(_canon(d) for d in imaging.designs)
            section = spec.raw["imaging"]
            raw: Mapping[str, Any] = section if isinstance(section, Mapping) else {}
            harmonise = raw.get("harmonise")
            h: Mapping[str, Any] = harmonise if isinstance(harmonise, Mapping) else {}
            feats = [str(f) for f in h.get("features") or ()]
            columns.update(feats, (f"h_{f}" for f in feats),
                           (str(c) for c in h.get("covariates") or ()))
            for col, b in (raw.get("bounds") or {}).items():
                if isinstance(b, list | tuple) and len(b) == 2:
                    imaging_bounds[str(col)] = (float(b[0]), float(b[1]))
        for a in spec.analyses:
            kind = get_kind(a.kind)  # the spec's validation admits registered kinds only
            queries |= kind.queries
            mappings |= kind.time_mappings
            cols = _analysis_columns(a) | kind.default_columns
            if a.kind == "gwas" and a.get("covariates") is None:
                cols |= GWAS_DEFAULT_COVARIATES  # genomics.study's default design
            columns |= cols
            for key in ("formula", "features"):
                genes.update(t[5:] for t in _terms(a.get(key)) if t.startswith("gene:"))
            designs.update(_designs(a))
            for col, b in (a.get("bounds") or {}).items():
                if isinstance(b, list | tuple) and len(b) == 2:
                    spec_bounds[str(col)] = (float(b[0]), float(b[1]))
            for col, lv in (a.get("levels") or {}).items() if isinstance(a.get("levels"), dict) \
                    else ():
                spec_levels.setdefault(str(col), []).append(tuple(str(v) for v in lv))
            if a.kind in ("km", "logrank") and isinstance(a.get("levels"), list) and a.get("group"):
                spec_levels.setdefault(str(a.get("group")), []).append(
                    tuple(str(v) for v in a.get("levels")))
            if a.kind == "competing" and isinstance(a.get("levels"), list) and a.get("group"):
                spec_levels.setdefault(str(a.get("group")), []).append(
                    tuple(str(v) for v in a.get("levels")))
            if a.kind == "describe":
                b = a.get("bins", 20)
                bins.update(int(v) for v in (b.values() if isinstance(b, dict) else [b]))
            elif a.kind == "gbdt":
                edges.update(_gbdt_edges(a))
            elif a.kind == "catalogue":
                catalogue.add(_catalogue_key(a.get("group"), a.get("levels"), a.get("columns")))
                if float(a.get("epsilon", 0) or 0) > 0:
                    dp_required.add("catalogue_counts")  # a DP catalogue is only ever DP
            elif a.kind == "iptw":
                mw = a.get("max_weight")
                max_weights.add(float(mw) if isinstance(mw, int | float) else None)
            elif a.kind == "imaging":
                # the screen of a Cox imaging model splits at its horizon (the hub step's
                # default 2.0); a logistic one screens the 0/1 outcome
                # (an unusable horizon fails at the hub; nothing to permit)
                with contextlib.suppress(TypeError, ValueError):
                    horizons.add(float(a.get("horizon", 2.0)) if a.get("model") == "cox"
                                 else None)
            elif a.kind == "gwas":
                gwas_stores.add(str(a.get("genotypes", spec.study_id)))
                # the trait, its threshold and the covariates fix the analysed (complete-case)
                # set: a hub-chosen covariate list would nest two sets (docs/genomics.md)
                covs = a.get("covariates")
                gwas_traits.add(_gwas_trait_key(
                    a.get("trait"), a.get("threshold"),
                    sorted(GWAS_DEFAULT_COVARIATES) if covs is None else covs))
            elif a.kind == "lmm":
                lmm.add(_lmm_key(a.get("outcome"), a.get("time", "time"),
                                 a.get("covariates") or [], a.get("bounds"),
                                 a.get("max_obs", 50)))
            if a.kind in LATTICE_KINDS and a.get("lattice") is not None:
                # the fit's grid is the whole public lattice, each time moved up to its
                # interval's end (the spec validated the value)
                lattices.add(float(a.get("lattice")))
                lattice_queries.update((float(a.get("lattice")), q) for q in kind.queries)
                mappings.add("up")
            for query, n in kind.caps_for(a).items():
                add(query, n)
            for query, params in kind.requests(a) if kind.requests else ():
                fixed.setdefault(query, set()).add(_canon(dict(_request(query, params))))
                columns.update(_named_columns(params))
            for query, part in kind.pins(a) if kind.pins else ():
                pinned.setdefault(query, set())
                if _lattice_problem(part.get("lattice")) is None:
                    pinned[query].add(_canon(dict(part)))
                    columns.update(_named_columns(part))
                    designs.update(_canon(d) for d in _values_under(part, "design"))
            if kind.requests is not None and _dp_unless_exact(a):
                # fixed requests: each analysis's own requests are DP-only (or exact) by its
                # own option, so one exact analysis does not release another's exactly
                dp_requests.update(_canon([q, dict(_request(q, p))]) for q, p in kind.requests(a)
                                   if q in kind.exact_queries)
            else:
                dp_required |= _dp_unless_exact(a)
        bounds = {}
        levels: dict[str, frozenset[tuple[str, ...]]] = {}
        for v in declared:
            if v.low is not None and v.high is not None:
                spec_bounds.setdefault(v.name, (float(v.low), float(v.high)))
        for col in columns:
            b = _public_bounds(col, spec_bounds)
            if b is not None:
                bounds[col] = b
            cands = set(spec_levels.get(col, []))
            cands |= _public_levels(col, DERIVED_LEVELS)
            levels[col] = frozenset(cands)
        return cls(spec.study_id, spec.sha256, frozenset(queries), frozenset(columns),
                   frozenset(genes), frozenset(designs), bounds, levels,
                   frozenset(bins or {20}), caps, frozenset(dp_required), frozenset(mappings),
                   frozenset(edges), frozenset(max_weights), frozenset(lmm), imaging_bounds,
                   frozenset(catalogue), frozenset(gwas_traits), frozenset(horizons),
                   imaging=imaging, fixed={q: frozenset(v) for q, v in fixed.items()},
                   pinned={q: frozenset(v) for q, v in pinned.items()},
                   dp_requests=frozenset(dp_requests), lattices=frozenset(lattices),
                   lattice_queries=frozenset(lattice_queries),
                   gwas_stores=frozenset(gwas_stores))

    def cap(self, query: str) -> int:
        """Most distinct requests of ``query`` this study may send."""
        return self.caps.get(query, 0)

    def on_plan_lattice(self, params: Mapping[str, Any] | QueryParams, query: str | None = None
                        ) -> float | None:
        """The ``steps_per_unit`` of the plan lattice that is the request's time grid, else
        ``None``.

        ``query``: the request's query; then only the lattices of the analyses using that
        query count (a Fine-Gray analysis without ``lattice`` is not on a Cox analysis's
        lattice). ``None``: any of the spec's lattices.

        A grid is on the plan lattice when it is exactly the whole lattice of one of the spec's
        ``lattice`` options
        (:func:`hemafed.analytics.survival_grid.lattice_grid`) with ``time_mapping: up``: every per-time cell is then one
        interval ``((k - 1) / s, k / s]`` fixed at approval, whatever the hub sends. The site
        then applies its ``max_lattice_steps_per_unit`` cap to a non-DP request; the per-time
        event counts stay under its minimum-cell rule
        (:func:`hemafed.privacy.disclosure.cell_rule_statistics`; attack L, docs/security.md).
        ``params``: the hub's mapping or the query's typed parameters (compared with the
        defaults filled in, as :meth:`check` does).
        """
        params = _request(query or "", params)
        if not self.lattices or params.get("time_mapping") != "up":
            return None
        grid = params.get("grid")
        if not isinstance(grid, list) or not all(
                isinstance(g, int | float) and not isinstance(g, bool)
                and abs(g) <= MAX_TIME for g in grid):
            return None
        from hemafed.analytics.survival_grid import lattice_grid

        spus = self.lattices if query is None else {
            spu for spu, q in self.lattice_queries if q == query}
        for spu in sorted(spus):
            want = lattice_grid(spu, MAX_TIME)
            if len(grid) == len(want) and all(abs(g - w) <= 1e-9 * max(1.0, w)
                                              for g, w in zip(grid, want, strict=True)):
                return spu
        return None

    # --- the check --------------------------------------------------------------------------

    def check(self, query: str, params: Mapping[str, Any] | QueryParams, dp: bool,
              distinct_so_far: int = 0) -> tuple[str, str] | None:
        """``None`` if the request fits the plan, else ``(element, detail)``.

        ``params``: the query's typed parameters as the site parsed them (or the hub's
        mapping, parsed here for a typed query). A typed request is compared with the
        defaults filled in (:func:`_request`): leaving a pinned default out, spelling it
        out, or adding a key the query ignores cannot make it another request.

        ``distinct_so_far``: distinct requests of ``query`` this site already answered for the
        study (not counting this one, if it is new).
        """
        if query not in self.queries:
            return "query", f"query {query!r} is not used by any analysis of study " \
                            f"{self.study_id!r} (plan: {', '.join(sorted(self.queries))})"
        params = _request(query, params)
        if not dp and (query in self.dp_required
                       or _canon([query, dict(params)]) in self.dp_requests):
            return "dp", f"query {query!r} is planned only as a differentially private release"
        problem = self._check_params(query, params)
        if problem is None and distinct_so_far >= self.cap(query):
            return "rounds", (f"query {query!r}: {distinct_so_far} distinct requests already "
                              f"answered for study {self.study_id!r}; the plan allows "
                              f"{self.cap(query)}")
        return problem

    def _check_params(self, query: str, params: Mapping[str, Any]) -> tuple[str, str] | None:
        if "max_patients" in params and params["max_patients"] != MAX_PATIENTS:
            return "max_patients", (f"max_patients must be the public bound {MAX_PATIENTS}, "
                                    f"got {params['max_patients']!r}")
        mapping = params.get("time_mapping")
        if mapping is not None and mapping not in self.time_mappings:
            return "time_mapping", (f"time_mapping must be one of the study's "
                                    f"{sorted(self.time_mappings)}, got {mapping!r}")
        if query == "gbdt_histograms" and _canon(params.get("edges")) not in self.edges:
            return "edges", ("the bin edges must be the spec's fixed bins (`bins` equal-width "
                             "bins over each feature's public bounds)")
        if query == "time_histogram":
            if params.get("max_time") != MAX_TIME:
                return "max_time", (f"max_time must be the plan's {MAX_TIME}, got "
                                    f"{params.get('max_time')!r}")
            if params.get("steps_per_unit") not in COARSER_LATTICES:
                return "steps_per_unit", (f"steps_per_unit must be one of the public lattices "
                                          f"{sorted(COARSER_LATTICES)}, got "
                                          f"{params.get('steps_per_unit')!r}")
        if query in IMAGING_QUERIES and self.imaging is not None:
            from hemafed.imaging.spec import plan_problem

            problem = plan_problem(self.imaging, params, query)
            if problem is not None:
                return problem
        if query in self.fixed and _canon(dict(params)) not in self.fixed[query]:
            return "request", (f"query {query!r}: the parameters must be exactly those the "
                               f"spec fixes (its column, bounds and lattice)")
        own_lattice = False
        if query in self.pinned:
            problem, own_lattice = self._pinned_request(query, params)
            if problem is not None:
                return problem
        for problem in (self._columns(params), self._bounds(params), self._levels(params),
                        self._designs(query, params),
                        self._sizes(params, own_lattice),
                        self._pinned(query, params)):
            if problem is not None:
                return problem
        if query in ("numeric_summary",) and params.get("bins") not in self.bins:
            return "bins", (f"a histogram of this study has {sorted(self.bins)} bins, got "
                            f"{params.get('bins')!r}")
        return None

    def _pinned_request(self, query: str, params: Mapping[str, Any]
                        ) -> tuple[tuple[str, str] | None, bool]:
        """A pinned iterated request: every pinned key with the spec's value, no key but those
        and the iterated ones, the ``grid`` on the pinned lattice. Returns the problem (or
        ``None``) and whether the grid was checked on a pinned lattice (which the size check
        then takes in place of the follow-up lattices)."""
        lattice_miss = None
        typed = _params_type(query) is not None
        for raw in sorted(self.pinned[query]):
            pin = json.loads(raw)
            iterated = set(pin.pop("iterated", ()))
            lattice = pin.pop("lattice", None)
            if typed:
                # the pin with the request's iterated values, defaults filled in: every other
                # key must be the pinned value or, unpinned, the query's default
                want = _request(query, {**pin, **{k: params[k] for k in iterated
                                                  if k in params}})
                if _canon(dict(params)) != _canon(dict(want)):
                    continue
            elif set(params) - set(pin) - iterated \
                    or any(_canon(params.get(k)) != _canon(v) for k, v in pin.items()):
                continue
            on_lattice = lattice is not None and "grid" in params
            if on_lattice:
                lattice_miss = _grid_problem(params.get("grid"), lattice)
                if lattice_miss is not None:
                    continue
            return None, on_lattice
        if lattice_miss is not None:
            return ("lattice", f"query {query!r}: {lattice_miss}"), False
        return ("request", f"query {query!r}: the columns, design, ties and lattice must be "
                           f"those of one of the spec's analyses (only {_ITERATED} may vary)"), \
            False

    def _columns(self, params: Mapping[str, Any]) -> tuple[str, str] | None:
        for col in _named_columns(params):
            if col not in self.columns:
                return "column", f"column {col!r} is not named by the study's analyses"
        for gene in _named_genes(params):
            if gene not in self.genes:
                return "column", f"gene {gene!r} is not named by the study's formulas"
        return None

    def _bounds(self, params: Mapping[str, Any]) -> tuple[str, str] | None:
        col = params.get("column")
        if isinstance(col, str) and ("low" in params or "high" in params):
            want = self.bounds.get(col)
            low, high = params.get("low"), params.get("high")
            got = (low, high)
            if want is None or not isinstance(low, int | float) \
                    or not isinstance(high, int | float) or (float(low), float(high)) != want:
                return "bounds", (f"bounds of {col!r} must be the public {want}, got {got}; "
                                  f"bounds are fixed by the spec or the schema")
        return None

    def _pinned(self, query: str, params: Mapping[str, Any]) -> tuple[str, str] | None:
        """The per-kind constants a hub could otherwise move to probe one site's data: the
        IPTW weight cap and propensity coefficients, the mixed model's bounds and visit cap,
        the imaging screen's features and bounds."""
        if query.startswith("iptw_"):
            if params.get("max_weight") not in self.max_weights:
                return "max_weight", (f"max_weight must be the spec's "
                                      f"{sorted(self.max_weights, key=str)}, got "
                                      f"{params.get('max_weight')!r}")
            gamma = params.get("gamma")
            if not isinstance(gamma, list) or not all(
                    isinstance(g, int | float) and not isinstance(g, bool)
                    and math.isfinite(g) and abs(g) <= MAX_BETA for g in gamma):
                return "gamma", f"gamma must be a list of finite numbers of size <= {MAX_BETA:g}"
        if query == "lmm_reml_sums":
            key = _lmm_key(params.get("outcome"), params.get("time"), params.get("covariates"),
                           params.get("bounds"), params.get("max_obs", 50))
            if key not in self.lmm:
                return "bounds", ("the mixed model's outcome, time, covariates, bounds and "
                                  "max_obs must be those of the spec's lmm analysis")
        # (gwas_store answers only each site's public store declaration, sensitivity 0: the
        # hub may ask it of any store name, as store discovery does)
        if query.startswith("gwas_") and query != "gwas_store" and "study" in params \
                and params.get("study") not in self.gwas_stores:
            return "study", ("the genotype store must be the one the spec's gwas analyses name "
                             "(`genotypes`, default the study id)")
        # (a typed request spells out the defaults: no trait and no covariates is the linked
        # patients of QC, LD and PCA, which no gwas analysis's trait pins)
        if query.startswith("gwas_") and (params.get("trait") is not None
                                          or params.get("covariates")):
            t = params.get("trait")
            column, threshold = (t.get("column"), t.get("threshold")) \
                if isinstance(t, Mapping) else (None, None)
            pairs = {_canon(json.loads(k)[:2]) for k in self.gwas_traits}
            if _canon(json.loads(_gwas_trait_key(column, threshold, None))[:2]) not in pairs:
                return "trait", ("the trait and its threshold must be those of one of the "
                                 "spec's gwas analyses")
            if _gwas_trait_key(column, threshold, params.get("covariates", [])) \
                    not in self.gwas_traits:
                return "covariates", ("the covariates must be exactly those of the spec's gwas "
                                      "analysis of this trait, in order (they fix the analysed "
                                      "complete-case set)")
        if query in OWN_DESIGN_QUERIES and query.startswith("gwas_") and "beta" in params:
            import base64

            import numpy as np

            from hemafed.analytics.design import MAX_LP_TERM

            # decoded here, not by genomics.queries (which reaches the site runtime: a cycle)
            try:
                beta = np.frombuffer(base64.b64decode(str(params.get("beta")), validate=True),
                                     dtype="<f8")
            except (ValueError, TypeError):
                return "beta", "beta must be base64 of finite float64 values"
            if not isinstance(params.get("beta"), str) or not np.all(np.isfinite(beta)):
                return "beta", "beta must be base64 of finite float64 values"
            # covariates and the trait enter scaled to |z| <= 1, PC scores clipped to [-1, 1],
            # genotypes 0..2 (half-width 1): the bound of every iterated coefficient vector
            if beta.size and float(abs(beta).max()) > MAX_LP_TERM:
                return "beta", (f"every coefficient of a gwas model must be at most "
                                f"{MAX_LP_TERM:g} in size (covariates are scaled to [-1, 1])")
        if query == "catalogue_counts":
            levels = params.get("levels")
            key = _catalogue_key(params.get("column"), {params.get("column"): levels}
                                 if isinstance(params.get("column"), str) else None,
                                 params.get("features"))
            if key not in self.catalogue:
                return "catalogue", ("the catalogue's column, disease areas and fields must be "
                                     "those of the approved catalogue plan")
        if query == "imaging_screen":
            h = params.get("horizon")
            if (float(h) if isinstance(h, int | float) and not isinstance(h, bool) else h) \
                    not in self.screen_horizons:
                return "horizon", (f"the screen's horizon must be one of the spec's imaging "
                                   f"analyses' {sorted(self.screen_horizons, key=str)}, got "
                                   f"{h!r}")
            bounds = params.get("bounds")
            if not isinstance(bounds, Mapping):
                return "bounds", "bounds must map each screened feature to its public bounds"
            for f in params.get("features") or ():
                want = self.imaging_bounds.get(str(f))
                if want is None and self.imaging is not None:
                    # harmonised copies h_<feature>: the spec's public bounds (plan_parts)
                    want = self.imaging.bounds.get(str(f))
                got = bounds.get(f)
                if want is None or not isinstance(got, list | tuple) or len(got) != 2 \
                        or (float(got[0]), float(got[1])) != want:
                    return "bounds", (f"bounds of {f!r} must be the spec's imaging bounds "
                                      f"{want}, got {got}")
        return None

    def _levels(self, params: Mapping[str, Any]) -> tuple[str, str] | None:
        for key, col_key in _LEVEL_KEYS.items():
            if key not in params:
                continue
            col = params.get(col_key)
            got = params[key]
            if not isinstance(got, list | tuple):
                return key, f"{key} must be a list"
            cands = self.levels.get(str(col), frozenset())
            if tuple(str(v) for v in got) not in cands:
                return key, (f"levels of {col!r} must be those of the spec or the schema "
                             f"({sorted(cands)}), got {list(got)[:20]}")
        return None

    def _designs(self, query: str, params: Mapping[str, Any]) -> tuple[str, str] | None:
        from hemafed.analytics.design import DesignSpec

        widths = set()
        for design in _values_under(params, "design"):
            if _canon(design) not in self.designs:
                return "design", "the covariate design is not one the study's formulas imply"
            widths.add(DesignSpec.from_params(design).width)
        if not widths and query in OWN_DESIGN_QUERIES:
            # the query builds its covariates itself (trait, covariates, PCs) and checks its
            # packed coefficient vector against them
            return None
        beta = params.get("beta")
        if beta is None:
            return None
        if not isinstance(beta, list) or not all(
                isinstance(b, int | float) and not isinstance(b, bool)
                and math.isfinite(b) and abs(b) <= MAX_BETA for b in beta):
            return "beta", f"beta must be a list of finite numbers of size <= {MAX_BETA:g}"
        if query in FIXED_WIDTHS:
            widths = {FIXED_WIDTHS[query]}

        # Cox: one coefficient per design column; logistic: and an intercept
        if not widths or not any(len(beta) in (w, w + 1) for w in widths):
            return "beta", "beta must have the planned design's width"
        return None

    def _sizes(self, params: Mapping[str, Any], own_lattice: bool = False
               ) -> tuple[str, str] | None:
        """Grids on a public lattice, bin counts in range; ``own_lattice``: the top-level
        ``grid`` was checked against its pinned lattice (:meth:`_pinned_request`)."""
        for key in GRID_KEYS:
            if own_lattice and key == "grid":
                continue
            for grid in _values_under(params, key):
                if not isinstance(grid, list) or len(grid) > MAX_GRID_POINTS or not all(
                        isinstance(g, int | float) and not isinstance(g, bool)
                        and math.isfinite(g) and 0 <= g <= MAX_TIME for g in grid):
                    return key, (f"{key} must hold at most {MAX_GRID_POINTS} times in "
                                 f"[0, {MAX_TIME:g}]")
                if not on_public_lattice(grid):
                    return key, (f"{key} must be points k / steps_per_unit of one public "
                                 f"lattice (steps_per_unit in {sorted(COARSER_LATTICES)})")
        for key in ("fine_bins", "lp_bins"):
            v = params.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)
                                  or not 1 <= v <= MAX_FINE_BINS):
                return key, f"{key} must be an integer in [1, {MAX_FINE_BINS}]"
        return None


def _dp_unless_exact(a: Analysis) -> frozenset[str]:
    """The queries of ``a`` released only with DP: its kind's ``exact_queries`` unless the
    officer approved an exact release (the kind's ``exact_option`` set to ``true``)."""
    kind = get_kind(a.kind)
    if kind.exact_option is None or a.get(kind.exact_option) is True:
        return frozenset()
    return frozenset(kind.exact_queries)


def on_public_lattice(grid: Iterable[float]) -> bool:
    """Whether every point of ``grid`` is ``k / steps_per_unit`` (``k >= 0`` an integer) for
    one ``steps_per_unit`` of :data:`COARSER_LATTICES`.

    >>> on_public_lattice([1 / 12, 2 / 12]), on_public_lattice([0.3001])
    (True, False)
    """
    points = [float(g) for g in grid]
    return any(all(abs(g * spu - round(g * spu)) <= 1e-6 for g in points)
               for spu in COARSER_LATTICES)


_ITERATED = "the iterated parameters such as 'beta' and the grid's points"


def _lattice_problem(lattice: Any) -> str | None:
    """Why ``[steps_per_unit, max_time]`` is not a lattice the plan admits (``None``: it is)."""
    if lattice is None:
        return None
    if not isinstance(lattice, list | tuple) or len(lattice) != 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            for v in lattice):
        return "the lattice must be [steps_per_unit, max_time]"
    spu, top = float(lattice[0]), float(lattice[1])
    if spu not in OWN_TABLE_LATTICES:
        return f"steps_per_unit must be one of {sorted(OWN_TABLE_LATTICES)}"
    if top <= 0 or math.floor(top * spu) + 1 > MAX_GRID_POINTS:
        return f"the lattice may hold at most {MAX_GRID_POINTS} points"
    return None


def _grid_problem(grid: Any, lattice: Sequence[float]) -> str | None:
    """Why ``grid`` is not a set of points ``k / steps_per_unit`` in ``[0, max_time]``."""
    spu, top = float(lattice[0]), float(lattice[1])
    if not isinstance(grid, list) or len(grid) > math.floor(top * spu) + 1 or not all(
            isinstance(g, int | float) and not isinstance(g, bool) and math.isfinite(g)
            and 0 <= g <= top and abs(g * spu - round(g * spu)) <= 1e-6 for g in grid):
        return (f"grid must be points k / {spu:g} in [0, {top:g}], the lattice the spec pins")
    return None


def _gbdt_edges(a: Analysis) -> set[str]:
    from hemafed.learn.features import feature_spec, fixed_bins

    try:
        design = feature_spec(a.get("features"))
        return {_canon(fixed_bins(design, int(a.get("bins", 32))).to_params())}
    except (InvalidInput, TypeError, ValueError):
        return set()  # an unusable feature list fails at the hub; nothing to permit


def _public_bounds(col: str, spec_bounds: Mapping[str, tuple[float, float]]
                   ) -> tuple[float, float] | None:
    from hemafed.cohort.schema import FIELDS

    if col in spec_bounds:
        return spec_bounds[col]
    f = FIELDS.get(col)
    if f is None or f.kind not in ("float", "int") or f.low is None or f.high is None:
        return None
    return float(f.low), float(f.high)


def _public_levels(col: str, derived: Mapping[str, tuple[str, ...]]) -> set[tuple[str, ...]]:
    from hemafed.cohort.schema import FIELDS

    out: set[tuple[str, ...]] = set()
    if col in derived:
        out.add(tuple(derived[col]))
    f = FIELDS.get(col)
    if f is not None and f.kind == "category":
        out.add(tuple(str(v) for v in f.categories))
    if f is not None and f.kind == "bool":
        out.add(("False", "True"))
    return out


def _lmm_key(outcome: Any, time: Any, covariates: Any, bounds: Any, max_obs: Any) -> str:
    """The pinned part of a mixed model's request (bounds of its own columns only)."""
    cols = [outcome, time, *(covariates if isinstance(covariates, list | tuple) else [None])]
    b = bounds if isinstance(bounds, Mapping) else {}
    try:
        pinned = {str(c): [float(v) for v in b[c]] for c in cols if c in b}
    except (TypeError, ValueError):
        pinned = {}
    return _canon([outcome, time, covariates, pinned, max_obs])


def _gwas_trait_key(column: Any, threshold: Any, covariates: Any) -> str:
    """The pinned part of a GWAS request: trait column, threshold and covariate list."""
    thr = float(threshold) if isinstance(threshold, int | float) \
        and not isinstance(threshold, bool) else threshold
    covs = list(covariates) if isinstance(covariates, list | tuple) else covariates
    return _canon([column, thr, covs])


def _catalogue_key(group: Any, levels: Any, columns: Any) -> str:
    """The pinned part of a catalogue request: the counted column, its levels, the fields."""
    lv = levels.get(group) if isinstance(levels, Mapping) and isinstance(group, str) else None
    return _canon([group, lv, columns])


def _values_under(value: Any, key: str, depth: int = 0) -> Iterable[Any]:
    if depth > 8:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k == key:
                yield v
            else:
                yield from _values_under(v, key, depth + 1)
    elif isinstance(value, list) and len(value) <= 256:
        for v in value:
            yield from _values_under(v, key, depth + 1)


def _named_columns(params: Mapping[str, Any]) -> Iterable[str]:
    """Every cohort column a request names (anywhere in its parameters)."""
    def walk(value: Any, depth: int) -> Iterable[str]:
        if depth > 8:
            return
        if isinstance(value, Mapping):
            for k, v in value.items():
                if k in _COLUMN_KEYS and isinstance(v, str):
                    if v:  # "" names no column (a boosting label's unused duration_col)
                        yield v
                elif k in _COLUMN_LIST_KEYS and isinstance(v, list) \
                        and all(isinstance(c, str) for c in v):
                    yield from v
                elif k == "causes" and isinstance(v, list):
                    for pair in v:
                        if isinstance(pair, list):
                            yield from (str(c) for c in pair)
                elif k == "cliques" and isinstance(v, list):
                    for clique in v:
                        if isinstance(clique, list):
                            yield from (str(c) for c in clique)
                elif k == "domain" and isinstance(v, Mapping):
                    for c in v.get("columns") or ():
                        if isinstance(c, Mapping) and isinstance(c.get("name"), str):
                            yield c["name"]
                elif k == "outcome" and isinstance(v, str):
                    yield v
                else:
                    yield from walk(v, depth + 1)
        elif isinstance(value, list) and len(value) <= 256:
            for v in value:
                yield from walk(v, depth + 1)
    return walk(params, 0)


def _named_genes(params: Mapping[str, Any]) -> Iterable[str]:
    for design in _values_under(params, "design"):
        if isinstance(design, list):
            for t in design:
                if isinstance(t, Mapping) and isinstance(t.get("gene"), str):
                    yield t["gene"]


register_planner(StudyPlan.from_spec)  # the plan a site derives (hemafed.studyplan.plans)
