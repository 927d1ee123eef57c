"""DP-SGD of the neural survival model: the sites' clipped per-patient gradient sums and the
hub's Opacus accounting.

**DP-SGD** (Abadi et al. 2016) with ``dp=DPTraining(epsilon, delta, max_grad_norm)`` and the
discrete loss: every round each site computes per-patient gradients at the broadcast weights
with Opacus' ``GradSampleModule``, clips each to L2 norm ``max_grad_norm`` and returns their sum
and its row count (the site query ``neural_dp_gradient``,
:mod:`~hemafed.learn.neural_queries`). The hub asks for that sum with
``DPRequest(noise_multiplier=sigma)``, so the *sites* add the Gaussian noise and charge it to
their own privacy ledgers; ``sigma`` is calibrated with Opacus' RDP accountant for ``rounds``
Gaussian steps at sampling rate 1, which is exactly what the ledgers compose
(:mod:`~hemafed.learn.neural` has the why).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.learn.survival_net import (
    NetConfig,
    NeuralRows,
    discrete_loss_per_patient,
    discrete_targets,
    import_torch,
    seeded,
    set_vector,
)


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



def clipped_gradient_sum(cfg: NetConfig, w: np.ndarray, rows: NeuralRows, clip: float,
                         seed: int) -> np.ndarray:
    """Sum over patients of per-patient discrete-loss gradients, each clipped to L2 ``clip``.

    Per-patient gradients come from Opacus' ``GradSampleModule`` (loss reduction ``sum``).
    """
    torch = import_torch()
    from opacus import GradSampleModule

    targets, at_risk = discrete_targets(rows.time, rows.event, cfg.time_grid)
    with seeded(seed):
        net = cfg.build()
        set_vector(net, w)
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

