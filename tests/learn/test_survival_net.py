"""Tests of the neural survival network's losses on hand-computed cases."""

from __future__ import annotations

import numpy as np

from hemafed.learn.survival_net import discrete_targets


def test_discrete_targets_follow_the_documented_interval_rule() -> None:
    targets, at_risk = discrete_targets(np.array([0.5, 1.0, 1.5, 1.5, 9.0]),
                                        np.array([True, True, True, False, True]), (1.0, 2.0))
    assert targets.tolist() == [[1, 0], [1, 0], [0, 1], [0, 0], [0, 0]]
    assert at_risk.tolist() == [[1, 0], [1, 0], [1, 1], [1, 0], [1, 1]]
