"""Federated Kaplan-Meier against lifelines' KaplanMeierFitter on the pooled rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from survival_frames import CYTO, make_survival_frame, split_sites

from hemafed.analytics.km import FederatedKaplanMeier, time_grid
from hemafed.errors import InvalidInput


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_survival_frame()


def test_km_equals_lifelines_pooled(frame: pd.DataFrame, make_federation) -> None:
    fed = make_federation(split_sites(frame))
    km = FederatedKaplanMeier().fit(fed, "os_time", "os_status")
    ref = KaplanMeierFitter().fit(frame["os_time"], frame["os_status"])
    ours = km.survival_function_["KM_estimate"]
    assert np.allclose(ours.index, ref.survival_function_.index, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.to_numpy(), ref.survival_function_["KM_estimate"], atol=1e-9)
    np.testing.assert_allclose(km.confidence_interval_.to_numpy(),
                               ref.confidence_interval_.to_numpy(), atol=1e-9)
    cols = ["removed", "observed", "censored", "entrance", "at_risk"]
    np.testing.assert_array_equal(km.event_table[cols].to_numpy(),
                                  ref.event_table[cols].to_numpy())
    assert km.median_survival_time_ == pytest.approx(ref.median_survival_time_, abs=1e-12)
    assert json.loads(km.to_json())["kind"] == "kaplan_meier"


def test_km_by_group_and_event_only_grid(frame: pd.DataFrame, make_federation) -> None:
    fed = make_federation(split_sites(frame))
    grid = time_grid(fed, events_only=True)
    km = FederatedKaplanMeier().fit(fed, group_col="cyto_ipssr", levels=list(CYTO), grid=grid)
    for level in CYTO:
        rows = frame[frame["cyto_ipssr"] == level]
        ref = KaplanMeierFitter().fit(rows["os_time"], rows["os_status"])
        curve = km.curve(level)
        # on an event-only grid the curve is exact at every event time
        ref_s = ref.survival_function_.iloc[:, 0].reindex(curve.survival.index, method="ffill")
        np.testing.assert_allclose(curve.survival.to_numpy(), ref_s.to_numpy(), atol=1e-9)
        ref_lo = ref.confidence_interval_.iloc[:, 0].reindex(curve.ci_lower.index, method="ffill")
        # where S(t) = 0 the interval is undefined (R's convention: NA; lifelines gives 0)
        positive = curve.survival.to_numpy() > 0
        np.testing.assert_allclose(curve.ci_lower.to_numpy()[positive],
                                   ref_lo.to_numpy()[positive], atol=1e-9)
        assert np.isnan(curve.ci_lower.to_numpy()[~positive]).all()
        assert curve.median == pytest.approx(ref.median_survival_time_)
    at_risk = km.at_risk_table([0.0, 1.0, 2.0])
    for level in CYTO:
        t = frame.loc[frame["cyto_ipssr"] == level, "os_time"]
        assert at_risk.loc[level].tolist() == [float((t >= s).sum()) for s in (0.0, 1.0, 2.0)]


def test_binned_grid_up_mapping_matches_pooled_on_binned_times(frame: pd.DataFrame,
                                                               make_federation) -> None:
    fed = make_federation(split_sites(frame))
    grid = np.arange(0.5, 10.5, 0.5)
    km = FederatedKaplanMeier().fit(fed, grid=grid, time_mapping="up")
    binned = np.ceil(frame["os_time"] / 0.5 - 1e-9) * 0.5
    ref = KaplanMeierFitter().fit(binned, frame["os_status"])
    ours = km.survival_function_["KM_estimate"]
    ref_s = ref.survival_function_["KM_estimate"].reindex(ours.index, method="ffill")
    np.testing.assert_allclose(ours.to_numpy(), ref_s.to_numpy(), atol=1e-9)


def test_event_off_grid_is_excluded_not_refused(frame: pd.DataFrame, make_federation) -> None:
    # a refusal would tell the hub, per site, whether it has an event off a grid it chose
    fed = make_federation(split_sites(frame))
    grid = np.array([0.5, 1.0, 2.0])
    km = FederatedKaplanMeier().fit(fed, grid=grid)
    t, e = frame["os_time"].to_numpy(), frame["os_status"].to_numpy() == 1
    off = e & ~np.isclose(t[:, None], grid[None, :], rtol=1e-9, atol=0).any(axis=1)
    assert off.sum() > 0 and km.excluded_ == int(off.sum())


def test_unknown_column_and_missing_levels(frame: pd.DataFrame, make_federation) -> None:
    fed = make_federation(split_sites(frame))
    with pytest.raises(InvalidInput, match="not in the site's cohort"):
        FederatedKaplanMeier().fit(fed, "lfs_time", "lfs_status", grid=[1.0])
    with pytest.raises(InvalidInput, match="levels"):
        FederatedKaplanMeier().fit(fed, group_col="sex")


def test_plot_draws_one_line_per_group(frame: pd.DataFrame, make_federation) -> None:
    import matplotlib

    matplotlib.use("Agg")
    fed = make_federation(split_sites(frame))
    km = FederatedKaplanMeier().fit(fed, group_col="sex", levels=["M", "F"])
    ax = km.plot()
    assert len(ax.get_lines()) == 2
