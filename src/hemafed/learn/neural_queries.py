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

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.checks import max_patients
from hemafed.federation.queries import Params, Query, Statistic, register
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


# --- concordance histogram (shared by the training query) ------------------------------------

def eval_edges(params: Params) -> np.ndarray:
    r = float(params.get("risk_bound", 8.0))
    return np.linspace(-r, r, int(params.get("risk_bins", 200)) + 1)


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

def _max_patients(params: Params) -> int:
    return max_patients(params)


def _resolution(span: float, wanted: float) -> float:
    return max(wanted, span / _MAX_LEVELS)


def _check_common(params: Params) -> NetConfig:
    for key in ("duration_col", "event_col"):
        if not isinstance(params.get(key), str) or not params[key]:
            raise InvalidInput(f"parameter {key!r} must name a cohort column")
    cfg = NetConfig.from_params(params.get("net") or {})
    decode_weights(str(params.get("weights", "")), cfg.size)
    max_patients(params)
    return cfg


def _check_train(params: Params) -> None:
    _check_common(params)
    if params.get("loss") not in LOSSES:
        raise InvalidInput(f"parameter 'loss' must be one of {LOSSES}, got {params.get('loss')!r}")
    if params.get("optimizer") not in OPTIMIZERS:
        raise InvalidInput(f"parameter 'optimizer' must be one of {OPTIMIZERS}")
    for key in ("lr", "weight_bound"):
        v = params.get(key)
        if not isinstance(v, int | float) or not (math.isfinite(v) and v > 0):
            raise InvalidInput(f"parameter {key!r} must be a number > 0, got {v!r}")
    mu = params.get("mu", 0.0)
    if not isinstance(mu, int | float) or not (math.isfinite(mu) and mu >= 0):
        raise InvalidInput(f"parameter 'mu' must be a number >= 0, got {mu!r}")
    epochs, batch = params.get("local_epochs"), params.get("batch_size")
    if not isinstance(epochs, int) or epochs < 1:
        raise InvalidInput(f"parameter 'local_epochs' must be an int >= 1, got {epochs!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 2):
        raise InvalidInput(f"parameter 'batch_size' must be an int >= 2 or None, got {batch!r}")
    _check_eval(params)


def _check_eval(params: Params) -> None:
    grid = params.get("eval_grid")
    g = np.asarray(grid if isinstance(grid, list | tuple) else [], dtype=float)
    if g.size < 1 or np.any(np.diff(g) <= 0):
        raise InvalidInput("parameter 'eval_grid' must be a non-empty increasing list of times")
    bins, bound = params.get("risk_bins", 200), params.get("risk_bound", 8.0)
    if not isinstance(bins, int) or not 2 <= bins <= 10_000:
        raise InvalidInput("parameter 'risk_bins' must be an int in [2, 10000]")
    if not isinstance(bound, int | float) or not bound > 0:
        raise InvalidInput("parameter 'risk_bound' must be > 0")


def local_train(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, params: Params) -> np.ndarray:
    """One site's local training from ``w``: the new weight vector (projected to the box)."""
    torch = import_torch()
    seed = int(params.get("seed", 0)) * 1_000_003 + int(params.get("round", 0))
    bound = float(params["weight_bound"])
    mu = float(params.get("mu", 0.0))
    loss_kind = str(params["loss"])
    grid = cfg.time_grid
    with seeded(seed):
        net = cfg.build()
        set_vector(net, w)
        net.train()
        w_global = [p.detach().clone() for p in net.parameters()]
        opt_cls = torch.optim.Adam if params["optimizer"] == "adam" else torch.optim.SGD
        opt = opt_cls(net.parameters(), lr=float(params["lr"]))
        gen = torch.Generator().manual_seed(seed)
        n = rows.time.size
        batch = params.get("batch_size") or n
        for _ in range(int(params["local_epochs"])):
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


def _eval_at(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, params: Params
             ) -> tuple[float, np.ndarray]:
    """The site's loss (capped) and risk scores at ``w`` (eval mode, no dropout)."""
    torch = import_torch()
    net = cfg.build()
    set_vector(net, w)
    net.eval()
    with seeded(0), torch.no_grad():
        loss = float(site_loss(net, rows, str(params.get("loss", "discrete")), cfg.time_grid))
        risk = net(torch.from_numpy(rows.x))[:, 0].numpy().astype(float)
    if not math.isfinite(loss):
        loss = LOSS_CAP
    return min(max(loss, 0.0), LOSS_CAP), risk


def _train_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    cfg = NetConfig.from_params(params["net"])
    rows = cached_rows(cohort, params)
    w = decode_weights(str(params["weights"]), cfg.size)
    n = float(rows.time.size)
    loss, risk = _eval_at(cfg, w, rows, params)
    hist = concordance_histograms(risk, rows.time, rows.event, params["eval_grid"],
                                  eval_edges(params))
    w_new = local_train(cfg, w, rows, params)
    delta = n * (w_new.astype(np.float64) - w.astype(np.float64))
    return {"delta": delta, "n": np.array([n]), "loss": np.array([n * loss]), **hist}


def _train_declare(params: Params) -> dict[str, Statistic]:
    cfg = NetConfig.from_params(params["net"])
    mp = _max_patients(params)
    span = 2.0 * float(params.get("weight_bound", 4.0)) * mp
    m, nb = len(params.get("eval_grid", [])), int(params.get("risk_bins", 200))
    # One patient can change the whole local training, so the only per-patient sensitivity of
    # the delta and the loss is their full range: this query is not for DP releases (the DP
    # path is neural_dp_gradient, whose clipped sum has sensitivity max_grad_norm).
    return {
        "delta": Statistic((cfg.size,), -span, span, _resolution(2 * span, 1e-9),
                           sensitivity=2 * span * math.sqrt(cfg.size)),
        "n": Statistic((1,), 0, mp, is_count=True),
        "loss": Statistic((1,), 0, LOSS_CAP * mp, _resolution(LOSS_CAP * mp, 1e-9),
                          sensitivity=LOSS_CAP * mp),
        "events": Statistic((m, nb), 0, mp, is_count=True),
        "later": Statistic((m, nb), 0, mp, sensitivity=math.sqrt(m), is_count=True),
    }


NEURAL_TRAIN_ROUND = register(Query(
    "neural_train_round", "1", compute=_train_compute, declare=_train_declare,
    check_params=_check_train,
    description="FedAvg/FedProx local training of a neural survival model: n*(w_k - w), n, "
                "loss and concordance histograms at the broadcast weights"))



def _check_dp(params: Params) -> None:
    _check_common(params)
    clip = params.get("max_grad_norm")
    if not isinstance(clip, int | float) or not (math.isfinite(clip) and clip > 0):
        raise InvalidInput(f"parameter 'max_grad_norm' must be a number > 0, got {clip!r}")


def _dp_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    cfg = NetConfig.from_params(params["net"])
    rows = cached_rows(cohort, params)
    w = decode_weights(str(params["weights"]), cfg.size)
    seed = int(params.get("seed", 0)) * 1_000_003 + int(params.get("round", 0))
    g = clipped_gradient_sum(cfg, w, rows, float(params["max_grad_norm"]), seed)
    return {"grad": g, "n": np.array([float(rows.time.size)])}


def _dp_declare(params: Params) -> dict[str, Statistic]:
    cfg = NetConfig.from_params(params["net"])
    mp, clip = _max_patients(params), float(params.get("max_grad_norm", 1.0))
    return {"grad": Statistic((cfg.size,), -clip * mp, clip * mp,
                              _resolution(2 * clip * mp, 1e-9), sensitivity=clip),
            "n": Statistic((1,), 0, mp, sensitivity=1.0, is_count=True)}


NEURAL_DP_GRADIENT = register(Query(
    "neural_dp_gradient", "1", compute=_dp_compute, declare=_dp_declare, check_params=_check_dp,
    description="sum of per-patient clipped gradients of the discrete-time neural survival loss "
                "(DP-SGD; noise added and charged by the sites)"))
