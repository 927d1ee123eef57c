"""Regression trees of histogram boosting: the public tree structure, prediction, and the split
search the hub runs on summed gradient/Hessian histograms (pure numpy, no federation).

Split rule (as XGBoost/LightGBM histogram boosting): for a node with gradient sum ``G`` and
Hessian sum ``H``, a split into ``L`` and ``R`` gains
``0.5 * (G_L^2/(H_L+lambda) + G_R^2/(H_R+lambda) - G^2/(H+lambda)) - gamma``; both children need
``H >= min_child_weight``. Missing values have their own histogram slot and the split learns their
*default direction* by trying them on both sides; when the node has no missing value they follow
the child with the larger Hessian cover. A node's value is ``-learning_rate * G/(H+lambda)``.
Ties in gain (up to 1e-9 relative) go to the first candidate in (feature, bin, missing-right
before missing-left) order, so sums that differ only by floating-point order pick the same split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hemafed.errors import InvalidInput


@dataclass(frozen=True)
class TreeParams:
    """Regularisation and shape of every tree."""

    max_depth: int = 3
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    gamma: float = 0.0
    learning_rate: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.max_depth, bool) or not isinstance(self.max_depth, int) \
                or not 1 <= self.max_depth <= 12:
            raise InvalidInput(f"max_depth must be an int in [1, 12], got {self.max_depth!r}")
        if not self.reg_lambda >= 0 or not self.min_child_weight >= 0 or not self.gamma >= 0:
            raise InvalidInput("reg_lambda, min_child_weight and gamma must be >= 0")
        if not 0 < self.learning_rate <= 1:
            raise InvalidInput(f"learning_rate must be in (0, 1], got {self.learning_rate}")

    def value(self, g: float, h: float) -> float:
        return float(-self.learning_rate * g / (h + self.reg_lambda)) if h + self.reg_lambda > 0 \
            else 0.0


@dataclass(frozen=True)
class Split:
    """The best split of one node and the gradient/Hessian sums of its children."""

    feature: int
    bin: int
    default_left: bool
    gain: float
    left_g: float
    left_h: float
    right_g: float
    right_h: float


def _score(g: np.ndarray, h: np.ndarray, lam: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h + lam > 0, g * g / (h + lam), 0.0)


def find_split(grad: np.ndarray, hess: np.ndarray, n_bins: tuple[int, ...],
               params: TreeParams) -> Split | None:
    """Best split of a node from its ``(features, bins + 1)`` histograms (last slot: missing)."""
    g_total, h_total = float(grad[0].sum()), float(hess[0].sum())
    lam = params.reg_lambda
    parent = float(_score(np.array(g_total), np.array(h_total), lam))
    gm, hm = grad[:, -1:], hess[:, -1:]
    # left sums when bins 0..k go left (the last real bin cannot be a left side)
    cg = np.cumsum(grad[:, :-1], axis=1)[:, :-1]
    ch = np.cumsum(hess[:, :-1], axis=1)[:, :-1]
    valid = np.arange(cg.shape[1])[None, :] < (np.asarray(n_bins)[:, None] - 1)
    no_missing = (gm == 0) & (hm == 0)
    gains, lefts = [], []
    for missing_left in (False, True):
        gl = cg + gm if missing_left else cg
        hl = ch + hm if missing_left else ch
        gr, hr = g_total - gl, h_total - hl
        gain = 0.5 * (_score(gl, hl, lam) + _score(gr, hr, lam) - parent) - params.gamma
        ok = valid & (hl >= params.min_child_weight) & (hr >= params.min_child_weight)
        if missing_left:
            ok &= ~no_missing  # without missing values both directions are the same split
        gains.append(np.where(ok, gain, -np.inf))
        lefts.append((gl, hl))
    stacked = np.stack(gains, axis=-1)  # (p, k, direction)
    if stacked.size == 0:
        return None
    best = float(stacked.max())
    if not np.isfinite(best) or best <= 1e-12 * (1.0 + parent):
        return None
    first = int(np.flatnonzero(stacked.ravel() >= best - 1e-9 * max(1.0, abs(best)))[0])
    j, k, d = np.unravel_index(first, stacked.shape)
    gl, hl = (float(a[j, k]) for a in lefts[d])
    gr, hr = g_total - gl, h_total - hl
    default_left = bool(d == 1)
    if no_missing[j, 0]:
        default_left = hl >= hr
    return Split(int(j), int(k), default_left, float(stacked[j, k, d]), gl, hl, gr, hr)


@dataclass(frozen=True)
class Tree:
    """One fitted tree as parallel arrays over nodes (node 0 is the root; ``feature == -1`` at
    leaves). ``value`` is the (shrunk) value of every node, internal ones too, which the
    Saabas path explanation uses; ``gain`` and ``cover`` (Hessian sum) are per split node."""

    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    default_left: tuple[bool, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    value: tuple[float, ...]
    gain: tuple[float, ...] = ()
    cover: tuple[float, ...] = ()
    _arrays: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.feature)
        lengths = {len(self.threshold), len(self.default_left), len(self.left), len(self.right),
                   len(self.value)}
        if n == 0 or lengths != {n}:
            raise InvalidInput("Tree: every node array must have the same, non-zero length")
        for i, f in enumerate(self.feature):
            if f >= 0 and not (i < self.left[i] < n and i < self.right[i] < n):
                raise InvalidInput(f"Tree: node {i} has children outside the tree")
        self._arrays.update(
            feature=np.asarray(self.feature, dtype=np.int64),
            threshold=np.asarray(self.threshold, dtype=float),
            default_left=np.asarray(self.default_left, dtype=bool),
            left=np.asarray(self.left, dtype=np.int64),
            right=np.asarray(self.right, dtype=np.int64),
            value=np.asarray(self.value, dtype=float))

    @property
    def n_leaves(self) -> int:
        return sum(f < 0 for f in self.feature)

    def max_abs_leaf(self) -> float:
        return max(abs(v) for f, v in zip(self.feature, self.value, strict=True) if f < 0)

    def route(self, x: np.ndarray, contributions: np.ndarray | None = None) -> np.ndarray:
        """Leaf (or current frontier node) of every row; adds Saabas path contributions
        (value of child - value of parent, to the split's feature) into ``contributions``."""
        a = self._arrays
        node = np.zeros(x.shape[0], dtype=np.int64)
        while True:
            idx = np.flatnonzero(a["feature"][node] >= 0)
            if idx.size == 0:
                return node
            cur = node[idx]
            f = a["feature"][cur]
            v = x[idx, f]
            with np.errstate(invalid="ignore"):
                go_left = np.where(np.isnan(v), a["default_left"][cur], v < a["threshold"][cur])
            nxt = np.where(go_left, a["left"][cur], a["right"][cur])
            if contributions is not None:
                np.add.at(contributions, (idx, f), a["value"][nxt] - a["value"][cur])
            node[idx] = nxt

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self._arrays["value"][self.route(x)]

    def to_params(self) -> dict[str, Any]:
        return {"feature": list(self.feature), "threshold": list(self.threshold),
                "default_left": list(self.default_left), "left": list(self.left),
                "right": list(self.right), "value": list(self.value), "gain": list(self.gain),
                "cover": list(self.cover)}

    @classmethod
    def from_params(cls, p: Any) -> Tree:
        if isinstance(p, Tree):
            return p
        try:
            return cls(tuple(int(v) for v in p["feature"]),
                       tuple(float(v) for v in p["threshold"]),
                       tuple(bool(v) for v in p["default_left"]),
                       tuple(int(v) for v in p["left"]), tuple(int(v) for v in p["right"]),
                       tuple(float(v) for v in p["value"]),
                       tuple(float(v) for v in p.get("gain", ())),
                       tuple(float(v) for v in p.get("cover", ())))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput("a tree must be a mapping of node lists: feature, threshold, "
                               "default_left, left, right, value") from None


class TreeBuilder:
    """A tree grown level by level on the hub (mutable until :meth:`freeze`)."""

    def __init__(self) -> None:
        self.feature: list[int] = [-1]
        self.threshold: list[float] = [0.0]
        self.default_left: list[bool] = [False]
        self.left: list[int] = [0]
        self.right: list[int] = [0]
        self.value: list[float] = [0.0]
        self.gain: list[float] = [0.0]
        self.cover: list[float] = [0.0]
        self.bin: list[int] = [-1]

    def split(self, node: int, s: Split, threshold: float, params: TreeParams) -> tuple[int, int]:
        """Turn leaf ``node`` into a split; returns the two new leaves."""
        ids = []
        for g, h in ((s.left_g, s.left_h), (s.right_g, s.right_h)):
            ids.append(len(self.feature))
            self.feature.append(-1)
            self.threshold.append(0.0)
            self.default_left.append(False)
            self.left.append(0)
            self.right.append(0)
            self.value.append(params.value(g, h))
            self.gain.append(0.0)
            self.cover.append(h)
            self.bin.append(-1)
        self.feature[node], self.threshold[node] = s.feature, threshold
        self.default_left[node], self.bin[node], self.gain[node] = s.default_left, s.bin, s.gain
        self.left[node], self.right[node] = ids[0], ids[1]
        return ids[0], ids[1]

    def freeze(self) -> Tree:
        return Tree(tuple(self.feature), tuple(self.threshold), tuple(self.default_left),
                    tuple(self.left), tuple(self.right), tuple(self.value), tuple(self.gain),
                    tuple(self.cover))
