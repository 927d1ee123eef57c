"""The ComBat queries' typed parameters on a hand-computed site: the typed object and the hub's
mapping give the same numbers (those worked out below by hand), a bad parameter is refused at
the site naming it and never echoing a pooled value, and the wire form is what the plan reads.

The site: four complete cases (a fifth patient lacks ``f2``), covariate ``age`` 10, 20, 30, 40,
``f1 = 0.02 age`` and ``f2`` 0.1, 0.4, 0.7, 0.3 around 0.375 in another order. Centred:
``age - 25 = -15, -5, 5, 15``; ``Xc'Xc = 500``, ``Xc'Yc = (10, 1.5)``. At ``beta = (0.02,
0.003)`` the within-site residuals of ``f2`` are 0.07, -0.26, 0.31, -0.12 (squares sum to
0.183), those of ``f1`` are 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.queries import get_query
from hemafed.imaging.combat import (
    ComBatApplyParams,
    ComBatMomentsParams,
    ComBatResidualsParams,
    local_moments,
)

SITE = Cohort(pd.DataFrame({
    "patient_id": ["p1", "p2", "p3", "p4", "p5"],
    "age": [10.0, 20.0, 30.0, 40.0, 50.0],
    "f1": [0.2, 0.4, 0.6, 0.8, 0.5],
    "f2": [0.4, 0.1, 0.7, 0.3, np.nan],
}))
BASE: dict[str, Any] = {"features": ["f1", "f2"], "covariates": ["age"],
                        "bounds": {"f1": [0.0, 1.0], "f2": [0.0, 1.0], "age": [0.0, 100.0]}}
BETA = [[0.02, 0.003]]
APPLY: dict[str, Any] = {**BASE, "alpha": [0.0, 0.3], "beta": BETA,
                         "var_pooled": [1.0, 0.04575], "n": 4, "sites": ["a"]}


def test_moments_by_hand_from_the_mapping_and_the_typed_object() -> None:
    query = get_query("combat_moments")
    typed = ComBatMomentsParams.from_mapping(BASE)
    for out in (query.run(SITE, BASE), query.compute(SITE, typed)):
        assert out["n"].tolist() == [4.0]
        assert out["sum_x"].tolist() == [100.0]
        np.testing.assert_allclose(out["sum_y"], [2.0, 1.5], rtol=1e-12)
        np.testing.assert_allclose(out["xx"], [[500.0]], rtol=1e-12)
        np.testing.assert_allclose(out["xy"], [[10.0, 1.5]], rtol=1e-12)
    # bit for bit what the pure function gives on the site's complete cases
    data = np.column_stack([SITE.numeric_column(c) for c in ("f1", "f2", "age")])[:4]
    want = local_moments(data[:, :2], data[:, 2:])
    got = query.run(SITE, BASE)
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)


def test_residuals_by_hand() -> None:
    query = get_query("combat_residuals")
    request = {**BASE, "beta": BETA}
    typed = ComBatResidualsParams.from_mapping(request)
    assert typed.beta == ((0.02, 0.003),)
    for out in (query.run(SITE, request), query.compute(SITE, typed)):
        np.testing.assert_allclose(out["rss"], [0.0, 0.183], atol=1e-15)


def test_residuals_declaration_by_hand() -> None:
    """``m (range_y + abs(beta) range_x)^2``, largest over the features: f1 ``(1 + 2)^2 = 9``."""
    rss = get_query("combat_residuals").declare({**BASE, "beta": BETA})["rss"]
    assert (rss.shape, rss.low, rss.high) == ((2,), 0.0, 9.0 * 1_000_000)
    assert rss.sensitivity == pytest.approx(9.0 * np.sqrt(2))
    n = get_query("combat_apply").declare({**APPLY, "max_patients": 500})["n"]
    assert (n.shape, n.high, n.is_count) == ((1,), 500, True)


def test_apply_counts_the_complete_cases() -> None:
    assert get_query("combat_apply").run(SITE, APPLY)["n"].tolist() == [4.0]


@pytest.mark.parametrize("key, value", [
    ("alpha", [5.123456789, 0.3]),     # its grand mean outside the feature's bounds
    ("var_pooled", [7.654321, 0.04575]),  # above the largest variance within the bounds
    ("beta", [[98765.4321, 0.003]]),   # an implausible covariate effect
    ("n", 2.75),                        # the pooled count is a whole number
])
def test_a_bad_pooled_value_is_refused_at_the_site_naming_it_never_echoing_it(
        key: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=f"'{key}'") as exc:
        get_query("combat_apply").run(SITE, {**APPLY, key: value})
    digits = str(value).strip("[]").split(",")[0]
    assert digits not in str(exc.value)


def test_a_key_the_query_does_not_read_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown parameter 'beta'"):
        get_query("combat_moments").check({**BASE, "beta": BETA})
    with pytest.raises(InvalidInput, match="unknown parameter 'alpha'"):
        get_query("combat_residuals").check({**BASE, "beta": BETA, "alpha": [0.0, 0.3]})
    with pytest.raises(InvalidInput, match="'bounds'"):  # another column's bounds
        get_query("combat_moments").check({**BASE, "bounds": {**BASE["bounds"], "hb": [0, 20]}})
    with pytest.raises(InvalidInput, match="'covariates'"):  # apply names them, even none
        get_query("combat_apply").check({**{k: v for k, v in APPLY.items() if k != "covariates"},
                                         "beta": []})


def test_the_wire_form_fills_the_defaults_and_names_a_library_only_when_sent() -> None:
    wire = ComBatMomentsParams.from_mapping(BASE).to_mapping()
    assert wire == {**BASE, "max_patients": 1_000_000, "resolution": 1e-10}
    named = ComBatMomentsParams.from_mapping({**BASE, "library": "mirp"}).to_mapping()
    assert named["library"] == "mirp"
    settings = {"bin_width": 8.0, "aggregation": "averaged"}
    wire = ComBatMomentsParams.from_mapping({**BASE, "settings": settings}).to_mapping()
    assert wire["settings"]["bin_width"] == 8.0
    assert isinstance(wire["settings"]["families"], list)
    apply = ComBatApplyParams.from_mapping({**APPLY, "bounds": {**BASE["bounds"],
                                                                "h_f2": [-1.0, 2.0]}})
    assert apply.column_bounds(["h_f2", "age"]).tolist() == [[-1.0, 2.0], [0.0, 100.0]]
    assert apply.to_mapping()["bounds"]["h_f2"] == [-1.0, 2.0]
