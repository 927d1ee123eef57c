"""Federated AIM: adaptive, iterative selection of marginals to measure (McKenna, Mullins,
Sheldon and Miklau, *AIM*, VLDB 2022), with every look at the data a DP secure sum over sites.

Central AIM, given a workload of cliques (here: all pairs of columns), measures every one-way
marginal, then repeats: choose a candidate clique (any subset of a workload clique that keeps the
graphical model under a size limit) with the exponential mechanism on its weighted L1 error
``w_r (|M_r - est_r|_1 - sqrt(2/pi) sigma n_r)``, measure it with Gaussian noise ``sigma``,
refit Private-PGM, and halve ``sigma`` (doubling the selection epsilon) when the model's
answer on the chosen clique barely moved. The last round spends what is left.

**Federated selection (what differs).** The score needs ``M_r`` on the pooled data, which the
hub never sees, and an L1 norm of a sum cannot be computed inside a secure sum. FLAIM
(Maddock, Cormode and Maple, KDD 2024) runs AIM's selection step inside secure multi-party
computation (DistAIM) or lets each site score candidates on its *own* data and sums the noisy
local scores (FLAIM), which heterogeneous sites bias (a sum of local L1 errors is not the
pooled error). We do neither: the candidates' *tables* are secure-summed with noise, which gives
the pooled tables exactly up to the Gaussian noise, however heterogeneous the sites, and the hub
scores them. Every round is two releases, both Gaussian secure sums with the noise added as
distributed shares at the sites and charged to every site's ledger:

1. **selection release**: the tables of *all* current candidates, on a public coarsening of
   each column (at most ``selection_levels`` groups plus NA, as in :mod:`hemafed.synth.mst`),
   in one Gaussian release of L2 sensitivity ``sqrt(k)`` for ``k`` tables (the federation
   calibrates this from the query's declared per-table sensitivities), costing the round's
   share ``1 - alpha`` of its rho. The hub scores each candidate with the debiased squared L2
   distance between the noisy coarse table and the model's coarse table (noise variance times
   cells subtracted), turns it into an error estimate ``sqrt(max(0, .))`` and subtracts the
   expected L2 noise ``sigma sqrt(n_r)`` its measurement would bring, weighted as AIM weights
   (``w_r = sum over workload cliques w of c_w |r & w|``, ``c_w`` the workload weights). The
   argmax is the choice: post-processing of a DP release, so no exponential mechanism is needed.
   L2 replaces AIM's L1 because only the squared L2 error has an unbiased estimate from a
   Gaussian-noised table.
2. **measurement release**: the chosen clique's full table with the round's ``alpha`` share.

Other differences, for speed and simplicity: candidates are the workload's cliques of two or
more columns not measured yet (re-measurement, which AIM allows, only happens once every
candidate has been measured); the budget is planned for ``rounds`` rounds (AIM: ``16 d``; here
``4 d`` by default, since every round is a federation round trip and a Private-PGM refit);
the per-round refit runs ``round_iters`` mirror-descent steps warm-started from the last model,
and the final fit ``iters`` steps. Budget annealing (``sigma / 2`` and four times the round's
rho when ``|est_new_r - est_old_r|_1 <= sqrt(2/pi) sigma n_r``), the final round spending the
remainder, and the model-size limit (``max_model_size`` MB times the fraction of rho spent)
follow AIM. The total is exactly ``rho`` (from (epsilon, delta) by the conversion MST uses).

**Annealing.** The rule compares the L1 change of the model's answer on the measured clique,
before and after the refit, with ``sqrt(2/pi) sigma n_r`` (the expected L1 norm of the
measurement's noise), as in the paper and its reference code, where the refit is a full
warm-started estimation. An earlier version refitted with only 100 mirror-descent steps: the
model had barely moved when the check ran (on the real MDS cohort at epsilon 4 a 3-way table
changed the model by 7 counts after 100 steps, 1,646 after 1,000), so the rule fired almost
every round and the fit stopped after about 3 cliques. ``round_iters`` now defaults to 1,000.
On small cohorts the rule still fires more often than on AIM's benchmark data (a table's
noise grows with its cells, the signal with the patients), so large tables are measured rarely.

**Survival-aware workload** (``anchor=("os_time", "os_status")`` or ``anchor="os_status"``).
All pairs keep weight 1; the outcome clique (time x status) and every covariate's pair with
each outcome column (covariate x time, covariate x status) get ``anchor_weight`` more
(``anchor_triples=True``: covariate x time x status instead, whose pairs are then candidates as
its subsets). AIM's weighted workload (paper section 4) then prefers cliques that link
covariates to the outcome, which a Cox model trained on the synthetic patients needs; plain AIM
weighs all pairs alike and spends its few rounds on the strongest dependences (os_time-amlt_time,
hb-plt). Any ``workload`` can also carry explicit ``workload_weights``. Weights only change which
noisy release is post-processed into a choice: the releases, their noise and the privacy
accounting are the same as without them.

Patients are sampled from the fitted model along its junction tree (each column drawn given its
already-drawn neighbours, the tables stored in the fitted JSON; seeded, own sampler).

>>> # aim = FederatedAIM(1.0, 1e-6, ["age", "hb", "os_time", "os_status"]).fit(fed)
>>> # synthetic = aim.sample(10_000, seed=0)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from hemafed.errors import BudgetExhausted, InvalidInput
from hemafed.federation.api import DPRequest, Federation
from hemafed.synth import accounting
from hemafed.synth.domain import SynthDomain
from hemafed.synth.mst import Measurement, _mbi, coarsening, draw_categorical
from hemafed.synth.queries import QUERY, clique_key, query_params

log = logging.getLogger(__name__)

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class Release:
    """One Gaussian secure sum of the fit: phase, round, how many tables, noise and zCDP cost."""

    phase: str
    round: int
    marginals: int
    noise_multiplier: float
    rho: float
    cell_noise_std: float

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "round": self.round, "marginals": self.marginals,
                "noise_multiplier": self.noise_multiplier, "rho": self.rho,
                "cell_noise_std": self.cell_noise_std}


@dataclass(frozen=True)
class SamplingStep:
    """Draw ``column`` given the already drawn ``parents`` from ``table`` (parents..., column)."""

    column: str
    parents: tuple[str, ...]
    table: np.ndarray

    def __post_init__(self) -> None:
        if self.table.ndim != len(self.parents) + 1:
            raise ValueError(f"sampling step {self.column!r}: table has {self.table.ndim} axes, "
                             f"expected {len(self.parents) + 1}")


def workload_candidates(workload: Sequence[Sequence[str]],
                        weights: Sequence[float] | None = None) -> dict[tuple[str, ...], float]:
    """Every non-empty subset of a workload clique, with AIM's weight ``sum_w c_w |r & w|``
    (``c_w`` the workload clique's weight, default 1)."""
    c = [1.0] * len(workload) if weights is None else [float(x) for x in weights]
    if len(c) != len(workload):
        raise InvalidInput(f"workload_weights has {len(c)} entries for {len(workload)} cliques")
    subsets: set[tuple[str, ...]] = set()
    for w in workload:
        for k in range(1, len(w) + 1):
            subsets.update(combinations(tuple(w), k))
    return {r: float(sum(cw * len(set(r) & set(w)) for w, cw in zip(workload, c, strict=True)))
            for r in sorted(subsets)}


def anchored_workload(names: Sequence[str], anchor: Sequence[str], anchor_weight: float,
                      base: Sequence[Sequence[str]] | None = None,
                      base_weights: Sequence[float] | None = None, triples: bool = False,
                      ) -> tuple[list[tuple[str, ...]], list[float]]:
    """An outcome-focused workload: ``base`` (default all pairs, weight 1) plus, with weight
    ``anchor_weight`` added, the outcome clique itself (e.g. time x status) and every other
    column's pair with each outcome column (covariate x time, covariate x status); with
    ``triples`` the whole outcome joined to each covariate instead (covariate x time x status,
    whose pairs are then candidates as its subsets). Cliques keep the order of ``names``."""
    order = {c: i for i, c in enumerate(names)}
    unknown = [a for a in anchor if a not in order]
    if unknown or not anchor or len(set(anchor)) != len(anchor):
        raise InvalidInput(f"anchor {list(anchor)} must be distinct columns of {list(names)}")
    if not anchor_weight > 0:
        raise InvalidInput(f"anchor_weight must be > 0, got {anchor_weight}")

    def key(w: Sequence[str]) -> tuple[str, ...]:
        return tuple(sorted(w, key=order.__getitem__))

    weights: dict[tuple[str, ...], float] = {}
    base = list(combinations(names, 2)) if base is None else base
    bw = [1.0] * len(base) if base_weights is None else list(base_weights)
    for w, cw in zip(base, bw, strict=True):
        weights[key(w)] = weights.get(key(w), 0.0) + float(cw)
    extra = [key(anchor)] if len(anchor) > 1 else []
    for c in (c for c in names if c not in anchor):
        extra += [key((c, *anchor))] if triples else [key((c, a)) for a in anchor]
    for w in extra:
        weights[w] = weights.get(w, 0.0) + float(anchor_weight)
    return list(weights), list(weights.values())


def _coarsen_table(table: np.ndarray, clique: Sequence[str],
                   groups: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Sum a full table (axes in clique order) into the public coarse groups."""
    out = table
    for axis, col in enumerate(clique):
        g = groups.get(col)
        if g is None:
            continue
        onehot = np.zeros((len(g), max(g) + 1))
        onehot[np.arange(len(g)), np.asarray(g)] = 1.0
        out = np.moveaxis(np.tensordot(out, onehot, axes=([axis], [0])), -1, axis)
    return out


def selection_score(noisy: np.ndarray, model: np.ndarray, noise_std: float,
                    measure_std: float, full_cells: int, weight: float) -> float:
    """AIM's quality score in L2: debiased model error minus the measurement's expected noise."""
    sq = float(np.sum((noisy - model) ** 2)) - noisy.size * noise_std**2
    return weight * (math.sqrt(max(sq, 0.0)) - measure_std * math.sqrt(full_cells))


def model_marginal(model: Any, clique: Sequence[str]) -> np.ndarray:
    """Marginal table (axes in ``clique`` order, summing to the model's total) of a Private-PGM
    model, by exact sum-product over its exponentiated potentials in numpy.

    ``model.project`` would JIT-compile a variable-elimination program per clique and model
    structure, which dominates AIM's running time when every candidate is scored each round.
    """
    letters: dict[str, str] = {}
    operands: list[Any] = []
    terms: list[str] = []
    for factor in model.potentials.tables.values():
        attrs = [str(a) for a in factor.domain.attributes]
        for a in attrs:
            letters.setdefault(a, chr(ord("a") + len(letters)))
        log_values = np.asarray(factor.values, dtype=float)
        operands.append(np.exp(log_values - log_values.max()))
        terms.append("".join(letters[a] for a in attrs))
    missing = [c for c in clique if c not in letters]
    if missing:
        raise InvalidInput(f"columns {missing} are in no clique of the model")
    spec = ",".join(terms) + "->" + "".join(letters[c] for c in clique)
    table = np.einsum(spec, *operands, optimize="greedy")
    mass = float(table.sum())
    if not (np.isfinite(mass) and mass > 1e-250):
        # the product of the rescaled potentials underflowed (a well-converged model has
        # potentials spanning hundreds of nats): Private-PGM's own log-space inference instead
        return project_marginal(model, clique)
    return np.asarray(table * (float(model.total) / mass), dtype=float)


def project_marginal(model: Any, clique: Sequence[str]) -> np.ndarray:
    """Marginal table (axes in ``clique`` order) by Private-PGM's log-space inference."""
    factor = model.project(tuple(clique)).transpose(tuple(clique))
    return np.asarray(factor.datavector(flatten=False), dtype=float)


def sampling_plan(model: Any, domain: SynthDomain) -> list[SamplingStep]:
    """Ancestral sampling order over the model's junction tree, with normalised tables."""
    jtree, order = _mbi().junction_tree.make_junction_tree(
        model.domain, [tuple(c) for c in model.cliques])
    maximal = [set(c) for c in jtree.nodes]
    plan: list[SamplingStep] = []
    used: set[str] = set()
    for col in [str(c) for c in reversed(order)] + [c for c in domain.names if c not in order]:
        if col in used:
            continue
        near = set().union(*[c for c in maximal if col in c]) if maximal else set()
        parents = tuple(c for c in domain.names if c in used and c in near)
        joint = np.clip(model_marginal(model, (*parents, col)), 0.0, None)
        plan.append(SamplingStep(col, parents, joint / max(joint.sum(), 1e-300)))
        used.add(col)
    return plan


def sample_plan(domain: SynthDomain, plan: Sequence[SamplingStep], n: int,
                rng: np.random.Generator) -> np.ndarray:
    """Encoded patients (n x columns) drawn step by step from a :func:`sampling_plan`."""
    codes = np.zeros((n, len(domain.columns)), dtype=np.int64)
    names = domain.names
    for step in plan:
        index = tuple(codes[:, names.index(p)] for p in step.parents)
        weights = step.table[index] if index else np.broadcast_to(step.table, (n, step.table.size))
        codes[:, names.index(step.column)] = draw_categorical(weights, rng)
    return codes


class FederatedAIM:
    """AIM synthesis over a federation: ``FederatedAIM(eps, delta, columns).fit(fed).sample(n)``.

    Parameters
    ----------
    epsilon, delta:
        The analyst's total (epsilon, delta) for the whole fit; ``epsilon=None`` turns DP off
        (exact sums, scores without noise; for tests and pooled references only).
    columns, domain:
        As :class:`~hemafed.synth.mst.FederatedMST`.
    workload:
        Cliques the synthetic data should answer well (default: every pair of columns).
    rounds:
        Planned number of rounds ``T`` (default ``4 d``); the initial per-round rho is
        ``rho / T``, annealing makes the real number of rounds smaller.
    alpha:
        Share of a round's rho for measuring the chosen clique (the rest scores candidates).
    selection_levels:
        Public coarsening of each column in the selection tables.
    max_model_size:
        AIM's limit on the junction tree's size in MB (scaled by the fraction of rho spent).
    iters, round_iters:
        Mirror-descent steps of the final fit and of each round's warm-started refit (the
        annealing check needs the refit close to convergence; see the module docstring).
    workload_weights:
        One positive weight per ``workload`` clique (AIM's ``c_w``; default all 1).
    anchor, anchor_weight, anchor_triples:
        Survival-aware workload: outcome column(s) (e.g. ``("os_time", "os_status")``) whose
        cliques with every other column get ``anchor_weight`` more weight (added to
        ``workload``, default all pairs); with ``anchor_triples`` each covariate joined to the
        whole outcome. See :func:`anchored_workload`.
    """

    def __init__(self, epsilon: float | None, delta: float = 1e-6,
                 columns: Sequence[str] | None = None, domain: SynthDomain | None = None, *,
                 workload: Sequence[Sequence[str]] | None = None, rounds: int | None = None,
                 alpha: float = 0.8, selection_levels: int = 4, max_model_size: float = 80.0,
                 iters: int = 1000, round_iters: int = 1000,
                 max_patients: int = 1_000_000,
                 workload_weights: Sequence[float] | None = None,
                 anchor: str | Sequence[str] | None = None,
                 anchor_weight: float = 8.0, anchor_triples: bool = False) -> None:
        if domain is None:
            if not columns:
                raise InvalidInput("FederatedAIM needs columns or a domain")
            domain = SynthDomain.for_columns(columns)
        if len(domain.columns) < 2:
            raise InvalidInput("FederatedAIM needs at least two columns")
        if epsilon is not None and not epsilon > 0:
            raise InvalidInput(f"epsilon must be > 0 (or None for no DP), got {epsilon}")
        if not 0 < delta < 1:
            raise InvalidInput(f"delta must be in (0, 1), got {delta}")
        if not 0 < alpha < 1:
            raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
        names = domain.names
        if workload_weights is not None:
            if workload is None:
                raise InvalidInput("workload_weights need an explicit workload (one weight per "
                                   "clique)")
            if len(workload_weights) != len(workload) or min(workload_weights) <= 0:
                raise InvalidInput(f"workload_weights must be {len(workload)} positive numbers "
                                   f"(one per workload clique), got {list(workload_weights)}")
        anchor_cols: tuple[str, ...] | None = None
        if anchor is not None:
            anchor_cols = (anchor,) if isinstance(anchor, str) else tuple(anchor)
            if len(names) - len(anchor_cols) < 1:
                raise InvalidInput(f"anchor {list(anchor_cols)} leaves no covariate column")
            workload, workload_weights = anchored_workload(names, anchor_cols, anchor_weight,
                                                           workload, workload_weights,
                                                           anchor_triples)
        if workload is None:
            workload = list(combinations(names, 2))
        order = {c: i for i, c in enumerate(names)}
        wl: list[tuple[str, ...]] = []
        for w in workload:
            unknown = [c for c in w if c not in order]
            if unknown or len(set(w)) != len(w) or not w:
                raise InvalidInput(f"workload clique {list(w)} must be distinct columns of the "
                                   f"domain {list(names)}")
            wl.append(tuple(sorted(w, key=order.__getitem__)))
        if not wl or max(len(w) for w in wl) < 2:
            raise InvalidInput("the workload needs at least one clique of two or more columns "
                               "(one-way marginals are always measured)")
        self.epsilon = epsilon
        self.delta = delta
        self.domain = domain
        self.workload = wl
        self.workload_weights: list[float] = ([1.0] * len(wl) if workload_weights is None
                                              else [float(x) for x in workload_weights])
        self.anchor = anchor_cols
        self.anchor_weight = float(anchor_weight)
        self.rounds = int(rounds) if rounds is not None else 4 * len(names)
        if self.rounds < 1:
            raise InvalidInput(f"rounds must be >= 1, got {rounds}")
        self.alpha = float(alpha)
        self.selection_levels = int(selection_levels)
        self.max_model_size = float(max_model_size)
        self.iters = int(iters)
        self.round_iters = int(round_iters)
        self.max_patients = int(max_patients)
        self.rho: float | None = accounting.rho_for(epsilon, delta) if epsilon else None
        self.measurements: list[Measurement] = []
        self.releases: list[Release] = []
        self.selected: list[tuple[str, ...]] = []
        self.total_estimate: float | None = None
        self.model: Any | None = None
        """The fitted Private-PGM model (after :meth:`fit`; not kept by :meth:`to_json`)."""
        self._plan: list[SamplingStep] = []

    # -- releases ---------------------------------------------------------------------------

    def _secure_sum(self, federation: Federation, cliques: Sequence[Sequence[str]],
                    rho: float | None, phase: str, rnd: int, study: str,
                    coarsen: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
        params = query_params(self.domain, cliques, coarsen, self.max_patients)
        dp = None
        nm = 0.0
        if rho is not None:
            nm = accounting.noise_multiplier_for_rho(rho)
            dp = DPRequest(delta=self.delta, noise_multiplier=nm)
        try:
            result = federation.secure_sum(QUERY, params, study=study, dp=dp)
        except BudgetExhausted as exc:
            log.warning("AIM stopped in round %d (%s): %s refused", rnd, phase, exc.who)
            raise BudgetExhausted(exc.site, f"{exc.reason}; the AIM {phase} release of round "
                                            f"{rnd} was not made and the fit stopped",
                                  who=exc.who) from exc
        stds = {clique_key(c): float(result.noise_std.get(clique_key(c), 0.0)) for c in cliques}
        if rho is not None and min(stds.values()) <= 0:
            raise InvalidInput("the federation returned a marginal without DP noise although "
                               "noise was requested")
        std = max(stds.values())
        self.releases.append(Release(phase, rnd, len(cliques), nm, rho or 0.0, std))
        return {"values": {clique_key(c): np.asarray(result[clique_key(c)], dtype=float)
                           for c in cliques}, "std": std, "nm": nm}

    def _measure(self, federation: Federation, cliques: Sequence[tuple[str, ...]],
                 rho: float | None, phase: str, rnd: int, study: str) -> list[Measurement]:
        out = self._secure_sum(federation, cliques, rho, phase, rnd, study)
        ms = [Measurement(c, out["values"][clique_key(c)], out["std"], out["nm"], rho or 0.0,
                          phase) for c in cliques]
        self.measurements.extend(ms)
        return ms

    # -- the loop -----------------------------------------------------------------------------

    def _estimate(self, measurements: Sequence[Measurement], iters: int,
                  warm: Any | None) -> Any:
        mbi = _mbi()
        domain = mbi.Domain(self.domain.names, self.domain.sizes)
        linear = [mbi.LinearMeasurement(m.values, m.clique, stddev=m.noise_std or 1.0)
                  for m in measurements]
        return mbi.estimation.MirrorDescent().estimate(domain, linear, iters=iters,
                                                       warm_start=warm)

    def fit(self, federation: Federation, study: str = "default") -> FederatedAIM:
        """One-way marginals, then select-measure-refit rounds until rho is spent. Returns self."""
        junction_tree = _mbi().junction_tree  # through _mbi: float64 JAX before mbi's import

        self.measurements, self.releases, self.selected = [], [], []
        names = self.domain.names
        rho = self.rho
        dp = rho is not None
        per_round = (rho / self.rounds) if rho is not None else 0.0
        rho_meas, rho_sel = self.alpha * per_round, (1 - self.alpha) * per_round
        used = 0.0
        # AIM's one-way cost d * alpha * rho / T; capped so a short plan (small T) keeps budget
        one_rho = min(len(names) * rho_meas, 0.5 * rho) if rho is not None else None
        self._measure(federation, [(c,) for c in names], one_rho, "one_way", 0, study)
        used += one_rho or 0.0
        model = self._estimate(self.measurements, self.round_iters, None)
        candidates = {r: w for r, w in workload_candidates(self.workload,
                                                            self.workload_weights).items()
                      if len(r) > 1}
        coarse = coarsening(self.domain, self.selection_levels)
        mdomain = model.domain
        rnd = 0
        while True:
            rnd += 1
            if dp:
                assert rho is not None
                remaining = rho - used
                if remaining <= 1e-12 * rho:
                    break
                if remaining < 2 * (rho_meas + rho_sel):
                    rho_meas, rho_sel = self.alpha * remaining, (1 - self.alpha) * remaining
                limit = self.max_model_size * used / rho
            else:
                if rnd > self.rounds or set(candidates) <= set(self.selected):
                    break
                limit = self.max_model_size
            measured = set(self.selected)
            pool = [r for r in candidates if r not in measured] or list(candidates)
            pool = [r for r in pool if junction_tree.hypothetical_model_size(
                mdomain, [*model.cliques, r]) <= limit]
            if not pool:
                if not dp:
                    break
                # nothing fits the size limit yet: the smallest candidate (AIM keeps going too)
                pool = [min(candidates, key=self.domain.size_of)]
            sel = self._secure_sum(federation, pool, rho_sel if dp else None, "select", rnd,
                                   study, coarse)
            used += rho_sel if dp else 0.0
            sigma = accounting.noise_multiplier_for_rho(rho_meas) if dp else 0.0
            scores = {}
            for r in pool:
                est = model_marginal(model, r)
                scores[r] = selection_score(sel["values"][clique_key(r)],
                                            _coarsen_table(est, r, coarse).ravel(), sel["std"],
                                            sigma, self.domain.size_of(r), candidates[r])
            choice = max(pool, key=lambda r: scores[r])
            before = model_marginal(model, choice)
            self._measure(federation, [choice], rho_meas if dp else None, "measure", rnd, study)
            used += rho_meas if dp else 0.0
            self.selected.append(choice)
            model = self._estimate(self.measurements, self.round_iters, model)
            after = model_marginal(model, choice)
            log.info("AIM round %d: measured %s (score %.3g)", rnd, clique_key(choice),
                     scores[choice])
            change = float(np.abs(after - before).sum())
            threshold = _SQRT_2_OVER_PI * sigma * self.domain.size_of(choice)
            log.info("AIM round %d: model change %.4g, annealing threshold %.4g", rnd, change,
                     threshold)
            if dp and change <= threshold:
                rho_meas, rho_sel = 4 * rho_meas, 4 * rho_sel
        model = self._estimate(self.measurements, self.iters, model)
        self.total_estimate = float(model.total)
        self.model = model
        self._plan = sampling_plan(model, self.domain)
        return self

    # -- sampling and reporting ---------------------------------------------------------------

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        """``n`` synthetic patients (canonical column names), deterministic by ``seed``."""
        if not self._plan:
            raise InvalidInput("FederatedAIM.sample: call fit(federation) first")
        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        codes = sample_plan(self.domain, self._plan, n, rng)
        return self.domain.decode(codes, seed=int(rng.integers(2**31)))

    @property
    def noise_multipliers(self) -> dict[str, float]:
        """Noise multiplier of each measured clique's (last) release (0 without DP)."""
        return {clique_key(m.clique): m.noise_multiplier for m in self.measurements}

    @property
    def rho_spent(self) -> float:
        """Total zCDP cost of all releases (selection and measurement)."""
        return float(sum(r.rho for r in self.releases))

    def privacy(self) -> dict[str, Any]:
        """The budget: target and spent rho, epsilon at delta, and every release."""
        spent = self.rho_spent
        return {"epsilon": self.epsilon, "delta": self.delta, "rho": self.rho,
                "rho_spent": spent,
                "epsilon_spent": accounting.epsilon_for(spent, self.delta) if spent else 0.0,
                "rounds": max((r.round for r in self.releases), default=0),
                "releases": [r.to_dict() for r in self.releases]}

    def to_json(self) -> str:
        """The fitted generator: public domain, choices, privacy and DP-released model tables."""
        if not self._plan:
            raise InvalidInput("FederatedAIM.to_json: call fit(federation) first")
        return json.dumps({
            "method": "AIM", "domain": self.domain.to_params(), "privacy": self.privacy(),
            "workload": [list(w) for w in self.workload],
            "workload_weights": self.workload_weights,
            "anchor": list(self.anchor) if self.anchor else None,
            "selected": [list(c) for c in self.selected],
            "measurements": [m.to_dict() for m in self.measurements],
            "total_estimate": self.total_estimate,
            "plan": [{"column": s.column, "parents": list(s.parents), "table": s.table.tolist()}
                     for s in self._plan],
        })

    @classmethod
    def from_json(cls, text: str) -> FederatedAIM:
        """A fitted generator back from :meth:`to_json` (can sample, not refit)."""
        d = json.loads(text)
        if d.get("method") != "AIM":
            raise InvalidInput("not a FederatedAIM JSON document (method != 'AIM')")
        priv = d["privacy"]
        aim = cls(priv["epsilon"], priv["delta"], domain=SynthDomain.from_params(d["domain"]),
                  workload=d["workload"], workload_weights=d.get("workload_weights"))
        aim.anchor = tuple(d["anchor"]) if d.get("anchor") else None
        aim.selected = [tuple(c) for c in d["selected"]]
        aim.releases = [Release(r["phase"], r["round"], r["marginals"], r["noise_multiplier"],
                                r["rho"], r["cell_noise_std"]) for r in priv["releases"]]
        aim.measurements = [Measurement(tuple(m["clique"]), np.zeros(m["cells"]),
                                        m["noise_std"], m["noise_multiplier"], m["rho"],
                                        m["phase"], m["coarse"]) for m in d["measurements"]]
        aim.total_estimate = d.get("total_estimate")
        aim._plan = [SamplingStep(s["column"], tuple(s["parents"]),
                                  np.asarray(s["table"], dtype=float)) for s in d["plan"]]
        return aim
