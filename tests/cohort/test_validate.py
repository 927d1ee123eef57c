import pandas as pd
import pytest

from hemafed.cohort import validate_cohort
from hemafed.errors import ValidationFailed


def _patients(**overrides: list) -> pd.DataFrame:
    base = {
        "patient_id": ["p1", "p2", "p3"],
        "disease": ["MDS", "MDS", "AML"],
        "hb": [9.5, 11.0, 8.0],
        "plt": [120, 45, 30],
        "os_time": [1.5, 3.0, 0.2],
        "os_status": [1, 0, 1],
        "panel": ["myeloid", "myeloid", None],
    }
    base.update(overrides)
    return pd.DataFrame(base)


PANELS = {"myeloid": ["TP53", "SF3B1", "ASXL1"]}


def test_valid_cohort_is_typed_and_gene_matrix_separates_missing_from_wild_type() -> None:
    muts = pd.DataFrame({"patient_id": ["p1"], "gene": ["TP53"], "vaf": [0.45]})
    cohort = validate_cohort(_patients(), muts, PANELS)
    assert str(cohort.patients["hb"].dtype) == "Float64"
    assert str(cohort.patients["os_status"].dtype) == "boolean"
    gm = cohort.gene_matrix(["TP53", "SF3B1"])
    assert gm.loc["p1", "TP53"] == 1
    assert gm.loc["p2", "TP53"] == 0
    assert pd.isna(gm.loc["p3", "TP53"])  # not sequenced: missing, not wild-type


def test_all_problems_are_reported_at_once_with_row_column_and_reason() -> None:
    raw = _patients(
        patient_id=["p1", "p1", "p3"],
        hb=[150.0, 11.0, "abc"],
        os_time=[-1.0, None, 0.2],
        os_status=[1, 1, 2],
    )
    muts = pd.DataFrame({"patient_id": ["p1", "p9"], "gene": ["TPX53", "SF3B1"], "vaf": [45, 0.2]})
    with pytest.raises(ValidationFailed) as info:
        validate_cohort(raw, muts, PANELS)
    text = [str(p) for p in info.value.problems]
    joined = "\n".join(text)
    assert "duplicate patient identifier" in joined
    assert "looks like g/L" in joined
    assert "expected a number in g/dL, got 'abc'" in joined
    assert "below the plausible minimum" in joined
    assert "os event recorded without a time" in joined
    assert "expected 0/1" in joined
    assert "unknown gene symbol 'TPX53'" in joined
    assert "looks like a percentage" in joined
    assert "not in the patient table" in joined
    rows = {p.row for p in info.value.problems if p.column == "hb"}
    assert rows == {1, 3}


def test_unknown_column_and_disease_specific_field_are_refused() -> None:
    raw = _patients(b2m=[3.0, None, None], mystery=[1, 2, 3])
    with pytest.raises(ValidationFailed) as info:
        validate_cohort(raw)
    joined = "\n".join(map(str, info.value.problems))
    assert "'mystery': unknown column" in joined
    assert "b2m applies to MM only, not MDS" in joined


def test_mutation_in_gene_not_on_panel_is_refused() -> None:
    muts = pd.DataFrame({"patient_id": ["p2"], "gene": ["DNMT3A"]})
    with pytest.raises(ValidationFailed, match="DNMT3A is not on panel 'myeloid'"):
        validate_cohort(_patients(), muts, PANELS)
