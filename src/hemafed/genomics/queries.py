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
from typing import Any

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import InvalidInput
from hemafed.federation.queries import SITE_ID_PARAM, Params, Query, Statistic, register
from hemafed.genomics.disclosure import (
    EXCLUDED,
    excluded_statistic,
    excluded_variants,
    own_min_cell,
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


def _int(params: Params, name: str, low: int = 0) -> int:
    v = params.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise InvalidInput(f"parameter {name!r} must be an integer >= {low}, got {v!r}")
    return v


def _common(params: Params) -> int:
    for name in ("study", "variant_list"):
        if not isinstance(params.get(name), str) or not params[name]:
            raise InvalidInput(f"parameter {name!r} must be a non-empty string")
    return _int(params, "max_patients", 1)


def covariate_bounds(name: str) -> tuple[float, float]:
    if name == "sex":
        return 0.0, 1.0
    f = _FIELD.get(name)
    if f is None or f.low is None or f.high is None or f.kind not in ("float", "int"):
        raise InvalidInput(f"covariate {name!r} is not a bounded numeric cohort field (or 'sex')")
    return float(f.low), float(f.high)


def trait_spec(params: Params) -> tuple[str, float | None, float, float]:
    """(column, threshold, center, half_width) of the trait; binary when a threshold is set."""
    t = params.get("trait")
    if not isinstance(t, Mapping) or not isinstance(t.get("column"), str):
        raise InvalidInput("parameter 'trait' must be {'column': name, 'threshold': t or null}")
    low, high = covariate_bounds(t["column"])
    thr = t.get("threshold")
    if thr is not None and not isinstance(thr, int | float):
        raise InvalidInput("trait 'threshold' must be a number or null")
    return t["column"], None if thr is None else float(thr), (low + high) / 2, (high - low) / 2


def n_covariates(params: Params) -> int:
    """Columns of the covariate matrix: intercept, named covariates, PCs."""
    covs = params.get("covariates", [])
    if not isinstance(covs, list) or not all(isinstance(c, str) for c in covs):
        raise InvalidInput("parameter 'covariates' must list cohort column names")
    for c in covs:
        covariate_bounds(c)
    pca = params.get("pca")
    return 1 + len(covs) + (0 if pca is None else len(pca.get("eigenvalues", [])))


def _check_pca(params: Params) -> None:
    pca = params.get("pca")
    if pca is None:
        return
    if not isinstance(pca, Mapping) or not {"variants", "freq", "loadings", "eigenvalues"} <= set(pca):
        raise InvalidInput("parameter 'pca' needs variants, freq, loadings and eigenvalues")
    ev = pca["eigenvalues"]
    if not isinstance(ev, list) or not ev or not all(isinstance(v, int | float) and v > 0
                                                     for v in ev):
        raise InvalidInput("pca 'eigenvalues' must be positive numbers")
    p = unpack(pca["variants"], "<i4", "pca.variants").size
    unpack(pca["freq"], "<f8", "pca.freq", p)
    unpack(pca["loadings"], "<f8", "pca.loadings", p * len(ev))


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


def analysis_rows(cohort: Cohort, params: Params
                  ) -> tuple[GenotypeStore, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The site's store, store columns of the analysis samples, trait vector and covariate matrix
    (intercept first, scaled) of those samples (``None`` without a trait)."""
    store = site_store(str(params[SITE_ID_PARAM]), str(params["study"]),
                       str(params["variant_list"]))
    pts = cohort.patients.set_index(cohort.patients["patient_id"].astype(str))
    cols = linked_columns(cohort, store)
    if "trait" not in params:
        return store, cols, None, None
    sub = pts.loc[[store.samples[i] for i in cols]]
    column, thr, center, half = trait_spec(params)
    y = sub[column].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    covs = []
    for name in params.get("covariates", []):
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
    pca = params.get("pca")
    if pca is not None:
        pv = unpack(pca["variants"], "<i4", "pca.variants")
        freq = unpack(pca["freq"], "<f8", "pca.freq")
        ev = np.asarray(pca["eigenvalues"], dtype=float)
        load = unpack(pca["loadings"], "<f8", "pca.loadings").reshape(pv.size, ev.size)
        z = standardise(_variant_rows(store, pv)[:, cols].astype(float), freq)
        scores = (z.T @ load) / np.sqrt(ev)
        c = np.column_stack([c, np.clip(scores, -1.0, 1.0)])
    y = (y >= thr).astype(float) if thr is not None else (y - center) / half
    return store, cols, y, c


def left_out(cohort: Cohort, params: Params, store: GenotypeStore, rows: np.ndarray,
             cols: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    """The site disclosure rule over the store ``rows`` (variants x all store columns) of a
    query analysing the columns ``cols`` (trait ``y``, or ``None``): the classes of the
    analysed patients and of the linked patients the query leaves out."""
    linked = linked_columns(cohort, store)
    cases = None
    if y is not None and trait_spec(params)[1] is not None:
        cases = y > 0.5
    return excluded_variants(rows[:, linked], own_min_cell(params),
                             analysed=np.isin(linked, cols), cases=cases)


def _upper(m: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(m.shape[-1])
    return m[..., iu[0], iu[1]]


# --- gwas_store --------------------------------------------------------------------------------

def _store_sites(params: Params) -> list[str]:
    sites = params.get("sites")
    if (not isinstance(sites, list) or not sites or len(sites) > 1000
            or not all(isinstance(x, str) and x for x in sites)
            or sites != sorted(set(sites))):
        raise InvalidInput("parameter 'sites' must list the federation's site ids, sorted and "
                           "distinct")
    return sites


def _store_check(params: Params) -> None:
    for name in ("study", "variant_list", "build"):
        if not isinstance(params.get(name), str) or not params[name]:
            raise InvalidInput(f"parameter {name!r} must be a non-empty string")
    _store_sites(params)


def _store_declare(params: Params) -> dict[str, Statistic]:
    # public metadata of the site, not of its patients: no patient changes it
    return {"store": Statistic((len(_store_sites(params)), len(STORE_COLUMNS)), 0.0, 1.0, 1.0,
                               sensitivity=0.0)}


def _store_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    site_id = str(params[SITE_ID_PARAM])
    sites = _store_sites(params)
    if site_id not in sites:
        raise InvalidInput("parameter 'sites' does not list this site")
    out = np.zeros((len(sites), len(STORE_COLUMNS)))
    doc = read_declaration(site_dir_of(site_id), str(params["study"]))
    if doc is not None:
        out[sites.index(site_id)] = [1.0, float(doc["build"] == params["build"]),
                                     float(doc["variant_list_sha256"] == params["variant_list"])]
    return {"store": out}


# --- gwas_counts -------------------------------------------------------------------------------

def _range(params: Params) -> tuple[int, int]:
    start, stop = _int(params, "start"), _int(params, "stop", 1)
    if stop <= start:
        raise InvalidInput("parameter 'stop' must exceed 'start'")
    return start, stop


def _counts_check(params: Params) -> None:
    _common(params)
    _range(params)
    if "trait" in params:
        trait_spec(params)
        n_covariates(params)
        _check_pca(params)


def _counts_declare(params: Params) -> dict[str, Statistic]:
    start, stop = _range(params)
    n = float(_int(params, "max_patients", 1))
    return {"counts": Statistic((stop - start, 4), 0.0, n, 1.0,
                                sensitivity=math.sqrt(stop - start)),
            EXCLUDED: excluded_statistic(stop - start)}


def _counts_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    store, cols, y, _ = analysis_rows(cohort, params)
    start, stop = _range(params)
    if stop > store.n_variants:
        raise InvalidInput("parameter 'stop' lies beyond the variant list")
    rows = np.asarray(store.dosage[start:stop])
    g = rows[:, cols]
    counts = np.stack([(g == v).sum(axis=1) for v in (0, 1, 2, -1)], axis=1)
    out = left_out(cohort, params, store, rows, cols, y)
    return withhold({"counts": counts.astype(float)}, out) | {EXCLUDED: out.astype(float)}


# --- gwas_pca_gram -----------------------------------------------------------------------------

def _gram_check(params: Params) -> None:
    _common(params)
    p = unpack(params.get("variants"), "<i4", "variants").size
    f = unpack(params.get("freq"), "<f8", "freq", p)
    if p < 2 or np.any((f <= 0) | (f >= 1)):
        raise InvalidInput("PCA needs >= 2 variants with frequencies in (0, 1)")


def _zmax(freq: np.ndarray) -> float:
    return float(np.max(np.maximum(2 * freq, 2 - 2 * freq) / np.sqrt(2 * freq * (1 - freq))))


def _gram_declare(params: Params) -> dict[str, Statistic]:
    n = float(_int(params, "max_patients", 1))
    p = unpack(params["variants"], "<i4", "variants").size
    zmax2 = _zmax(unpack(params["freq"], "<f8", "freq")) ** 2
    return {"gram": Statistic((tri(p),), -n * zmax2, n * zmax2, _FINE,
                              sensitivity=zmax2 * p),
            "n": Statistic((1,), 0.0, n, 1.0), EXCLUDED: excluded_statistic(p)}


def _gram_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    store, cols, y, _ = analysis_rows(cohort, params)
    idx = unpack(params["variants"], "<i4", "variants")
    rows = _variant_rows(store, idx)
    g = rows[:, cols]
    out = left_out(cohort, params, store, rows, cols, y)
    z = standardise(g.astype(float), unpack(params["freq"], "<f8", "freq"))
    z[out] = 0.0  # every cross-product entry with a left-out variant is zero
    return {"gram": _upper(z @ z.T), "n": np.array([float(cols.size)]),
            EXCLUDED: out.astype(float)}


# --- gwas_ld_pairs ----------------------------------------------------------------------------

def _ld_sizes(params: Params) -> tuple[np.ndarray, np.ndarray]:
    idx = unpack(params.get("variants"), "<i4", "variants")
    pairs = unpack(params.get("pairs"), "<i4", "pairs")
    if pairs.size == 0 or pairs.size % 2:
        raise InvalidInput("parameter 'pairs' must hold a non-empty list of (a, b) positions")
    pairs = pairs.reshape(-1, 2)
    if pairs.min() < 0 or pairs.max() >= idx.size:
        raise InvalidInput("parameter 'pairs' points outside 'variants'")
    return idx, pairs


def _ld_check(params: Params) -> None:
    _common(params)
    _ld_sizes(params)


def _ld_declare(params: Params) -> dict[str, Statistic]:
    n = float(_int(params, "max_patients", 1))
    idx, pairs = _ld_sizes(params)
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


def _ld_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    """Per pair, sums over the patients called at both (PLINK's pairwise r^2); zeros for a
    pair with a variant this site leaves out (``excluded``: per entry of ``variants``)."""
    store, cols, y, _ = analysis_rows(cohort, params)
    idx, pairs = _ld_sizes(params)
    rows = _variant_rows(store, idx)
    g = rows[:, cols]
    out = left_out(cohort, params, store, rows, cols, y)
    sums = pair_sums(g, pairs)
    sums[out[pairs[:, 0]] | out[pairs[:, 1]]] = 0.0
    return {"pairs": sums, EXCLUDED: out.astype(float)}


# --- gwas_null ---------------------------------------------------------------------------------

def _null_check(params: Params) -> None:
    _common(params)
    _, thr, _, _ = trait_spec(params)
    k = n_covariates(params)
    _check_pca(params)
    if thr is not None:
        unpack(params.get("beta"), "<f8", "beta", k)


def _null_declare(params: Params) -> dict[str, Statistic]:
    n = float(_int(params, "max_patients", 1))
    k = n_covariates(params)
    # sensitivity: one patient's L2 contribution (|z| <= 1 for covariates and scaled trait)
    out = {"n": Statistic((1,), 0.0, n, 1.0),
           "cc": Statistic((tri(k),), -n, n, _FINE, sensitivity=math.sqrt(tri(k)))}
    if trait_spec(params)[1] is None:
        out |= {"cy": Statistic((k,), -n, n, _FINE, sensitivity=math.sqrt(k)),
                "yy": Statistic((1,), 0.0, n, _FINE)}
    else:
        out |= {"grad": Statistic((k,), -n, n, _FINE, sensitivity=math.sqrt(k)),
                "hess": Statistic((tri(k),), -n, n, _FINE, sensitivity=0.25 * math.sqrt(tri(k))),
                "loglik": Statistic((1,), -n * 1e3, 0.0, _FINE, sensitivity=1e3)}
    return out


def _null_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    _, _, y, c = analysis_rows(cohort, params)
    assert y is not None and c is not None
    out = {"n": np.array([float(y.size)]), "cc": _upper(c.T @ c)}
    if trait_spec(params)[1] is None:
        return out | {"cy": c.T @ y, "yy": np.array([float(y @ y)])}
    eta = c @ unpack(params["beta"], "<f8", "beta")
    p = 1 / (1 + np.exp(-eta))
    ll = float(np.sum(y * eta - np.logaddexp(0.0, eta)))
    return out | {"grad": c.T @ (y - p), "hess": _upper((c * (p * (1 - p))[:, None]).T @ c),
                  "loglik": np.array([max(ll, -_int(params, "max_patients", 1) * 1e3)])}


# --- gwas_linear -------------------------------------------------------------------------------

def _linear_sizes(params: Params) -> tuple[int, int, int]:
    m = unpack(params.get("variants"), "<i4", "variants").size
    mm = unpack(params.get("missing_variants", ""), "<i4", "missing_variants").size
    return m, mm, n_covariates(params)


def _linear_check(params: Params) -> None:
    _common(params)
    trait_spec(params)
    _check_pca(params)
    m, _, _ = _linear_sizes(params)
    if m == 0:
        raise InvalidInput("parameter 'variants' is empty")


def _linear_declare(params: Params) -> dict[str, Statistic]:
    n = float(_int(params, "max_patients", 1))
    m, mm, k = _linear_sizes(params)
    r = math.sqrt
    return {"cg": Statistic((m, k), -2 * n, 2 * n, _FINE, sensitivity=2 * r(m * k)),
            "gg": Statistic((m,), 0, 4 * n, 1.0, sensitivity=4 * r(m)),
            "gy": Statistic((m,), -2 * n, 2 * n, _FINE, sensitivity=2 * r(m)),
            "miss_cc": Statistic((mm, tri(k)), -n, n, _FINE, sensitivity=r(mm * tri(k))),
            "miss_cy": Statistic((mm, k), -n, n, _FINE, sensitivity=r(mm * k)),
            "miss_yy": Statistic((mm,), 0, n, _FINE, sensitivity=r(mm)),
            EXCLUDED: excluded_statistic(m)}


def _linear_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    store, cols, y, c = analysis_rows(cohort, params)
    assert y is not None and c is not None
    idx = unpack(params["variants"], "<i4", "variants")
    rows = _variant_rows(store, idx)
    g = rows[:, cols]
    out = left_out(cohort, params, store, rows, cols, y)
    g0 = np.where(g < 0, 0, g).astype(float)
    midx = unpack(params.get("missing_variants", ""), "<i4", "missing_variants")
    k = c.shape[1]
    miss_cc, miss_cy, miss_yy = (np.zeros((midx.size, tri(k))), np.zeros((midx.size, k)),
                                 np.zeros(midx.size))
    miss_out = np.zeros(midx.size, dtype=bool)
    if midx.size:
        rows_m = _variant_rows(store, midx)
        gm = rows_m[:, cols]
        miss_out = left_out(cohort, params, store, rows_m, cols, y)
        miss = (gm < 0).astype(float)
        iu = np.triu_indices(k)
        miss_cc = miss @ (c[:, iu[0]] * c[:, iu[1]])
        miss_cy = miss @ (c * y[:, None])
        miss_yy = miss @ (y * y)
    sums = withhold({"cg": g0 @ c, "gg": (g0 * g0).sum(axis=1), "gy": g0 @ y}, out)
    missing = withhold({"miss_cc": miss_cc, "miss_cy": miss_cy, "miss_yy": miss_yy}, miss_out)
    return sums | missing | {EXCLUDED: out.astype(float)}


# --- gwas_logistic -----------------------------------------------------------------------------

def _logistic_check(params: Params) -> None:
    _common(params)
    if trait_spec(params)[1] is None:
        raise InvalidInput(f"{LOGISTIC_QUERY} and {FIRTH_QUERY} need a binary trait (a 'threshold')")
    _check_pca(params)
    m = unpack(params.get("variants"), "<i4", "variants").size
    unpack(params.get("beta"), "<f8", "beta", m * (n_covariates(params) + 1))


def _logistic_declare(params: Params) -> dict[str, Statistic]:
    n = float(_int(params, "max_patients", 1))
    m = unpack(params["variants"], "<i4", "variants").size
    k1 = n_covariates(params) + 1
    return {"grad": Statistic((m, k1), -2 * n, 2 * n, _FINE, sensitivity=math.sqrt(m * (k1 + 3))),
            "hess": Statistic((m, tri(k1)), -n, n, _FINE, sensitivity=math.sqrt(m * tri(k1))),
            "n": Statistic((m,), 0, n, 1.0, sensitivity=math.sqrt(m)),
            # ALT dosage in cases and in all fitted patients, and the cases: PLINK's separation
            # check (an allele absent from cases or from controls -> Firth fallback)
            "case_alt": Statistic((m,), 0, 2 * n, 1.0, sensitivity=2 * math.sqrt(m)),
            "alt": Statistic((m,), 0, 2 * n, 1.0, sensitivity=2 * math.sqrt(m)),
            "cases": Statistic((m,), 0, n, 1.0, sensitivity=math.sqrt(m)),
            EXCLUDED: excluded_statistic(m)}


def _logistic_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    store, cols, y, c = analysis_rows(cohort, params)
    assert y is not None and c is not None
    idx = unpack(params["variants"], "<i4", "variants")
    rows = _variant_rows(store, idx)
    g = rows[:, cols]
    called = (g >= 0).astype(float)
    g0 = np.where(g < 0, 0, g).astype(float)
    k1 = c.shape[1] + 1
    beta = unpack(params["beta"], "<f8", "beta").reshape(idx.size, k1)
    eta = beta[:, :-1] @ c.T + beta[:, -1:] * g0
    p = 1 / (1 + np.exp(-eta))
    r = (y[None, :] - p) * called
    w = p * (1 - p) * called
    grad = np.concatenate([r @ c, (r * g0).sum(axis=1, keepdims=True)], axis=1)
    iu = np.triu_indices(k1)
    hess = np.empty((idx.size, iu[0].size))
    for t, (a, b) in enumerate(zip(iu[0], iu[1], strict=True)):
        xa = g0 if a == k1 - 1 else c[:, a][None, :]
        xb = g0 if b == k1 - 1 else c[:, b][None, :]
        hess[:, t] = (w * xa * xb).sum(axis=1)
    out = left_out(cohort, params, store, rows, cols, y)
    return withhold({"grad": grad, "hess": hess, "n": called.sum(axis=1), "case_alt": g0 @ y,
                     "alt": g0.sum(axis=1), "cases": called @ y}, out) | {
        EXCLUDED: out.astype(float)}


# --- gwas_firth --------------------------------------------------------------------------------

def _firth_declare(params: Params) -> dict[str, Statistic]:
    n = float(_int(params, "max_patients", 1))
    m = unpack(params["variants"], "<i4", "variants").size
    k1 = n_covariates(params) + 1
    t = k1 * tri(k1)
    return {"grad": Statistic((m, k1), -2 * n, 2 * n, _FINE, sensitivity=math.sqrt(m * (k1 + 3))),
            "hess": Statistic((m, tri(k1)), -n, n, _FINE, sensitivity=math.sqrt(m * tri(k1))),
            # |w (1/2 - p) x_r x_a x_b| <= 1/4 * 1/2 * 2^3 = 1 per patient
            "third": Statistic((m, t), -n, n, _FINE, sensitivity=math.sqrt(m * t)),
            "loglik": Statistic((m,), -n * 1e3, 0.0, _FINE, sensitivity=1e3 * math.sqrt(m)),
            "n": Statistic((m,), 0, n, 1.0, sensitivity=math.sqrt(m)),
            EXCLUDED: excluded_statistic(m)}


def _firth_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    """Per variant at ``beta``: the logistic score and information and the third-moment sums
    ``sum_i w_i (1/2 - p_i) x_ir x_ia x_ib`` from which the hub forms Firth's hat-diagonal term
    ``sum_i h_i (1/2 - p_i) x_ir = sum_ab (X'WX)^-1_ab T_rab`` (``h_i = w_i x_i' (X'WX)^-1 x_i``),
    and the log-likelihood (Firth's penalty ``1/2 log det X'WX`` is the hub's)."""
    store, cols, y, c = analysis_rows(cohort, params)
    assert y is not None and c is not None
    idx = unpack(params["variants"], "<i4", "variants")
    k1 = c.shape[1] + 1
    beta_all = unpack(params["beta"], "<f8", "beta").reshape(idx.size, k1)
    iu = np.triu_indices(k1)
    floor = -float(_int(params, "max_patients", 1)) * 1e3
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("grad", "hess", "third", "loglik", "n",
                                                        EXCLUDED)}
    for lo in range(0, idx.size, 256):
        rows = _variant_rows(store, idx[lo:lo + 256])
        g = rows[:, cols]
        out[EXCLUDED].append(left_out(cohort, params, store, rows, cols, y))
        called = (g >= 0).astype(float)
        x = np.concatenate([np.broadcast_to(c, (g.shape[0], *c.shape)),
                            np.where(g < 0, 0, g).astype(float)[..., None]], axis=2)
        eta = np.einsum("mnk,mk->mn", x, beta_all[lo:lo + 256])
        p = 1 / (1 + np.exp(-eta))
        w = p * (1 - p) * called
        xx = x[..., iu[0]] * x[..., iu[1]]
        out["grad"].append(np.einsum("mn,mnk->mk", (y[None, :] - p) * called, x))
        out["hess"].append(np.einsum("mn,mnt->mt", w, xx))
        out["third"].append(np.einsum("mn,mnr,mnt->mrt", w * (0.5 - p), x, xx).reshape(
            g.shape[0], -1))
        ll = (called * (y[None, :] * eta - np.logaddexp(0.0, eta))).sum(axis=1)
        out["loglik"].append(np.maximum(ll, floor))
        out["n"].append(called.sum(axis=1))
    flat = {k: np.concatenate(v) for k, v in out.items()}
    dropped = flat.pop(EXCLUDED)
    return withhold(flat, dropped) | {EXCLUDED: dropped.astype(float)}


register_site_opened(register_site_dir)

for _name, _compute, _declare, _check, _desc in (
    (STORE_QUERY, _store_compute, _store_declare, _store_check,
     "per site, in its own slot: declares a genotype store for the study, on its build and list"),
    (COUNTS_QUERY, _counts_compute, _counts_declare, _counts_check,
     "genotype counts (hom REF, het, hom ALT, missing) per variant of a range"),
    (GRAM_QUERY, _gram_compute, _gram_declare, _gram_check,
     "cross-product of standardised genotypes of the PCA variants"),
    (LD_QUERY, _ld_compute, _ld_declare, _ld_check,
     "per pair of variants, genotype sums over patients called at both (LD pruning)"),
    (NULL_QUERY, _null_compute, _null_declare, _null_check,
     "covariate sums of the null model (linear) or its Newton gradient/Hessian (logistic)"),
    (LINEAR_QUERY, _linear_compute, _linear_declare, _linear_check,
     "per-variant sums of the linear association model"),
    (LOGISTIC_QUERY, _logistic_compute, _logistic_declare, _logistic_check,
     "per-variant Newton gradient and Hessian of the logistic association model"),
    (FIRTH_QUERY, _firth_compute, _firth_declare, _logistic_check,
     "per-variant score, information and hat-diagonal sums of Firth's penalised likelihood"),
):
    register(Query(_name, "1", _compute, _declare, _check, _desc, site_aware=True))

