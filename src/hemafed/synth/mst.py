"""Federated MST: differentially private synthetic patients from noisy marginals (McKenna et al.
2021, *Winning the NIST Contest*), with every measurement a DP secure sum over sites.

MST spends its zCDP budget rho in three equal parts (by default):

1. **one-way marginals** of every column, one Gaussian release;
2. **selection** of a maximum spanning tree of pairs. Central MST scores pairs with the
   exponential mechanism on ``|M_ab - M_a x M_b|_1``, which needs the exact pairwise tables in
   one place; a secure sum cannot compute an L1 norm of a sum. Here every pair's table is
   measured instead, on a public coarsening of each column (at most ``selection_levels`` groups
   plus NA), in one Gaussian release; the score of a pair is the debiased squared distance
   between its noisy table and the product of the measured one-way marginals (noise variance
   subtracted). The tree is the maximum spanning tree of these scores (Kruskal): post-processing.
3. **two-way marginals** of the tree's edges, one Gaussian release.

Survival-aware option (``anchor="os_status"``): the tree is selected over the other columns
and every column's pair with the anchor is measured as well, so each covariate keeps its own
association with the outcome (MST's plain tree links most covariates to survival only through
a path, which loses Cox utility). The model then has treewidth 2.

The hub then fits a graphical model to all measurements with Private-PGM (``mbi``, mirror
descent) and samples patients by ancestral sampling along the tree (own sampler, seeded; the anchor, if
any, first).
Each release is a :class:`~hemafed.federation.api.DPRequest` with the noise multiplier that
costs its share of rho; sites add the noise and charge their ledgers before release.

**Where the noise is added: distributed shares, not hub-side.** Adding it at the hub after the
secure sum would show the hub the exact tables, so each site adds a Gaussian share before masking.
With ``SecureFederation``'s default ``noise_shares="all"`` every one of the ``n`` sites adds
``sigma**2 / n``: the released tables carry exactly the noise of the central mechanism, so a
federated fit is the central mechanism (same law; with one noise stream, the same releases and
tree, see the tests), which ``benchmarks/bench_synth.py`` measures through the real runtime.

>>> # mst = FederatedMST(1.0, 1e-6, ["age", "sex", "hb", "os_time", "os_status"]).fit(fed)
>>> # synthetic = mst.sample(10_000, seed=0)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from hemafed.errors import BudgetExhausted, InvalidInput
from hemafed.federation.api import AggregateResult, DPRequest, Federation
from hemafed.synth import accounting
from hemafed.synth.domain import SynthDomain
from hemafed.synth.queries import QUERY, clique_key, query_params

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Measurement:
    """One noisy marginal the hub received.

    ``noise_std`` is the Gaussian noise standard deviation of each cell; ``noise_multiplier``
    that of the release it was part of (std / L2 sensitivity of the whole release), and ``rho``
    the release's zCDP cost (shared by all marginals of a release). ``coarse`` marks a
    selection-phase table measured on coarsened columns.
    """

    clique: tuple[str, ...]
    values: np.ndarray
    noise_std: float
    noise_multiplier: float
    rho: float
    phase: str
    coarse: bool = False

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.rho < 0:
            raise ValueError(f"measurement {self.clique}: negative noise_std or rho")

    def to_dict(self, with_values: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"clique": list(self.clique), "phase": self.phase,
                               "noise_std": self.noise_std,
                               "noise_multiplier": self.noise_multiplier, "rho": self.rho,
                               "coarse": self.coarse, "cells": int(self.values.size)}
        if with_values:
            out["values"] = self.values.tolist()
        return out


def coarsening(domain: SynthDomain, levels: int) -> dict[str, list[int]]:
    """Public grouping of each column's levels into at most ``levels`` contiguous groups + NA."""
    if levels < 2:
        raise InvalidInput(f"selection_levels must be >= 2, got {levels}")
    out: dict[str, list[int]] = {}
    for spec in domain.columns:
        k = spec.size - 1
        if k <= levels:
            continue
        groups = [int(i * levels // k) for i in range(k)] + [levels]
        out[spec.name] = groups
    return out


def maximum_spanning_tree(names: Sequence[str],
                          scores: Mapping[tuple[str, str], float]) -> list[tuple[str, str]]:
    """Kruskal's maximum spanning tree (ties broken by the order of ``scores``)."""
    parent = {n: n for n in names}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges: list[tuple[str, str]] = []
    order = sorted(scores, key=lambda e: -scores[e])
    for a, b in order:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
            edges.append((a, b))
    return edges


def _pair_score(table: np.ndarray, row: np.ndarray, col: np.ndarray, noise_std: float) -> float:
    """Debiased squared distance between a noisy pair table and the independence fit."""
    total = max(1.0, float(np.clip(row, 0, None).sum()))
    p_row = np.clip(row, 0, None) / total
    p_col = np.clip(col, 0, None) / max(1.0, float(np.clip(col, 0, None).sum()))
    expected = total * np.outer(p_row, p_col)
    return float(np.sum((table - expected) ** 2) - table.size * noise_std**2)


def _coarse_one_way(values: np.ndarray, groups: Sequence[int] | None) -> np.ndarray:
    if groups is None:
        return values
    return np.bincount(np.asarray(groups), weights=values, minlength=max(groups) + 1)


def _orient_tree(names: Sequence[str],
                 edges: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """Root and (parent, child) pairs in breadth-first order of a spanning tree."""
    nbrs: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        if a not in nbrs or b not in nbrs or a == b:
            raise InvalidInput(f"tree edge ({a!r}, {b!r}) must join two different columns of "
                               f"the domain {list(names)}")
        nbrs[a].append(b)
        nbrs[b].append(a)
    root = names[0]
    seen, order, queue = {root}, [], [root]
    while queue:
        node = queue.pop(0)
        for nb in nbrs[node]:
            if nb not in seen:
                seen.add(nb)
                order.append((node, nb))
                queue.append(nb)
    if len(seen) != len(names):
        raise InvalidInput("the selected cliques do not connect every column")
    return root, order


def draw_categorical(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per row of ``weights`` (unnormalised, negatives treated as 0), by inverse CDF."""
    cond = np.clip(weights, 0, None) + 1e-12
    cdf = np.cumsum(cond / cond.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((cdf.shape[0], 1))
    return np.minimum((u > cdf).sum(axis=1), cdf.shape[1] - 1)


def sample_tree(domain: SynthDomain, root: str, directed: Sequence[tuple[str, str]],
                tables: Mapping[str, np.ndarray], n: int, rng: np.random.Generator,
                anchor: str | None = None) -> np.ndarray:
    """Ancestral sampling of encoded patients from the root's and the edges' joint tables.

    Without ``anchor``, ``tables`` holds the root's one-way probabilities (key ``root``) and
    each edge's joint probabilities (key ``"parent|child"``, shape parent x child). With an
    ``anchor`` column joined to every other one, the anchor is drawn first and every table has
    it as its first axis (keys ``anchor``, ``"anchor|root"``, ``"anchor|parent|child"``).
    """
    codes = np.zeros((n, len(domain.columns)), dtype=np.int64)
    names = domain.names

    def draw(weights: np.ndarray) -> np.ndarray:
        return draw_categorical(weights, rng)

    if anchor is None:
        given = np.zeros(n, dtype=np.int64)
        root_table = tables[root][None, :]
    else:
        p_anchor = np.broadcast_to(tables[anchor], (n, tables[anchor].size))
        given = draw(p_anchor)
        codes[:, names.index(anchor)] = given
        root_table = tables[clique_key((anchor, root))]
    codes[:, names.index(root)] = draw(root_table[given])
    for parent, child in directed:
        if anchor is None:
            joint = tables[clique_key((parent, child))][None]
        else:
            joint = tables[clique_key((anchor, parent, child))]
        codes[:, names.index(child)] = draw(joint[given, codes[:, names.index(parent)]])
    return codes


def _mbi() -> Any:
    """Private-PGM with float64 JAX (its estimators stall in float32 on large totals)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    # Many small compiled programs: a persistent cache only slows them down (mbi's advice).
    jax.config.update("jax_enable_compilation_cache", False)
    import mbi

    return mbi


class FederatedMST:
    """MST synthesis over a federation: ``FederatedMST(eps, delta, columns).fit(fed).sample(n)``.

    Parameters
    ----------
    epsilon, delta:
        The analyst's total (epsilon, delta) for the whole fit; ``epsilon=None`` turns DP off
        (exact sums; only for tests and pooled references, sites' policies normally refuse it).
    columns:
        Canonical columns to synthesise (ignored when ``domain`` is given).
    domain:
        The public discretisation; default :meth:`SynthDomain.for_columns`.
    budget_split:
        Fractions of rho for one-way, selection and two-way measurements (sum to 1).
    selection_levels:
        Coarsening of each column for the selection tables.
    iters:
        Mirror-descent iterations of Private-PGM.
    anchor:
        Survival-aware option: a column (e.g. ``os_status``) joined to every other column. The
        tree is then selected over the other columns and every other column's pair with the
        anchor is measured too, so each covariate's association with the outcome is kept
        directly (the model has treewidth 2; Private-PGM's junction tree has 3-way cliques).
    structure:
        A public spanning tree (pairs of columns) fixed in advance, e.g. from clinical knowledge
        or an earlier release; the selection phase is then skipped and its budget share goes
        to the one-way and two-way measurements in proportion.
    """

    def __init__(self, epsilon: float | None, delta: float = 1e-6,
                 columns: Sequence[str] | None = None, domain: SynthDomain | None = None, *,
                 budget_split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
                 selection_levels: int = 4, iters: int = 1000,
                 max_patients: int = 1_000_000,
                 structure: Sequence[tuple[str, str]] | None = None,
                 anchor: str | None = None) -> None:
        if domain is None:
            if not columns:
                raise InvalidInput("FederatedMST needs columns or a domain")
            domain = SynthDomain.for_columns(columns)
        if len(domain.columns) < 2:
            raise InvalidInput("FederatedMST needs at least two columns")
        if epsilon is not None and not epsilon > 0:
            raise InvalidInput(f"epsilon must be > 0 (or None for no DP), got {epsilon}")
        if not 0 < delta < 1:
            raise InvalidInput(f"delta must be in (0, 1), got {delta}")
        if len(budget_split) != 3 or min(budget_split) <= 0 or abs(sum(budget_split) - 1) > 1e-9:
            raise InvalidInput(f"budget_split must be 3 positive fractions summing to 1, "
                               f"got {budget_split}")
        self.epsilon = epsilon
        self.delta = delta
        self.domain = domain
        self.budget_split = tuple(float(f) for f in budget_split)
        self.selection_levels = int(selection_levels)
        self.iters = int(iters)
        self.max_patients = int(max_patients)
        self.rho: float | None = accounting.rho_for(epsilon, delta) if epsilon else None
        self.measurements: list[Measurement] = []
        self.selection_scores: dict[tuple[str, str], float] = {}
        self.tree: list[tuple[str, str]] = []
        self.anchor = anchor
        if anchor is not None:
            domain[anchor]
            if len(domain.columns) < 3:
                raise InvalidInput("an anchor column needs at least two other columns")
        self.structure: list[tuple[str, str]] | None = None
        if structure is not None:
            self.structure = [(str(a), str(b)) for a, b in structure]
            tree_names = self._tree_names
            _orient_tree(tree_names, self.structure)
            if len(self.structure) != len(tree_names) - 1:
                raise InvalidInput(f"structure must be a spanning tree: {len(tree_names) - 1} "
                                   f"pairs over the columns {list(tree_names)}, got "
                                   f"{len(self.structure)}")
        self.total_estimate: float | None = None
        self._root: str | None = None
        self._directed: list[tuple[str, str]] = []
        self._tables: dict[str, np.ndarray] = {}

    @property
    def _tree_names(self) -> tuple[str, ...]:
        return tuple(c for c in self.domain.names if c != self.anchor)

    def _two_way_cliques(self) -> list[tuple[str, ...]]:
        cliques: list[tuple[str, ...]] = list(self.tree)
        if self.anchor is not None:
            cliques += [(self.anchor, c) for c in self._tree_names]
        return cliques

    # -- measurement ------------------------------------------------------------------------

    def _release(self, federation: Federation, cliques: Sequence[Sequence[str]],
                 rho: float | None, phase: str, study: str,
                 coarsen: Mapping[str, Sequence[int]] | None = None) -> list[Measurement]:
        params = query_params(self.domain, cliques, coarsen, self.max_patients)
        dp = None
        nm = 0.0
        if rho is not None:
            nm = accounting.noise_multiplier_for_rho(rho)
            dp = DPRequest(delta=self.delta, noise_multiplier=nm)
        try:
            result: AggregateResult = federation.secure_sum(QUERY, params, study=study, dp=dp)
        except BudgetExhausted as exc:
            log.warning("MST stopped at the %s release: %s refused", phase, exc.who)
            raise BudgetExhausted(exc.site, f"{exc.reason}; the MST {phase} release was not "
                                            "made and the fit stopped", who=exc.who) from exc
        out = []
        for clique in cliques:
            key = clique_key(clique)
            std = float(result.noise_std.get(key, 0.0))
            if rho is not None and std <= 0:
                raise InvalidInput(f"the federation returned {key!r} without DP noise although "
                                   "noise was requested")
            out.append(Measurement(tuple(clique), np.asarray(result[key], dtype=float), std, nm,
                                   rho or 0.0, phase, coarse=bool(coarsen)))
        log.info("measured %d %s marginal(s), noise multiplier %.3g", len(out), phase, nm)
        return out

    def fit(self, federation: Federation, study: str = "default") -> FederatedMST:
        """Measure, select, measure, estimate. Returns self."""
        names = self.domain.names
        split = self.budget_split
        if self.structure is not None:
            split = (split[0] / (split[0] + split[2]), 0.0, split[2] / (split[0] + split[2]))
        part = [self.rho * f if self.rho else None for f in split]
        one_way = self._release(federation, [(c,) for c in names], part[0], "one_way", study)
        if self.structure is not None:
            self.selection_scores = {}
            self.tree = list(self.structure)
            two_way = self._release(federation, self._two_way_cliques(), part[2], "two_way",
                                    study)
            self.measurements = one_way + two_way
            self._estimate(self.measurements)
            return self
        coarse = coarsening(self.domain, self.selection_levels)
        pairs = list(combinations(self._tree_names, 2))
        selection = self._release(federation, pairs, part[1], "select", study, coarse)
        one = {m.clique[0]: m.values for m in one_way}
        self.selection_scores = {}
        for m in selection:
            a, b = m.clique
            row = _coarse_one_way(one[a], coarse.get(a))
            col = _coarse_one_way(one[b], coarse.get(b))
            table = m.values.reshape(row.size, col.size)
            self.selection_scores[(a, b)] = _pair_score(table, row, col, m.noise_std)
        self.tree = maximum_spanning_tree(self._tree_names, self.selection_scores)
        two_way = self._release(federation, self._two_way_cliques(), part[2], "two_way", study)
        self.measurements = one_way + selection + two_way
        self._estimate(one_way + two_way)
        return self

    # -- estimation and sampling ------------------------------------------------------------

    def _estimate(self, measurements: Sequence[Measurement]) -> None:
        mbi = _mbi()
        domain = mbi.Domain(self.domain.names, self.domain.sizes)
        # Without DP the exact tables are weighted equally (any positive stddev does).
        linear = [mbi.LinearMeasurement(m.values, m.clique, stddev=m.noise_std or 1.0)
                  for m in measurements]
        model = mbi.estimation.MirrorDescent().estimate(domain, linear, iters=self.iters)
        self.total_estimate = float(model.total)
        root, directed = _orient_tree(self._tree_names, self.tree)
        a = () if self.anchor is None else (self.anchor,)
        tables = {(self.anchor or root): np.asarray(model.project(a or (root,)).datavector(),
                                                    dtype=float)}
        if a:
            tables[clique_key((*a, root))] = np.asarray(
                model.project((*a, root)).datavector(flatten=False), dtype=float)
        for parent, child in directed:
            joint = model.project((*a, parent, child)).datavector(flatten=False)
            tables[clique_key((*a, parent, child))] = np.asarray(joint, dtype=float)
        total = tables[self.anchor or root].sum()
        self._tables = {k: v / total for k, v in tables.items()}
        self._root, self._directed = root, directed

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        """``n`` synthetic patients (canonical column names), deterministic by ``seed``."""
        if self._root is None:
            raise InvalidInput("FederatedMST.sample: call fit(federation) first")
        if n < 1:
            raise InvalidInput(f"n must be >= 1, got {n}")
        rng = np.random.default_rng(seed)
        codes = sample_tree(self.domain, self._root, self._directed, self._tables, n, rng,
                            self.anchor)
        return self.domain.decode(codes, seed=int(rng.integers(2**31)))

    # -- reporting ----------------------------------------------------------------------------

    @property
    def noise_multipliers(self) -> dict[str, float]:
        """Noise multiplier of each measured clique's release (0 without DP)."""
        return {clique_key(m.clique) + (" (coarse)" if m.coarse else ""): m.noise_multiplier
                for m in self.measurements}

    @property
    def rho_spent(self) -> float:
        """Total zCDP cost of the releases (sum over releases, not over marginals)."""
        per_release = {(m.phase, m.rho) for m in self.measurements}
        return float(sum(r for _, r in per_release))

    def privacy(self) -> dict[str, Any]:
        """The budget: target and spent rho, epsilon at delta, and each release."""
        releases = []
        for phase in ("one_way", "select", "two_way"):
            ms = [m for m in self.measurements if m.phase == phase]
            if ms:
                releases.append({"phase": phase, "marginals": len(ms),
                                 "noise_multiplier": ms[0].noise_multiplier, "rho": ms[0].rho,
                                 "cell_noise_std": ms[0].noise_std})
        spent = self.rho_spent
        return {"epsilon": self.epsilon, "delta": self.delta, "rho": self.rho,
                "rho_spent": spent,
                "epsilon_spent": accounting.epsilon_for(spent, self.delta) if spent else 0.0,
                "releases": releases}

    def to_json(self) -> str:
        """The fitted generator: public domain, tree, privacy and DP-released model tables."""
        if self._root is None:
            raise InvalidInput("FederatedMST.to_json: call fit(federation) first")
        return json.dumps({
            "method": "MST", "domain": self.domain.to_params(), "privacy": self.privacy(),
            "tree": [list(e) for e in self.tree], "root": self._root,
            "directed": [list(e) for e in self._directed], "anchor": self.anchor,
            "selection_scores": {clique_key(k): v for k, v in self.selection_scores.items()},
            "measurements": [m.to_dict() for m in self.measurements],
            "total_estimate": self.total_estimate,
            "tables": {k: v.tolist() for k, v in self._tables.items()},
        })

    @classmethod
    def from_json(cls, text: str) -> FederatedMST:
        """A fitted generator back from :meth:`to_json` (can sample, not refit)."""
        d = json.loads(text)
        if d.get("method") != "MST":
            raise InvalidInput("not a FederatedMST JSON document (method != 'MST')")
        priv = d["privacy"]
        mst = cls(priv["epsilon"], priv["delta"], domain=SynthDomain.from_params(d["domain"]),
                  anchor=d.get("anchor"))
        mst.tree = [(a, b) for a, b in d["tree"]]
        mst._root = d["root"]
        mst._directed = [(a, b) for a, b in d["directed"]]
        mst._tables = {k: np.asarray(v, dtype=float) for k, v in d["tables"].items()}
        mst.total_estimate = d.get("total_estimate")
        mst.measurements = [Measurement(tuple(m["clique"]), np.zeros(m["cells"]),
                                        m["noise_std"], m["noise_multiplier"], m["rho"],
                                        m["phase"], m["coarse"]) for m in d["measurements"]]
        return mst

