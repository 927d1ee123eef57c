"""Tests of the DP-SGD site step of the neural survival model: the clipped per-patient gradient
sum against plain autograd."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from hemafed.analytics.design import parse_formula  # noqa: E402
from hemafed.cohort.demo import generate  # noqa: E402
from hemafed.cohort.model import Cohort  # noqa: E402
from hemafed.learn.neural_dp import clipped_gradient_sum  # noqa: E402
from hemafed.learn.survival_net import (  # noqa: E402
    NetConfig,
    discrete_loss_per_patient,
    discrete_targets,
    neural_rows,
)

FORMULA = "age + hb + plt + bm_blast + cyto_ipssr + gene:TP53 + gene:SF3B1"


@pytest.fixture(scope="module")
def mds() -> Cohort:
    return generate("MDS", 1500, seed=11)


def test_clipped_gradient_sum_matches_autograd_and_respects_the_clip(mds: Cohort) -> None:
    spec = parse_formula(FORMULA)
    cfg = NetConfig(spec, (8,), 0.0, (1.0, 2.0, 4.0, 8.0))
    rows = neural_rows(mds, spec, "os_time", "os_status")
    torch.manual_seed(0)
    net = cfg.build()
    w = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy()
    targets, at_risk = discrete_targets(rows.time, rows.event, cfg.time_grid)
    loss = discrete_loss_per_patient(net(torch.from_numpy(rows.x)), torch.from_numpy(targets),
                                     torch.from_numpy(at_risk)).sum()
    loss.backward()
    plain = torch.cat([p.grad.reshape(-1) for p in net.parameters()]).numpy()
    unclipped = clipped_gradient_sum(cfg, w, rows, clip=1e6, seed=0)
    np.testing.assert_allclose(unclipped, plain, rtol=1e-4, atol=1e-4)
    clipped = clipped_gradient_sum(cfg, w, rows, clip=0.01, seed=0)
    assert np.linalg.norm(clipped) <= 0.01 * rows.time.size + 1e-9
    assert np.linalg.norm(clipped) < 0.5 * np.linalg.norm(plain)
