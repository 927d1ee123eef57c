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
  from the parameters alone), against ``max_cells``;
* :func:`risk_set_changes`: for the Cox-type queries (exact risk-set sums per grid time), the
  site's own patients who enter or leave the risk set between two consecutive grid points other
  than by a released event; a non-DP answer with such a cell in 1 .. ``min_cell_size`` - 1 is
  refused like a small count cell (attack M), though the table itself is never released.

The rule is decided by each statistic's declaration, never by a list of query names: a new
query's count tables are under it unless they declare themselves totals or at-risk counts.
After aggregation the hub still suppresses small pooled cells for display
(:mod:`hemafed.analytics.describe`). Totals, at-risk counts and the other statistics of
estimators (risk-set sums, gradients, Hessians) are outside the small-cell rule; for them a
study's plan and DP are the protection (docs/security.md, docs/queries.md). Per-time event
counts that feed a Newton step are under the rule on every grid, the plan's public lattice
included (:func:`cell_rule_statistics`), and so are the risk-set changes between grid points
(:func:`risk_set_changes`, declared per query as
:attr:`hemafed.federation.queries.Query.risk_set_changes`).

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


def risk_set_changes(enter: np.ndarray, leave: np.ndarray, released: np.ndarray, m: int,
                     group: np.ndarray | None = None, n_groups: int = 1) -> np.ndarray:
    """The site-only cells of risk-set changes between consecutive grid points (attack M).

    Row ``i`` is at risk at grid points ``enter[i] <= j < leave[i]`` of the ``m`` points
    ``t_0 < ... < t_{m-1}``; ``released[i]`` says that its exit is a released event (counted in
    the reply's per-time ``d``, with its covariates in ``xsum``, both under the min-cell rule);
    ``group`` its stratum (or any other split the reply's sums are per, e.g. the linear
    predictor bin of the concordance table, the exit type of Fine-Gray). Interval ``j`` (0 ..
    ``m``) lies between ``t_{j-1}`` and ``t_j``: interval 0 before the first point, interval
    ``m`` after the last. Returned, shaped ``(n_groups, 2, m + 1)``: ``[g, 0, j]`` the rows that
    enter the risk set in interval ``j`` (at risk from ``t_j`` on; ``j = 0``: the first risk set
    itself), ``[g, 1, j]`` the rows that leave in interval ``j`` (at risk at ``t_{j-1}``, not at
    ``t_j``; ``j = m``: still at risk at the last point) other than by a released event, and
    ``[g, 1, 0]`` the rows at risk at no point because they end before ``t_0``. A row at risk at
    no grid point for another reason (a start-stop row within one interval) is in no cell.

    Why these cells. At ``beta = 0`` the reply's ``s0[j]``, ``s1[j]``, ``s2[j]`` are the count,
    covariate sum and cross-products of the risk set at ``t_j``. For any two requested points
    ``t_j < t_k`` (consecutive or not, any subset of the grid, in this request or another one
    on the same grid), ``s(t_j) - s(t_k)`` is a sum over intervals ``j+1 .. k`` of (entries
    minus exits), and the released events' own sums are subtracted with ``xsum``; the first
    risk set and the last one (``s(t_{m-1})`` minus its events) are sums by themselves, and
    ``n`` minus the first risk set is the patients who end before ``t_0`` (their covariates by
    difference with any other release over the same patients). So the hub can form any union
    of these cells, per group; Fine-Gray's weighted risk sets and hub-chosen ``G`` only weight
    each cell as a whole (a competing exit's weight depends on its exit point alone), a start-
    stop switch is an exit and an entry in the same interval. When every cell is 0 or at least
    ``min_cell_size``, so is every union of them, and no linear combination of the sums of one
    reply isolates fewer than ``min_cell_size`` patients of this site. The cells are checked on
    the whole grid whatever ``time_index`` asks, so two requests on the same grid do not
    refine them. Not covered: two requests over different strata, subgroups or complete-case
    sets (their cells intersect; the "different requests are not compared" residual), and many
    exact sums at several hub-chosen ``beta`` over one cell (a nonlinear system in its
    patients' covariates): the plan's round cap and DP are the protection there.

    A hand-computed case: grid ``[1, 2, 3]``; A censored at 0.5 (exact mapping: at risk
    nowhere), B an event at 1, C censored at 1.5, D an event at 2, E censored at 2.5, F censored
    at 3.5. The hub reads ``s1[0] - s1[1] - xsum[0] = x_C``, ``s1[1] - s1[2] - xsum[1] = x_E``,
    ``s1[2] - xsum[2] = x_F`` and (with a total from another release) ``x_A``:

    >>> enter = np.zeros(6, dtype=int)
    >>> leave = np.array([0, 1, 1, 2, 2, 3])        # grid points <= T
    >>> released = np.array([False, True, False, True, False, False])
    >>> risk_set_changes(enter, leave, released, 3)[0].tolist()
    [[5.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    >>> small_cells({"changes": risk_set_changes(enter, leave, released, 3)}, ["changes"], 2)
    ['changes']
    """
    enter = np.asarray(enter, dtype=np.intp)
    leave = np.asarray(leave, dtype=np.intp)
    released = np.asarray(released, dtype=bool)
    g = np.zeros(enter.shape, dtype=np.intp) if group is None else np.asarray(group, np.intp)
    live = enter < leave
    gone = ~released & (live | (leave <= 0))
    # flat cell index (group, kind, interval) of each entry and each exit
    cells = np.concatenate([(g[live] * 2) * (m + 1) + enter[live],
                            (g[gone] * 2 + 1) * (m + 1) + leave[gone]])
    counts = np.bincount(cells, minlength=n_groups * 2 * (m + 1)).astype(float)
    return counts.reshape(n_groups, 2, m + 1)
