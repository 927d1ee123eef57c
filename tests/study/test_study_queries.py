"""The queries ``study validate`` tells a site to allow are exactly the ones each analysis sends.

Every analysis of every bundled demo spec is run on a small virtual federation that records the
queries it receives; the recorded names must equal :data:`QUERIES_OF_KIND` for that kind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.federation.local import LocalSumFederation
from hemafed.study.derived import with_derived_scores
from hemafed.study.queries import QUERIES_OF_KIND, needed_queries, policy_block, query_catalogue
from hemafed.study.runner import RUNNERS
from hemafed.study.spec import Analysis, StudySpec

FEWER = {"rounds": 2, "iters": 20, "n": 100}
SPECS = sorted((Path(__file__).parents[2] / "src/hemafed/study/specs").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_each_analysis_sends_exactly_the_listed_queries(path: Path) -> None:
    spec = StudySpec.load(path)
    cohorts = {k: with_derived_scores(v)
               for k, v in split_sites(generate(spec.disease or "MDS", 600, 1), 3, 1).items()}
    for a in spec.analyses:
        # fewer boosting rounds and synthesis iterations: the same queries, sent fewer times
        quick = {k: v for k, v in FEWER.items() if k in a.options}
        a = Analysis(a.id, a.kind, a.title, {**a.options, **quick})
        fed = LocalSumFederation(cohorts, dp_seed=0)
        RUNNERS[a.kind](fed, a, spec)
        assert {q for q, _ in fed.calls} == set(QUERIES_OF_KIND[a.kind]), a.id


def test_policy_block_names_versions_from_the_registry() -> None:
    spec = StudySpec.load(SPECS[0].parent / "demo_mds.yaml")
    versions = {e["name"]: e["version"] for e in query_catalogue()}
    assert "cox_risk_set_sums@3" in needed_queries(spec)  # version 3, not a guessed 1
    block = policy_block(spec)
    import yaml

    listed = yaml.safe_load(block)["allowed_queries"]
    assert listed == needed_queries(spec)
    assert all(q.split("@")[1] == versions[q.split("@")[0]] for q in listed)


def test_catalogue_reads_parameters_from_the_query_code() -> None:
    entries = {e["key"]: e for e in query_catalogue()}
    assert {"column", "low", "high", "bins"} <= set(entries["numeric_summary@1"]["parameters"])
    assert {"row", "col"} <= set(entries["crosstab@1"]["parameters"])
    assert all("secure sum" in e["privacy"] for e in entries.values())


def test_site_init_policy_names_the_queries_of_the_bundled_specs(tmp_path: Path) -> None:
    import yaml

    from hemafed.site.policy import write_default_policy

    write_default_policy(tmp_path / "policy.yaml", "s1")
    listed = yaml.safe_load((tmp_path / "policy.yaml").read_text())["allowed_queries"]
    needed = sorted({q for p in SPECS for q in needed_queries(StudySpec.load(p))})
    assert listed == ["cohort_size@1", *needed]
