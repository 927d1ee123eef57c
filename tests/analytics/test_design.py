"""The public design spec and the site's design matrix (hand-computed cases)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hemafed.analytics.design import (
    CategoricalTerm,
    DesignSpec,
    NumericTerm,
    complete_case_mask,
    design_matrix,
    design_values,
    parse_formula,
)
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput


@pytest.fixture
def cohort():
    return validate_cohort(
        pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "disease": "MDS",
                      "age": [60.0, 70.0, None, 80.0], "sex": ["M", "F", "F", None],
                      "del5q": [1, 0, 0, 1], "cyto_ipssr": ["Good", "Poor", "Good", "Good"],
                      "panel": ["p", "p", None, "p"], "os_time": [1.0, 2.0, 3.0, 4.0],
                      "os_status": [1, 0, 1, 1]}),
        pd.DataFrame({"patient_id": ["b"], "gene": ["TP53"]}), {"p": ["TP53", "SF3B1"]})


def test_formula_defaults_and_roundtrip() -> None:
    spec = parse_formula("age + sex + del5q + cyto_ipssr + gene:TP53")
    assert spec.names == ("age", "sex[F]", "del5q", "cyto_ipssr[Good]", "cyto_ipssr[Intermediate]",
                          "cyto_ipssr[Poor]", "cyto_ipssr[Very Poor]", "gene:TP53")
    assert spec.bounds[0].tolist() == [0.0, 110.0]
    assert DesignSpec.from_params(spec.to_params()) == spec


def test_design_matrix_complete_cases(cohort) -> None:
    spec = DesignSpec((NumericTerm("age", 0, 110), CategoricalTerm("sex", ("M", "F"), "M"),
                       NumericTerm("del5q", 0, 1),
                       CategoricalTerm("cyto_ipssr", ("Good", "Poor"), "Good"),
                       parse_formula("gene:TP53").terms[0]))
    mask = complete_case_mask(cohort, spec, ["os_time"])
    assert mask.tolist() == [True, True, False, False]
    x, names = design_matrix(cohort, spec)
    np.testing.assert_array_equal(x, [[60, 0, 1, 0, 0], [70, 1, 0, 1, 1]])
    assert names[-1] == "gene:TP53"


def test_bad_designs(cohort) -> None:
    with pytest.raises(InvalidInput, match="outside its declared bounds"):
        design_matrix(cohort, DesignSpec((NumericTerm("age", 0, 65),)))
    with pytest.raises(InvalidInput, match="outside the declared levels"):
        design_matrix(cohort, DesignSpec((CategoricalTerm("cyto_ipssr", ("Good", "Bad"), "Good"),)))
    with pytest.raises(InvalidInput, match="not in the site's cohort"):
        design_matrix(cohort, parse_formula("hb"))
    with pytest.raises(InvalidInput, match="twice"):
        parse_formula("age + age")
    with pytest.raises(InvalidInput, match="reference level"):
        CategoricalTerm("sex", ("M", "F"), "X")


def test_several_gene_terms_from_one_gene_matrix(cohort, monkeypatch) -> None:
    calls: list[tuple[str, ...]] = []
    original = type(cohort).gene_matrix

    def counting(self, genes=None):
        calls.append(tuple(genes or ()))
        return original(self, genes)

    monkeypatch.setattr(type(cohort), "gene_matrix", counting)
    spec = parse_formula("gene:SF3B1 + age + gene:TP53")
    values = design_values(cohort, spec)
    # patient c has no panel: both genes missing; b carries TP53 only
    np.testing.assert_array_equal(values, [[0, 60, 0], [0, 70, 1], [np.nan, np.nan, np.nan],
                                           [0, 80, 0]])
    assert calls == [("SF3B1", "TP53")]
    x, _ = design_matrix(cohort, spec, values=values)
    np.testing.assert_array_equal(x, [[0, 60, 0], [0, 70, 1], [0, 80, 0]])
    assert complete_case_mask(cohort, spec, values=values).tolist() == [True, True, False, True]


def test_bounds_fixed_in_the_spec_replace_the_schema_range() -> None:
    from hemafed.analytics.design import parse_formula
    from hemafed.errors import InvalidInput

    spec = parse_formula("age + wbc + sex", {"wbc": [0, 50]})
    assert spec.bounds[1].tolist() == [0.0, 50.0] and spec.center[1] == 25.0
    assert spec.bounds[0].tolist() == [0.0, 110.0]  # not listed: the schema's
    with pytest.raises(InvalidInput, match="does not use"):
        parse_formula("age", {"wbc": [0, 50]})
    with pytest.raises(InvalidInput, match=r"\[low, high\]"):
        parse_formula("wbc", {"wbc": [0]})
