"""Study-defined variables flow through validation, mapping, FHIR and analyses like built-in
fields: declared range and levels are enforced, a federated Cox model on them equals lifelines
on the pooled rows, and declarations are checked (names, ranges, levels, conflicts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from hemafed.analytics.cox import FederatedCoxPH
from hemafed.cohort.schema import FIELDS
from hemafed.cohort.study_fields import (
    StudyVariable,
    parse_variables,
    register_variables,
    study_variables,
)
from hemafed.cohort.validate import validate_cohort
from hemafed.errors import InvalidInput, ValidationFailed

DECLARED = [
    {"name": "x_arm", "type": "category", "levels": ["control", "experimental"],
     "description": "randomised trial arm", "codes": {"ecrf": "RAND_ARM"}},
    {"name": "x_ferritin", "type": "float", "unit": "ng/mL", "low": 0, "high": 20000,
     "description": "serum ferritin at screening", "codes": {"loinc": "2276-4"}},
]


def trial_frame(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.choice(["control", "experimental"], n)
    ferritin = np.round(rng.lognormal(6.5, 0.8, n), 1).clip(1, 19000)
    age = np.round(rng.normal(68, 9, n).clip(30, 95), 1)
    lp = 0.02 * (age - 68) + 0.4 * np.log(ferritin / 600) - 0.5 * (arm == "experimental")
    t = rng.exponential(3 * np.exp(-lp))
    c = rng.uniform(0.5, 6, n)
    days = np.maximum(1, np.ceil(np.minimum(t, c) * 365.25))
    return pd.DataFrame({"patient_id": [f"t{i}" for i in range(n)], "disease": "MDS",
                         "age": age, "x_arm": arm, "x_ferritin": ferritin,
                         "os_time": days / 365.25, "os_status": (t <= c).astype(int)})


def test_declarations_are_checked_all_at_once() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_variables([{"name": "ferritin", "type": "float", "low": 0, "high": 1},
                         {"name": "x_score", "type": "float"},
                         {"name": "x_arm", "type": "category", "levels": ["A"]},
                         {"name": "x_arm", "type": "category", "levels": ["A", "B"]},
                         {"name": "x_q", "type": "int", "low": 0, "high": 10, "colour": 1}])
    text = str(err.value)
    assert "4 problem(s)" in text and "'x_'" in text and "plausible range" in text
    assert "two distinct levels" in text and "unknown key" in text
    v = parse_variables(DECLARED)
    assert v[1].field().loinc == "2276-4" and v[1].field().unit == "ng/mL"


def test_validation_enforces_declared_range_and_levels() -> None:
    df = trial_frame(20)
    with pytest.raises(ValidationFailed, match="unknown column"):
        validate_cohort(df)  # not declared: refused, never silently dropped
    with study_variables(parse_variables(DECLARED)):
        cohort = validate_cohort(df)
        assert str(cohort.patients["x_ferritin"].dtype) == "Float64"
        bad = df.assign(x_ferritin=df["x_ferritin"].where(df.index != 3, 25000.0))
        with pytest.raises(ValidationFailed, match="x_ferritin"):
            validate_cohort(bad)
        bad = df.assign(x_arm=df["x_arm"].where(df.index != 5, "placebo"))
        with pytest.raises(ValidationFailed, match="x_arm"):
            validate_cohort(bad)
        # a conflicting redefinition in the same process is refused
        with pytest.raises(InvalidInput, match="declared differently"):
            register_variables([StudyVariable("x_arm", "category", levels=("A", "B"))])
    assert "x_arm" not in FIELDS and "x_ferritin" not in FIELDS


def test_mapping_and_fhir_carry_study_variables(tmp_path) -> None:
    from hemafed.cohort.io import read_cohort
    from hemafed.cohort.io.fhir import cohort_to_fhir_bundle, read_fhir_bundle

    df = trial_frame(30)
    source = df.rename(columns={"patient_id": "ID", "x_arm": "Arm", "x_ferritin": "Ferritin"})
    source.to_csv(tmp_path / "site.csv", index=False)
    mapping = {"columns": {"ID": "patient_id", "disease": "disease", "age": "age",
                           "Arm": {"field": "x_arm", "values": {"C": "control"}},
                           "Ferritin": "x_ferritin", "os_time": "os_time",
                           "os_status": "os_status"}}
    with study_variables(parse_variables(DECLARED)):
        cohort = read_cohort(tmp_path / "site.csv", mapping=mapping)
        assert cohort.patients["x_arm"].tolist() == df["x_arm"].tolist()
        back = read_fhir_bundle(cohort_to_fhir_bundle(cohort))
        np.testing.assert_allclose(back.patients["x_ferritin"].to_numpy(dtype=float),
                                   df["x_ferritin"].to_numpy())
        assert back.patients["x_arm"].tolist() == df["x_arm"].tolist()


def test_a_site_mapping_declares_its_variables(tmp_path) -> None:
    import yaml

    from hemafed.cohort.study_fields import read_with_variables, unregister_variables

    df = trial_frame(12)
    df.rename(columns={"x_arm": "ARM"}).to_csv(tmp_path / "export.csv", index=False)
    mapping = {"variables": DECLARED[:1],
               "patients": {"columns": {"patient_id": "patient_id", "disease": "disease",
                                        "age": "age", "ARM": "x_arm",
                                        "os_time": "os_time", "os_status": "os_status"},
                            "ignore": ["x_ferritin"]}}
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping))
    try:
        cohort = read_with_variables(tmp_path / "export.csv", tmp_path / "mapping.yaml")
        assert cohort.patients["x_arm"].tolist() == df["x_arm"].tolist()
        assert "x_ferritin" not in cohort.patients
    finally:
        unregister_variables(["x_arm"])


def test_federated_cox_on_study_variables_equals_lifelines(make_federation) -> None:
    df = trial_frame()
    with study_variables(parse_variables(DECLARED)):
        parts = np.array_split(np.arange(len(df)), [1, 60, 250])  # a one-patient site
        fed = make_federation([validate_cohort(df.iloc[p].reset_index(drop=True))
                               for p in parts])
        cph = FederatedCoxPH().fit(fed, "os_time", "os_status", "age + x_ferritin + x_arm")
    pooled = pd.DataFrame({"os_time": df["os_time"], "os_status": df["os_status"],
                           "age": df["age"], "x_ferritin": df["x_ferritin"],
                           "x_arm[experimental]": (df["x_arm"] == "experimental").astype(float)})
    ref = CoxPHFitter().fit(pooled, "os_time", "os_status",
                            fit_options={"precision": 1e-14, "r_precision": 1e-15})
    assert list(cph.params_.index) == ["age", "x_ferritin", "x_arm[experimental]"]
    np.testing.assert_allclose(cph.params_.to_numpy(), ref.params_.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(cph.standard_errors_.to_numpy(),
                               ref.standard_errors_.to_numpy(), rtol=1e-6)
