"""Hole: the imaging site handler (``hemafed.imaging.runtime.imaging_site_handler``, the one
docs/imaging.md tells imaging sites to run) gives ``site_step`` a bare compute function, without
the hooks of the standard site runtime: no participant-set guard (``refuse_differencing``), no
audit-head anchor (rollback) check, no audit head in its replies, and it never checks that the
manifest is the one the officer approved (``require_pinned``).

So under the shipped policy template (``refuse_differencing: true``) the same non-DP request
summed over all sites and again over all sites but one gives that site's exact statistic by
subtraction (two requests), where the standard handler refuses the second list. Through real
site directories, the real site node and secure aggregation.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from redteam_hub import make_sites

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.errors import HemafedError
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.queries import get_query
from hemafed.federation.runtime import site_handler
from hemafed.imaging.runtime import imaging_site_handler
from hemafed.secure import SecureSumSession
from hemafed.site.request import SiteRequest
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

pytestmark = pytest.mark.redteam

SPEC = StudySpec.from_mapping(
    {
        "study_id": "rt-img",
        "requester": "r",
        "analyses": [{"id": "d", "kind": "describe", "columns": ["age"]}],
    }
)
PARAMS = {"column": "age", "low": 0.0, "high": 110.0}


def _moments(fed: Any, handler: Any, sites: list[str]) -> Any:
    """One secure sum of the planned ``moments`` request over ``sites`` (the hub's result)."""
    request = SiteRequest(
        uuid.uuid4().hex,
        SPEC.study_id,
        SPEC.sha256,
        "moments",
        "1",
        dict(PARAMS),
        "hub",
        None,
        1,
        True,
    )
    configs = [c for c in fed.site_configs() if c["site_id"] in sites]

    out: list[Any] = []

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> None:
        try:
            out.append(
                SecureSumSession(exchange, fed.manifest, site_ids).secure_sum(
                    os.urandom(16),
                    request.to_json(),
                    get_query("moments").declare(PARAMS),
                    quorum=len(site_ids),
                )
            )
        except HemafedError as exc:
            out.append(exc)

    run_in_process(hub, handler, configs, {}, raise_errors=True)
    return out[0]


@pytest.fixture
def fed(tmp_path: Path) -> Any:
    return make_sites(tmp_path, split_sites(generate("MDS", 240, 5), 4, 5), SPEC)


def test_standard_handler_refuses_the_second_participant_list(fed: Any) -> None:
    everyone = sorted(fed.site_dirs)
    assert not isinstance(_moments(fed, site_handler, everyone), Exception)
    assert isinstance(_moments(fed, site_handler, everyone[1:]), HemafedError)


def test_imaging_handler_releases_one_sites_exact_sums_by_difference(fed: Any) -> None:
    everyone = sorted(fed.site_dirs)
    target = everyone[0]
    full = _moments(fed, imaging_site_handler, everyone)
    rest = _moments(fed, imaging_site_handler, everyone[1:])
    assert not isinstance(full, Exception) and not isinstance(rest, Exception), (full, rest)
    ages = load_cohort(fed.site_dirs[target]).patients["age"].astype(float).dropna()
    n = full.values["n"][0] - rest.values["n"][0]
    total = full.values["sum"][0] - rest.values["sum"][0]
    squares = full.values["sum_sq"][0] - rest.values["sum_sq"][0]
    assert n == len(ages)
    assert total == pytest.approx(float(ages.sum()), abs=1e-6)
    assert squares == pytest.approx(float((ages**2).sum()), abs=1e-4)
    # no audit head in its replies either: the hub's rollback anchor never sees this site
