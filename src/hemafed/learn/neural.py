"""Federated neural survival models: a DeepSurv-style MLP trained by FedAvg / FedProx on secure
sums, optionally with DP-SGD whose noise is added and charged by the sites.

The network maps a patient's covariates (the public :class:`~hemafed.analytics.design.DesignSpec`,
each column scaled by its public bounds to [-1, 1]) to one log-risk score ``g(x)`` (an MLP with
ReLU and dropout). Two losses share that network:

* ``loss="cox"`` (DeepSurv): Breslow negative log partial likelihood over the site's *own* risk
  sets, divided by the site's events, i.e. the partial likelihood stratified by site (each
  hospital keeps its own baseline hazard; the standard federated DeepSurv choice, and no risk
  set ever spans two sites). With mini-batches the risk sets are those of the batch, as DeepSurv
  does; that is an approximation of the full-data partial likelihood.
* ``loss="discrete"``: a proportional discrete-time (logistic-hazard) model on a public time
  grid ``0 < tau_1 < ... < tau_m``: ``logit h_j(x) = alpha_j + g(x)`` with baseline ``alpha``
  learned jointly. A patient whose time falls in interval ``k`` survived intervals ``< k``; an
  event counts in interval ``k``, a censoring there contributes no interval ``k`` term; times past
  ``tau_m`` survive all. Its loss is a sum over patients, so per-patient gradients exist:
  required for DP-SGD.

**FedAvg** (McMahan et al. 2017): each round the hub broadcasts the weights (base64 of float32,
JSON-able), every site trains ``local_epochs`` epochs (Adam or SGD, fresh optimiser per round)
and returns ``n_k * (w_k - w)`` and ``n_k`` as one secure sum; the hub adds the summed deltas
divided by the summed ``n``. **FedProx** (Li et al. 2020) adds ``mu / 2 * ||w - w_global||^2`` to
the local loss. Weights are projected onto the public box ``[-weight_bound, weight_bound]`` after
every local step, so each delta is bounded by ``2 * weight_bound`` by construction (the
declared secure-sum bounds; nothing is clipped afterwards). The same query also returns the
site's loss at the broadcast weights (capped at :data:`LOSS_CAP` by definition) and a histogram of
events / comparable patients per public time and risk bin, so the hub records the training loss
and Harrell's C of every round (:func:`~hemafed.analytics.concordance.concordance_from_histograms`).

**DP-SGD** (Abadi et al. 2016) with ``dp=DPTraining(epsilon, delta, max_grad_norm)`` and the
discrete loss: every round each site computes per-patient gradients at the broadcast weights
with Opacus' ``GradSampleModule``, clips each to L2 norm ``max_grad_norm`` and returns their sum
and its row count. The hub asks for that sum with ``DPRequest(noise_multiplier=sigma)``, so the
*sites* add the Gaussian noise (secure-aggregation noise shares) and charge it to their own
privacy ledgers before anything leaves (:class:`hemafed.site.node.SiteNode`): one full-batch
noisy gradient step per round (DP-FedSGD), with Adam on the hub. ``sigma`` is calibrated with
Opacus' RDP accountant for ``rounds`` Gaussian steps at sampling rate 1, which is exactly what the
ledgers compose, and :attr:`FederatedDeepSurv.epsilon_` is read back from that accountant.
Why not Opacus' ``PrivacyEngine`` inside local training at every site: a site's query cannot
charge its ledger (only the site runtime can), and K sites each adding their own full noise
gives sqrt(K) times the noise of one release of the secure sum. The Cox loss is not a sum over
patients (each term involves the risk set), so DP training refuses it.

>>> # model = FederatedDeepSurv(rounds=20).fit(fed, "os_time", "os_status", "age + hb + gene:TP53")
>>> # model.predict_risk(cohort), model.history, model.to_json()
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.analytics.concordance import concordance_from_histograms
from hemafed.analytics.design import (
    DesignSpec,
    check_bounds,
    complete_case_mask,
    design_values,
    parse_formula,
)
from hemafed.analytics.fitter import FederatedFitter
from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation.api import DPRequest, Federation
from hemafed.federation.checks import MAX_PATIENTS, max_patients
from hemafed.federation.queries import Params, Query, Statistic, register

log = logging.getLogger(__name__)

LOSSES = ("cox", "discrete")
OPTIMIZERS = ("adam", "sgd")
LOSS_CAP = 100.0
"""Per-site training loss reported for the history is ``min(loss, LOSS_CAP)`` (a public cap)."""
DEFAULT_MAX_PATIENTS = MAX_PATIENTS
_MAX_LEVELS = 2.0**52


def _torch() -> Any:
    """Import torch lazily: it is the optional extra ``hemafed[torch]``."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidInput("neural models need PyTorch: pip install 'hemafed[torch]'") from exc
    return torch


# --- public configuration -------------------------------------------------------------------

@dataclass(frozen=True)
class DPTraining:
    """DP-SGD settings: the whole training is (epsilon, delta)-DP per patient at every site.

    ``epsilon=math.inf`` runs the same clipped full-batch training with no noise and no ledger
    charge: the non-private baseline of the same algorithm.
    """

    epsilon: float
    delta: float = 1e-6
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if math.isnan(self.epsilon) or not self.epsilon > 0:
            raise InvalidInput(f"DPTraining: epsilon must be > 0 (or inf), got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InvalidInput(f"DPTraining: delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise InvalidInput(f"DPTraining: max_grad_norm must be > 0, got {self.max_grad_norm}")


def default_time_grid(max_time: float = 10.0, step: float = 0.5) -> tuple[float, ...]:
    """Public interval ends ``step, 2 step, ..., max_time`` (years) of the discrete-time loss."""
    n = round(max_time / step)
    return tuple(round(step * (i + 1), 10) for i in range(n))


def encode_weights(w: np.ndarray) -> str:
    """Weights as base64 of little-endian float32 (compact, JSON-able, exact for torch float32)."""
    return base64.b64encode(np.asarray(w, dtype="<f4").tobytes()).decode("ascii")


def decode_weights(text: str, size: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_weights`; ``InvalidInput`` if malformed or of the wrong size."""
    try:
        w = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype="<f4")
    except (ValueError, AttributeError) as exc:
        raise InvalidInput(f"parameter 'weights' is not base64 float32: {exc}") from None
    if size is not None and w.size != size:
        raise InvalidInput(f"parameter 'weights' has {w.size} values, the network has {size}")
    if not np.all(np.isfinite(w)):
        raise InvalidInput("parameter 'weights' has non-finite values")
    return w.astype(np.float32)


# --- the network ------------------------------------------------------------------------------

def build_network(width: int, hidden: Sequence[int], dropout: float, n_intervals: int) -> Any:
    """The MLP ``g`` and the discrete baseline ``alpha`` (a bias-free Linear fed a constant 1, so
    Opacus computes its per-sample gradient like any layer). Returns a ``torch.nn.Module``."""
    torch = _torch()
    nn = torch.nn

    class SurvivalNet(nn.Module):  # type: ignore[misc, name-defined]
        """``forward(x) -> (n, 1 + m)``: column 0 is ``g(x)``, then ``alpha_j + g(x)``."""

        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            prev = width
            for h in hidden:
                layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
                prev = h
            layers.append(nn.Linear(prev, 1))
            self.mlp = nn.Sequential(*layers)
            self.baseline = nn.Linear(1, max(n_intervals, 1), bias=False)
            nn.init.zeros_(self.baseline.weight)

        def forward(self, x: Any) -> Any:
            g = self.mlp(x)
            alpha = self.baseline(torch.ones_like(g))
            return torch.cat([g, g + alpha], dim=1)

    return SurvivalNet()


def _set_vector(net: Any, w: np.ndarray) -> None:
    torch = _torch()
    torch.nn.utils.vector_to_parameters(torch.from_numpy(np.array(w, dtype=np.float32)),
                                        net.parameters())


def _get_vector(net: Any) -> np.ndarray:
    torch = _torch()
    return np.asarray(torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy(),
                      dtype=np.float32).copy()


@dataclass(frozen=True)
class NetConfig:
    """The public description of the network, travelling in every query's parameters."""

    design: DesignSpec
    hidden: tuple[int, ...]
    dropout: float
    time_grid: tuple[float, ...]

    def __post_init__(self) -> None:
        if not all(isinstance(h, int) and h >= 1 for h in self.hidden):
            raise InvalidInput(f"hidden must be positive layer widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise InvalidInput(f"dropout must be in [0, 1), got {self.dropout}")
        g = np.asarray(self.time_grid, dtype=float)
        if g.size < 1 or not np.all(np.isfinite(g)) or g[0] <= 0 or np.any(np.diff(g) <= 0):
            raise InvalidInput("time_grid must be strictly increasing positive times, "
                               f"got {list(self.time_grid)[:5]}...")

    def build(self) -> Any:
        return build_network(self.design.width, self.hidden, self.dropout, len(self.time_grid))

    @property
    def size(self) -> int:
        d, total = self.design.width, 0
        for h in self.hidden:
            total += d * h + h
            d = h
        return total + d + 1 + len(self.time_grid)

    def to_params(self) -> dict[str, Any]:
        return {"design": self.design.to_params(), "hidden": list(self.hidden),
                "dropout": float(self.dropout), "time_grid": [float(t) for t in self.time_grid]}

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> NetConfig:
        try:
            return cls(DesignSpec.from_params(p["design"]), tuple(int(h) for h in p["hidden"]),
                       float(p["dropout"]), tuple(float(t) for t in p["time_grid"]))
        except KeyError as exc:
            raise InvalidInput(f"network parameters miss {exc}") from None
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"network parameters are malformed: {exc}") from None


# --- the site's rows --------------------------------------------------------------------------

@dataclass(frozen=True)
class NeuralRows:
    """A site's complete-case rows: scaled covariates in [-1, 1], times and events."""

    x: np.ndarray
    time: np.ndarray
    event: np.ndarray


def _outcome_column(cohort: Cohort, col: str, kind: str) -> np.ndarray:
    return cohort.numeric_column(col, kind)

def neural_rows(cohort: Cohort, spec: DesignSpec, duration_col: str, event_col: str,
                allow_empty: bool = False) -> NeuralRows:
    """Complete cases of the design and outcome, covariates scaled by their public bounds."""
    time = _outcome_column(cohort, duration_col, "duration")
    event = _outcome_column(cohort, event_col, "event")
    values = design_values(cohort, spec)
    mask = complete_case_mask(cohort, spec, values=values) & ~np.isnan(time) & ~np.isnan(event)
    x, t, e = values[mask], time[mask], event[mask]
    if np.any((e != 0) & (e != 1)):
        raise InvalidInput(f"event column {event_col!r} must be 0/1")
    if t.size and t.min() < 0:
        raise InvalidInput(f"duration column {duration_col!r} has negative times")
    check_bounds(spec, x)
    if not allow_empty and t.size == 0:
        raise InvalidInput(f"this site has no complete-case rows for {duration_col!r}, "
                           f"{event_col!r} and the design {list(spec.names)}; check the columns "
                           f"or leave the site out of the study")
    return NeuralRows(((x - spec.center) / spec.half_width).astype(np.float32), t, e.astype(bool))


_ROWS_CACHE: dict[int, tuple[weakref.ref[Cohort], dict[str, NeuralRows]]] = {}


def _cached_rows(cohort: Cohort, params: Params) -> NeuralRows:
    """Rows of a site, built once per cohort object and public design (every round reuses them)."""
    cfg = NetConfig.from_params(params["net"])
    key = json.dumps([cfg.design.to_params(), params["duration_col"], params["event_col"]])
    entry = _ROWS_CACHE.get(id(cohort))
    if entry is None or entry[0]() is not cohort:
        ident = id(cohort)
        entry = (weakref.ref(cohort, lambda _r: _ROWS_CACHE.pop(ident, None)), {})
        _ROWS_CACHE[ident] = entry
    if key not in entry[1]:
        entry[1][key] = neural_rows(cohort, cfg.design, str(params["duration_col"]),
                                    str(params["event_col"]))
    return entry[1][key]


# --- losses (pure torch) ----------------------------------------------------------------------

def interval_index(time: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Interval ``k`` with ``tau_{k-1} < T <= tau_k`` (``m`` past the grid)."""
    return np.searchsorted(np.asarray(grid, dtype=float), time, side="left")


def discrete_targets(time: np.ndarray, event: np.ndarray,
                     grid: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, at_risk)`` of the logistic-hazard loss, each ``(n, m)`` float32."""
    m = len(grid)
    k = interval_index(time, grid)
    j = np.arange(m)[None, :]
    ev = event & (k < m)
    at_risk = (j < k[:, None]) | (ev[:, None] & (j == k[:, None]))
    targets = ev[:, None] & (j == k[:, None])
    return targets.astype(np.float32), at_risk.astype(np.float32)


def discrete_loss_per_patient(out: Any, targets: Any, at_risk: Any) -> Any:
    """Per-patient logistic-hazard negative log-likelihood (a sum over intervals at risk)."""
    torch = _torch()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1:], targets,
                                                                reduction="none")
    return (bce * at_risk).sum(dim=1)


def cox_loss(g: Any, time: Any, event: Any) -> Any:
    """Breslow negative log partial likelihood of ``g`` over these rows' risk sets, per event."""
    torch = _torch()
    order = torch.argsort(time, descending=True, stable=True)
    g_s, t_s, e_s = g[order], time[order], event[order]
    log_cum = torch.logcumsumexp(g_s, dim=0)
    # tied times share one risk set: everyone with T >= t, i.e. up to the tie group's last row
    t_np = t_s.detach().numpy()
    last = np.searchsorted(-t_np, -t_np, side="right") - 1
    log_risk = log_cum[torch.from_numpy(last)]
    n_events = e_s.sum()
    if float(n_events) == 0:
        return (g_s * 0.0).sum()
    return -((g_s - log_risk) * e_s).sum() / n_events


def site_loss(net: Any, rows: NeuralRows, loss: str, grid: Sequence[float],
              idx: np.ndarray | None = None) -> Any:
    """Mean training loss of ``rows`` (or the subset ``idx``) under ``net``."""
    torch = _torch()
    sel = np.arange(rows.time.size) if idx is None else idx
    out = net(torch.from_numpy(rows.x[sel]))
    if loss == "cox":
        return cox_loss(out[:, 0], torch.from_numpy(rows.time[sel]),
                        torch.from_numpy(rows.event[sel].astype(np.float32)))
    targets, at_risk = discrete_targets(rows.time[sel], rows.event[sel], grid)
    return discrete_loss_per_patient(out, torch.from_numpy(targets),
                                     torch.from_numpy(at_risk)).mean()


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


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run torch code with a fixed seed, on one thread, with deterministic algorithms, restoring
    the caller's RNG and settings afterwards.

    The networks are small: intra-op threads cost more than they save (on a loaded two-core
    machine a Cox backward pass takes 30x longer with two threads) and one thread keeps the
    floating-point reduction order, hence the result, fixed.
    """
    torch = _torch()
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def local_train(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, params: Params) -> np.ndarray:
    """One site's local training from ``w``: the new weight vector (projected to the box)."""
    torch = _torch()
    seed = int(params.get("seed", 0)) * 1_000_003 + int(params.get("round", 0))
    bound = float(params["weight_bound"])
    mu = float(params.get("mu", 0.0))
    loss_kind = str(params["loss"])
    grid = cfg.time_grid
    with _seeded(seed):
        net = cfg.build()
        _set_vector(net, w)
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
        return _get_vector(net)


def _eval_at(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, params: Params
             ) -> tuple[float, np.ndarray]:
    """The site's loss (capped) and risk scores at ``w`` (eval mode, no dropout)."""
    torch = _torch()
    net = cfg.build()
    _set_vector(net, w)
    net.eval()
    with _seeded(0), torch.no_grad():
        loss = float(site_loss(net, rows, str(params.get("loss", "discrete")), cfg.time_grid))
        risk = net(torch.from_numpy(rows.x))[:, 0].numpy().astype(float)
    if not math.isfinite(loss):
        loss = LOSS_CAP
    return min(max(loss, 0.0), LOSS_CAP), risk


def _train_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    cfg = NetConfig.from_params(params["net"])
    rows = _cached_rows(cohort, params)
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


def clipped_gradient_sum(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, clip: float,
                         seed: int) -> np.ndarray:
    """Sum over patients of per-patient discrete-loss gradients, each clipped to L2 ``clip``.

    Per-patient gradients come from Opacus' ``GradSampleModule`` (loss reduction ``sum``).
    """
    torch = _torch()
    from opacus import GradSampleModule

    targets, at_risk = discrete_targets(rows.time, rows.event, cfg.time_grid)
    with _seeded(seed):
        net = cfg.build()
        _set_vector(net, w)
        net.train()
        model = GradSampleModule(net, loss_reduction="sum")
        out = model(torch.from_numpy(rows.x))
        per_patient = discrete_loss_per_patient(out, torch.from_numpy(targets),
                                                torch.from_numpy(at_risk))
        with warnings.catch_warnings():
            # the inputs need no gradient; Opacus' hooks still fire on the layer outputs
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            per_patient.sum().backward()
        grads = torch.cat([p.grad_sample.reshape(rows.time.size, -1)
                           for p in net.parameters()], dim=1).double()
        model._close()
    norms = grads.norm(dim=1, keepdim=True)
    factor = torch.clamp(clip / (norms + 1e-12), max=1.0)
    return np.asarray((grads * factor).sum(dim=0).numpy(), dtype=float)


def _check_dp(params: Params) -> None:
    _check_common(params)
    clip = params.get("max_grad_norm")
    if not isinstance(clip, int | float) or not (math.isfinite(clip) and clip > 0):
        raise InvalidInput(f"parameter 'max_grad_norm' must be a number > 0, got {clip!r}")


def _dp_compute(cohort: Cohort, params: Params) -> dict[str, np.ndarray]:
    cfg = NetConfig.from_params(params["net"])
    rows = _cached_rows(cohort, params)
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


# --- the hub ----------------------------------------------------------------------------------

def dp_noise_multiplier(dp: DPTraining, rounds: int) -> float:
    """Opacus' RDP calibration: sigma for ``rounds`` full-batch Gaussian steps at (epsilon, delta)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        # "optimal order is the largest alpha": the RDP bound is then loose, i.e. conservative
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=dp.delta,
                                          sample_rate=1.0, steps=rounds, accountant="rdp",
                                          epsilon_tolerance=0.001))


def dp_epsilon_spent(noise_multiplier: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` full-batch Gaussian steps, from Opacus' RDP accountant."""
    if steps == 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history.append((noise_multiplier, 1.0, steps))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(acc.get_epsilon(delta))


def _check_outcome_column(name: str, key: str) -> None:
    if not isinstance(name, str) or name not in FIELDS:
        raise InvalidInput(f"{key} {name!r} is not a cohort schema column (e.g. 'os_time', "
                           f"'os_status')")


class FederatedDeepSurv(FederatedFitter):
    """A DeepSurv-style neural survival model trained across sites (see the module docstring).

    ``hidden``: layer widths; ``lr``: local (or, with DP, hub Adam) learning rate;
    ``local_epochs`` / ``batch_size`` (None: full batch); ``rounds``; ``mu``: FedProx proximal
    weight (0: FedAvg); ``loss``: ``"cox"`` or ``"discrete"`` (default: Cox, or discrete with
    ``dp``, which requires it);
    ``weight_bound``: public box of every weight; ``time_grid``: the discrete loss' interval ends.
    ``eval_grid`` / ``risk_bins`` / ``risk_bound``: public time grid and risk bins of the per-round
    C-index histograms. ``dp``: train with DP-SGD instead of FedAvg.

    After :meth:`fit`: ``weights_``, ``config_``, ``history`` (one dict per round: ``n``,
    ``train_loss`` and ``c_index`` at the weights broadcast that round; with DP only the noisy
    ``n`` and the ``epsilon`` spent so far, since loss and C-index releases would cost budget),
    and with DP ``noise_multiplier_`` and ``epsilon_`` (Opacus' RDP accountant).
    """

    _fitted_attribute = "weights_"

    def __init__(self, hidden: Sequence[int] = (32, 16), dropout: float = 0.1, lr: float = 1e-3,
                 local_epochs: int = 1, rounds: int = 20, mu: float = 0.0, seed: int = 0, *,
                 loss: str | None = None, optimizer: str = "adam", batch_size: int | None = 64,
                 weight_bound: float = 4.0, time_grid: Sequence[float] | None = None,
                 dp: DPTraining | None = None, eval_grid: Sequence[float] | None = None,
                 risk_bins: int = 200, risk_bound: float = 8.0,
                 max_patients: int = DEFAULT_MAX_PATIENTS) -> None:
        if loss is None:
            loss = "cox" if dp is None else "discrete"
        if loss not in LOSSES:
            raise InvalidInput(f"loss must be one of {LOSSES}, got {loss!r}")
        if optimizer not in OPTIMIZERS:
            raise InvalidInput(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if dp is not None and loss != "discrete":
            raise InvalidInput("DP-SGD needs a loss that is a sum over patients: use "
                               "loss='discrete' (the Cox partial likelihood couples risk sets)")
        if dp is not None and (local_epochs != 1 or mu != 0):
            raise InvalidInput("DP training takes one noisy full-batch gradient step per round: "
                               "leave local_epochs=1 and mu=0 (raise rounds instead)")
        if not isinstance(rounds, int) or rounds < 1:
            raise InvalidInput(f"rounds must be an int >= 1, got {rounds!r}")
        if not isinstance(local_epochs, int) or local_epochs < 1:
            raise InvalidInput(f"local_epochs must be an int >= 1, got {local_epochs!r}")
        if not (math.isfinite(lr) and lr > 0):
            raise InvalidInput(f"lr must be > 0, got {lr}")
        if not (math.isfinite(mu) and mu >= 0):
            raise InvalidInput(f"mu must be >= 0, got {mu}")
        if not (math.isfinite(weight_bound) and weight_bound > 0):
            raise InvalidInput(f"weight_bound must be > 0, got {weight_bound}")
        self.hidden = tuple(int(h) for h in hidden)
        self.dropout = float(dropout)
        self.lr = float(lr)
        self.local_epochs = local_epochs
        self.rounds = rounds
        self.mu = float(mu)
        self.seed = int(seed)
        self.loss = loss
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.weight_bound = float(weight_bound)
        self.time_grid = tuple(float(t) for t in (time_grid or default_time_grid()))
        self.dp = dp
        self.eval_grid = tuple(float(t) for t in (eval_grid or default_time_grid(20.0, 0.25)))
        self.risk_bins = int(risk_bins)
        self.risk_bound = float(risk_bound)
        self.max_patients = int(max_patients)
        self.history: list[dict[str, float]] = []
        self.epsilon_: float | None = None
        self.noise_multiplier_: float | None = None

    # --- fitting ----------------------------------------------------------------------------

    def fit(self, federation: Federation, duration_col: str, event_col: str,
            formula: str | Sequence[Any] | DesignSpec, study: str = "default") -> FederatedDeepSurv:
        """Train over ``federation``; returns self."""
        _check_outcome_column(duration_col, "duration_col")
        _check_outcome_column(event_col, "event_col")
        spec = parse_formula(formula)
        self.config_ = NetConfig(spec, self.hidden, self.dropout, self.time_grid)
        self.duration_col, self.event_col = duration_col, event_col
        torch = _torch()
        with _seeded(self.seed):
            w = _get_vector(self.config_.build())
        w = np.clip(w, -self.weight_bound, self.weight_bound)
        base = {"net": self.config_.to_params(), "duration_col": duration_col,
                "event_col": event_col, "max_patients": self.max_patients, "seed": self.seed}
        self.history = []
        if self.dp is None:
            w = self._fit_fedavg(federation, base, w, study)
        else:
            w = self._fit_dp(federation, base, w, study, torch)
        self.weights_ = w
        log.info("neural model fitted: %d rounds over %d sites", self.rounds,
                 len(federation.site_ids))
        return self

    def _fit_fedavg(self, federation: Federation, base: dict[str, Any], w: np.ndarray,
                    study: str) -> np.ndarray:
        for r in range(self.rounds):
            params = base | {
                "weights": encode_weights(w), "round": r, "loss": self.loss,
                "optimizer": self.optimizer, "lr": self.lr, "mu": self.mu,
                "local_epochs": self.local_epochs, "batch_size": self.batch_size,
                "weight_bound": self.weight_bound, "eval_grid": list(self.eval_grid),
                "risk_bins": self.risk_bins, "risk_bound": self.risk_bound}
            agg = federation.secure_sum("neural_train_round", params, study=study)
            n = float(agg["n"][0])
            if n < 1:
                raise InvalidInput("no site has complete-case rows for the outcome and design")
            w = (w.astype(np.float64) + agg["delta"] / n).astype(np.float32)
            w = np.clip(w, -self.weight_bound, self.weight_bound)
            try:
                c = concordance_from_histograms(agg["events"], agg["later"])
            except ZeroDivisionError:
                c = float("nan")
            self.history.append({"round": float(r), "n": n, "train_loss": float(agg["loss"][0]) / n,
                                 "c_index": c})
            log.info("neural round %d: loss %.4f, C %.3f", r, self.history[-1]["train_loss"], c)
            if not np.all(np.isfinite(w)):
                raise ConvergenceError(f"neural training diverged in round {r}; lower lr")
        return w

    def _fit_dp(self, federation: Federation, base: dict[str, Any], w: np.ndarray, study: str,
                torch: Any) -> np.ndarray:
        assert self.dp is not None
        noisy = math.isfinite(self.dp.epsilon)
        sigma = dp_noise_multiplier(self.dp, self.rounds) if noisy else 0.0
        self.noise_multiplier_ = sigma
        request = DPRequest(noise_multiplier=sigma, delta=self.dp.delta) if noisy else None
        param = torch.nn.Parameter(torch.from_numpy(w.copy()))
        opt = torch.optim.Adam([param], lr=self.lr)
        for r in range(self.rounds):
            params = base | {"weights": encode_weights(param.detach().numpy()), "round": r,
                             "max_grad_norm": self.dp.max_grad_norm}
            agg = federation.secure_sum("neural_dp_gradient", params, study=study, dp=request)
            n_noisy = max(float(agg["n"][0]), 1.0)
            opt.zero_grad()
            param.grad = torch.from_numpy((agg["grad"] / n_noisy).astype(np.float32))
            opt.step()
            with torch.no_grad():
                param.clamp_(-self.weight_bound, self.weight_bound)
            eps = dp_epsilon_spent(sigma, r + 1, self.dp.delta) if noisy else math.inf
            self.history.append({"round": float(r), "n": n_noisy, "train_loss": float("nan"),
                                 "c_index": float("nan"), "epsilon": eps})
        self.epsilon_ = dp_epsilon_spent(sigma, self.rounds, self.dp.delta) if noisy else math.inf
        return np.asarray(param.detach().numpy(), dtype=np.float32).copy()

    # --- using the model --------------------------------------------------------------------

    def _need_fit(self) -> None:
        if not hasattr(self, "weights_"):
            raise InvalidInput("the model is not fitted yet; call fit(...) first")

    def network(self) -> Any:
        """The fitted ``torch.nn.Module`` (eval mode)."""
        self._need_fit()
        net = self.config_.build()
        _set_vector(net, self.weights_)
        return net.eval()

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """Log-risk score ``g(x)`` per patient (higher: worse); NaN where a covariate is missing."""
        self._need_fit()
        torch = _torch()
        spec = self.config_.design
        values = design_values(cohort, spec)
        ok = ~np.isnan(values).any(axis=1)
        b = spec.bounds
        x = values[ok]
        outside = (x < b[:, 0]) | (x > b[:, 1])
        if outside.any():
            j = int(np.flatnonzero(outside.any(axis=0))[0])
            raise InvalidInput(f"covariate {spec.names[j]!r} has values outside its declared "
                               f"bounds [{b[j, 0]:g}, {b[j, 1]:g}]")
        out = np.full(len(cohort), np.nan)
        with torch.no_grad():
            xs = torch.from_numpy(((x - spec.center) / spec.half_width).astype(np.float32))
            out[ok] = self.network()(xs)[:, 0].numpy()
        return out

    def _payload(self) -> dict[str, Any]:
        """Everything needed to rebuild and explain the model (JSON-serialisable)."""
        self._need_fit()
        return {"model": "FederatedDeepSurv", "version": 1, "net": self.config_.to_params(),
                "weights": encode_weights(self.weights_), "loss": self.loss,
                "duration_col": self.duration_col, "event_col": self.event_col,
                "settings": {"lr": self.lr, "local_epochs": self.local_epochs,
                             "rounds": self.rounds, "mu": self.mu, "seed": self.seed,
                             "optimizer": self.optimizer, "batch_size": self.batch_size,
                             "weight_bound": self.weight_bound},
                "dp": None if self.dp is None else {
                    "epsilon": self.dp.epsilon, "delta": self.dp.delta,
                    "max_grad_norm": self.dp.max_grad_norm,
                    "noise_multiplier": self.noise_multiplier_, "epsilon_spent": self.epsilon_},
                "history": self.history}

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any]) -> FederatedDeepSurv:
        """Rebuild a fitted model from :meth:`to_json` (a string; the dict the former
        ``to_json`` returned is still read, with a DeprecationWarning)."""
        if isinstance(text, str):
            return super().from_json(text)
        warnings.warn("FederatedDeepSurv.from_json(dict) is deprecated; pass the to_json() "
                      "string", DeprecationWarning, stacklevel=2)
        obj = text
        if obj.get("model") != "FederatedDeepSurv":
            raise InvalidInput("not a FederatedDeepSurv JSON document")
        cfg = NetConfig.from_params(obj["net"])
        s = obj["settings"]
        model = cls(cfg.hidden, cfg.dropout, s["lr"], s["local_epochs"], s["rounds"], s["mu"],
                    s["seed"], loss=obj["loss"], optimizer=s["optimizer"],
                    batch_size=s["batch_size"], weight_bound=s["weight_bound"],
                    time_grid=cfg.time_grid)
        model.config_ = cfg
        model.weights_ = decode_weights(obj["weights"], cfg.size)
        model.duration_col, model.event_col = obj["duration_col"], obj["event_col"]
        model.history = list(obj.get("history", []))
        dp = obj.get("dp")
        if dp is not None:
            model.dp = DPTraining(dp["epsilon"], dp["delta"], dp["max_grad_norm"])
            model.noise_multiplier_, model.epsilon_ = dp["noise_multiplier"], dp["epsilon_spent"]
        return model
