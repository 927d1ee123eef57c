"""Public discretisation: encoding at the right cut points, decoding inside bins, constraints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hemafed.errors import InvalidInput
from hemafed.synth.domain import ColumnSpec, SynthDomain, enforce_constraints


def test_ipssr_cut_points_are_bin_edges() -> None:
    hb = ColumnSpec.default("hb")
    codes = hb.encode(pd.Series([7.99, 8.0, 9.99, 10.0, None], dtype="Float64"))
    # [7, 8) [8, 9) [9, 10) [10, 11) and NA last: the IPSS-R 8 and 10 g/dL cut points hold.
    assert codes.tolist() == [2, 3, 4, 5, hb.size - 1]
    blasts = ColumnSpec.default("bm_blast")  # IPSS-R: <=2, >2-<5, 5-10, >10 -> right-closed
    assert blasts.encode(pd.Series([0.0, 2.0, 2.5, 10.0, 10.5])).tolist() == [0, 0, 1, 2, 3]


def test_decode_stays_in_bin_and_na_roundtrips() -> None:
    d = SynthDomain.for_columns(["age", "hb", "plt", "bm_blast", "anc", "sex", "os_status"])
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(0, s, 2000) for s in d.sizes])
    frame = d.decode(codes, seed=1)
    again = d.encode(frame)
    # status without a time is NA by the constraints; every other level survives decoding.
    assert np.array_equal(again[:, :6], codes[:, :6])
    age = frame["age"].dropna()
    assert age.between(0, 110).all() and (age == age.round()).all()
    # Whole-number ages are spread evenly over a 5-year band, not piled on its edges.
    band = age[(age >= 70) & (age < 75)]
    counts = band.value_counts().reindex([70.0, 71.0, 72.0, 73.0, 74.0], fill_value=0)
    assert counts.min() > 0.5 * counts.max()


def test_unknown_category_is_refused_with_column_name() -> None:
    with pytest.raises(InvalidInput, match="'sex'"):
        ColumnSpec.default("sex").encode(pd.Series(["X"]))


def test_params_roundtrip() -> None:
    d = SynthDomain.for_columns(["age", "cyto_ipssr", "os_time"])
    assert SynthDomain.from_params(d.to_params()) == d


def test_constraints() -> None:
    frame = pd.DataFrame({
        "os_time": pd.array([1.0, 2.0, None, 3.0], dtype="Float64"),
        "os_status": pd.array([True, None, True, False], dtype="boolean"),
        "amlt_time": pd.array([2.5, 1.0, 1.0, -1.0], dtype="Float64"),
        "amlt_status": pd.array([True, False, None, False], dtype="boolean"),
        "bm_blast": pd.array([150.0, -3.0, 5.0, None], dtype="Float64"),
    })
    out = enforce_constraints(frame)
    assert out["amlt_time"].tolist()[:2] == [1.0, 1.0]  # not after os_time
    assert out["amlt_time"].iloc[3] == 0.0  # no negative time
    assert out["bm_blast"].tolist()[:3] == [100.0, 0.0, 5.0]
    assert not bool(out["os_status"].iloc[1])  # time without status -> censored
    assert pd.isna(out["os_status"].iloc[2])  # status without time -> NA
    assert not bool(out["amlt_status"].iloc[2])
