"""Fixed-point encoding: bounds are enforced, sums decode exactly, capacity is checked."""

from __future__ import annotations

import numpy as np
import pytest

from hemafed.errors import InvalidInput
from hemafed.federation.queries import Statistic
from hemafed.secure.encoding import FixedPointLayout, specs_from_json, specs_to_json


def test_hand_computed_encoding_and_split() -> None:
    specs = {"b": Statistic((2,), -1.0, 1.0, 0.5), "a": Statistic((1,), 10, 20)}
    layout = FixedPointLayout.from_specs(specs, n_sites=3)
    # order is by name: a then b; (x - low) / resolution
    enc = layout.encode({"a": np.array([13.0]), "b": np.array([-1.0, 0.5])})
    assert enc.dtype == np.uint64
    assert enc.tolist() == [3, 0, 3]
    other = layout.encode({"a": np.array([20.0]), "b": np.array([1.0, 1.0])})
    out = layout.decode_sum(enc + other, n_contributors=2)
    assert out["a"].tolist() == [33.0]
    assert out["b"].tolist() == [0.0, 1.5]


def test_integer_sums_are_exact_against_numpy() -> None:
    rng = np.random.default_rng(1)
    spec = Statistic((3, 4), -1000, 10**9)
    layout = FixedPointLayout.from_specs({"x": spec}, n_sites=25)
    xs = [rng.integers(-1000, 10**9, (3, 4)).astype(float) for _ in range(25)]
    total = np.zeros(layout.size, dtype=np.uint64)
    for x in xs:
        total += layout.encode({"x": x})
    np.testing.assert_array_equal(layout.decode_sum(total, 25)["x"], np.sum(xs, axis=0))


def test_value_outside_bounds_raises_and_is_never_clipped() -> None:
    layout = FixedPointLayout.from_specs({"n": Statistic((3,), 0, 10)}, n_sites=2)
    with pytest.raises(InvalidInput, match=r"'n' element 2 = 11.0 is outside .*\[0, 10\]"):
        layout.encode({"n": np.array([1.0, 2.0, 11.0])}, where="site 'a'")
    with pytest.raises(InvalidInput, match="outside"):
        layout.encode({"n": np.array([-0.5, 2.0, 1.0])})


def test_shape_names_and_non_finite_are_checked() -> None:
    layout = FixedPointLayout.from_specs({"n": Statistic((2,), 0, 10)}, n_sites=2)
    with pytest.raises(InvalidInput, match="shape"):
        layout.encode({"n": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(InvalidInput, match="declared statistics"):
        layout.encode({"m": np.array([1.0, 2.0])})
    with pytest.raises(InvalidInput, match="non-finite"):
        layout.encode({"n": np.array([1.0, np.nan])})


def test_modulus_capacity_is_checked() -> None:
    wide = Statistic((1,), 0, 2.0**40)
    FixedPointLayout.from_specs({"x": wide}, n_sites=2**23)  # 2**63 < 2**64: fits
    with pytest.raises(InvalidInput, match=r"does not fit the 2\*\*64 modulus"):
        FixedPointLayout.from_specs({"x": wide}, n_sites=2**24)
    # a statistic wider than 2**48 steps takes two limbs, whose sums fit up to 2**16 sites
    two_limbs = Statistic((1,), 0, 1e6, 1e-12)
    assert FixedPointLayout.from_specs({"x": two_limbs}, n_sites=2**15).size == 2
    with pytest.raises(InvalidInput, match=r"does not fit the 2\*\*64 modulus"):
        FixedPointLayout.from_specs({"x": two_limbs}, n_sites=2**16)


def test_wide_statistics_keep_precision_relative_to_their_values() -> None:
    # Cox-like: bounds ~1e18 but actual values ~1e3; one float64 step of the bound is ~100
    wide = Statistic((3,), -1e18, 1e18, 1e-9)
    layout = FixedPointLayout.from_specs({"s": wide}, n_sites=10)
    rng = np.random.default_rng(1)
    values = [rng.normal(0, 1e3, 3) for _ in range(10)]
    total = sum(layout.encode({"s": v}) for v in values)
    decoded = layout.decode_sum(np.asarray(total, dtype=np.uint64), 10)["s"]
    exact = np.sum(np.round(np.array(values) / 1e-9) * 1e-9, axis=0)
    np.testing.assert_allclose(decoded, exact, rtol=1e-12)
    assert np.max(np.abs(decoded - np.sum(values, axis=0))) < 1e-7


def test_specs_json_round_trip_is_exact() -> None:
    specs = {"s": Statistic((2, 3), -0.1, 1e300, 1e-7, sensitivity=0.3, is_count=False),
             "n": Statistic((1,), 0, 7, is_count=True)}
    assert specs_from_json(specs_to_json(specs)) == specs
    with pytest.raises(InvalidInput):
        specs_from_json(b"{not json")
