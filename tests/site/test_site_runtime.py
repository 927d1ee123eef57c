"""The site runtime enriches a site's cohort only through the hook it is given.

``hemafed.site.runtime.site_handler`` with no hook answers on the stored cohort; the standard
handler (``hemafed.study.site_runtime.site_handler``) passes the study layer's derived scores,
so its node's cohort carries the IPSS-M and IPSS-R columns the study layer computes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.site import runtime
from hemafed.site.store import load_cohort
from hemafed.study import site_runtime
from hemafed.study.derived import with_derived_scores
from hemafed.study.spec import StudySpec

SPEC = StudySpec.from_mapping({"study_id": "rt", "requester": "r", "analyses": [
    {"id": "d", "kind": "describe", "columns": ["age"]}]})


def test_the_enrichment_is_the_hook_passed_in(tmp_path: Path) -> None:
    fed = build_sites(tmp_path, split_sites(generate("MDS", 120, 3), 3, 3), SPEC)
    site_dir = next(iter(fed.site_dirs.values()))
    stored = load_cohort(site_dir).patients
    assert "ipssm_category" not in stored

    plain = runtime.open_runtime(site_dir).node.cohort.patients
    assert list(plain.columns) == list(stored.columns)

    site_runtime.site_handler({"site_dir": str(site_dir)})
    enriched = runtime.open_runtime(site_dir, with_derived_scores).node.cohort.patients
    expected = with_derived_scores(load_cohort(site_dir)).patients
    for col in ("ipssm_score", "ipssm_category", "ipssr_category"):
        assert col in enriched
        pd.testing.assert_series_equal(enriched[col], expected[col])
    assert enriched["ipssr_category"].notna().any()

    # a hook of the caller's own is what the node's cohort is opened with
    marked = runtime.open_runtime(
        site_dir, lambda c: type(c)(c.patients.assign(marker=1), c.mutations, c.panels))
    assert (marked.node.cohort.patients["marker"] == 1).all()
