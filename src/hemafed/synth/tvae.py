"""A local tabular variational autoencoder (TVAE-style), for use *inside* one site.

Our own compact version of TVAE (Xu et al., "Modeling Tabular Data using Conditional GAN",
NeurIPS 2019), written on PyTorch (the optional extra ``hemafed[torch]``), with the same surface
as :class:`~hemafed.synth.copula.GaussianCopulaSynthesizer`: ``fit(frame) -> self`` and
``sample(n, seed) -> DataFrame`` with the training columns and dtypes.

Encoding of a row (one vector per patient):

* a numeric column becomes its *quantile-normal* score ``Phi^-1(mid-rank / n)`` (a simplification
  of TVAE's mode-specific normalisation: one Gaussian mode after a rank transform) plus a
  missingness indicator; decoding maps ``Phi(z)`` back through a quantile table of the observed
  values (interpolated, rounded to the column's precision, clipped to the observed range);
* a categorical or boolean column is one-hot over the levels seen in training, NA its own level.

The encoder (MLP, ReLU) gives the mean and log-variance of a ``latent_dim`` Gaussian posterior;
the decoder (MLP, ReLU) gives, for every numeric score, a mean with a learned per-column
standard deviation (Gaussian likelihood, masked where the value is missing) and, for every
categorical block and missingness indicator, logits (softmax / cross-entropy). The loss is the
negative ELBO ``2 * reconstruction + KL`` per patient (TVAE's loss factor 2), trained with Adam.
Sampling draws ``z ~ N(0, I)``, decodes, adds the learned numeric noise and draws categorical
levels from their softmax; :func:`~hemafed.synth.domain.enforce_constraints` then restores the
clinical rules (non-negative times, blasts in 0-100, statuses only with times, AML
transformation not after death).

**DP-SGD** (``dp=(epsilon, delta, max_grad_norm)``): Opacus' ``PrivacyEngine`` with Poisson
sampling, per-patient gradient clipping and Gaussian noise calibrated by
``make_private_with_epsilon`` (RDP accountant, the accountant of the site ledgers);
:attr:`TabularVAESynthesizer.epsilon_` is read back from that accountant after training and an
optional ``charge(epsilon, delta)`` hook is called *before* any training step with the epsilon the
accountant gives for the planned steps (so a site can refuse by raising ``BudgetExhausted``).
The noise generator is seeded from the operating system's entropy (``secrets``) at every fit, so
nobody can regenerate the noise from the settings; ``dp_noise_seed`` fixes it for reproducible
tests only, and must not be used for a release.
The guarantee covers the network weights only: the quantile tables, category levels and the
scores' ranks are fitted on the data without noise, so the generator as a whole is **not**
(epsilon, delta)-DP. For end-to-end DP synthesis use :class:`~hemafed.synth.mst.FederatedMST` or
:class:`~hemafed.synth.aim.FederatedAIM`; release this generator's output only after
:meth:`~hemafed.synth.evaluate.EvaluationReport.passes`, as for the copula.

>>> # TabularVAESynthesizer(epochs=100, seed=0).fit(frame).sample(1000, seed=1)
"""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hemafed.errors import InvalidInput
from hemafed.synth.domain import enforce_constraints

log = logging.getLogger(__name__)

_QUANTILES = 201
_MIN_ROWS = 10


def _torch() -> Any:
    """Import torch lazily: it is the optional extra ``hemafed[torch]``."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InvalidInput("TabularVAESynthesizer needs PyTorch: "
                           "pip install 'hemafed[torch]'") from exc
    return torch


@contextlib.contextmanager
def _one_thread(torch: Any) -> Iterator[None]:
    """Single-threaded CPU kernels while fitting/sampling (bitwise reproducible), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _decimals(x: np.ndarray) -> int:
    for d in range(0, 5):
        if np.allclose(x, np.round(x, d)):
            return d
    return 6


@dataclass(frozen=True)
class _Numeric:
    name: str
    quantiles: np.ndarray
    decimals: int
    dtype: str
    has_missing: bool


@dataclass(frozen=True)
class _Categorical:
    name: str
    levels: tuple[object, ...]  # training levels as text, None (NA) last when seen
    dtype: str


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD settings of the network training: target (epsilon, delta) and the clipping norm."""

    epsilon: float
    delta: float = 1e-6
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise InvalidInput(f"TabularVAESynthesizer dp: epsilon must be a finite number > 0, "
                               f"got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise InvalidInput(f"TabularVAESynthesizer dp: delta must be in (0, 1), "
                               f"got {self.delta}")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise InvalidInput(f"TabularVAESynthesizer dp: max_grad_norm must be > 0, "
                               f"got {self.max_grad_norm}")


def _quantile_normal(x: np.ndarray) -> np.ndarray:
    """Quantile-normal scores of observed values: ``Phi^-1((mid-rank - 0.5) / n)``."""
    ranks = stats.rankdata(x, method="average")
    return np.asarray(stats.norm.ppf((ranks - 0.5) / x.size))


def _build_vae(torch: Any, width: int, n_numeric: int, latent: int,
               hidden: Sequence[int]) -> Any:
    nn = torch.nn

    def mlp(inp: int) -> tuple[Any, int]:
        layers: list[Any] = []
        prev = inp
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        return nn.Sequential(*layers), prev

    class TabularVAE(nn.Module):  # type: ignore[misc, name-defined]
        """``forward(x, eps) -> (decoder output, log sigma of numerics, mu, logvar)``."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder, h = mlp(width)
            self.to_stats = nn.Linear(h, 2 * latent)
            body, h = mlp(latent)
            self.decoder = nn.Sequential(body, nn.Linear(h, width))
            # Learned numeric noise as a bias-free Linear fed a constant 1 (Opacus computes
            # per-sample gradients for Linear layers, not for bare parameters).
            self.log_sigma = nn.Linear(1, max(n_numeric, 1), bias=False)
            nn.init.constant_(self.log_sigma.weight, math.log(0.5))

        def decode(self, z: Any) -> tuple[Any, Any]:
            out = self.decoder(z)
            ls = self.log_sigma(torch.ones_like(out[:, :1])).clamp(math.log(0.01), math.log(2))
            return out, ls

        def forward(self, x: Any, eps: Any) -> tuple[Any, Any, Any, Any]:
            s = self.to_stats(self.encoder(x))
            mu, logvar = s[:, :latent], s[:, latent:].clamp(-10.0, 10.0)
            z = mu + eps * torch.exp(0.5 * logvar)
            out, ls = self.decode(z)
            return out, ls, mu, logvar

    return TabularVAE()


class TabularVAESynthesizer:
    """``TabularVAESynthesizer(epochs=...).fit(frame).sample(n, seed)`` (one site).

    ``dp`` is ``None`` (no privacy noise) or ``(epsilon, delta, max_grad_norm)`` /
    :class:`DPSettings` for DP-SGD of the network; ``charge(epsilon, delta)`` is then called once
    before training with the accountant's epsilon for the planned steps. After ``fit`` with DP,
    ``epsilon_`` and ``noise_multiplier_`` hold what Opacus' accountant reports.
    """

    def __init__(self, epochs: int = 150, latent_dim: int = 16,
                 hidden: Sequence[int] = (128, 128), batch_size: int = 200,
                 learning_rate: float = 2e-3, seed: int = 0,
                 dp: DPSettings | tuple[float, float, float] | None = None,
                 charge: Callable[[float, float], None] | None = None,
                 dp_noise_seed: int | None = None) -> None:
        self._torch = _torch()
        self.dp_noise_seed = dp_noise_seed
        if not (isinstance(epochs, int) and epochs >= 1):
            raise InvalidInput(f"TabularVAESynthesizer: epochs must be an int >= 1, got {epochs}")
        if not (isinstance(latent_dim, int) and latent_dim >= 1):
            raise InvalidInput(f"TabularVAESynthesizer: latent_dim must be an int >= 1, "
                               f"got {latent_dim}")
        if not hidden or not all(isinstance(h, int) and h >= 1 for h in hidden):
            raise InvalidInput(f"TabularVAESynthesizer: hidden must be positive layer widths, "
                               f"got {hidden}")
        if not (isinstance(batch_size, int) and batch_size >= 2):
            raise InvalidInput(f"TabularVAESynthesizer: batch_size must be an int >= 2, "
                               f"got {batch_size}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise InvalidInput(f"TabularVAESynthesizer: learning_rate must be > 0, "
                               f"got {learning_rate}")
        if charge is not None and dp is None:
            raise InvalidInput("TabularVAESynthesizer: charge is only used with dp=(epsilon, "
                               "delta, max_grad_norm)")
        self.epochs = epochs
        self.latent_dim = latent_dim
        self.hidden = tuple(hidden)
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.dp = dp if dp is None or isinstance(dp, DPSettings) else DPSettings(*dp)
        self.charge = charge
        self.epsilon_: float | None = None
        self.noise_multiplier_: float | None = None
        self.loss_history_: list[float] = []
        self._columns: list[_Numeric | _Categorical] = []
        self._n_numeric = 0
        self._slices: list[tuple[int, int]] = []
        self._net: Any = None

    # --- encoding -----------------------------------------------------------------------------

    def _learn_encoding(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Learn the column transforms; return the training matrix ``(n, width)`` and the
        observed-value mask of the numeric scores ``(n, n_numeric)`` (not kept on the model).

        Layout: all numeric scores first (``n_numeric`` columns), then the one-hot blocks of
        categoricals and the two-level missingness blocks of numerics, in column order.
        """
        self._columns = []
        scores: list[np.ndarray] = []
        blocks: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        for name in frame.columns:
            if name == "patient_id":
                continue
            col = frame[name]
            if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
                x = col.astype("Float64").to_numpy(dtype=float, na_value=np.nan)
                miss = np.isnan(x)
                seen = x[~miss]
                if seen.size < 2:
                    raise InvalidInput(f"column {name!r} has fewer than 2 observed values")
                s = np.zeros(x.size)
                s[~miss] = _quantile_normal(seen)
                scores.append(s)
                masks.append(~miss)
                spec = _Numeric(name, np.quantile(seen, np.linspace(0, 1, _QUANTILES)),
                                _decimals(seen), str(col.dtype), bool(miss.any()))
                if spec.has_missing:
                    blocks.append(np.column_stack([~miss, miss]).astype(float))
                self._columns.append(spec)
            else:
                dtype = "boolean" if pd.api.types.is_bool_dtype(col) else "string"
                text = col.astype("boolean").astype("string") if dtype == "boolean" \
                    else col.astype("string")
                levels: list[object] = sorted(set(text.dropna()))
                if text.isna().any():
                    levels.append(None)
                if not levels:
                    raise InvalidInput(f"column {name!r} has no values")
                codes = text.map({lv: i for i, lv in enumerate(levels) if lv is not None})
                codes = codes.fillna(len(levels) - 1).to_numpy(dtype=np.int64)
                blocks.append(np.eye(len(levels))[codes])
                self._columns.append(_Categorical(name, tuple(levels), dtype))
        self._n_numeric = len(scores)
        mask = np.column_stack(masks) if masks else np.ones((len(frame), 0))
        parts = ([np.column_stack(scores)] if scores else []) + blocks
        return np.column_stack(parts).astype(np.float32), mask.astype(np.float32)

    def _block_slices(self) -> list[tuple[int, int]]:
        """Start/end of every softmax block (categoricals and missingness) in the layout."""
        out, j = [], self._n_numeric
        for spec in self._columns:
            size = (2 if spec.has_missing else 0) if isinstance(spec, _Numeric) \
                else len(spec.levels)
            if size:
                out.append((j, j + size))
                j += size
        return out

    # --- training -----------------------------------------------------------------------------

    def _per_patient_loss(self, net: Any, x: Any, mask: Any, eps: Any) -> Any:
        torch = self._torch
        out, log_sigma, mu, logvar = net(x, eps)
        k = self._n_numeric
        # 0 * log sigma keeps every parameter in the graph (Opacus needs per-sample gradients
        # of all trainable parameters, even the unused sigma of a frame without numerics).
        rec = 0.0 * log_sigma[:, 0]
        if k:
            ls = log_sigma[:, :k]
            nll = 0.5 * ((x[:, :k] - out[:, :k]) / torch.exp(ls)) ** 2 + ls
            rec = rec + (nll * mask).sum(dim=1)
        for a, b in self._slices:
            logp = torch.log_softmax(out[:, a:b], dim=1)
            rec = rec - (x[:, a:b] * logp).sum(dim=1)
        kl = -0.5 * (1 + logvar - mu**2 - torch.exp(logvar)).sum(dim=1)
        return 2.0 * rec + kl

    def fit(self, frame: pd.DataFrame) -> TabularVAESynthesizer:
        if len(frame) < _MIN_ROWS:
            raise InvalidInput(f"TabularVAESynthesizer needs >= {_MIN_ROWS} rows, "
                               f"got {len(frame)}")
        torch = self._torch
        data, mask = self._learn_encoding(frame)
        self._slices = self._block_slices()
        with _one_thread(torch), warnings.catch_warnings():
            # Opacus warns that its secure RNG is off (torchcsprng is not installed; the noise
            # generator is seeded from OS entropy instead: see the module docstring) and about full backward hooks on inputs that need no gradient.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            # Few steps: RDP's best order is the largest one tried, epsilon a valid upper bound.
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            torch.manual_seed(self.seed)
            net = _build_vae(torch, data.shape[1], self._n_numeric, self.latent_dim, self.hidden)
            opt = torch.optim.Adam(net.parameters(), lr=self.learning_rate)
            x_all = torch.from_numpy(data)
            m_all = torch.from_numpy(mask)
            dataset = torch.utils.data.TensorDataset(x_all, m_all)
            gen = torch.Generator().manual_seed(self.seed)
            loader = torch.utils.data.DataLoader(
                dataset, batch_size=min(self.batch_size, len(frame)), shuffle=True,
                generator=gen)
            model: Any = net
            engine = None
            if self.dp is not None:
                model, opt, loader, engine = self._make_private(torch, net, opt, loader)
            self.loss_history_ = []
            for _epoch in range(self.epochs):
                total, rows = 0.0, 0
                for xb, mb in loader:
                    if xb.shape[0] == 0:
                        continue  # an empty Poisson batch: nothing to learn from
                    opt.zero_grad()
                    eps = torch.randn(xb.shape[0], self.latent_dim)
                    loss_i = self._per_patient_loss(model, xb, mb, eps)
                    loss = loss_i.mean()
                    loss.backward()
                    opt.step()
                    total += float(loss_i.detach().sum())
                    rows += int(xb.shape[0])
                self.loss_history_.append(total / max(rows, 1))
            if engine is not None:
                assert self.dp is not None
                self.epsilon_ = float(engine.get_epsilon(self.dp.delta))
                model.remove_hooks()  # keep the plain network: no per-sample hooks in sampling
            net.eval()
        self._net = net
        log.info("TabularVAESynthesizer fitted: %d epochs, final loss %.3f%s", self.epochs,
                 self.loss_history_[-1],
                 f", epsilon {self.epsilon_:.3f}" if self.epsilon_ is not None else "")
        return self

    def _make_private(self, torch: Any, net: Any, opt: Any,
                      loader: Any) -> tuple[Any, Any, Any, Any]:
        """Wrap model/optimiser/loader with Opacus; charge the planned epsilon first."""
        from opacus import PrivacyEngine
        from opacus.accountants import RDPAccountant

        assert self.dp is not None
        engine = PrivacyEngine(accountant="rdp")
        model, opt, loader = engine.make_private_with_epsilon(
            module=net, optimizer=opt, data_loader=loader, target_epsilon=self.dp.epsilon,
            target_delta=self.dp.delta, epochs=self.epochs, max_grad_norm=self.dp.max_grad_norm,
            noise_generator=torch.Generator().manual_seed(
                self.dp_noise_seed if self.dp_noise_seed is not None else secrets.randbits(63)))
        self.noise_multiplier_ = float(opt.noise_multiplier)
        planned = RDPAccountant()
        planned.history = [(self.noise_multiplier_, 1.0 / len(loader),
                            self.epochs * len(loader))]
        planned_eps = float(planned.get_epsilon(self.dp.delta))
        if self.charge is not None:
            self.charge(planned_eps, self.dp.delta)
        return model, opt, loader, engine

    # --- sampling -----------------------------------------------------------------------------

    def sample(self, n: int, seed: int = 0) -> pd.DataFrame:
        if self._net is None:
            raise InvalidInput("TabularVAESynthesizer.sample: call fit(frame) first")
        if not (isinstance(n, int | np.integer) and n >= 1):
            raise InvalidInput(f"n must be an int >= 1, got {n}")
        torch = self._torch
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((int(n), self.latent_dim)).astype(np.float32)
        with _one_thread(torch), torch.no_grad():
            out_t, ls_t = self._net.decode(torch.from_numpy(z))
            out = out_t.numpy().astype(float)
            sigma = np.exp(ls_t.numpy().astype(float))
        k = self._n_numeric
        num_scores = out[:, :k] + sigma[:, :k] * rng.standard_normal((int(n), k))
        blocks = iter(self._slices)
        frame: dict[str, pd.Series] = {}
        i_num = 0
        for spec in self._columns:
            if isinstance(spec, _Numeric):
                u = stats.norm.cdf(num_scores[:, i_num])
                x = np.interp(u, np.linspace(0, 1, spec.quantiles.size), spec.quantiles)
                x = np.round(x, spec.decimals)
                if spec.has_missing:
                    a, b = next(blocks)
                    missing = _draw(out[:, a:b], rng) == 1
                    x = np.where(missing, np.nan, x)
                frame[spec.name] = pd.Series(x).astype("Float64")
                i_num += 1
            else:
                a, b = next(blocks)
                idx = _draw(out[:, a:b], rng)
                values = pd.Series(np.asarray(spec.levels, dtype=object)[idx], dtype="object")
                if spec.dtype == "boolean":
                    frame[spec.name] = values.map({"True": True, "False": False}).astype("boolean")
                else:
                    frame[spec.name] = values.astype("string")
        out_frame = enforce_constraints(pd.DataFrame(frame))
        for spec in self._columns:
            if isinstance(spec, _Numeric):
                out_frame[spec.name] = _restore_dtype(out_frame[spec.name], spec.dtype)
        return out_frame


def _draw(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row from softmax(logits)."""
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((logits.shape[0], 1))
    return np.minimum((u > cum).sum(axis=1), logits.shape[1] - 1)


def _restore_dtype(values: pd.Series, dtype: str) -> pd.Series:
    """Numeric values back in the training column's dtype (integers rounded; NA kept, so a
    NumPy integer column with sampled NA becomes nullable ``Int64``)."""
    v = values.astype("Float64")
    if dtype.lower().startswith(("int", "uint")):
        v = v.round()
        return v.astype(dtype) if dtype[0] != "I" and dtype[0] != "U" and not v.isna().any() \
            else v.astype("Int64")
    if dtype.startswith("float") and dtype[0] == "f":
        return v.astype(dtype)
    return v
