"""The neural survival network: the MLP, its public configuration, a site's rows, the losses.

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
  required for DP-SGD (:mod:`~hemafed.learn.neural_dp`).

The site queries are in :mod:`~hemafed.learn.neural_queries`, the hub estimator in
:mod:`~hemafed.learn.neural`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemafed.analytics.design import (
    DesignSpec,
    check_bounds,
    complete_case_mask,
    design_values,
)
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput

LOSSES = ("cox", "discrete")
OPTIMIZERS = ("adam", "sgd")


def import_torch() -> Any:
    """Import torch lazily: it is the optional extra ``hemafed[torch]``."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidInput("neural models need PyTorch: pip install 'hemafed[torch]'") from exc
    return torch



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
    torch = import_torch()
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


def set_vector(net: Any, w: np.ndarray) -> None:
    torch = import_torch()
    torch.nn.utils.vector_to_parameters(torch.from_numpy(np.array(w, dtype=np.float32)),
                                        net.parameters())


def get_vector(net: Any) -> np.ndarray:
    torch = import_torch()
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


def cached_rows(cohort: Cohort, spec: DesignSpec, duration_col: str, event_col: str
                ) -> NeuralRows:
    """Rows of a site, built once per cohort object and public design (every round reuses them)."""
    key = json.dumps([spec.to_params(), duration_col, event_col])
    entry = _ROWS_CACHE.get(id(cohort))
    if entry is None or entry[0]() is not cohort:
        ident = id(cohort)
        entry = (weakref.ref(cohort, lambda _r: _ROWS_CACHE.pop(ident, None)), {})
        _ROWS_CACHE[ident] = entry
    if key not in entry[1]:
        entry[1][key] = neural_rows(cohort, spec, duration_col, event_col)
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
    torch = import_torch()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1:], targets,
                                                                reduction="none")
    return (bce * at_risk).sum(dim=1)


def cox_loss(g: Any, time: Any, event: Any) -> Any:
    """Breslow negative log partial likelihood of ``g`` over these rows' risk sets, per event."""
    torch = import_torch()
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
    torch = import_torch()
    sel = np.arange(rows.time.size) if idx is None else idx
    out = net(torch.from_numpy(rows.x[sel]))
    if loss == "cox":
        return cox_loss(out[:, 0], torch.from_numpy(rows.time[sel]),
                        torch.from_numpy(rows.event[sel].astype(np.float32)))
    targets, at_risk = discrete_targets(rows.time[sel], rows.event[sel], grid)
    return discrete_loss_per_patient(out, torch.from_numpy(targets),
                                     torch.from_numpy(at_risk)).mean()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run torch code with a fixed seed, on one thread, with deterministic algorithms, restoring
    the caller's RNG and settings afterwards.

    The networks are small: intra-op threads cost more than they save (on a loaded two-core
    machine a Cox backward pass takes 30x longer with two threads) and one thread keeps the
    floating-point reduction order, hence the result, fixed.
    """
    torch = import_torch()
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

