"""Disclosure control at the site: small cells, small subgroups, too many cells, require_dp.

Real site directories and secure aggregation (in-process): a site whose own contribution
breaks its policy refuses, by rule name, before masking anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hostile import HostileHub, decision_entry

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import PolicyRefused
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.calibration import noisy_specs
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "disclosure", "requester": "tester", "analyses": [
    {"id": "d", "kind": "describe", "columns": ["age", "sex"]}]}
HIST = {"column": "age", "low": 0.0, "high": 110.0, "bins": 20}


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohorts = split_sites(generate("MDS", 240, 3), 3, 3)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(tmp_path_factory.mktemp("disclosure-sites"), cohorts, spec), spec


@contextlib.contextmanager
def policy(fed: Any, **changes: Any) -> Iterator[None]:
    """Every site's policy with ``changes`` (restored afterwards)."""
    saved = {d: (d / "policy.yaml").read_text() for d in fed.site_dirs.values()}
    for d, text in saved.items():
        doc = yaml.safe_load(text)
        for key, value in changes.items():
            if key == "study_require_dp":
                doc["studies"][0]["require_dp"] = value
            else:
                doc[key] = value
        (d / "policy.yaml").write_text(yaml.safe_dump(doc))
    try:
        yield
    finally:
        for d, text in saved.items():
            (d / "policy.yaml").write_text(text)


def _ask(sites: Any, query: str, params: dict[str, Any], dp: DPRequest | None = None
         ) -> tuple[Any, HostileHub]:
    fed, spec = sites
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    n = len(fed.site_dirs)
    specs = noisy_specs(get_query(query).declare(params), dp, n)
    return hub.ask(query, params, specs=specs, dp=dp, divisor=n if dp else 1), hub


def _site_hist(d: Path) -> np.ndarray:
    age = load_cohort(d).patients["age"].dropna().to_numpy(dtype=float)
    return np.histogram(age, bins=np.linspace(0, 110, 21))[0]


def test_a_histogram_with_small_own_cells_is_refused_unless_dp(sites: Any) -> None:
    fed, _ = sites
    small = [s for s, d in fed.site_dirs.items()
             if np.any((_site_hist(d) > 0) & (_site_hist(d) < 5))]
    assert small, "the test needs a site with a cell of 1-4 patients"
    with policy(fed, enforce_min_cell=True):
        out, hub = _ask(sites, "numeric_summary", HIST)
        assert isinstance(out, PolicyRefused) and "min_cell_size" in str(out)
        refusing = {b["name"] for b in hub.refusal_bodies()}
        assert refusing == {b"min_cell_size"}
        for s in small:
            assert "below min_cell_size 5" in decision_entry(fed.site_dirs[s] / "audit.log"
                                                             )["reason"]
        # the same histogram as a DP release is contributed
        out, _ = _ask(sites, "numeric_summary", HIST, DPRequest(1.0, 1e-6))
        assert not isinstance(out, Exception), out
    # without the rule (the policy default) the site answers: the rule is what refused
    out, _ = _ask(sites, "numeric_summary", HIST)
    assert not isinstance(out, Exception)
    pooled = sum(_site_hist(d) for d in fed.site_dirs.values())
    np.testing.assert_allclose(out.values["hist"], pooled)


def test_small_subgroups_are_refused(sites: Any) -> None:
    fed, _ = sites
    smallest = min(len(load_cohort(d)) for d in fed.site_dirs.values())
    with policy(fed, min_subgroup_size=smallest + 1):
        out, hub = _ask(sites, "cohort_size", {})
        assert isinstance(out, PolicyRefused)
        assert {b["name"] for b in hub.refusal_bodies()} == {b"min_subgroup_size"}
    with policy(fed, min_subgroup_size=smallest):
        out, _ = _ask(sites, "cohort_size", {})
        assert not isinstance(out, Exception)


def test_max_cells_refuses_from_the_declaration(sites: Any) -> None:
    fed, _ = sites
    with policy(fed, max_cells=10):
        out, hub = _ask(sites, "numeric_summary", HIST)
        assert isinstance(out, PolicyRefused)
        assert {b["name"] for b in hub.refusal_bodies()} == {b"max_cells"}


@pytest.mark.parametrize("switch", ["require_dp", "study_require_dp"])
def test_require_dp_globally_and_per_study(sites: Any, switch: str) -> None:
    fed, _ = sites
    with policy(fed, **{switch: True}):
        out, hub = _ask(sites, "cohort_size", {})
        assert isinstance(out, PolicyRefused)
        assert {b["name"] for b in hub.refusal_bodies()} == {b"require_dp"}
        out, _ = _ask(sites, "cohort_size", {}, DPRequest(1.0, 1e-6))
        assert not isinstance(out, Exception), out
