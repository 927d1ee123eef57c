"""The catalogue of site queries (:mod:`hemafed.study.catalogue`) and the kinds agree.

Every query an analysis kind names is registered by the catalogue, and every catalogued query
is named by some kind or listed as standalone. The catalogue is imported in a fresh interpreter,
so what counts is what the catalogue registers, not what other tests happened to import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

PROBE = """
import json
from hemafed.study import catalogue
from hemafed.federation.queries import registered
print(json.dumps({
    "catalogued": sorted(catalogue.catalogued()),
    "registered_by": {q.name: q.compute.__module__ for q in registered()},
    "kinds": {k: sorted(v) for k, v in catalogue.kind_queries().items()},
    "standalone": sorted(catalogue.STANDALONE),
    "modules": [m.__name__ for m in catalogue.CATALOGUE],
}))
"""


@pytest.fixture(scope="module")
def fresh() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env=env, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_query_a_kind_names_is_catalogued(fresh: dict) -> None:
    catalogued = set(fresh["catalogued"])
    missing = {k: sorted(set(q) - catalogued) for k, q in fresh["kinds"].items()
               if set(q) - catalogued}
    assert not missing, f"kinds name queries the catalogue does not register: {missing}"
    # the kinds are really read: the built-in ones and their queries are there
    assert {"cox_risk_set_sums", "time_histogram"} <= set(fresh["kinds"]["cox"])
    assert {"combat_moments", "imaging_screen"} <= set(fresh["kinds"]["imaging"])
    assert {"gwas_linear", "lmm_reml_sums"} <= catalogued


def test_every_catalogued_query_is_used_or_standalone(fresh: dict) -> None:
    used = set().union(*map(set, fresh["kinds"].values()))
    unused = set(fresh["catalogued"]) - used - set(fresh["standalone"])
    assert not unused, f"catalogued queries no kind names (list them in STANDALONE): {unused}"
    stale = set(fresh["standalone"]) - set(fresh["catalogued"])
    assert not stale, f"STANDALONE lists queries the catalogue does not register: {stale}"
    assert not set(fresh["standalone"]) & used, "a STANDALONE query is named by a kind"


def test_the_catalogue_says_where_each_query_comes_from(fresh: dict) -> None:
    """Each query's site step is defined in a listed module or inside a listed package."""
    listed = tuple(fresh["modules"])
    outside = {q: m for q, m in fresh["registered_by"].items()
               if not any(m == n or m.startswith(n + ".") for n in listed)}
    assert not outside, outside
