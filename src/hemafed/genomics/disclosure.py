"""The site's own class minimum for genotype sums (hole I of docs/security.md).

The hub picks which variants a genotype query sums over. Without DP, a per-variant sum over a
rare variant is a sum over its few carriers (their traits, covariates, genotypes at other
variants), and since the totals over all patients are known too, a sum over a small class of
non-carriers or of missing calls is as revealing. So every genotype query that sums over
patients per variant applies one rule at the site, on its own patients, before anything is
masked: for each requested variant, the site counts the classes below; if any holds
``1 .. min_cell - 1`` patients it contributes zeros for that variant in every per-variant sum,
and a 1 in the per-variant ``excluded`` statistic that travels in the same secure sum.

- Among the patients the query analyses: the carriers (ALT dosage > 0), the non-carriers and
  the missing calls. Under a binary trait the carriers and the non-carriers are split by case
  status (carrier cases, carrier controls, non-carrier cases, non-carrier controls): the case
  sums (``case_alt``, the score over cases) are sums over carrier cases, a cell of their own.
- Among the linked patients the query does *not* analyse (an association query analyses the
  complete cases of trait and covariates; QC, LD and PCA sums cover every linked patient):
  their carriers, non-carriers and missing calls. Otherwise a QC count minus an association
  count of the same variant is a sum over the few carriers whose trait or covariate is
  missing. (QC stays over all linked patients, as PLINK's own QC over all samples: the LD
  sums over them would give the same counts anyway.)

The hub learns how many sites left a variant out, never which; no site refuses by name (a
per-variant refusal would be a per-site oracle). A pair of variants (LD sums, the PCA
cross-product) is left out when either variant is.

``min_cell`` is the site's: :data:`~hemafed.federation.queries.SITE_MIN_CELL_PARAM` (the
query gets it as ``SiteContext.min_cell``), its policy's ``min_cell_size`` when ``enforce_min_cell`` is on and the release is not DP (DP covers
a DP release), else 0 (the rule is off).

>>> import numpy as np
>>> g = np.array([[0, 0, 0, 1, 2, 1], [0, 1, 1, 0, 0, 0]])
>>> excluded_variants(g, 3).tolist()
[False, True]
>>> excluded_variants(g, 3, cases=np.array([1, 1, 1, 1, 0, 0], dtype=bool)).tolist()
[True, True]
>>> excluded_variants(g, 3, analysed=np.array([1, 1, 1, 1, 1, 0], dtype=bool)).tolist()
[True, True]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hemafed.release import Statistic

EXCLUDED = "excluded"
"""Name of the per-variant statistic: 1 where this site left the variant out."""
RULE_NAME = "site disclosure rule"
"""How results and reports name the variants dropped because some site left them out."""


def excluded_variants(g: np.ndarray, min_cell: int, *, analysed: np.ndarray | None = None,
                      cases: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``g`` (variants x linked patients, ALT counts, -1 missing): whether some class
    of the rule numbers ``1 .. min_cell - 1``.

    ``analysed`` (boolean over the columns; ``None``: all) marks the patients the query sums
    over; the others are counted as classes of their own. ``cases`` (boolean over the
    *analysed* patients) is the binary trait: the analysed carriers and non-carriers are then
    counted among cases and among controls apart."""
    g = np.asarray(g)
    if min_cell <= 1 or g.size == 0:
        return np.zeros(g.shape[0], dtype=bool)
    keep = np.ones(g.shape[1], dtype=bool) if analysed is None else np.asarray(analysed, bool)
    if keep.shape != (g.shape[1],):
        raise ValueError("'analysed' must mark each column of the genotypes")
    ga, rest = g[:, keep], g[:, ~keep]
    classes = [ga < 0, rest > 0, rest == 0, rest < 0]
    if cases is None:
        classes += [ga > 0, ga == 0]
    else:
        case = np.asarray(cases, dtype=bool)
        if case.shape != (ga.shape[1],):
            raise ValueError("'cases' must mark each analysed patient")
        classes += [(ga > 0) & case, (ga > 0) & ~case, (ga == 0) & case, (ga == 0) & ~case]
    sizes = np.stack([c.sum(axis=1) for c in classes])
    return np.asarray(np.any((sizes > 0) & (sizes < min_cell), axis=0))


def excluded_statistic(m: int) -> Statistic:
    """Declaration of ``excluded`` over ``m`` variants: 0/1 per site, summed over sites.

    Sensitivity 0: under DP the rule is off and the vector is zeros whatever the patients; a
    non-DP release is not noised. It is a flag per variant, not a frequency table, so the
    minimum-cell rule does not apply to it (``cells=False``)."""
    return Statistic((m,), 0.0, 1.0, 1.0, sensitivity=0.0, is_count=True, cells=False)


def withhold(arrays: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """``arrays`` with the ``rows`` (a boolean mask over the first axis) set to zero."""
    out = {}
    for name, arr in arrays.items():
        arr = np.array(arr, dtype=float)
        if arr.ndim and arr.shape[0] == rows.size:
            arr[rows] = 0.0
        out[name] = arr
    return out


def excluded_count(values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Hub side: per variant, how many sites left it out (rounded from the secure sum)."""
    return np.rint(np.asarray(values[EXCLUDED], dtype=float)).astype(np.int64)


__all__ = ["EXCLUDED", "RULE_NAME", "excluded_count", "excluded_statistic", "excluded_variants",
           "withhold"]
