"""docs/queries.md has a row for every registered site query, in each of its three tables.

The tables are: what the sum contains (and the DP sensitivity), the plan rule of each query,
and which counts fall under the minimum-cell rule. A query registered by any module the site
runtime serves (:mod:`hemafed.study.catalogue`) must be named in the
first column of each (``name``, ``name@version`` or a pattern such as ``gwas_*``); a name there
that is not a registered query is a stale row.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from hemafed.federation.queries import registered
from hemafed.study.catalogue import catalogued

DOC = Path(__file__).resolve().parents[1] / "docs" / "queries.md"
TABLES = {
    "contents": "| query | what the sum contains |",
    "plan rule": "| query | kinds | plan rule |",
    "minimum cell": "| query | under the rule |",
}


def _first_column(header: str) -> list[str]:
    """The backticked names of the first column of the table whose header starts ``header``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    assert len(starts) == 1, f"docs/queries.md: expected one table headed {header!r}"
    names = []
    for line in lines[starts[0] + 2:]:
        if not line.startswith("|"):
            break
        first = line.split("|")[1]
        names += [n.split("@")[0] for n in re.findall(r"`([^`]+)`", first)]
    return names


@pytest.fixture(scope="module")
def queries() -> list[str]:
    catalogued()  # importing the catalogue registers every site query
    return sorted({q.name for q in registered()})


@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_registered_query_has_a_row(table: str, queries: list[str]) -> None:
    names = _first_column(TABLES[table])
    missing = [q for q in queries if not any(fnmatch.fnmatchcase(q, n) for n in names)]
    assert not missing, f"docs/queries.md, table {table!r}: no row for {missing}"


@pytest.mark.parametrize("table", sorted(TABLES))
def test_no_row_names_an_unregistered_query(table: str, queries: list[str]) -> None:
    # names with an underscore are query names (a bare `n` in a row is a statistic)
    stale = [n for n in _first_column(TABLES[table])
             if "_" in n and not any(fnmatch.fnmatchcase(q, n) for q in queries)]
    assert not stale, f"docs/queries.md, table {table!r}: rows for unregistered {stale}"


def test_the_check_can_fail(queries: list[str]) -> None:
    """The matching itself: a query the tables do not name is reported."""
    names = _first_column(TABLES["plan rule"])
    assert not any(fnmatch.fnmatchcase("no_such_query", n) for n in names)
    assert "combat_residuals" in queries and "neural_dp_gradient" in queries
