"""Differencing over participant sets: the same non-DP request is released over one set of
sites; the sites refuse to confirm another survivor list for it, and log every list shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hostile import HostileHub

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import ProtocolError
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.calibration import noisy_specs
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "differencing", "requester": "tester", "analyses": [
    {"id": "d", "kind": "describe", "columns": ["age", "sex"]}]}


@pytest.fixture
def sites(tmp_path: Path) -> Any:
    cohorts = split_sites(generate("MDS", 200, 8), 4, 8)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(tmp_path / "sites", cohorts, spec), spec


def test_the_same_request_over_a_smaller_list_is_refused(sites: Any) -> None:
    fed, spec = sites
    ids = sorted(fed.site_dirs)
    assert fed.manifest.threshold == 3
    hub = HostileHub(fed, spec.study_id, spec.sha256)
    size = get_query("cohort_size").declare({})
    everyone = hub.ask("cohort_size", {}, specs=size)
    assert everyone.values["n"][0] == sum(len(load_cohort(d)) for d in fed.site_dirs.values())
    # the same request without the last site would give that site's size by difference
    out = hub.ask("cohort_size", {}, specs=size, sites=ids[:3])
    assert isinstance(out, ProtocolError), out
    logs = {s: AuditLog(fed.site_dirs[s] / "audit.log").entries() for s in ids[:3]}
    # the first site asked to confirm refuses (the in-process driver stops there)
    assert any("would give the difference by subtraction" in e["reason"] for e in logs[ids[0]])
    for entries in logs.values():  # every participant list a site confirmed is logged
        shown = [e["reason"] for e in entries if e["reason"].startswith("participants ")]
        assert shown == [f"participants {','.join(ids)} (recoverable)"]
    # any other non-DP request of the study over the smaller list is refused too (keyed on
    # the study: it could be an equivalent rewrite); a DP release is allowed
    levels = {"column": "sex", "levels": ["M", "F"]}
    other = hub.ask("category_counts", levels,
                    specs=get_query("category_counts").declare(levels), sites=ids[:3])
    assert isinstance(other, ProtocolError), other
    dp = DPRequest(1.0, 1e-6)
    noisy = hub.ask("cohort_size", {}, specs=noisy_specs(size, dp, 3), dp=dp, divisor=3,
                    sites=ids[:3])
    assert not isinstance(noisy, Exception), noisy
