"""Federated neural survival models: a DeepSurv-style MLP trained by FedAvg / FedProx on secure
sums, optionally with DP-SGD whose noise is added and charged by the sites.

The network and its two losses (``loss="cox"``, DeepSurv's partial likelihood stratified by site,
and ``loss="discrete"``, a logistic-hazard model on a public grid whose per-patient gradients DP-SGD
needs) are described in :mod:`~hemafed.learn.survival_net`.

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

The network and losses are in :mod:`~hemafed.learn.survival_net`, the site queries in
:mod:`~hemafed.learn.neural_queries`, the DP-SGD gradient and accounting in
:mod:`~hemafed.learn.neural_dp`; this module is the hub estimator (and keeps their public names).

>>> # model = FederatedDeepSurv(rounds=20).fit(fed, "os_time", "os_status", "age + hb + gene:TP53")
>>> # model.predict_risk(cohort), model.history, model.to_json()
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hemafed.analytics.concordance import concordance_from_histograms
from hemafed.analytics.design import DesignSpec, design_values, parse_formula
from hemafed.analytics.fitter import FederatedFitter
from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS
from hemafed.errors import ConvergenceError, InvalidInput
from hemafed.federation.api import DPRequest, Federation
from hemafed.federation.checks import MAX_PATIENTS
from hemafed.learn.neural_dp import (
    DPTraining,
    clipped_gradient_sum,
    dp_epsilon_spent,
    dp_noise_multiplier,
)
from hemafed.learn.neural_queries import LOSS_CAP, NEURAL_DP_GRADIENT, NEURAL_TRAIN_ROUND
from hemafed.learn.survival_net import (
    LOSSES,
    OPTIMIZERS,
    NetConfig,
    NeuralRows,
    decode_weights,
    default_time_grid,
    discrete_loss_per_patient,
    discrete_targets,
    encode_weights,
    get_vector,
    import_torch,
    neural_rows,
    seeded,
    set_vector,
)

__all__ = ["DEFAULT_MAX_PATIENTS", "LOSSES", "LOSS_CAP", "NEURAL_DP_GRADIENT",
           "NEURAL_TRAIN_ROUND", "OPTIMIZERS", "DPTraining", "FederatedDeepSurv", "NetConfig",
           "NeuralRows", "clipped_gradient_sum", "decode_weights", "default_time_grid",
           "discrete_loss_per_patient", "discrete_targets", "dp_epsilon_spent",
           "dp_noise_multiplier", "encode_weights", "neural_rows"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PATIENTS = MAX_PATIENTS


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
        torch = import_torch()
        with seeded(self.seed):
            w = get_vector(self.config_.build())
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
        set_vector(net, self.weights_)
        return net.eval()

    def predict_risk(self, cohort: Cohort) -> np.ndarray:
        """Log-risk score ``g(x)`` per patient (higher: worse); NaN where a covariate is missing."""
        self._need_fit()
        torch = import_torch()
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
