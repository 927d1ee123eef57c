"""Federated LD pruning: ``plink2 --indep-pairwise <window> <step> <r2>`` on the pooled data,
with the pairwise r^2 from secure sums.

Per pair of variants ``(a, b)`` that can share a window, every site returns six integer sums
over its patients called at both: ``n``, ``sum g_a``, ``sum g_a^2``, ``sum g_b``, ``sum g_b^2``,
``sum g_a g_b`` (:data:`~hemafed.genomics.queries.LD_QUERY`, one secure sum per chunk of
windows). Their pooled values give PLINK's pairwise-complete genotype correlation exactly
(integers): ``cov = d n - s_a s_b``, ``var_a = q_a n - s_a^2``, and the pair is in LD when
``cov^2 > r2 (1 + 2^-44) var_a var_b``.

The greedy rule is PLINK 2.00a3.5's (Debian's ``plink2``; PLINK 1.x pruning order), transcribed
from ``IndepPairwiseThread`` in ``plink2_ld.cc``: windows of ``window`` variants (counted among
the variants pruned, per chromosome), moved by ``step``; in each window every kept variant is
compared, in order, with the later kept variants it has not yet been checked against; of a pair
in LD the one with the larger major-allele frequency (smaller MAF; the later one on a tie within
``2^-44``) is removed; the window is rescanned until nothing more is removed. Variants with no
genotype variance are removed and chromosomes with one variant are kept, as PLINK does.
Differences to PLINK: only variant-count windows (``kb`` windows are not supported); later PLINK
2 releases (2.00a5+) scan windows in another order by default and may keep another set.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hemafed.errors import ConvergenceError, InvalidInput

_EPS = 2.0**-44  # PLINK's kSmallEpsilon


@dataclass(frozen=True)
class PruneRule:
    """``--indep-pairwise window step r2`` (variant-count windows)."""

    window: int = 50
    step: int = 5
    r2: float = 0.2

    def __post_init__(self) -> None:
        if not (self.window >= 2 and 1 <= self.step <= self.window and 0 < self.r2 < 1):
            raise InvalidInput(f"LD pruning needs window >= 2, 1 <= step <= window and "
                               f"0 < r2 < 1, got {self.window} {self.step} {self.r2}")


def window_pairs(chrom: np.ndarray, window: int) -> np.ndarray:
    """All pairs ``(a, b)``, ``a < b < a + window`` on the same chromosome (positions into the
    candidate list): every pair two variant-count windows can hold."""
    chrom = np.asarray(chrom).astype(str)
    n = chrom.size
    a = np.repeat(np.arange(n), window - 1)
    b = a + np.tile(np.arange(1, window), n)
    ok = b < n
    a, b = a[ok], b[ok]
    ok = chrom[a] == chrom[b]
    return np.stack([a[ok], b[ok]], axis=1)


def in_ld(sums: np.ndarray, r2: float) -> np.ndarray:
    """PLINK's LD test per pair from the pooled sums ``(n, s_a, q_a, s_b, q_b, d)``."""
    n, sa, qa, sb, qb, d = np.rint(np.asarray(sums, dtype=float)).astype(np.int64).T
    cov = (d * n - sa * sb).astype(float)
    var_a = (qa * n - sa * sa).astype(float)
    var_b = (qb * n - sb * sb).astype(float)
    return np.asarray(cov * cov > r2 * (1 + _EPS) * var_a * var_b)


def indep_pairwise(chrom: np.ndarray, major_freq: np.ndarray, no_variance: np.ndarray,
                   linked: Callable[[int, int], bool], rule: PruneRule) -> np.ndarray:
    """Kept mask over the candidates (list order), PLINK 2.00a3.5's greedy rule.
    ``linked(a, b)`` (``a < b``) says whether the pair is in LD."""
    chrom = np.asarray(chrom).astype(str)
    n = chrom.size
    removed = np.zeros(n, dtype=bool)
    bounds = np.flatnonzero(np.r_[True, chrom[1:] != chrom[:-1], True])
    for s, e in itertools.pairwise(bounds):
        if e - s > 1:
            _prune_contig(int(s), int(e), major_freq, no_variance, linked, rule, removed)
    return ~removed


def _prune_contig(s: int, e: int, majf: np.ndarray, mono: np.ndarray,
                  linked: Callable[[int, int], bool], rule: PruneRule, removed: np.ndarray
                  ) -> None:
    win: list[int] = []
    wrem: list[bool] = []
    first_unchecked: dict[int, int] = {}
    start, end = s, min(s + rule.window, e)
    for t in range(s, e):
        win.append(t)
        wrem.append(bool(mono[t]))
        if mono[t]:
            removed[t] = True
        else:
            first_unchecked[t] = t + 1
        cur = t + 1
        if cur != end:
            continue
        count, prev = sum(wrem), -1
        while count > prev:
            prev = count
            for fw in range(len(win)):
                if wrem[fw]:
                    continue
                a = win[fw]
                later = [p for p in range(fw + 1, len(win)) if not wrem[p]]
                k = next((i for i, p in enumerate(later) if win[p] >= first_unchecked[a]), None)
                if k is None:
                    continue
                for i in range(k, len(later)):
                    b = win[later[i]]
                    if linked(a, b):
                        if majf[a] > majf[b] * (1 + _EPS):
                            wrem[fw] = removed[a] = True
                        else:
                            wrem[later[i]] = removed[b] = True
                            first_unchecked[a] = win[later[i + 1]] if i + 1 < len(later) else cur
                        break
                else:
                    first_unchecked[a] = cur
            count = sum(wrem)
        if end == e:
            return
        start += rule.step
        end = min(start + rule.window, e)
        keep = [p for p in range(len(win)) if not wrem[p] and win[p] >= start]
        win = [win[p] for p in keep]
        wrem = [False] * len(win)


def prune_from_sums(variants: pd.DataFrame, qc: pd.DataFrame, candidates: np.ndarray,
                    pairs: np.ndarray, sums: np.ndarray, rule: PruneRule) -> np.ndarray:
    """The kept candidates (variant-list indices) from the pooled pair sums of ``pairs``."""
    linked_pairs = {(int(a), int(b)) for a, b in pairs[in_ld(sums, rule.r2)]}
    q = qc.iloc[candidates]
    f = q["alt_freq"].to_numpy()
    called = q["hom_ref"] + q["het"] + q["hom_alt"]
    mono = ((q["hom_ref"] == 0) & (q["hom_alt"] == 0)) | (q["hom_ref"] == called) | (
        q["hom_alt"] == called)
    kept = indep_pairwise(variants["chrom"].to_numpy()[candidates], np.maximum(f, 1 - f),
                          mono.to_numpy(), lambda a, b: (a, b) in linked_pairs, rule)
    return np.asarray(candidates[kept])


def federated_indep_pairwise(secure_sum: Callable[[str, dict[str, object]], Any],
                             base: dict[str, object], variants: pd.DataFrame, qc: pd.DataFrame,
                             candidates: np.ndarray, rule: PruneRule, *, chunk: int = 1000
                             ) -> np.ndarray:
    """LD-prune ``candidates`` (variant-list indices, list order) over the federation: one
    secure sum of the pair sums per ``chunk`` windows' first variants; returns the kept ones."""
    from hemafed.genomics.disclosure import RULE_NAME, excluded_count
    from hemafed.genomics.queries import LD_QUERY, pack

    candidates = np.asarray(candidates, dtype=np.int64)
    pairs = window_pairs(variants["chrom"].to_numpy()[candidates], rule.window)
    sums = np.zeros((pairs.shape[0], 6))
    for lo in range(0, candidates.size, chunk):
        sel = (pairs[:, 0] >= lo) & (pairs[:, 0] < lo + chunk)
        if not sel.any():
            continue
        used = np.unique(pairs[sel])
        res = secure_sum(LD_QUERY, {**base, "variants": pack(candidates[used], "<i4"),
                                    "pairs": pack(np.searchsorted(used, pairs[sel]), "<i4")})
        if np.any(excluded_count(res) > 0):
            # only QC's candidates reach here, and QC drops what any site leaves out
            raise ConvergenceError(f"{LD_QUERY}: the {RULE_NAME} left out a variant that the QC "
                                   f"counts had in full; the sites' data changed, restart")
        sums[sel] = res["pairs"]
    return prune_from_sums(variants, qc, candidates, pairs, sums, rule)
