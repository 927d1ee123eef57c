"""Disclosure control at the site: the checks a hospital's policy applies to its own answer.

As DataSHIELD's server-side filters, these run where the data are, on this site's own
contribution, before anything is masked:

* :func:`small_cells`: a non-DP release of a frequency table (every statistic whose declaration
  puts it under the minimum-cell rule, :attr:`~hemafed.release.Statistic.min_cell_rule`:
  category counts, cross-tables, histograms, event and exit counts per grid time, per-group
  sizes, concordance tables...) with any own non-zero cell below ``min_cell_size``;
* :func:`small_subgroups`: a non-DP answer in which a subgroup (statistic ``n`` per level of a
  grouping column) holds fewer than ``min_subgroup_size`` patients;
* :func:`declared_cells`: the number of values a request asks for (from its declaration, so
  from the parameters alone), against ``max_cells``.

The rule is decided by each statistic's declaration, never by a list of query names: a new
query's count tables are under it unless they declare themselves totals or at-risk counts.
After aggregation the hub still suppresses small pooled cells for display
(:mod:`hemafed.analytics.describe`). Totals, at-risk counts and the other statistics of
estimators (risk-set sums, gradients, Hessians) are outside the small-cell rule; for them a
study's plan and DP are the protection (docs/security.md, docs/queries.md). Per-time event
counts that feed a Newton step are under the rule on every grid, the plan's public lattice
included (:func:`cell_rule_statistics`).

>>> import numpy as np
>>> small_cells({"counts": np.array([0.0, 7.0, 3.0])}, ["counts"], 5)
['counts']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from hemafed.release import Statistic


def cell_rule_statistics(specs: Mapping[str, Statistic]) -> list[str]:
    """Names of the declared statistics the minimum-cell rule applies to.

    On any grid, the study plan's public lattice included: the per-time event counts of the
    Cox-type estimators are under it, since their reply also carries the events' per-time
    covariate sums (docs/security.md, attack L).

    >>> d = Statistic((3,), 0, 9, is_count=True)
    >>> cell_rule_statistics({"d": d, "n": Statistic((1,), 0, 9, is_count=True)})
    ['d']
    """
    return [name for name, s in specs.items() if s.min_cell_rule]


def small_cells(values: Mapping[str, np.ndarray], count_names: Iterable[str],
                min_cell_size: int) -> list[str]:
    """Names of count statistics holding a non-zero cell below ``min_cell_size``."""
    out = []
    for name in count_names:
        arr = np.asarray(values[name], dtype=float)
        if np.any((arr > 0) & (arr < min_cell_size)):
            out.append(name)
    return out


def small_subgroups(values: Mapping[str, np.ndarray], min_subgroup_size: int) -> bool:
    """Whether a per-group patient count ``n`` has a non-empty group below the minimum."""
    n = values.get("n")
    if n is None or min_subgroup_size <= 0:
        return False
    arr = np.asarray(n, dtype=float)
    return bool(np.any((arr > 0) & (arr < min_subgroup_size)))


def declared_cells(sizes: Iterable[int]) -> int:
    """Total number of values a request's declared statistics hold."""
    return int(sum(sizes))
