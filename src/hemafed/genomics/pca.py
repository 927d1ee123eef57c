"""Federated principal components of genotypes: one secure sum of the cross-product of the
standardised genotypes of the PCA variants, then an eigendecomposition at the hub.

Convention (PLINK's GRM): ``Z[i, j] = (g_ij - 2 f_j) / sqrt(2 f_j (1 - f_j))`` with ``f_j`` the
pooled ALT frequency, missing calls 0; ``Z'Z = V diag(lambda) V'`` (summed over sites); the PC
scores are the unit-length eigenvectors of ``ZZ'`` (PLINK 2's ``.eigenvec``), ``U = Z V /
sqrt(lambda)``, and ``lambda / p`` are the eigenvalues of the GRM ``ZZ'/p`` (PLINK 2's
``.eigenval``). The hub learns ``V`` and ``lambda`` (functions of the pooled cross-product only);
each site computes its own patients' rows of ``U`` (:func:`site_scores`), which never leave it.

PCA variants are chosen from the pooled QC by the hub: passing QC, MAF >= ``min_maf``, then
LD-pruned by pairwise r^2 as ``plink2 --indep-pairwise`` (:mod:`hemafed.genomics.ld`, secure sums
of the pair statistics; ``FederatedGWAS.pca_prune``), or without pruning thinned to at most one
per ``min_distance`` bp, and capped at ``max_variants``. By default only variants without a missing
call are used: missing calls are mean-imputed here (0 after standardising), while PLINK 2 corrects
its GRM for missingness otherwise, so only on complete variants are the two conventions the same;
lower ``min_call_rate`` where too few variants are complete.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg

from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation.api import DPRequest, Federation
from hemafed.genomics.disclosure import excluded_count
from hemafed.genomics.queries import GRAM_QUERY, pack, standardise


@dataclass(frozen=True)
class PCAResult:
    """Public result of the federated PCA."""

    variants: np.ndarray
    freq: np.ndarray
    loadings: np.ndarray
    eigenvalues: np.ndarray
    n: int
    sites: tuple[str, ...]

    @property
    def grm_eigenvalues(self) -> np.ndarray:
        return np.asarray(self.eigenvalues / self.variants.size)

    def params(self) -> dict[str, object]:
        return {"variants": pack(self.variants, "<i4"), "freq": pack(self.freq),
                "loadings": pack(self.loadings), "eigenvalues": [float(v) for v in self.eigenvalues]}


def choose_pca_variants(variants: pd.DataFrame, qc: pd.DataFrame, passing: np.ndarray, *,
                        min_maf: float = 0.05, min_distance: int = 20_000,
                        max_variants: int = 2000, min_call_rate: float = 1.0) -> np.ndarray:
    """Indices of the PCA variants: passing, common, called in at least ``min_call_rate`` of the
    patients, thinned by distance (``min_distance`` 0: not thinned), at most ``max_variants``
    (:func:`cap_variants`)."""
    maf = np.minimum(qc["alt_freq"], 1 - qc["alt_freq"]).to_numpy()
    cand = np.flatnonzero(passing & (maf >= min_maf)
                          & (qc["call_rate"].to_numpy() >= min_call_rate))
    chosen: list[int] = []
    last: dict[str, int] = {}
    for i in cand:
        c, p = str(variants["chrom"].iat[i]), int(variants["pos"].iat[i])
        if c not in last or p - last[c] >= min_distance:
            chosen.append(int(i))
            last[c] = p
    return cap_variants(np.asarray(chosen, dtype=np.int64), max_variants)


def cap_variants(idx: np.ndarray, max_variants: int) -> np.ndarray:
    """At most ``max_variants`` of ``idx``, evenly spaced along the list."""
    if idx.size > max_variants:
        idx = idx[np.linspace(0, idx.size - 1, max_variants).round().astype(int)]
    return np.asarray(idx, dtype=np.int64)


def federated_pca(fed: Federation, base: dict[str, object], variants: np.ndarray,
                  freq: np.ndarray, n_components: int, *, study: str = "default",
                  dp: DPRequest | None = None) -> PCAResult:
    """PCs from one secure sum of the PCA variants' standardised cross-product.

    A variant some site leaves out (the site disclosure rule: its row and column of that
    site's cross-product are zeros) is dropped and the sum asked again over the others, once,
    so the PCs are those of the pooled PCA on the variants every site contributes in full
    (QC's candidates never need this; a second exclusion means the data changed)."""
    for attempt in range(2):
        p = variants.size
        if not 0 < n_components < p:
            raise InvalidInput(f"n_components must be in 1..{p - 1} for {p} PCA variants")
        res = fed.secure_sum(GRAM_QUERY, {**base, "variants": pack(variants, "<i4"),
                                          "freq": pack(freq)}, study=study, dp=dp)
        left_out = excluded_count(res.values) > 0
        if not left_out.any():
            break
        if attempt:
            raise ConvergenceError(f"{GRAM_QUERY}: the site disclosure rule left out PCA "
                                   "variants twice; the sites' data changed, restart")
        variants, freq = variants[~left_out], freq[~left_out]
    gram = np.zeros((p, p))
    iu = np.triu_indices(p)
    gram[iu] = res["gram"]
    gram = gram + np.triu(gram, 1).T
    # only the leading eigenpairs (LAPACK's subset solver: much faster than the full spectrum)
    vals, vecs = scipy.linalg.eigh(gram, subset_by_index=[p - n_components, p - 1], driver="evr")
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    # a fixed sign per component (largest |loading| positive) so results are reproducible
    flip = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(n_components)])
    return PCAResult(variants.astype(np.int64), freq, vecs * flip, vals, int(res["n"][0]),
                     tuple(res.sites))


def site_scores(dosage: np.ndarray, pca: PCAResult) -> np.ndarray:
    """One site's PC scores (samples x components) from its genotypes (variants x samples, list
    order): the site-side half of the PCA."""
    z = standardise(np.asarray(dosage[pca.variants], dtype=float), pca.freq)
    return np.asarray((z.T @ pca.loadings) / np.sqrt(pca.eigenvalues))
