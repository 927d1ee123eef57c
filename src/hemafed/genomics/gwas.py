"""Federated genome-wide association: QC, PCA and per-variant regression, each a secure sum over
one fixed set of sites, equal to PLINK 2 ``--glm`` on the pooled data.

Rounds: the sites' store declarations (``gwas_store``: which sites hold genotypes aligned to the
study's build and variant list; the analysis runs over exactly those, and a store on another
build or list stops it before any genotype sum) -> genotype counts (one secure sum per ``chunk``
variants) -> the hub's identical QC filters
-> optional PCA (one sum) -> the null model (one sum for a linear trait; Newton rounds for a
binary one) -> association sums, ``chunk`` variants per sum (linear: one round; logistic: Newton
rounds on the variants not yet converged).

Linear: for each variant the hub solves the least-squares fit of ``y ~ covariates + g`` from the
pooled ``C'C``, ``C'y``, ``y'y`` and the per-variant ``C'g``, ``g'g``, ``g'y`` (variants with
missing calls anywhere also get the sums over their missing rows, subtracted so the fit drops
those patients exactly as PLINK does). Wald t test with ``n - k - 1`` degrees of freedom.
Logistic: per-variant Newton-Raphson from the null fit; Wald z test (``test="wald"``), or the score
test from the first round alone (``test="score"``, one round instead of ~5).

The site disclosure rule (:mod:`hemafed.genomics.disclosure`): a site whose carriers,
non-carriers or missing calls at a variant are too few (split by case status under a binary
trait; and, apart, among its linked patients outside the analysis) contributes zeros for it
and a 1 in the summed ``excluded`` flag. The hub drops every variant some site left out: at QC
(the variant fails QC under that rule, before any other filter, as its pooled counts are
incomplete) and in the association sums (their patients are the complete cases, and a binary
trait splits the classes, so a variant can fall out there only). The published result is the
pooled analysis of the variants every site contributes in full; ``disclosure_dropped`` says
how many the rule dropped. The rule is a function of the data and the fixed variant list, so
an iterative fit sees the same excluded set in every round: the hub asserts it.

>>> FederatedGWAS(model="linear").model
'linear'
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.analytics.fitter import FederatedFitter, deprecated_alias, renamed_argument
from hemafed.analytics.newton import NewtonRule, newton_maximise
from hemafed.errors import ConvergenceError, InvalidInput, SitesChanged
from hemafed.federation.api import DPRequest, Federation
from hemafed.genomics.disclosure import RULE_NAME, excluded_count
from hemafed.genomics.ld import PruneRule, federated_indep_pairwise
from hemafed.genomics.pca import PCAResult, cap_variants, choose_pca_variants, federated_pca
from hemafed.genomics.qc import QCFilters, VariantQC
from hemafed.genomics.queries import (
    COUNTS_QUERY,
    FIRTH_QUERY,
    LINEAR_QUERY,
    LOGISTIC_QUERY,
    NULL_QUERY,
    STORE_COLUMNS,
    STORE_QUERY,
    ModelParams,
    pack,
)
from hemafed.genomics.variants import VariantList

log = logging.getLogger(__name__)

MODELS = ("linear", "logistic")
TESTS = ("wald", "score")
FIRTH = ("no", "fallback", "always")
"""Firth regression as PLINK 2 ``--glm no-firth | firth-fallback | firth``."""
SUMMARY_COLUMNS = ("chrom", "pos", "id", "ref", "alt", "a1_freq", "n", "beta", "se", "stat",
                   "p", "hwe_p", "call_rate", "mac", "firth")


NULL_MODEL_TOL = 1e-6
MAX_ROUNDS = 30
"""Default cap on the Newton rounds of the null and per-variant models."""
"""The logistic null model stops as every likelihood fit does (:mod:`hemafed.analytics.newton`):
once a Newton step moved each coefficient by under this many standard errors (it stopped on an
absolute step under ``tol`` = 1e-10 before; the estimates agree within 1e-12)."""


def _sym(upper: np.ndarray, k: int) -> np.ndarray:
    """Symmetric matrices (..., k, k) from their upper triangles (..., k(k+1)/2)."""
    out = np.zeros((*upper.shape[:-1], k, k))
    iu = np.triu_indices(k)
    out[..., iu[0], iu[1]] = upper
    out[..., iu[1], iu[0]] = upper
    return out


class StoreSitesOnly(SitesChanged):
    """Only some sites of the federation declare a genotype store for the study: the analysis
    restarts over those (the study runner does this with ``restricted_to``)."""

    def __init__(self, fixed: Sequence[str], holders: Sequence[str]) -> None:
        super().__init__(STORE_QUERY, fixed, holders)
        self.args = (f"genotype stores for this study are declared by sites {list(self.survivors)} "
                     f"only (not by {sorted(set(self.fixed) - set(self.survivors))}); the GWAS "
                     f"runs over them",)


def store_sites(fed: Federation, variant_list: VariantList, study: str,
                study_id: str = "default", dp: DPRequest | None = None) -> tuple[str, ...]:
    """The sites of ``fed`` that declare a genotype store ``study`` on the study's build and
    variant list (one ``gwas_store`` sum of public declarations, each site in its own slot).

    Raises ``InvalidInput`` naming the sites whose store is on another build or variant list
    (before any genotype is summed), or when no site declares a store. ``dp``: sent as the
    analysis's releases are (a ``require_dp`` site answers it; sensitivity 0: no noise, no
    charge).
    """
    sites = sorted(fed.site_ids)
    res = fed.secure_sum(STORE_QUERY, {"study": study, "variant_list": variant_list.sha256,
                                       "build": variant_list.build, "sites": sites},
                         study=study_id, dp=dp)
    table = pd.DataFrame(np.rint(res["store"]).astype(int), index=sites,
                         columns=list(STORE_COLUMNS)).loc[sorted(res.sites)]
    held = table[table["declared"] == 1]
    other_build = sorted(held.index[held["same_build"] == 0])
    other_list = sorted(held.index[(held["same_build"] == 1) & (held["same_variant_list"] == 0)])
    problems = ([f"site(s) {other_build} declare genotypes on another genome build than the "
                 f"study's {variant_list.build}"] if other_build else []) + (
                [f"site(s) {other_list} declare genotypes aligned to another variant list than "
                 f"the study's (SHA-256 {variant_list.sha256[:12]}...)"] if other_list else [])
    if problems:
        raise InvalidInput("genotype stores disagree between sites: " + "; ".join(problems)
                           + "; re-import them against the study's variant list "
                             "(hemafed genomics import) before the GWAS")
    if held.empty:
        raise InvalidInput(f"no site of {sorted(res.sites)} declares a genotype store for "
                           f"{study!r}; import genotypes first (hemafed genomics import)")
    return tuple(sorted(held.index))


@dataclass
class FederatedGWAS(FederatedFitter):
    """Federated GWAS; ``fit`` returns self with ``.summary`` (one row per tested variant).

    ``covariates``: cohort columns (``sex`` is 1 for female); ``n_pcs``: principal components
    added as covariates (0: none); ``chunk``: variants per secure sum. ``dp``: every secure sum
    (counts, PCA, null model, association) is released with Gaussian noise calibrated to its
    declared per-patient sensitivity and charged to every site's ledger; per-variant sums over
    many variants have a large L2 sensitivity, so this is useful for large cohorts or few
    variants only (the exact, PLINK-equal path is ``dp=None``).
    """

    _fitted_attribute = "summary"

    model: str = "linear"
    covariates: Sequence[str] = ("age", "sex")
    n_pcs: int = 10
    filters: QCFilters = field(default_factory=QCFilters)
    test: str = "wald"
    firth: str = "fallback"
    chunk: int = 20_000
    # the network's public cohort-size bound, which approved study plans fix (study.plan)
    max_patients: int = 1_000_000
    pca_max_variants: int = 2000
    # PCA variants: LD-pruned as plink2 --indep-pairwise (None: thinned to one per
    # pca_min_distance bp instead)
    pca_prune: PruneRule | None = field(default_factory=PruneRule)
    pca_min_distance: int = 20_000
    max_rounds: int = MAX_ROUNDS
    tol: float = 1e-10
    dp: DPRequest | None = None

    summary: pd.DataFrame = field(init=False, repr=False)
    qc: pd.DataFrame = field(init=False, repr=False)
    pca: PCAResult | None = field(init=False, default=None, repr=False)
    sites_: tuple[str, ...] = field(init=False, default=())
    sites_without_store: tuple[str, ...] = field(init=False, default=())
    # variants dropped by the site disclosure rule: at QC, and among QC-passing ones in the
    # association sums
    disclosure_dropped_qc: int = field(init=False, default=0)
    disclosure_dropped_association: int = field(init=False, default=0)
    secure_sums: int = field(init=False, default=0)
    seconds: dict[str, float] = field(init=False, default_factory=dict)
    _study_id: str = field(init=False, default="default", repr=False)
    # the names before issue 6 (the other fitters' names): the keyword max_iter= still works,
    # with a DeprecationWarning, and reading .max_iter or .sites warns and gives the new one
    max_iter: InitVar[int | None] = None
    sites = deprecated_alias("sites_", "sites")

    def __post_init__(self, max_iter: int | None) -> None:
        # max_rounds is a field with a default, so "both given" is seen when it differs from it
        given = None if self.max_rounds == MAX_ROUNDS else self.max_rounds
        self.max_rounds = renamed_argument("FederatedGWAS", "max_rounds", given, "max_iter",
                                           max_iter, self.max_rounds)
        if self.model not in MODELS:
            raise InvalidInput(f"model must be one of {list(MODELS)}, got {self.model!r}")
        if self.test not in TESTS:
            raise InvalidInput(f"test must be one of {list(TESTS)}, got {self.test!r}")
        if self.firth not in FIRTH:
            raise InvalidInput(f"firth must be one of {list(FIRTH)}, got {self.firth!r}")
        if self.dp is not None and self.model != "linear":
            raise InvalidInput("dp= is available for the linear model only (noisy Newton rounds "
                               "per variant are not supported)")
        if self.n_pcs < 0 or self.chunk < 1 or self.max_patients < 1:
            raise InvalidInput("n_pcs >= 0, chunk >= 1 and max_patients >= 1 are required")

    # -- rounds ---------------------------------------------------------------------------------

    def _sum(self, fed: Federation, query: str, params: dict[str, Any]) -> Any:
        res = fed.secure_sum(query, params, study=self._study_id, dp=self.dp)
        if self.sites_ and tuple(res.sites) != self.sites_:
            raise ConvergenceError(f"{query}: sites {res.sites} answered, the analysis runs over "
                                   f"{self.sites_}; restart on the survivors")
        self.sites_ = tuple(res.sites)
        self.secure_sums += 1
        return res

    @property
    def disclosure_dropped(self) -> int:
        """Variants of the list dropped by the site disclosure rule (QC and association)."""
        return self.disclosure_dropped_qc + self.disclosure_dropped_association

    def _qc(self, fed: Federation, base: dict[str, Any], m: int) -> pd.DataFrame:
        parts, excluded = [], []
        for start in range(0, m, max(self.chunk, 50_000)):
            stop = min(m, start + max(self.chunk, 50_000))
            res = self._sum(fed, COUNTS_QUERY, {**base, "start": start, "stop": stop})
            parts.append(res["counts"])
            excluded.append(excluded_count(res))
        frame = VariantQC.from_counts(np.vstack(parts)).frame()
        # how many sites left the variant out (site disclosure rule); its counts are partial
        frame["site_rule_excluded"] = np.concatenate(excluded)
        return frame

    def fit(self, fed: Federation, variant_list: VariantList, *, study: str, trait: str,
            threshold: float | None = None, study_id: str = "default") -> FederatedGWAS:
        """Run QC, PCA and association for the genotype store ``study`` over the sites of
        ``fed`` that declare it (:func:`store_sites`; ``.sites_`` and ``.sites_without_store``
        say which). A federation with ``restricted_to`` is narrowed to them here; another
        raises :class:`StoreSitesOnly` (the study runner restarts the analysis over them)."""
        self._study_id = study_id
        binary = threshold is not None
        if binary != (self.model == "logistic"):
            raise InvalidInput("a binary trait (threshold=) goes with model='logistic', a "
                               "quantitative one with model='linear'")
        holders = store_sites(fed, variant_list, study, study_id, self.dp)
        self.secure_sums += 1
        self.sites_without_store = tuple(sorted(set(fed.site_ids) - set(holders)))
        if self.sites_without_store:
            restrict = getattr(fed, "restricted_to", None)
            if restrict is None:
                raise StoreSitesOnly(fed.site_ids, holders)
            log.info("gwas: genotype stores at %s only; running over them", list(holders))
            fed = restrict(holders)
        base: dict[str, Any] = {"study": study, "variant_list": variant_list.sha256,
                                "max_patients": self.max_patients}
        t0 = time.perf_counter()
        qc = self._qc(fed, base, len(variant_list))
        kept = qc["site_rule_excluded"].to_numpy() == 0
        self.disclosure_dropped_qc = int((~kept).sum())
        passing = self.filters.passing(qc) & kept
        qc["passing"] = passing
        self.qc = qc
        self.seconds["qc"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        assoc: dict[str, Any] = {**base, "trait": {"column": trait, "threshold": threshold},
                                 "covariates": list(self.covariates)}
        ModelParams.from_mapping(assoc)  # the design's columns, checked before any model sum
        if self.n_pcs:
            if self.pca_prune is None:
                idx = choose_pca_variants(variant_list.frame, qc, passing,
                                          min_distance=self.pca_min_distance,
                                          max_variants=self.pca_max_variants)
            else:
                cand = choose_pca_variants(variant_list.frame, qc, passing, min_distance=0,
                                           max_variants=len(variant_list))
                idx = cap_variants(federated_indep_pairwise(
                    lambda q, p: self._sum(fed, q, p), base, variant_list.frame, qc, cand,
                    self.pca_prune), self.pca_max_variants)
            self.pca = federated_pca(fed, base, idx, qc["alt_freq"].to_numpy()[idx], self.n_pcs,
                                     study=study_id, dp=self.dp)
            self.secure_sums += 1
            assoc["pca"] = self.pca.params()
        self.seconds["pca"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        tested = np.flatnonzero(passing)
        if self.model == "linear":
            est = self._linear(fed, assoc, tested, qc)
        else:
            est = self._logistic(fed, assoc, tested)
        self.seconds["association"] = time.perf_counter() - t0
        dropped = est.pop("dropped")
        self.disclosure_dropped_association = int(dropped.sum())
        if dropped.any():
            log.info("gwas: %d variant(s) dropped by the %s in the association sums",
                     int(dropped.sum()), RULE_NAME)
        v = variant_list.frame.iloc[tested].reset_index(drop=True)
        q = qc.iloc[tested].reset_index(drop=True)
        summary = pd.DataFrame({
            "chrom": v["chrom"], "pos": v["pos"], "id": v["id"], "ref": v["ref"], "alt": v["alt"],
            "a1_freq": q["alt_freq"], "n": est["n"], "beta": est["beta"], "se": est["se"],
            "stat": est["stat"], "p": est["p"], "hwe_p": q["hwe_p"], "call_rate": q["call_rate"],
            "mac": q["mac"], "firth": est.get("firth", np.zeros(tested.size, dtype=bool))})
        self.summary = summary[~dropped].reset_index(drop=True)
        return self

    def _linear(self, fed: Federation, assoc: dict[str, Any], tested: np.ndarray,
                qc: pd.DataFrame) -> dict[str, np.ndarray]:
        null = self._sum(fed, NULL_QUERY, assoc)
        half = ModelParams.from_mapping(assoc).trait.half_width  # type: ignore[union-attr]
        k = round((math.sqrt(8 * null["cc"].size + 1) - 1) / 2)
        a_mat, a_vec, yy, n = _sym(null["cc"], k), null["cy"], float(null["yy"][0]), null["n"][0]
        out = {name: np.full(tested.size, np.nan) for name in ("beta", "se", "stat", "p", "n")}
        out["dropped"] = np.zeros(tested.size, dtype=bool)
        has_missing = qc["missing"].to_numpy() > 0
        for start in range(0, tested.size, self.chunk):
            idx = tested[start:start + self.chunk]
            miss = idx[has_missing[idx]]
            res = self._sum(fed, LINEAR_QUERY, {**assoc, "variants": pack(idx, "<i4"),
                                                "missing_variants": pack(miss, "<i4")})
            b, d, e = res["cg"], res["gg"], res["gy"]
            m = idx.size
            drop = excluded_count(res) > 0  # some site left it out: no pooled fit of it
            am = np.broadcast_to(a_mat, (m, k, k)).copy()
            av = np.broadcast_to(a_vec, (m, k)).copy()
            yv = np.full(m, yy)
            nv = np.full(m, float(n))
            pos = np.flatnonzero(has_missing[idx])
            if pos.size:
                mcc = _sym(res["miss_cc"], k)
                am[pos] -= mcc
                av[pos] -= res["miss_cy"]
                yv[pos] -= res["miss_yy"]
                nv[pos] -= mcc[:, 0, 0]
            sol_b = np.linalg.solve(am, b[..., None])[..., 0]
            sol_a = np.linalg.solve(am, av[..., None])[..., 0]
            s = d - np.einsum("mk,mk->m", b, sol_b)
            s[drop] = 1.0  # placeholders, discarded below
            gamma = (e - np.einsum("mk,mk->m", b, sol_a)) / s
            rss = yv - np.einsum("mk,mk->m", av, sol_a) - gamma ** 2 * s
            rss[drop] = 1.0  # (partial sums of a left-out variant need not fit)
            df = nv - k - 1
            se = np.sqrt(rss / df / s)
            t = gamma / se
            sl = slice(start, start + m)
            out["beta"][sl], out["se"][sl] = gamma * half, se * half
            out["stat"][sl], out["p"][sl], out["n"][sl] = t, 2 * stats.t.sf(np.abs(t), df), nv
            out["dropped"][sl] = drop
        return out

    def _null_logistic(self, fed: Federation, assoc: dict[str, Any]) -> np.ndarray:
        sums, hessian = 0, [np.zeros((0, 0))]

        def derivatives(beta: np.ndarray, final: bool) -> tuple[float, np.ndarray, np.ndarray]:
            # the null model needs only its estimate: none of its sums at the estimate (after
            # the last, sub-tolerance, step) is asked; steps are whole (the query returns no
            # log-likelihood to halve on)
            nonlocal sums
            if final:
                return math.nan, np.zeros_like(beta), hessian[0]
            if sums == self.max_rounds:
                raise ConvergenceError(
                    f"the logistic null model did not converge in {self.max_rounds} rounds")
            res = self._sum(fed, NULL_QUERY, {**assoc, "beta": pack(beta)})
            sums += 1
            hessian[0] = -_sym(res["hess"], beta.size)
            return 0.0, res["grad"], hessian[0]

        fit = newton_maximise(derivatives, np.zeros(ModelParams.from_mapping(assoc).n_covariates),
                              NewtonRule(tol=NULL_MODEL_TOL, max_rounds=self.max_rounds + 1,
                                         halving=False))
        return fit.beta

    def _logistic(self, fed: Federation, assoc: dict[str, Any],
                  tested: np.ndarray) -> dict[str, np.ndarray]:
        beta0 = self._null_logistic(fed, assoc)
        k1 = beta0.size + 1
        out = {name: np.full(tested.size, np.nan) for name in ("beta", "se", "stat", "p", "n")}
        out["firth"] = np.zeros(tested.size, dtype=bool)
        out["dropped"] = np.zeros(tested.size, dtype=bool)
        for start in range(0, tested.size, self.chunk):
            idx = tested[start:start + self.chunk]
            rows = slice(start, start + idx.size)
            if self.firth == "always" and self.test == "wald":
                self._firth_fit(fed, assoc, idx, beta0, out, start + np.arange(idx.size),
                                first=True)
                continue
            beta = np.tile(np.append(beta0, 0.0), (idx.size, 1))
            active = np.arange(idx.size)
            separated = np.zeros(idx.size, dtype=bool)
            cov_gg = np.full(idx.size, np.nan)
            nobs = np.zeros(idx.size)
            rounds = 0
            for _ in range(self.max_rounds):
                rounds += 1
                res = self._sum(fed, LOGISTIC_QUERY, {**assoc, "variants": pack(idx[active], "<i4"),
                                                      "beta": pack(beta[active])})
                h = _sym(res["hess"], k1)
                grad = np.array(res["grad"])
                left_out = excluded_count(res) > 0
                if rounds == 1:
                    drop = left_out  # every variant of the chunk is active in round 1
                    h[drop], grad[drop] = np.eye(k1), 0.0  # placeholders, never released
                elif left_out.any():
                    raise _rule_changed(LOGISTIC_QUERY)
                nobs[active] = res["n"]
                if rounds == 1:
                    # PLINK's check: an allele absent from cases or from controls
                    case_ref = 2 * res["cases"] - res["case_alt"]
                    separated = ((res["case_alt"] == 0) | (res["case_alt"] == res["alt"])
                                 | (case_ref == 0) | (case_ref == 2 * res["n"] - res["alt"])
                                 ) & ~drop
                try:
                    inv = np.linalg.inv(h)
                except np.linalg.LinAlgError:
                    inv = np.linalg.pinv(h)
                if self.test == "score":
                    u = grad[:, -1]
                    cov_gg[active] = inv[:, -1, -1]
                    chi = u ** 2 * inv[:, -1, -1]
                    sl = start + active
                    out["stat"][sl] = np.sign(u) * np.sqrt(chi)
                    out["p"][sl] = stats.chi2.sf(chi, 1)
                    out["n"][sl] = nobs[active]
                    break
                step = np.einsum("mij,mj->mi", inv, grad)
                beta[active] += step
                cov_gg[active] = inv[:, -1, -1]
                done = (np.max(np.abs(step), axis=1) < self.tol) | drop[active]
                diverged = np.abs(beta[active, -1]) > 50
                active = active[~(done | diverged)]
                if self.firth == "fallback":
                    active = active[~separated[active]]  # straight to Firth, as PLINK
                if active.size == 0:
                    break
            out["dropped"][rows] = drop
            if self.test == "score":
                continue
            se = np.sqrt(cov_gg)
            gamma = beta[:, -1]
            bad = np.abs(gamma) > 50
            if active.size:
                bad[active] = True
                log.warning("%d variant(s) did not converge in %d Newton rounds", active.size, rounds)
            z = gamma / se
            out["beta"][rows] = np.where(bad, np.nan, gamma)
            out["se"][rows] = np.where(bad, np.nan, se)
            out["stat"][rows] = np.where(bad, np.nan, z)
            out["p"][rows] = np.where(bad, np.nan, 2 * stats.norm.sf(np.abs(z)))
            out["n"][rows] = nobs
            if self.firth == "fallback":
                redo = np.flatnonzero((bad | separated) & ~drop)
                if redo.size:
                    self._firth_fit(fed, assoc, idx[redo], beta0, out, start + redo)
        return out

    def _firth_fit(self, fed: Federation, assoc: dict[str, Any], idx: np.ndarray,
                   beta0: np.ndarray, out: dict[str, np.ndarray], rows: np.ndarray, *,
                   first: bool = False) -> None:
        """Firth's penalised logistic regression of the variants ``idx`` (PLINK 2's ``firth``:
        Newton steps on ``l + 1/2 log det I`` capped at 5, halved while the penalised
        log-likelihood falls; Wald z from ``I^-1`` at the estimate); each round one secure sum.

        ``first``: these variants have not been summed before, so the first round's
        ``excluded`` flags drop variants (the site disclosure rule); otherwise (and in every
        later round) a left-out variant means the data changed, and the fit fails."""
        k1 = beta0.size + 1
        tw = np.where(np.equal(*np.triu_indices(k1)), 1.0, 2.0)  # upper-triangle weights
        beta = np.tile(np.append(beta0, 0.0), (idx.size, 1))
        step = np.zeros_like(beta)
        best = np.full(idx.size, -np.inf)
        halvings = np.zeros(idx.size, dtype=int)
        active = np.arange(idx.size)
        for _ in range(self.max_rounds * 2):
            res = self._sum(fed, FIRTH_QUERY, {**assoc, "variants": pack(idx[active], "<i4"),
                                               "beta": pack(beta[active])})
            left_out = excluded_count(res) > 0
            if left_out.any():
                if not first:
                    raise _rule_changed(FIRTH_QUERY)
                out["dropped"][rows[active[left_out]]] = True
                res = {k: np.asarray(v)[~left_out] for k, v in res.values.items()}
                active = active[~left_out]
                if active.size == 0:
                    return
            first = False
            h = _sym(res["hess"], k1)
            sign, logdet = np.linalg.slogdet(h)
            pll = np.where(sign > 0, res["loglik"] + 0.5 * logdet, -np.inf)
            worse = (pll < best[active] - 1e-10) & (halvings[active] < 20)
            back = active[worse]
            step[back] /= 2
            beta[back] -= step[back]
            halvings[back] += 1
            ok = ~worse
            fresh = active[ok]
            best[fresh], halvings[fresh] = pll[ok], 0
            inv = np.linalg.pinv(h[ok])
            third = res["third"][ok].reshape(-1, k1, tw.size)
            iu = np.triu_indices(k1)
            ustar = res["grad"][ok] + np.einsum("mrt,mt->mr", third, inv[:, iu[0], iu[1]] * tw)
            new = np.einsum("mij,mj->mi", inv, ustar)
            big = np.max(np.abs(new), axis=1)
            new *= np.minimum(1.0, 5.0 / np.maximum(big, 1e-300))[:, None]
            done = big < 1e-8
            conv = fresh[done]
            se = np.sqrt(inv[done, -1, -1])
            gamma = beta[conv, -1] + new[done, -1]
            z = gamma / se
            r = rows[conv]
            out["beta"][r], out["se"][r], out["stat"][r] = gamma, se, z
            out["p"][r], out["n"][r], out["firth"][r] = 2 * stats.norm.sf(np.abs(z)), \
                res["n"][ok][done], True
            step[fresh], beta[fresh] = new, beta[fresh] + new
            active = np.sort(np.concatenate([back, fresh[~done]]))
            if active.size == 0:
                return
        log.warning("%d variant(s): Firth regression did not converge", active.size)
        r = rows[active]
        out["beta"][r] = out["se"][r] = out["stat"][r] = out["p"][r] = np.nan
        out["firth"][r] = True

    # -- results --------------------------------------------------------------------------------

    @property
    def genomic_lambda(self) -> float:
        return genomic_inflation(self.summary["p"].to_numpy())

    def _payload(self) -> dict[str, Any]:
        return {"model": self.model, "test": self.test, "sites": list(self.sites_),
                "covariates": list(self.covariates), "n_pcs": self.n_pcs,
                "secure_sums": self.secure_sums, "lambda_gc": self.genomic_lambda,
                "n_tested": len(self.summary), "n_variants": len(self.qc),
                "dropped_by_site_disclosure_rule": self.disclosure_dropped}


FederatedGWAS.max_iter = deprecated_alias("max_rounds", "max_iter")  # type: ignore[attr-defined]
"""The read alias of the old ``max_iter`` (set here: in the class body the name is the
``__init__`` keyword)."""


def _rule_changed(query: str) -> ConvergenceError:
    return ConvergenceError(f"{query}: the {RULE_NAME} left out a variant in a later round than "
                            "the first; the excluded set is fixed by the data and the variant "
                            "list, so the sites' data changed: restart the analysis")


def genomic_inflation(p: np.ndarray) -> float:
    """Genomic inflation lambda: median 1-df chi-square of the p-values over its null median."""
    p = np.asarray(p, dtype=float)
    p = p[np.isfinite(p)]
    if p.size == 0:
        return float("nan")
    return float(np.median(stats.chi2.isf(p, 1)) / stats.chi2.ppf(0.5, 1))
