"""Site queries of the federated GWAS: the store declarations, genotype counts (QC), the PCA
cross-product, the null model and the per-variant association sums. Each is a secure sum; each
declares its output shapes and bounds from the parameters alone.

``gwas_store`` is the exception that releases per-site facts, and only public ones: each site
answers, in its own slot of a table over the ``sites`` the hub lists, whether it declares a
genotype store for the study and whether that store is on the study's genome build and variant
list (from the store's public declaration alone; no patient count, sensitivity 0), so the sum
shows which sites hold a matching store. A site without a store answers zeros there, and
refuses every other ``gwas_*`` query under the rule ``no_genotype_store``.

Common parameters: ``study`` (genotype store name), ``variant_list`` (its SHA-256),
``max_patients`` (public bound on one site's patients), and for the analysis rows ``trait``
(``{"column": name, "threshold": t or None}``; with a threshold the trait is ``column >= t``)
and ``covariates`` (cohort columns with schema bounds; ``sex`` is 1 for female) plus optional
``pca`` (``variants``, ``freq``, ``loadings``, ``eigenvalues``: public results of the federated
PCA, from which each site computes its own patients' scores and nothing else).

Every query that sums over patients per variant (counts, PCA cross-product, LD pairs, linear,
logistic, Firth) applies the site's own class minimum (:mod:`hemafed.genomics.disclosure`): a
variant whose carriers, non-carriers or missing calls among the analysed patients (split by
case status under a binary trait), or among the linked patients left out of the analysis, are
too few at this site contributes zeros, and 1 in the per-variant ``excluded`` sum.

Large numeric parameters travel as base64 of little-endian arrays (:func:`pack`).
Covariates enter as ``z = (x - center) / half_width`` (``|z| <= 1``) behind an intercept; the
quantitative trait likewise. Genotypes are ALT counts 0/1/2; a missing call is 0 in the sums
and is corrected for exactly (linear) or masked (logistic).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.queries import Params, Query, QueryParams, SiteContext, Statistic, register
from hemafed.genomics.disclosure import (
    EXCLUDED,
    excluded_statistic,
    excluded_variants,
    withhold,
)
from hemafed.genomics.store import (
    GenotypeStore,
    read_declaration,
    register_site_dir,
    site_dir_of,
    site_store,
)
from hemafed.site.runtime import register_site_opened

STORE_QUERY = "gwas_store"
STORE_COLUMNS = ("declared", "same_build", "same_variant_list")
COUNTS_QUERY, GRAM_QUERY, NULL_QUERY = "gwas_counts", "gwas_pca_gram", "gwas_null"
LINEAR_QUERY, LOGISTIC_QUERY = "gwas_linear", "gwas_logistic"
LD_QUERY, FIRTH_QUERY = "gwas_ld_pairs", "gwas_firth"
_FINE = 1e-15
_FIELD = FIELDS


def pack(array: np.ndarray, dtype: str = "<f8") -> str:
    """Base64 text of ``array`` as ``dtype`` (shape travels separately)."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode()


def unpack(text: Any, dtype: str, name: str, size: int | None = None) -> np.ndarray:
    if not isinstance(text, str):
        raise InvalidInput(f"parameter {name!r} must be base64 text")
    try:
        arr = np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype)
    except (ValueError, TypeError):
        raise InvalidInput(f"parameter {name!r} is not base64 of {dtype} values") from None
    if size is not None and arr.size != size:
        raise InvalidInput(f"parameter {name!r} holds {arr.size} values, expected {size}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise InvalidInput(f"parameter {name!r} holds non-finite values")
    return arr


def tri(k: int) -> int:
    return k * (k + 1) // 2


def _text(params: Params, name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"parameter {name!r} must be a non-empty string")
    return value


def covariate_bounds(name: str, param: str = "covariates") -> tuple[float, float]:
    """Public schema bounds of a trait or covariate column (``sex``: 0/1); ``param`` is the
    parameter that named it, for the message."""
    if name == "sex":
        return 0.0, 1.0
    f = _FIELD.get(name)
    if f is None or f.low is None or f.high is None or f.kind not in ("float", "int"):
        raise InvalidInput(f"parameter {param!r}: {name!r} is not a bounded numeric cohort "
                           "field (or 'sex')")
    return float(f.low), float(f.high)


@dataclass(frozen=True)
class Trait:
    """The analysed trait (wire form ``{"column": name, "threshold": t or null}``): a bounded
    numeric cohort column, binary ``column >= threshold`` when a threshold is set."""

    column: str
    threshold: float | None = None

    @classmethod
    def from_param(cls, value: Any) -> Trait:
        if not isinstance(value, Mapping) or not isinstance(value.get("column"), str) \
                or not set(value) <= {"column", "threshold"}:
            raise InvalidInput("parameter 'trait' must be {'column': name, 'threshold': t or "
                               "null}")
        covariate_bounds(value["column"], "trait")
        thr = value.get("threshold")
        if thr is not None and (isinstance(thr, bool) or not isinstance(thr, int | float)
                                or not math.isfinite(thr)):
            raise InvalidInput("parameter 'trait': 'threshold' must be a finite number or null")
        return cls(value["column"], None if thr is None else float(thr))

    def to_param(self) -> dict[str, Any]:
        return {"column": self.column, "threshold": self.threshold}

    @property
    def binary(self) -> bool:
        return self.threshold is not None

    @property
    def center(self) -> float:
        low, high = covariate_bounds(self.column, "trait")
        return (low + high) / 2

    @property
    def half_width(self) -> float:
        """The trait enters as ``(y - center) / half_width`` (quantitative), so ``|y| <= 1``;
        the hub multiplies the fitted effect back by it."""
        low, high = covariate_bounds(self.column, "trait")
        return (high - low) / 2


@dataclass(frozen=True)
class PcaScores:
    """The public results of the federated PCA a request carries (wire form: the mapping of
    :meth:`hemafed.genomics.pca.PCAResult.params`), from which each site computes its own
    patients' scores: the PCA variants, their pooled frequencies, the loadings (base64) and
    the eigenvalues."""

    variants: str
    freq: str
    loadings: str
    eigenvalues: tuple[float, ...]

    @classmethod
    def from_param(cls, value: Any) -> PcaScores:
        keys = {"variants", "freq", "loadings", "eigenvalues"}
        if not isinstance(value, Mapping) or set(value) != keys:
            raise InvalidInput("parameter 'pca' needs variants, freq, loadings and eigenvalues "
                               "(and nothing else)")
        ev = value["eigenvalues"]
        if not isinstance(ev, list | tuple) or not ev or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                and v > 0 for v in ev):
            raise InvalidInput("parameter 'pca': 'eigenvalues' must be positive finite numbers")
        p = unpack(value["variants"], "<i4", "pca.variants").size
        unpack(value["freq"], "<f8", "pca.freq", p)
        unpack(value["loadings"], "<f8", "pca.loadings", p * len(ev))
        return cls(value["variants"], value["freq"], value["loadings"],
                   tuple(float(v) for v in ev))

    def to_param(self) -> dict[str, Any]:
        return {"variants": self.variants, "freq": self.freq, "loadings": self.loadings,
                "eigenvalues": list(self.eigenvalues)}


@dataclass(frozen=True, kw_only=True)
class GwasParams(QueryParams):
    """What every genotype query names: the genotype store (``study``), the SHA-256 of its
    variant list and the public bound on one site's patients.

    Subclasses add their keys in :meth:`parse` (each checks its own and its base's once);
    :meth:`from_mapping` is the one entry."""

    study: str
    variant_list: str
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        """The checked keyword arguments of ``cls`` from the hub's mapping."""
        return {"study": _text(params, "study"), "variant_list": _text(params, "variant_list"),
                "max_patients": checks.max_patients(params)}

    @classmethod
    def from_mapping(cls, params: Params) -> Self:
        cls.known(params)
        return cls(**cls.parse(params))


@dataclass(frozen=True, kw_only=True)
class ModelParams(GwasParams):
    """The analysed patients of a GWAS model: the ``trait`` (their complete cases), the
    ``covariates`` (cohort columns with schema bounds; ``sex`` is 1 for female) and the
    optional ``pca`` scores added as covariates. The hub checks its design with this before
    the first model query."""

    QUERY = "gwas"
    TRAIT_REQUIRED: ClassVar[bool] = True
    trait: Trait | None = None
    covariates: tuple[str, ...] = ()
    pca: PcaScores | None = None

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        if "trait" not in params and cls.TRAIT_REQUIRED:
            raise InvalidInput("parameter 'trait' is required: {'column': name, 'threshold': "
                               "t or null}")
        trait = Trait.from_param(params["trait"]) if "trait" in params else None
        covs = checks.names(params, "covariates", allow_empty=True) \
            if "covariates" in params else ()
        for c in covs:
            covariate_bounds(c)
        pca = PcaScores.from_param(params["pca"]) if "pca" in params else None
        return super().parse(params) | {"trait": trait, "covariates": covs, "pca": pca}

    @property
    def n_covariates(self) -> int:
        """Columns of the covariate matrix: intercept, named covariates, PCs."""
        return 1 + len(self.covariates) + (0 if self.pca is None else len(self.pca.eigenvalues))

    @property
    def binary(self) -> bool:
        return self.trait is not None and self.trait.binary

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        for key in ("trait", "pca"):
            value = getattr(self, key)
            if value is None:
                del out[key]
            else:
                out[key] = value.to_param()
        return out


def standardise(g: np.ndarray, freq: np.ndarray) -> np.ndarray:
    """PLINK-convention standardised genotypes (variants x samples): (g - 2f) / sqrt(2f(1-f)),
    missing calls 0 (the mean)."""
    f = freq[:, None]
    z = (g - 2 * f) / np.sqrt(2 * f * (1 - f))
    return np.where(g < 0, 0.0, z)


def _variant_rows(store: GenotypeStore, idx: np.ndarray) -> np.ndarray:
    if idx.size and (idx.min() < 0 or idx.max() >= store.n_variants):
        raise InvalidInput("variant indices lie outside the variant list")
    return np.asarray(store.dosage[idx], dtype=np.int8)


def linked_columns(cohort: Cohort, store: GenotypeStore) -> np.ndarray:
    """Store columns of the samples linked to a cohort patient (the patients of QC, LD, PCA)."""
    ids = set(cohort.patients["patient_id"].astype(str))
    return np.flatnonzero(np.array([s in ids for s in store.samples], dtype=bool))


def analysis_rows(cohort: Cohort, p: GwasParams, site: SiteContext
                  ) -> tuple[GenotypeStore, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The site's store, store columns of the analysis samples, trait vector and covariate matrix
    (intercept first, scaled) of those samples (``None`` without a trait)."""
    store = site_store(site.site_id, p.study, p.variant_list)
    cols = linked_columns(cohort, store)
    if not isinstance(p, ModelParams) or p.trait is None:
        return store, cols, None, None
    pts = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))
    sub = pts.loc[[store.samples[i] for i in cols]]
    y = sub[p.trait.column].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    covs = []
    for name in p.covariates:
        if name == "sex":
            s = sub["sex"].astype("string")
            x = np.where(s.isna(), np.nan, (s == "F").to_numpy(dtype=float, na_value=False))
        else:
            x = sub[name].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        lo, hi = covariate_bounds(name)
        covs.append((x - (lo + hi) / 2) / ((hi - lo) / 2 or 1.0))
    ok = ~np.isnan(y)
    for x in covs:
        ok &= ~np.isnan(x)
    cols, y = cols[ok], y[ok]
    c = np.column_stack([np.ones(cols.size)] + [x[ok] for x in covs])
    if p.pca is not None:
        pv = unpack(p.pca.variants, "<i4", "pca.variants")
        freq = unpack(p.pca.freq, "<f8", "pca.freq")
        ev = np.asarray(p.pca.eigenvalues, dtype=float)
        load = unpack(p.pca.loadings, "<f8", "pca.loadings").reshape(pv.size, ev.size)
        z = standardise(_variant_rows(store, pv)[:, cols].astype(float), freq)
        scores = (z.T @ load) / np.sqrt(ev)
        c = np.column_stack([c, np.clip(scores, -1.0, 1.0)])
    thr = p.trait.threshold
    y = (y >= thr).astype(float) if thr is not None else \
        (y - p.trait.center) / p.trait.half_width
    return store, cols, y, c


def left_out(cohort: Cohort, p: GwasParams, site: SiteContext, store: GenotypeStore,
             rows: np.ndarray, cols: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """The site disclosure rule over the store ``rows`` (variants x all store columns) of a
    query analysing the columns ``cols`` (trait ``y``, or ``None``): the classes of the
    analysed patients and of the linked patients the query leaves out, at the site's own
    class minimum (``site.min_cell``)."""
    linked = linked_columns(cohort, store)
    cases = None
    if y is not None and isinstance(p, ModelParams) and p.binary:
        cases = y > 0.5
    return excluded_variants(rows[:, linked], site.min_cell,
                             analysed=np.isin(linked, cols), cases=cases)


def _upper(m: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(m.shape[-1])
    return m[..., iu[0], iu[1]]


# --- gwas_store --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class StoreParams(QueryParams):
    """``gwas_store``: the store name, the study's variant list (SHA-256) and build, and the
    federation's sites (sorted, distinct), each answering in its own slot. No patient count:
    the answer is public metadata."""

    QUERY = STORE_QUERY
    study: str
    variant_list: str
    build: str
    sites: tuple[str, ...]

    @classmethod
    def from_mapping(cls, params: Params) -> StoreParams:
        cls.known(params)
        texts = {name: _text(params, name) for name in ("study", "variant_list", "build")}
        sites = params.get("sites")
        if (not isinstance(sites, list | tuple) or not sites or len(sites) > 1000
                or not all(isinstance(x, str) and x for x in sites)
                or list(sites) != sorted(set(sites))):
            raise InvalidInput("parameter 'sites' must list the federation's site ids, sorted "
                               "and distinct")
        return cls(**texts, sites=tuple(sites))


def _store_declare(p: StoreParams) -> dict[str, Statistic]:
    # public metadata of the site, not of its patients: no patient changes it
    return {"store": Statistic((len(p.sites), len(STORE_COLUMNS)), 0.0, 1.0, 1.0,
                               sensitivity=0.0)}


def _store_compute(cohort: Cohort, p: StoreParams, site: SiteContext) -> dict[str, np.ndarray]:
    if site.site_id not in p.sites:
        raise InvalidInput("parameter 'sites' does not list this site")
    out = np.zeros((len(p.sites), len(STORE_COLUMNS)))
    doc = read_declaration(site_dir_of(site.site_id), p.study)
    if doc is not None:
        out[p.sites.index(site.site_id)] = [1.0, float(doc["build"] == p.build),
                                            float(doc["variant_list_sha256"] == p.variant_list)]
    return {"store": out}


# --- gwas_counts -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CountsParams(ModelParams):
    """``gwas_counts``: the range ``start <= i < stop`` of the variant list (QC sends no
    trait: the linked patients; with one, its complete cases)."""

    QUERY = COUNTS_QUERY
    TRAIT_REQUIRED = False
    start: int
    stop: int

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        start = checks.positive_int(params, "start", low=0)
        stop = checks.positive_int(params, "stop")
        if stop <= start:
            raise InvalidInput("parameter 'stop' must exceed 'start'")
        return super().parse(params) | {"start": start, "stop": stop}


def _counts_declare(p: CountsParams) -> dict[str, Statistic]:
    m = p.stop - p.start
    return {"counts": Statistic((m, 4), 0.0, float(p.max_patients), 1.0,
                                sensitivity=math.sqrt(m)),
            EXCLUDED: excluded_statistic(m)}


def _counts_compute(cohort: Cohort, p: CountsParams, site: SiteContext
                    ) -> dict[str, np.ndarray]:
    store, cols, y, _ = analysis_rows(cohort, p, site)
    if p.stop > store.n_variants:
        raise InvalidInput("parameter 'stop' lies beyond the variant list")
    rows = np.asarray(store.dosage[p.start:p.stop])
    g = rows[:, cols]
    counts = np.stack([(g == v).sum(axis=1) for v in (0, 1, 2, -1)], axis=1)
    out = left_out(cohort, p, site, store, rows, cols, y)
    return withhold({"counts": counts.astype(float)}, out) | {EXCLUDED: out.astype(float)}


# --- gwas_pca_gram -----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class GramParams(GwasParams):
    """``gwas_pca_gram``: the PCA variants (base64 int32 indices into the list) and their
    pooled frequencies (base64 float64, each in (0, 1))."""

    QUERY = GRAM_QUERY
    variants: str
    freq: str

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        p = unpack(params.get("variants"), "<i4", "variants").size
        f = unpack(params.get("freq"), "<f8", "freq", p)
        if p < 2 or np.any((f <= 0) | (f >= 1)):
            raise InvalidInput("parameter 'freq': PCA needs >= 2 variants with frequencies in "
                               "(0, 1)")
        return super().parse(params) | {"variants": params["variants"], "freq": params["freq"]}


def _zmax(freq: np.ndarray) -> float:
    return float(np.max(np.maximum(2 * freq, 2 - 2 * freq) / np.sqrt(2 * freq * (1 - freq))))


def _gram_declare(p: GramParams) -> dict[str, Statistic]:
    n = float(p.max_patients)
    m = unpack(p.variants, "<i4", "variants").size
    zmax2 = _zmax(unpack(p.freq, "<f8", "freq")) ** 2
    return {"gram": Statistic((tri(m),), -n * zmax2, n * zmax2, _FINE,
                              sensitivity=zmax2 * m),
            "n": Statistic((1,), 0.0, n, 1.0), EXCLUDED: excluded_statistic(m)}


def _gram_compute(cohort: Cohort, p: GramParams, site: SiteContext) -> dict[str, np.ndarray]:
    store, cols, y, _ = analysis_rows(cohort, p, site)
    rows = _variant_rows(store, unpack(p.variants, "<i4", "variants"))
    g = rows[:, cols]
    out = left_out(cohort, p, site, store, rows, cols, y)
    z = standardise(g.astype(float), unpack(p.freq, "<f8", "freq"))
    z[out] = 0.0  # every cross-product entry with a left-out variant is zero
    return {"gram": _upper(z @ z.T), "n": np.array([float(cols.size)]),
            EXCLUDED: out.astype(float)}


# --- gwas_ld_pairs ----------------------------------------------------------------------------

def _ld_sizes(variants: Any, pairs_text: Any) -> tuple[np.ndarray, np.ndarray]:
    idx = unpack(variants, "<i4", "variants")
    pairs = unpack(pairs_text, "<i4", "pairs")
    if pairs.size == 0 or pairs.size % 2:
        raise InvalidInput("parameter 'pairs' must hold a non-empty list of (a, b) positions")
    pairs = pairs.reshape(-1, 2)
    if pairs.min() < 0 or pairs.max() >= idx.size:
        raise InvalidInput("parameter 'pairs' points outside 'variants'")
    return idx, pairs


@dataclass(frozen=True, kw_only=True)
class LdParams(GwasParams):
    """``gwas_ld_pairs``: the variants (base64 int32 indices into the list) and the pairs
    (base64 int32 ``(a, b)`` positions into ``variants``)."""

    QUERY = LD_QUERY
    variants: str
    pairs: str

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        _ld_sizes(params.get("variants"), params.get("pairs"))
        return super().parse(params) | {"variants": params["variants"], "pairs": params["pairs"]}


def _ld_declare(p: LdParams) -> dict[str, Statistic]:
    n = float(p.max_patients)
    idx, pairs = _ld_sizes(p.variants, p.pairs)
    m = pairs.shape[0]
    # per pair (n, s_a, q_a, s_b, q_b, d): one patient adds at most (1, 2, 4, 2, 4, 4)
    return {"pairs": Statistic((m, 6), 0.0, 4 * n, 1.0, sensitivity=math.sqrt(57 * m)),
            EXCLUDED: excluded_statistic(idx.size)}


def pair_sums(raw: np.ndarray, pairs: np.ndarray, *, max_span: int = 1024) -> np.ndarray:
    """Per pair ``(a, b)`` of rows of ``raw`` (variants x patients, -1 missing): the sums
    ``(n, s_a, q_a, s_b, q_b, d)`` over the patients called at both.

    Pairs come in windows (``a < b < a + window``), so a block of pairs spans a short run of
    variants: its sums are entries of four small matrix products over that run (``C C'``,
    ``G C'``, ``G^2 C'``, ``G G'`` with ``C`` the called indicator and ``G`` the genotypes, 0
    where missing); integer-valued, so exact in float64. A block spanning more than
    ``max_span`` variants (pairs far apart) is summed pair by pair instead."""
    called = (raw >= 0).astype(np.float64)
    g = np.where(raw < 0, 0, raw).astype(np.float64)
    q = g * g
    out = np.empty((pairs.shape[0], 6))
    for lo in range(0, pairs.shape[0], 4096):
        a, b = pairs[lo:lo + 4096, 0], pairs[lo:lo + 4096, 1]
        first = int(min(a.min(), b.min()))
        span = int(max(a.max(), b.max())) + 1 - first
        if span <= max_span:
            rows = slice(first, first + span)
            cr, gr, qr = called[rows], g[rows], q[rows]
            cc, gc, qc, gg = cr @ cr.T, gr @ cr.T, qr @ cr.T, gr @ gr.T
            i, j = a - first, b - first
            out[lo:lo + a.size] = np.stack([cc[i, j], gc[i, j], qc[i, j], gc[j, i], qc[j, i],
                                            gg[i, j]], axis=1)
            continue
        both = called[a] * called[b]
        ga, gb = g[a] * both, g[b] * both
        out[lo:lo + a.size] = np.stack([both.sum(1), ga.sum(1), (ga * ga).sum(1), gb.sum(1),
                                        (gb * gb).sum(1), (ga * gb).sum(1)], axis=1)
    return np.rint(out)


def _ld_compute(cohort: Cohort, p: LdParams, site: SiteContext) -> dict[str, np.ndarray]:
    """Per pair, sums over the patients called at both (PLINK's pairwise r^2); zeros for a
    pair with a variant this site leaves out (``excluded``: per entry of ``variants``)."""
    store, cols, y, _ = analysis_rows(cohort, p, site)
    idx, pairs = _ld_sizes(p.variants, p.pairs)
    rows = _variant_rows(store, idx)
    g = rows[:, cols]
    out = left_out(cohort, p, site, store, rows, cols, y)
    sums = pair_sums(g, pairs)
    sums[out[pairs[:, 0]] | out[pairs[:, 1]]] = 0.0
    return {"pairs": sums, EXCLUDED: out.astype(float)}


# --- gwas_null ---------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class NullParams(ModelParams):
    """``gwas_null``: the model's design; for a binary trait also the Newton iterate ``beta``
    (base64 float64, one per covariate column), which a quantitative trait has not."""

    QUERY = NULL_QUERY
    beta: str | None = None

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        out = super().parse(params)
        binary = out["trait"].binary
        if binary:
            k = 1 + len(out["covariates"]) + (0 if out["pca"] is None
                                              else len(out["pca"].eigenvalues))
            unpack(params.get("beta"), "<f8", "beta", k)
        elif "beta" in params:
            raise InvalidInput("parameter 'beta' belongs to a binary trait's null model only")
        return out | {"beta": params["beta"] if binary else None}

    def to_mapping(self) -> dict[str, Any]:
        out = super().to_mapping()
        if self.beta is None:
            del out["beta"]
        return out


def _null_declare(p: NullParams) -> dict[str, Statistic]:
    n = float(p.max_patients)
    k = p.n_covariates
    # sensitivity: one patient's L2 contribution (|z| <= 1 for covariates and scaled trait)
    out = {"n": Statistic((1,), 0.0, n, 1.0),
           "cc": Statistic((tri(k),), -n, n, _FINE, sensitivity=math.sqrt(tri(k)))}
    if not p.binary:
        out |= {"cy": Statistic((k,), -n, n, _FINE, sensitivity=math.sqrt(k)),
                "yy": Statistic((1,), 0.0, n, _FINE)}
    else:
        out |= {"grad": Statistic((k,), -n, n, _FINE, sensitivity=math.sqrt(k)),
                "hess": Statistic((tri(k),), -n, n, _FINE, sensitivity=0.25 * math.sqrt(tri(k))),
                "loglik": Statistic((1,), -n * 1e3, 0.0, _FINE, sensitivity=1e3)}
    return out


def _null_compute(cohort: Cohort, p: NullParams, site: SiteContext) -> dict[str, np.ndarray]:
    _, _, y, c = analysis_rows(cohort, p, site)
    assert y is not None and c is not None
    out = {"n": np.array([float(y.size)]), "cc": _upper(c.T @ c)}
    if p.beta is None:
        return out | {"cy": c.T @ y, "yy": np.array([float(y @ y)])}
    eta = c @ unpack(p.beta, "<f8", "beta")
    prob = 1 / (1 + np.exp(-eta))
    ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
    return out | {"grad": c.T @ (y - prob), "hess": _upper((c * (prob * (1 - prob))[:, None]).T @ c),
                  "loglik": np.array([max(ll, -p.max_patients * 1e3)])}


# --- gwas_linear -------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LinearParams(ModelParams):
    """``gwas_linear``: the model's design, the variants (base64 int32, non-empty) and those of
    them with missing calls somewhere (``missing_variants``, base64 int32, may be empty)."""

    QUERY = LINEAR_QUERY
    variants: str
    missing_variants: str = ""

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        if unpack(params.get("variants"), "<i4", "variants").size == 0:
            raise InvalidInput("parameter 'variants' is empty")
        missing = params.get("missing_variants", "")
        unpack(missing, "<i4", "missing_variants")
        return super().parse(params) | {"variants": params["variants"],
                                        "missing_variants": missing}


def _linear_declare(p: LinearParams) -> dict[str, Statistic]:
    n = float(p.max_patients)
    m = unpack(p.variants, "<i4", "variants").size
    mm = unpack(p.missing_variants, "<i4", "missing_variants").size
    k = p.n_covariates
    r = math.sqrt
    return {"cg": Statistic((m, k), -2 * n, 2 * n, _FINE, sensitivity=2 * r(m * k)),
            "gg": Statistic((m,), 0, 4 * n, 1.0, sensitivity=4 * r(m)),
            "gy": Statistic((m,), -2 * n, 2 * n, _FINE, sensitivity=2 * r(m)),
            "miss_cc": Statistic((mm, tri(k)), -n, n, _FINE, sensitivity=r(mm * tri(k))),
            "miss_cy": Statistic((mm, k), -n, n, _FINE, sensitivity=r(mm * k)),
            "miss_yy": Statistic((mm,), 0, n, _FINE, sensitivity=r(mm)),
            EXCLUDED: excluded_statistic(m)}


def _linear_compute(cohort: Cohort, p: LinearParams, site: SiteContext
                    ) -> dict[str, np.ndarray]:
    store, cols, y, c = analysis_rows(cohort, p, site)
    assert y is not None and c is not None
    rows = _variant_rows(store, unpack(p.variants, "<i4", "variants"))
    g = rows[:, cols]
    out = left_out(cohort, p, site, store, rows, cols, y)
    g0 = np.where(g < 0, 0, g).astype(float)
    midx = unpack(p.missing_variants, "<i4", "missing_variants")
    k = c.shape[1]
    miss_cc, miss_cy, miss_yy = (np.zeros((midx.size, tri(k))), np.zeros((midx.size, k)),
                                 np.zeros(midx.size))
    miss_out = np.zeros(midx.size, dtype=bool)
    if midx.size:
        rows_m = _variant_rows(store, midx)
        gm = rows_m[:, cols]
        miss_out = left_out(cohort, p, site, store, rows_m, cols, y)
        miss = (gm < 0).astype(float)
        iu = np.triu_indices(k)
        miss_cc = miss @ (c[:, iu[0]] * c[:, iu[1]])
        miss_cy = miss @ (c * y[:, None])
        miss_yy = miss @ (y * y)
    sums = withhold({"cg": g0 @ c, "gg": (g0 * g0).sum(axis=1), "gy": g0 @ y}, out)
    missing = withhold({"miss_cc": miss_cc, "miss_cy": miss_cy, "miss_yy": miss_yy}, miss_out)
    return sums | missing | {EXCLUDED: out.astype(float)}


# --- gwas_logistic -----------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LogisticParams(ModelParams):
    """``gwas_logistic``: the model's design (a binary trait), the variants (base64 int32) and
    the Newton iterate of each (``beta``: base64 float64, covariates then the genotype's)."""

    QUERY = LOGISTIC_QUERY
    variants: str
    beta: str

    @classmethod
    def parse(cls, params: Params) -> dict[str, Any]:
        out = super().parse(params)
        if not out["trait"].binary:
            raise InvalidInput(f"parameter 'trait': {LOGISTIC_QUERY} and {FIRTH_QUERY} need a "
                               "binary trait (a 'threshold')")
        m = unpack(params.get("variants"), "<i4", "variants").size
        k = 1 + len(out["covariates"]) + (0 if out["pca"] is None
                                          else len(out["pca"].eigenvalues))
        unpack(params.get("beta"), "<f8", "beta", m * (k + 1))
        return out | {"variants": params["variants"], "beta": params["beta"]}


@dataclass(frozen=True, kw_only=True)
class FirthParams(LogisticParams):
    """``gwas_firth``: as ``gwas_logistic``."""

    QUERY = FIRTH_QUERY


def _logistic_declare(p: LogisticParams) -> dict[str, Statistic]:
    n = float(p.max_patients)
    m = unpack(p.variants, "<i4", "variants").size
    k1 = p.n_covariates + 1
    return {"grad": Statistic((m, k1), -2 * n, 2 * n, _FINE, sensitivity=math.sqrt(m * (k1 + 3))),
            "hess": Statistic((m, tri(k1)), -n, n, _FINE, sensitivity=math.sqrt(m * tri(k1))),
            "n": Statistic((m,), 0, n, 1.0, sensitivity=math.sqrt(m)),
            # ALT dosage in cases and in all fitted patients, and the cases: PLINK's separation
            # check (an allele absent from cases or from controls -> Firth fallback)
            "case_alt": Statistic((m,), 0, 2 * n, 1.0, sensitivity=2 * math.sqrt(m)),
            "alt": Statistic((m,), 0, 2 * n, 1.0, sensitivity=2 * math.sqrt(m)),
            "cases": Statistic((m,), 0, n, 1.0, sensitivity=math.sqrt(m)),
            EXCLUDED: excluded_statistic(m)}


def _logistic_compute(cohort: Cohort, p: LogisticParams, site: SiteContext
                      ) -> dict[str, np.ndarray]:
    store, cols, y, c = analysis_rows(cohort, p, site)
    assert y is not None and c is not None
    idx = unpack(p.variants, "<i4", "variants")
    rows = _variant_rows(store, idx)
    g = rows[:, cols]
    called = (g >= 0).astype(float)
    g0 = np.where(g < 0, 0, g).astype(float)
    k1 = c.shape[1] + 1
    beta = unpack(p.beta, "<f8", "beta").reshape(idx.size, k1)
    eta = beta[:, :-1] @ c.T + beta[:, -1:] * g0
    prob = 1 / (1 + np.exp(-eta))
    r = (y[None, :] - prob) * called
    w = prob * (1 - prob) * called
    grad = np.concatenate([r @ c, (r * g0).sum(axis=1, keepdims=True)], axis=1)
    iu = np.triu_indices(k1)
    hess = np.empty((idx.size, iu[0].size))
    for t, (a, b) in enumerate(zip(iu[0], iu[1], strict=True)):
        xa = g0 if a == k1 - 1 else c[:, a][None, :]
        xb = g0 if b == k1 - 1 else c[:, b][None, :]
        hess[:, t] = (w * xa * xb).sum(axis=1)
    out = left_out(cohort, p, site, store, rows, cols, y)
    return withhold({"grad": grad, "hess": hess, "n": called.sum(axis=1), "case_alt": g0 @ y,
                     "alt": g0.sum(axis=1), "cases": called @ y}, out) | {
        EXCLUDED: out.astype(float)}


# --- gwas_firth --------------------------------------------------------------------------------

def _firth_declare(p: FirthParams) -> dict[str, Statistic]:
    n = float(p.max_patients)
    m = unpack(p.variants, "<i4", "variants").size
    k1 = p.n_covariates + 1
    t = k1 * tri(k1)
    return {"grad": Statistic((m, k1), -2 * n, 2 * n, _FINE, sensitivity=math.sqrt(m * (k1 + 3))),
            "hess": Statistic((m, tri(k1)), -n, n, _FINE, sensitivity=math.sqrt(m * tri(k1))),
            # |w (1/2 - p) x_r x_a x_b| <= 1/4 * 1/2 * 2^3 = 1 per patient
            "third": Statistic((m, t), -n, n, _FINE, sensitivity=math.sqrt(m * t)),
            "loglik": Statistic((m,), -n * 1e3, 0.0, _FINE, sensitivity=1e3 * math.sqrt(m)),
            "n": Statistic((m,), 0, n, 1.0, sensitivity=math.sqrt(m)),
            EXCLUDED: excluded_statistic(m)}


def _firth_compute(cohort: Cohort, p: FirthParams, site: SiteContext) -> dict[str, np.ndarray]:
    """Per variant at ``beta``: the logistic score and information and the third-moment sums
    ``sum_i w_i (1/2 - p_i) x_ir x_ia x_ib`` from which the hub forms Firth's hat-diagonal term
    ``sum_i h_i (1/2 - p_i) x_ir = sum_ab (X'WX)^-1_ab T_rab`` (``h_i = w_i x_i' (X'WX)^-1 x_i``),
    and the log-likelihood (Firth's penalty ``1/2 log det X'WX`` is the hub's)."""
    store, cols, y, c = analysis_rows(cohort, p, site)
    assert y is not None and c is not None
    idx = unpack(p.variants, "<i4", "variants")
    k1 = c.shape[1] + 1
    beta_all = unpack(p.beta, "<f8", "beta").reshape(idx.size, k1)
    iu = np.triu_indices(k1)
    floor = -float(p.max_patients) * 1e3
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("grad", "hess", "third", "loglik", "n",
                                                        EXCLUDED)}
    for lo in range(0, idx.size, 256):
        rows = _variant_rows(store, idx[lo:lo + 256])
        g = rows[:, cols]
        out[EXCLUDED].append(left_out(cohort, p, site, store, rows, cols, y))
        called = (g >= 0).astype(float)
        x = np.concatenate([np.broadcast_to(c, (g.shape[0], *c.shape)),
                            np.where(g < 0, 0, g).astype(float)[..., None]], axis=2)
        eta = np.einsum("mnk,mk->mn", x, beta_all[lo:lo + 256])
        prob = 1 / (1 + np.exp(-eta))
        w = prob * (1 - prob) * called
        xx = x[..., iu[0]] * x[..., iu[1]]
        out["grad"].append(np.einsum("mn,mnk->mk", (y[None, :] - prob) * called, x))
        out["hess"].append(np.einsum("mn,mnt->mt", w, xx))
        out["third"].append(np.einsum("mn,mnr,mnt->mrt", w * (0.5 - prob), x, xx).reshape(
            g.shape[0], -1))
        ll = (called * (y[None, :] * eta - np.logaddexp(0.0, eta))).sum(axis=1)
        out["loglik"].append(np.maximum(ll, floor))
        out["n"].append(called.sum(axis=1))
    flat = {k: np.concatenate(v) for k, v in out.items()}
    dropped = flat.pop(EXCLUDED)
    return withhold(flat, dropped) | {EXCLUDED: dropped.astype(float)}


register_site_opened(register_site_dir)

_QUERIES: tuple[tuple[str, Any, Any, type[QueryParams], str], ...] = (
    (STORE_QUERY, _store_compute, _store_declare, StoreParams,
     "per site, in its own slot: declares a genotype store for the study, on its build and list"),
    (COUNTS_QUERY, _counts_compute, _counts_declare, CountsParams,
     "genotype counts (hom REF, het, hom ALT, missing) per variant of a range"),
    (GRAM_QUERY, _gram_compute, _gram_declare, GramParams,
     "cross-product of standardised genotypes of the PCA variants"),
    (LD_QUERY, _ld_compute, _ld_declare, LdParams,
     "per pair of variants, genotype sums over patients called at both (LD pruning)"),
    (NULL_QUERY, _null_compute, _null_declare, NullParams,
     "covariate sums of the null model (linear) or its Newton gradient/Hessian (logistic)"),
    (LINEAR_QUERY, _linear_compute, _linear_declare, LinearParams,
     "per-variant sums of the linear association model"),
    (LOGISTIC_QUERY, _logistic_compute, _logistic_declare, LogisticParams,
     "per-variant Newton gradient and Hessian of the logistic association model"),
    (FIRTH_QUERY, _firth_compute, _firth_declare, FirthParams,
     "per-variant score, information and hat-diagonal sums of Firth's penalised likelihood"),
)
for _name, _compute, _declare, _type, _desc in _QUERIES:
    register(Query(_name, "1", _compute, _declare, description=_desc, site_aware=True,
                   params_type=_type))
