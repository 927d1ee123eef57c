"""Variant QC from pooled genotype counts (pure maths): allele frequency, call rate, minor allele
count, and the Hardy-Weinberg exact test (Wigginton, Cutler and Abecasis 2005), as PLINK 2's
``--freq`` and ``--hardy`` compute them.

>>> round(float(hwe_exact(np.array([57]), np.array([14]), np.array([29]))[0]), 5)
0.15068
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaln

_TIE = 1e-7
"""Configurations whose probability is within this relative distance of the observed one count
as equally likely (floating-point ties; PLINK uses the same kind of tolerance)."""


def hwe_exact(het: np.ndarray, hom1: np.ndarray, hom2: np.ndarray) -> np.ndarray:
    """Two-sided HWE exact p-values per variant from genotype counts."""
    het, hom1, hom2 = (np.asarray(a, dtype=np.int64) for a in (het, hom1, hom2))
    out = np.ones(het.shape, dtype=float)
    cache: dict[tuple[int, int, int], float] = {}
    for i in range(het.size):
        homr, homc = sorted((int(hom1.flat[i]), int(hom2.flat[i])))
        h = int(het.flat[i])
        n = h + homr + homc
        rare = 2 * homr + h
        if n == 0 or rare == 0:
            continue
        key = (n, rare, h)
        if key not in cache:
            hets = np.arange(rare % 2, rare + 1, 2)
            r = (rare - hets) // 2
            c = n - hets - r
            logp = (-gammaln(r + 1) - gammaln(hets + 1) - gammaln(c + 1) + hets * np.log(2.0))
            probs = np.exp(logp - logp.max())
            obs = probs[(h - rare % 2) // 2]
            cache[key] = float(min(1.0, probs[probs <= obs * (1 + _TIE)].sum() / probs.sum()))
        out.flat[i] = cache[key]
    return out


@dataclass(frozen=True)
class VariantQC:
    """Pooled genotype counts of every variant and the statistics derived from them."""

    hom_ref: np.ndarray
    het: np.ndarray
    hom_alt: np.ndarray
    missing: np.ndarray

    def __post_init__(self) -> None:
        shapes = {a.shape for a in (self.hom_ref, self.het, self.hom_alt, self.missing)}
        if len(shapes) != 1:
            raise ValueError(f"genotype count arrays differ in shape: {shapes}")

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> VariantQC:
        c = np.maximum(np.rint(np.asarray(counts, dtype=float)), 0).astype(np.int64)
        return cls(c[:, 0], c[:, 1], c[:, 2], c[:, 3])

    @property
    def n_called(self) -> np.ndarray:
        return self.hom_ref + self.het + self.hom_alt

    @property
    def call_rate(self) -> np.ndarray:
        total = self.n_called + self.missing
        return np.asarray(self.n_called / np.maximum(total, 1))

    @property
    def alt_freq(self) -> np.ndarray:
        return np.asarray((self.het + 2 * self.hom_alt) / np.maximum(2 * self.n_called, 1))

    @property
    def mac(self) -> np.ndarray:
        alt = self.het + 2 * self.hom_alt
        return np.asarray(np.minimum(alt, 2 * self.n_called - alt))

    @property
    def maf(self) -> np.ndarray:
        f = self.alt_freq
        return np.asarray(np.minimum(f, 1 - f))

    def hwe_p(self) -> np.ndarray:
        return hwe_exact(self.het, self.hom_ref, self.hom_alt)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"hom_ref": self.hom_ref, "het": self.het, "hom_alt": self.hom_alt,
                             "missing": self.missing, "call_rate": self.call_rate,
                             "alt_freq": self.alt_freq, "mac": self.mac, "hwe_p": self.hwe_p()})


@dataclass(frozen=True)
class QCFilters:
    """Variant filters applied identically at every site (the hub decides from pooled counts)."""

    min_call_rate: float = 0.95
    min_maf: float = 0.01
    min_mac: int = 5
    min_hwe_p: float = 1e-6

    def __post_init__(self) -> None:
        if not (0 <= self.min_call_rate <= 1 and 0 <= self.min_maf < 0.5 and self.min_mac >= 0
                and 0 <= self.min_hwe_p < 1):
            raise ValueError(f"QC filters out of range: {self}")

    def passing(self, qc: pd.DataFrame) -> np.ndarray:
        return np.asarray((qc["call_rate"] >= self.min_call_rate) & (qc["alt_freq"].map(
            lambda f: min(f, 1 - f)) >= self.min_maf) & (qc["mac"] >= self.min_mac)
            & (qc["hwe_p"] >= self.min_hwe_p))
