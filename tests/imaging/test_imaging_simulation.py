"""The imaging study through the Flower simulation runtime (``hemafed study run --transport
sim``) equals the in-process run on the same virtual imaging sites."""

from __future__ import annotations

import math
from typing import Any

import pytest

from hemafed.imaging.demo import ImagingSites


def _numbers(doc: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of a results document by path (numbers and strings)."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out |= _numbers(v, f"{path}/{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out |= _numbers(v, f"{path}[{i}]")
    else:
        out[path] = doc
    return out


@pytest.mark.slow
def test_imaging_study_in_flower_simulation_equals_in_process(scd_sites: ImagingSites) -> None:
    from hemafed.demo import run_study_on

    sim = run_study_on("sim", scd_sites.spec, scd_sites.sites)
    ref = run_study_on("inprocess", scd_sites.spec, scd_sites.sites)
    a = next(d for d in sim["analyses"] if d["kind"] == "imaging")
    b = next(d for d in ref["analyses"] if d["kind"] == "imaging")
    assert a["status"] == b["status"] == "ok", (a.get("error"), b.get("error"))
    assert a["provenance"]["sites covered"] == sorted(scd_sites.sites.site_dirs)
    left, right = _numbers(a["tables"]), _numbers(b["tables"])
    assert left.keys() == right.keys()
    compared = 0
    for key, x in left.items():
        y = right[key]
        if isinstance(x, float) and isinstance(y, float) and not math.isnan(x):
            assert abs(x - y) <= 1e-9 * max(1.0, abs(y)), (key, x, y)
            compared += 1
        else:
            assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), key
    assert compared > 20  # the model, screen and ComBat tables were compared
    for k in ("features chosen", "patients harmonised", "n", "newton_rounds"):
        assert a["stats"][k] == b["stats"][k]
