"""Site queries of the neural survival model: one FedAvg / FedProx round
(``neural_train_round``) and one DP-SGD clipped gradient sum (``neural_dp_gradient``).

**FedAvg** (McMahan et al. 2017): every site trains ``local_epochs`` epochs from the broadcast
weights (Adam or SGD, fresh optimiser per round) and returns ``n_k * (w_k - w)`` and ``n_k`` as
one secure sum. **FedProx** (Li et al. 2020) adds ``mu / 2 * ||w - w_global||^2`` to the local
loss. Weights are projected onto the public box ``[-weight_bound, weight_bound]`` after every
local step, so each delta is bounded by ``2 * weight_bound`` by construction (the declared
secure-sum bounds; nothing is clipped afterwards). The same query also returns the site's loss at
the broadcast weights (capped at :data:`LOSS_CAP` by definition) and a histogram of events /
comparable patients per public time and risk bin, for the hub's per-round Harrell's C.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, register
from hemafed.learn.neural_dp import clipped_gradient_sum
from hemafed.learn.survival_net import (
    LOSSES,
    OPTIMIZERS,
    NetConfig,
    NeuralRows,
    cached_rows,
    decode_weights,
    get_vector,
    import_torch,
    interval_index,
    seeded,
    set_vector,
    site_loss,
)

LOSS_CAP = 100.0
"""Per-site training loss reported for the history is ``min(loss, LOSS_CAP)`` (a public cap)."""
_MAX_LEVELS = 2.0**52


# --- parameters -------------------------------------------------------------------------------

MAX_RISK_BINS = 10_000
"""Most risk bins of the per-round concordance histograms."""

SEED_LIMIT = 2**31
"""``seed`` is in ``-SEED_LIMIT..SEED_LIMIT - 1``: the per-round torch seed
``seed * 1_000_003 + round`` then stays within torch's 64-bit seed range."""


def _net(params: Params) -> NetConfig:
    try:
        return NetConfig.from_params(params.get("net"))  # type: ignore[arg-type]
    except InvalidInput as exc:
        raise InvalidInput(f"parameter 'net' is not a network description: {exc}") from None
    except (AttributeError, TypeError):
        raise InvalidInput("parameter 'net' must be a network description (a mapping)") from None


@dataclass(frozen=True, kw_only=True)
class NetworkParams(QueryParams):
    """What both neural queries carry: the network, the broadcast weights (base64 float32 of
    :func:`~hemafed.learn.survival_net.encode_weights`, checked against the network's size),
    the outcome columns, the seed and round (the site's torch seed) and ``max_patients``."""

    net: NetConfig
    weights: str
    duration_col: str
    event_col: str
    seed: int = 0
    round: int = 0
    max_patients: int = checks.MAX_PATIENTS

    @classmethod
    def _common(cls, params: Params) -> dict[str, Any]:
        """The shared fields, checked (unknown keys refused first)."""
        cls.known(params)
        net = _net(params)
        weights = params.get("weights")
        if not isinstance(weights, str):
            raise InvalidInput("parameter 'weights' must be base64 float32 text")
        decode_weights(weights, net.size)
        return {"net": net, "weights": weights,
                "duration_col": checks.column(params, "duration_col"),
                "event_col": checks.column(params, "event_col"),
                "seed": checks.positive_int(params, "seed", 0, SEED_LIMIT - 1, low=-SEED_LIMIT),
                "round": checks.positive_int(params, "round", 0, low=0),
                "max_patients": checks.max_patients(params)}

    @property
    def torch_seed(self) -> int:
        """The site's torch seed of this round (one stream per seed and round)."""
        return self.seed * 1_000_003 + self.round

    def weight_vector(self) -> np.ndarray:
        return decode_weights(self.weights, self.net.size)

    def rows(self, cohort: Cohort) -> NeuralRows:
        return cached_rows(cohort, self.net.design, self.duration_col, self.event_col)

    def to_mapping(self) -> dict[str, Any]:
        return {**super().to_mapping(), "net": self.net.to_params()}


@dataclass(frozen=True, kw_only=True)
class TrainParams(NetworkParams):
    """``neural_train_round``: the local training settings (loss, optimiser, ``lr``, FedProx
    ``mu``, epochs, batch size, the weight box) and the public grid and risk bins of the
    concordance histograms."""

    QUERY = "neural_train_round"
    loss: str
    optimizer: str
    lr: float
    weight_bound: float
    local_epochs: int
    eval_grid: tuple[float, ...]
    mu: float = 0.0
    batch_size: int | None = None
    risk_bins: int = 200
    risk_bound: float = 8.0

    @classmethod
    def from_mapping(cls, params: Params) -> TrainParams:
        common = cls._common(params)
        batch = params.get("batch_size")
        return cls(**common, loss=checks.choice(params, "loss", LOSSES),
                   optimizer=checks.choice(params, "optimizer", OPTIMIZERS),
                   lr=checks.number(params, "lr", low=0.0, open_low=True),
                   weight_bound=checks.number(params, "weight_bound", low=0.0, open_low=True),
                   local_epochs=checks.positive_int(params, "local_epochs"),
                   eval_grid=checks.numbers(params, "eval_grid", increasing=True),
                   mu=checks.number(params, "mu", 0.0, low=0.0),
                   batch_size=None if batch is None
                   else checks.positive_int(params, "batch_size", low=2),
                   risk_bins=checks.positive_int(params, "risk_bins", 200, MAX_RISK_BINS, low=2),
                   risk_bound=checks.number(params, "risk_bound", 8.0, low=0.0, open_low=True))

    def risk_edges(self) -> np.ndarray:
        """The public risk-bin edges of the concordance histograms."""
        return np.linspace(-self.risk_bound, self.risk_bound, self.risk_bins + 1)


@dataclass(frozen=True, kw_only=True)
class DPGradientParams(NetworkParams):
    """``neural_dp_gradient``: the per-patient clip ``max_grad_norm`` (the sum's sensitivity)."""

    QUERY = "neural_dp_gradient"
    max_grad_norm: float

    @classmethod
    def from_mapping(cls, params: Params) -> DPGradientParams:
        common = cls._common(params)
        return cls(**common, max_grad_norm=checks.number(params, "max_grad_norm", low=0.0,
                                                         open_low=True))


# --- concordance histogram (shared by the training query) ------------------------------------

def concordance_histograms(risk: np.ndarray, time: np.ndarray, event: np.ndarray,
                           grid: Sequence[float], edges: np.ndarray) -> dict[str, np.ndarray]:
    """Events and comparable patients per public time (times moved up to the grid) and risk bin.

    Comparable to an event at ``t_j``: exit after ``t_j`` or censored at ``t_j`` (lifelines'
    rule); events past the grid count as censored. Risks outside the edges fall in the end bins.
    """
    m, nb = len(grid), edges.size - 1
    b = np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, nb - 1)
    k = interval_index(time, grid)
    ev = event & (k < m)
    later_count = np.minimum(np.where(ev, k, k + 1), m)
    acc = np.zeros((m + 1, nb))
    np.add.at(acc, (later_count, b), 1.0)
    events = np.zeros((m, nb))
    np.add.at(events, (k[ev], b[ev]), 1.0)
    later = np.cumsum(acc[::-1], axis=0)[::-1][1:]
    return {"events": events, "later": later}


# --- site queries -----------------------------------------------------------------------------

def _resolution(span: float, wanted: float) -> float:
    return max(wanted, span / _MAX_LEVELS)


def local_train(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, params: TrainParams) -> np.ndarray:
    """One site's local training from ``w``: the new weight vector (projected to the box)."""
    torch = import_torch()
    seed = params.torch_seed
    bound, mu, loss_kind = params.weight_bound, params.mu, params.loss
    grid = cfg.time_grid
    with seeded(seed):
        net = cfg.build()
        set_vector(net, w)
        net.train()
        w_global = [p.detach().clone() for p in net.parameters()]
        opt_cls = torch.optim.Adam if params.optimizer == "adam" else torch.optim.SGD
        opt = opt_cls(net.parameters(), lr=params.lr)
        gen = torch.Generator().manual_seed(seed)
        n = rows.time.size
        batch = params.batch_size or n
        for _ in range(params.local_epochs):
            order = torch.randperm(n, generator=gen).numpy() if batch < n else np.arange(n)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                opt.zero_grad()
                loss = site_loss(net, rows, loss_kind, grid, idx)
                if mu > 0:
                    prox = sum(((p - p0) ** 2).sum() for p, p0 in zip(net.parameters(), w_global,
                                                                        strict=True))
                    loss = loss + 0.5 * mu * prox
                loss.backward()
                opt.step()
                with torch.no_grad():
                    for p in net.parameters():
                        p.clamp_(-bound, bound)
        return get_vector(net)


def _eval_at(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, loss_kind: str
             ) -> tuple[float, np.ndarray]:
    """The site's loss (capped) and risk scores at ``w`` (eval mode, no dropout)."""
    torch = import_torch()
    net = cfg.build()
    set_vector(net, w)
    net.eval()
    with seeded(0), torch.no_grad():
        loss = float(site_loss(net, rows, loss_kind, cfg.time_grid))
        risk = net(torch.from_numpy(rows.x))[:, 0].numpy().astype(float)
    if not math.isfinite(loss):
        loss = LOSS_CAP
    return min(max(loss, 0.0), LOSS_CAP), risk


def _train_compute(cohort: Cohort, params: TrainParams) -> dict[str, np.ndarray]:
    cfg, rows, w = params.net, params.rows(cohort), params.weight_vector()
    n = float(rows.time.size)
    loss, risk = _eval_at(cfg, w, rows, params.loss)
    hist = concordance_histograms(risk, rows.time, rows.event, params.eval_grid,
                                  params.risk_edges())
    w_new = local_train(cfg, w, rows, params)
    delta = n * (w_new.astype(np.float64) - w.astype(np.float64))
    return {"delta": delta, "n": np.array([n]), "loss": np.array([n * loss]), **hist}


def _train_declare(params: TrainParams) -> dict[str, Statistic]:
    size, mp = params.net.size, params.max_patients
    span = 2.0 * params.weight_bound * mp
    m, nb = len(params.eval_grid), params.risk_bins
    # One patient can change the whole local training, so the only per-patient sensitivity of
    # the delta and the loss is their full range: this query is not for DP releases (the DP
    # path is neural_dp_gradient, whose clipped sum has sensitivity max_grad_norm).
    return {
        "delta": Statistic((size,), -span, span, _resolution(2 * span, 1e-9),
                           sensitivity=2 * span * math.sqrt(size)),
        "n": Statistic((1,), 0, mp, is_count=True),
        "loss": Statistic((1,), 0, LOSS_CAP * mp, _resolution(LOSS_CAP * mp, 1e-9),
                          sensitivity=LOSS_CAP * mp),
        "events": Statistic((m, nb), 0, mp, is_count=True),
        "later": Statistic((m, nb), 0, mp, sensitivity=math.sqrt(m), is_count=True),
    }


NEURAL_TRAIN_ROUND = register(Query(
    "neural_train_round", "1", compute=_train_compute, declare=_train_declare,
    params_type=TrainParams,
    description="FedAvg/FedProx local training of a neural survival model: n*(w_k - w), n, "
                "loss and concordance histograms at the broadcast weights"))


def _dp_compute(cohort: Cohort, params: DPGradientParams) -> dict[str, np.ndarray]:
    rows = params.rows(cohort)
    g = clipped_gradient_sum(params.net, params.weight_vector(), rows, params.max_grad_norm,
                             params.torch_seed)
    return {"grad": g, "n": np.array([float(rows.time.size)])}


def _dp_declare(params: DPGradientParams) -> dict[str, Statistic]:
    mp, clip = params.max_patients, params.max_grad_norm
    return {"grad": Statistic((params.net.size,), -clip * mp, clip * mp,
                              _resolution(2 * clip * mp, 1e-9), sensitivity=clip),
            "n": Statistic((1,), 0, mp, sensitivity=1.0, is_count=True)}


NEURAL_DP_GRADIENT = register(Query(
    "neural_dp_gradient", "1", compute=_dp_compute, declare=_dp_declare,
    params_type=DPGradientParams,
    description="sum of per-patient clipped gradients of the discrete-time neural survival loss "
                "(DP-SGD; noise added and charged by the sites)"))
