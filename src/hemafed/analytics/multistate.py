"""Multi-state Aalen-Johansen transition probabilities for the illness-death model, federated.

States: 0 the initial disease (e.g. MDS), 1 the illness (e.g. AML), 2 the absorbing exit (death).
Each patient's path comes from four schema columns: the illness time and status (``amlt_time``,
``amlt_status``) and the exit time and status (``os_time``, ``os_status``). The rules, applied
at the site:

* illness observed before exit: state 0 on ``(0, u]``, transition 0 -> 1 at ``u``, state 1 on
  ``(u, T]``, then 1 -> 2 at ``T`` if the exit was observed (else censored);
* illness observed at the exit time: transition 0 -> 1 at ``u`` and no later transition (two
  transitions at one instant cannot be ordered; R's counting-process data cannot hold a
  zero-length interval either);
* illness not observed: state 0 until ``min(u, T)``; the exit counts (0 -> 2) only if the illness
  follow-up lasted until it (``T <= u``), otherwise the patient is censored at ``u``, since the
  state after ``u`` is unknown;
* an observed illness after the exit, or a missing value, excludes the patient (counted).

The site query ``illness_death_counts`` returns, per public grid time, the number at risk in
states 0 and 1 (entered before ``t``, left at or after ``t``) and the number of each transition;
given those pooled counts, ``illness_death_influence`` returns the sum over the site's patients of
their squared infinitesimal-jackknife influence on every state probability, whose pooled sum is
the variance ``survival::survfit`` reports. The hub multiplies ``P(t) = P(t-) (I + dA(t))``: the
result equals ``survival::survfit(Surv(tstart, tstop, state) ~ 1, id = id)`` on the pooled
counting-process rows (``pstate``, ``std.err``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
import pandas as pd

from hemafed.analytics.describe import codec_resolution
from hemafed.analytics.fitter import FederatedFitter
from hemafed.analytics.km import time_grid
from hemafed.analytics.survival_grid import REL_TOL, check_grid, grid_positions
from hemafed.cohort.model import Cohort
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation import checks
from hemafed.federation.api import Federation
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register

log = logging.getLogger(__name__)

TRANSITIONS: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))
"""The illness-death model's transitions, in the order of the ``transitions`` arrays."""
COLUMN_KEYS = ("illness_time", "illness_status", "exit_time", "exit_status")
DEFAULT_COLUMNS = {"illness_time": "amlt_time", "illness_status": "amlt_status",
                   "exit_time": "os_time", "exit_status": "os_status"}
DEFAULT_RESOLUTION = 1e-10


def _columns(params: Params) -> dict[str, str]:
    out = {}
    for key in COLUMN_KEYS:
        col = params.get(key, DEFAULT_COLUMNS[key])
        if not isinstance(col, str) or not col:
            raise InvalidInput(f"parameter {key!r} must name a cohort column, got {col!r}")
        out[key] = col
    return out


# Migrated: both site queries of this module have typed parameters (a ``params_type``).

@dataclass(frozen=True)
class CountsParams(QueryParams):
    """``illness_death_counts``: the four outcome columns (defaults :data:`DEFAULT_COLUMNS`)
    and the public grid."""

    QUERY = "illness_death_counts"
    grid: tuple[float, ...]
    illness_time: str = DEFAULT_COLUMNS["illness_time"]
    illness_status: str = DEFAULT_COLUMNS["illness_status"]
    exit_time: str = DEFAULT_COLUMNS["exit_time"]
    exit_status: str = DEFAULT_COLUMNS["exit_status"]
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def from_mapping(cls, params: Params) -> Self:
        cls.known(params)
        cols = _columns(params)
        grid = tuple(float(t) for t in check_grid(params.get("grid")))
        return cls(grid=grid, max_patients=checks.max_patients(params), **cols,
                   **cls._more(params, len(grid)))

    @classmethod
    def _more(cls, params: Params, m: int) -> dict[str, Any]:
        return {}

    @property
    def columns(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in COLUMN_KEYS}


@dataclass(frozen=True)
class IllnessDeathPaths:
    """The site's patients as paths: leave state 0 at ``t0`` (to 1, to 2 or censored), and for
    those who reach state 1 leave it at ``t1`` (to 2 or censored)."""

    t0: np.ndarray
    to: np.ndarray  # 1 illness, 2 exit, 0 censored in state 0
    t1: np.ndarray  # NaN unless the patient entered state 1
    dies_in_1: np.ndarray
    excluded: int


def illness_death_paths(cohort: Cohort, params: Params) -> IllnessDeathPaths:
    """Apply the module's rules to the site's four outcome columns."""
    cols = _columns(params)
    p = cohort.patients
    values = {}
    for key, col in cols.items():
        if col not in p.columns:
            raise InvalidInput(f"column {col!r} ({key}) is not in the site's cohort")
        try:
            values[key] = p[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            raise InvalidInput(f"column {col!r} ({key}) is not numeric") from None
    u, su = values["illness_time"], values["illness_status"]
    t, st = values["exit_time"], values["exit_status"]
    ok = ~(np.isnan(u) | np.isnan(su) | np.isnan(t) | np.isnan(st))
    for key in ("illness_status", "exit_status"):
        v = values[key][ok]
        if np.any((v != 0) & (v != 1)):
            raise InvalidInput(f"column {cols[key]!r} ({key}) must be 0/1")
    if np.any(u[ok] < 0) or np.any(t[ok] < 0):
        raise InvalidInput("illness and exit times must be non-negative")
    tol = REL_TOL * np.maximum(1.0, np.abs(np.nan_to_num(t)))
    ill = ok & (su == 1)
    ok &= ~(ill & (u > t + tol))  # illness after the exit: inconsistent, excluded
    ill &= ok
    u, su, t, st = u[ok], su[ok] == 1, t[ok], st[ok] == 1
    tol = tol[ok]
    same = su & (np.abs(u - t) <= tol)
    exit_counts = ~su & (t <= u + tol) & st
    t0 = np.where(su, u, np.minimum(u, t))
    to = np.where(su, 1, np.where(exit_counts, 2, 0))
    enters = su & ~same
    t1 = np.where(enters, t, np.nan)
    return IllnessDeathPaths(t0, to, t1, enters & st, int(len(p) - ok.sum()))


def _on_grid(times: np.ndarray, grid: np.ndarray, moves: np.ndarray) -> tuple[np.ndarray,
                                                                              np.ndarray]:
    """Grid positions of the rows' exits (every transition is on the grid: see
    :func:`paths_on_grid`)."""
    return grid_positions(np.nan_to_num(times, nan=-1.0), grid)


def paths_on_grid(paths: IllnessDeathPaths, grid: np.ndarray) -> IllnessDeathPaths:
    """The paths whose transitions all lie on the grid; the others are counted in
    ``excluded``, never refused (whether one site's times fit a hub's grid is data:
    :mod:`hemafed.analytics.survival_grid`)."""
    _, on0 = grid_positions(paths.t0, grid)
    _, on1 = grid_positions(np.nan_to_num(paths.t1, nan=-1.0), grid)
    keep = ~((paths.to > 0) & (on0 < 0)) & ~(paths.dies_in_1 & (on1 < 0))
    if keep.all():
        return paths
    return IllnessDeathPaths(paths.t0[keep], paths.to[keep], paths.t1[keep],
                             paths.dies_in_1[keep], paths.excluded + int((~keep).sum()))


def _counts(cohort: Cohort, params: CountsParams
            ) -> tuple[IllnessDeathPaths, dict[str, np.ndarray]]:
    grid = np.asarray(params.grid, dtype=float)
    paths = paths_on_grid(illness_death_paths(cohort, params.columns), grid)
    m = grid.size
    c0, on0 = _on_grid(paths.t0, grid, paths.to > 0)
    in1 = ~np.isnan(paths.t1)
    c1, on1 = _on_grid(paths.t1, grid, paths.dies_in_1)
    # state 1 from u (exclusive) to t1: at risk at grid j when u < t_j <= t1
    entered = np.searchsorted(grid, paths.t0 + REL_TOL * np.maximum(1.0, paths.t0), side="right")
    at_risk = np.zeros((2, m))
    acc0 = np.bincount(c0, minlength=m + 1).astype(float)
    at_risk[0] = np.cumsum(acc0[::-1])[::-1][1:]
    if in1.any():
        diff = np.zeros(m + 1)
        np.add.at(diff, entered[in1], 1.0)
        np.add.at(diff, c1[in1], -1.0)
        at_risk[1] = np.cumsum(diff)[:m]
    trans = np.zeros((3, m))
    for k, (src, dst) in enumerate(TRANSITIONS):
        if src == 0:
            sel = paths.to == dst
            trans[k] = np.bincount(on0[sel], minlength=m)[:m]
        else:
            sel = paths.dies_in_1
            trans[k] = np.bincount(on1[sel], minlength=m)[:m]
    return paths, {"at_risk": at_risk, "transitions": trans,
                   "n": np.array([float(paths.t0.size)]),
                   "excluded": np.array([float(paths.excluded)])}


def _counts_compute(cohort: Cohort, params: CountsParams) -> dict[str, np.ndarray]:
    return _counts(cohort, params)[1]


def _counts_declare(params: CountsParams) -> dict[str, Statistic]:
    mp, m = params.max_patients, len(params.grid)
    return {"at_risk": Statistic((2, m), 0, mp, sensitivity=math.sqrt(2 * m), is_count=True),
            # a patient who falls ill and then dies makes two transitions (0->1, 1->2): the
            # L2 change is sqrt(2), not 1 (a frequency table still: the min-cell rule applies)
            "transitions": Statistic((3, m), 0, mp, sensitivity=math.sqrt(2.0), is_count=True,
                                     cells=True),
            "n": Statistic((1,), 0, mp, is_count=True),
            "excluded": Statistic((1,), 0, mp, is_count=True)}


ILLNESS_DEATH_COUNTS = register(Query(
    "illness_death_counts", "1", compute=_counts_compute, declare=_counts_declare,
    params_type=CountsParams,
    description="illness-death model: number at risk in states 0 and 1 and transition counts "
                "0->1, 0->2, 1->2 per grid time"))


# --- the Aalen-Johansen product and its influence ----------------------------------------------

def hazard_increments(at_risk: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """``(m, 3, 3)`` matrices ``dA(t_j)`` with rows summing to zero."""
    m = at_risk.shape[1]
    da = np.zeros((m, 3, 3))
    for k, (src, dst) in enumerate(TRANSITIONS):
        with np.errstate(divide="ignore", invalid="ignore"):
            da[:, src, dst] = np.where(at_risk[src] > 0, transitions[k] / at_risk[src], 0.0)
    for s in range(3):
        da[:, s, s] = -da[:, s].sum(axis=1) + da[:, s, s]
    return da


def aalen_johansen(at_risk: np.ndarray, transitions: np.ndarray) -> np.ndarray:
    """``(m, 3)`` state probabilities after each grid time, starting in state 0."""
    da = hazard_increments(at_risk, transitions)
    p = np.array([1.0, 0.0, 0.0])
    out = np.empty((da.shape[0], 3))
    for j in range(da.shape[0]):
        p = p + p @ da[j]
        out[j] = p
    return out


@dataclass(frozen=True)
class InfluenceParams(CountsParams):
    """``illness_death_influence``: those of the counts, and the pooled counts the hub got back
    (``at_risk`` ``(2, m)``, ``transitions`` ``(3, m)``, non-negative), as nested tuples."""

    QUERY = "illness_death_influence"
    at_risk: tuple[tuple[float, ...], ...] = ()
    transitions: tuple[tuple[float, ...], ...] = ()
    resolution: float = 1e-14

    @classmethod
    def _more(cls, params: Params, m: int) -> dict[str, Any]:
        out: dict[str, Any] = {"resolution": checks.resolution(params, default=1e-14)}
        for key, shape in (("at_risk", (2, m)), ("transitions", (3, m))):
            try:
                arr = np.asarray(params.get(key), dtype=float)
            except (TypeError, ValueError):
                raise InvalidInput(f"parameter {key!r} must be the pooled {shape} counts") \
                    from None
            if arr.shape != shape or not np.all(np.isfinite(arr)) or arr.min() < 0:
                raise InvalidInput(f"parameter {key!r} must be the pooled non-negative {shape} "
                                   "counts")
            out[key] = tuple(tuple(float(v) for v in row) for row in arr)
        return out


def _influence_compute(cohort: Cohort, params: InfluenceParams) -> dict[str, np.ndarray]:
    paths, _ = _counts(cohort, params)
    grid = np.asarray(params.grid, dtype=float)
    m = grid.size
    # an honest pooled at-risk count is >= 1 wherever a patient is at risk, and a hazard is at
    # most 1: flooring and capping here makes the declared 4 / max(Y, 1) bound hold for any
    # arrays the hub sends (it is declared from the same floored counts)
    at_risk = np.maximum(np.asarray(params.at_risk, dtype=float), 1.0)
    trans = np.asarray(params.transitions, dtype=float)
    trans = np.minimum(trans, at_risk[[src for src, _ in TRANSITIONS]])
    out0 = trans[:2].sum(axis=0)
    trans[:2] *= np.where(out0 > at_risk[0], at_risk[0] / np.where(out0 > 0, out0, 1.0), 1.0)
    da = hazard_increments(at_risk, trans)
    prob = aalen_johansen(at_risk, trans)
    c0, on0 = _on_grid(paths.t0, grid, paths.to > 0)
    in1 = ~np.isnan(paths.t1)
    c1, on1 = _on_grid(paths.t1, grid, paths.dies_in_1)
    entered = np.searchsorted(grid, paths.t0 + REL_TOL * np.maximum(1.0, paths.t0), side="right")
    n = paths.t0.size
    u = np.zeros((n, 3))
    out = np.zeros((m, 3))
    rows = np.arange(n)
    for j in range(m):
        # each patient's influence on dA(t_j): (dN_i - Y_i dA) / Y, row by row
        y0 = c0 > j
        y1 = in1 & (entered <= j) & (c1 > j)
        dai = np.zeros((n, 3, 3))
        if at_risk[0, j] > 0:
            dn = np.zeros((n, 3))
            moved = (on0 == j) & (paths.to > 0)
            dn[rows[moved], paths.to[moved]] = 1.0
            dai[:, 0, 1:] = (dn[:, 1:] - y0[:, None] * da[j, 0, 1:]) / at_risk[0, j]
        if at_risk[1, j] > 0:
            died = paths.dies_in_1 & (on1 == j)
            dai[:, 1, 2] = (died.astype(float) - y1 * da[j, 1, 2]) / at_risk[1, j]
        for s in range(3):
            dai[:, s, s] = -dai[:, s].sum(axis=1) + dai[:, s, s]
        p_before = prob[j - 1] if j else np.array([1.0, 0.0, 0.0])
        u = u + u @ da[j] + np.einsum("s,isk->ik", p_before, dai)
        out[j] = np.square(u).sum(axis=0)
    return {"influence_sq": out}


def _influence_declare(params: InfluenceParams) -> dict[str, Statistic]:
    mp, m, res = params.max_patients, len(params.grid), params.resolution
    # a patient's influence on a probability is at most 2 * sum_j 2 / Y_j over the grid
    y = np.asarray(params.at_risk, dtype=float)
    bound = float(np.sum(4.0 / np.maximum(y, 1.0)))
    hi = mp * bound**2
    return {"influence_sq": Statistic((m, 3), 0.0, hi, codec_resolution(0.0, hi, res),
                                      sensitivity=bound**2 * math.sqrt(3 * m))}


ILLNESS_DEATH_INFLUENCE = register(Query(
    "illness_death_influence", "1", compute=_influence_compute, declare=_influence_declare,
    params_type=InfluenceParams,
    description="sum over the site's patients of their squared infinitesimal-jackknife "
                "influence on the Aalen-Johansen state probabilities at each grid time"))


# --- hub side ----------------------------------------------------------------------------------

def transition_grid(federation: Federation, columns: dict[str, str] | None = None, *,
                    steps_per_unit: float = 365.25, max_time: float = 60.0,
                    study: str = "default") -> np.ndarray:
    """Every lattice time at which some site has an illness or an exit (two secure histograms)."""
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    grids = [time_grid(federation, cols[f"{stem}_time"], cols[f"{stem}_status"],
                       steps_per_unit=steps_per_unit, max_time=max_time, events_only=True,
                       study=study) for stem in ("illness", "exit")]
    return np.union1d(*grids)


class FederatedIllnessDeath(FederatedFitter):
    """Aalen-Johansen state probabilities of the illness-death model across sites.

    After :meth:`fit`: ``state_probabilities_`` (DataFrame indexed by grid time, one column per
    state), ``standard_errors_`` (the infinitesimal-jackknife SEs ``survival::survfit`` gives),
    ``event_table`` (at risk and transitions), ``n_``, ``excluded_``, ``sites``, ``rounds``.
    """

    _fitted_attribute = "state_probabilities_"

    def __init__(self, states: Sequence[str] = ("MDS", "AML", "death"), alpha: float = 0.05
                 ) -> None:
        if len(states) != 3 or len(set(states)) != 3:
            raise InvalidInput(f"states must name the 3 states (initial, illness, exit), got "
                               f"{list(states)}")
        self.states, self.alpha = tuple(states), alpha
        self.state_probabilities_: pd.DataFrame | None = None
        self.sites: tuple[str, ...] = ()
        self.rounds = 0

    def fit(self, federation: Federation, columns: dict[str, str] | None = None, *,
            grid: Sequence[float] | None = None, steps_per_unit: float = 365.25,
            variance: bool = True, study: str = "default") -> FederatedIllnessDeath:
        cols = {**DEFAULT_COLUMNS, **(columns or {})}
        unknown = sorted(set(cols) - set(COLUMN_KEYS))
        if unknown:
            raise InvalidInput(f"unknown column key(s) {unknown}; expected {list(COLUMN_KEYS)}")
        g = (check_grid(list(grid)) if grid is not None
             else transition_grid(federation, cols, steps_per_unit=steps_per_unit, study=study))
        self.rounds = 0 if grid is not None else 2
        params: dict[str, Any] = {**cols, "grid": [float(t) for t in g]}
        res = federation.secure_sum("illness_death_counts", params, study=study)
        self.rounds += 1
        self.sites = tuple(sorted(res.sites))
        at_risk, trans = np.asarray(res["at_risk"]), np.asarray(res["transitions"])
        self.n_, self.excluded_ = int(res["n"][0]), int(res["excluded"][0])
        if self.n_ < 1:
            raise InvalidInput("no patient with complete illness and exit data at any site")
        prob = aalen_johansen(at_risk, trans)
        index = pd.Index(g, name="timeline")
        self.state_probabilities_ = pd.DataFrame(prob, index=index, columns=list(self.states))
        names = [f"{self.states[s]}->{self.states[d]}" for s, d in TRANSITIONS]
        self.event_table = pd.DataFrame(
            np.column_stack([at_risk.T, trans.T]),
            index=index, columns=[f"at_risk_{self.states[0]}", f"at_risk_{self.states[1]}",
                                  *names])
        self.standard_errors_ = None
        if variance:
            inf = federation.secure_sum("illness_death_influence", params | {
                "at_risk": at_risk.tolist(), "transitions": trans.tolist()}, study=study)
            self.rounds += 1
            if tuple(sorted(inf.sites)) != self.sites:
                raise ConvergenceError("the sites answering the variance round differ from the "
                                       "counts round; rerun on a stable set of sites")
            self.standard_errors_ = pd.DataFrame(np.sqrt(np.asarray(inf["influence_sq"])),
                                                 index=index, columns=list(self.states))
        log.info("illness-death Aalen-Johansen over %d sites, %d grid times", len(self.sites),
                 g.size)
        return self

    def _need_fit(self) -> pd.DataFrame:
        if self.state_probabilities_ is None:
            raise InvalidInput("call fit(...) first")
        return self.state_probabilities_

    def predict(self, times: Sequence[float]) -> pd.DataFrame:
        """State probabilities at arbitrary times (right-continuous steps)."""
        prob = self._need_fit()
        t = np.asarray(times, dtype=float)
        pos = np.searchsorted(prob.index.to_numpy(), t, side="right") - 1
        vals = np.where(pos[:, None] >= 0, prob.to_numpy()[np.maximum(pos, 0)],
                        np.array([1.0, 0.0, 0.0]))
        return pd.DataFrame(vals, index=pd.Index(t, name="timeline"), columns=prob.columns)

    @property
    def summary(self) -> pd.DataFrame:
        """Probabilities and SEs at the grid times, long form (time, state)."""
        prob = self._need_fit()
        table = prob.stack().rename("probability").to_frame()
        if self.standard_errors_ is not None:
            table["se"] = self.standard_errors_.stack().to_numpy()
        table.index.names = ["timeline", "state"]
        return table

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        prob = self._need_fit()
        if ax is None:
            _, ax = plt.subplots()
        for col in prob.columns:
            ax.step(prob.index, prob[col], where="post", label=col)
        ax.set_xlabel("time")
        ax.set_ylabel("state probability")
        ax.legend()
        return ax

    def _payload(self) -> dict[str, Any]:
        prob = self._need_fit()
        return {"kind": "illness_death", "states": list(self.states),
                                "state_probabilities": prob,
                                "standard_errors": self.standard_errors_,
                                "n": self.n_, "excluded": self.excluded_,
                                "sites": list(self.sites), "rounds": self.rounds}
