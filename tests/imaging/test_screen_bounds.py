"""Attack: the hub moves the bounds of the harmonised features (``h_<feature>``) it screens.

The screen declares its sensitivity and its fixed-point range from the bounds in the request.
A hub that narrows them could learn whether some site holds a value outside the narrow box (the
site refuses the whole request); one that widens them changes the scale of every sum. The
``h_`` bounds are therefore the spec's (declared ``h_<feature>``, else the feature's own,
:meth:`hemafed.imaging.spec.ImagingSpec.harmonised_bounds`): public before any site computes,
never the hub's nor derived from a ComBat fit. Every site refuses other bounds, naming the rule
(the plan's ``bounds`` element), never a value, a count or which site refused.
"""

from __future__ import annotations

from typing import Any

import pytest

from hemafed.errors import HemafedError, InvalidInput
from hemafed.federation.queries import get_query
from hemafed.imaging.combat import FederatedComBat
from hemafed.imaging.demo import ImagingSites
from hemafed.imaging.screen import federated_screen
from hemafed.imaging.spec import ImagingSpec
from hemafed.study.plan import StudyPlan


def _bounds(built: ImagingSites) -> tuple[ImagingSpec, dict[str, tuple[float, float]]]:
    ispec = ImagingSpec.from_mapping(built.spec.raw["imaging"])
    return ispec, {**ispec.bounds, **ispec.harmonised_bounds()}


def test_plan_pins_harmonised_screen_bounds_to_the_spec(scd_sites: ImagingSites) -> None:
    plan = StudyPlan.from_spec(scd_sites.spec)
    ispec, bounds = _bounds(scd_sites)
    feats = ["h_" + f for f in ispec.features[:3]]
    params = {"features": feats, "outcome": "silent_infarct",
              "bounds": {f: list(bounds[f]) for f in feats}}
    assert plan.check("imaging_screen", params, False) is None
    lo, hi = bounds[feats[0]]
    for moved in ([lo, hi + 1.0], [lo + 0.25 * (hi - lo), hi], [lo - 1e6, hi + 1e6]):
        bad = {**params, "bounds": {**params["bounds"], feats[0]: moved}}
        assert plan.check("imaging_screen", bad, False)[0] == "bounds", moved
    # a feature left without its bound is refused too
    missing = {**params, "bounds": {f: list(bounds[f]) for f in feats[1:]}}
    assert plan.check("imaging_screen", missing, False) is not None


def test_sites_refuse_a_screen_with_moved_harmonised_bounds(scd_sites: ImagingSites,
                                                            secure_run: Any) -> None:
    """Over real site directories and secure sums: spec bounds pass, wider/narrower refused."""
    ispec, bounds = _bounds(scd_sites)
    feats = ["h_" + f for f in ispec.features[:4]]
    study = scd_sites.spec.study_id

    def body(fed: Any) -> dict[str, Any]:
        combat = FederatedComBat().fit(fed, ispec.features, ispec.covariates, ispec.bounds,
                                       study=study)
        combat.apply(fed, ispec.bounds, study=study)
        ok = federated_screen(fed, feats, "silent_infarct", bounds, study=study)
        out: dict[str, Any] = {"ok": list(ok["feature"])}
        lo, hi = bounds[feats[0]]
        for name, moved in (("wider", (lo - 10 * (hi - lo), hi + 10 * (hi - lo))),
                            ("narrower", (lo + 0.4 * (hi - lo), hi - 0.4 * (hi - lo)))):
            try:
                federated_screen(fed, feats, "silent_infarct", {**bounds, feats[0]: moved},
                                 study=study)
                out[name] = None
            except HemafedError as exc:
                out[name] = str(exc)
        return out

    out = secure_run(scd_sites, body)
    assert sorted(out["ok"]) == sorted(feats)  # the spec's bounds are answered
    for name in ("wider", "narrower"):
        msg = out[name]
        assert msg is not None, f"a {name} h_ bound was answered"
        assert "plan" in msg and "bounds" in msg, msg
        # the refusal names the rule ('bounds'), not a count or a value
        assert "'bounds'" in msg and f"{bounds[feats[0]][0]:g}" not in msg, msg



def test_a_horizon_without_its_time_column_is_refused_naming_time() -> None:
    """Formerly a KeyError at the site: the time-to-event groups need the duration column."""
    params = {"features": ["f1"], "outcome": "os_status", "bounds": {"f1": [0.0, 1.0]},
              "horizon": 2.0}
    with pytest.raises(InvalidInput, match="parameter 'time'"):
        get_query("imaging_screen").check(params)
    assert get_query("imaging_screen").check({**params, "time": "os_time"}).time == "os_time"
