"""Study-defined variables declared in a study spec (``variables:``) end to end: the spec
validates them and the names analyses use, the plan takes their public bounds from the declared
low/high, each site registers the approved declarations before it imports or loads its cohort
(kept across a restart) and refuses a mapping that declares them differently, FHIR Observations
(LOINC code) and Phenopackets measurements fill them, and a Cox model on them through the study
runner and secure aggregation equals lifelines on the pooled rows.

The site exports are written with the maintained libraries (``fhir.resources`` R4B models,
``phenopackets`` protobuf classes), not with hemafed's own exporters."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from lifelines import CoxPHFitter

from hemafed.cohort.schema import FIELDS, LOINC_TO_FIELD
from hemafed.cohort.study_fields import unregister_variables
from hemafed.errors import InvalidInput, ValidationFailed
from hemafed.study.plan import StudyPlan
from hemafed.study.spec import StudySpec

LDH_LOINC = "14804-9"  # LDH by lactate-to-pyruvate reaction (the schema's `ldh` is 2532-0)
VARIABLES = [
    {"name": "x_ldh", "type": "float", "unit": "U/L", "low": 50, "high": 5000,
     "description": "trial central-lab LDH", "codes": {"loinc": LDH_LOINC}},
    {"name": "x_arm", "type": "bool", "description": "randomised to the experimental arm",
     "codes": {"ecrf": "RAND_ARM"}},
]
SPEC = {"study_id": "vars-e2e", "requester": "tester", "variables": VARIABLES,
        "analyses": [{"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
                      "formula": "age + x_ldh + x_arm"},
                     {"id": "d", "kind": "describe", "columns": ["x_ldh", "x_arm"]}]}
FIELD_SYSTEM = "http://hemafed.org/fhir/CodeSystem/field"
DISEASE_SYSTEM = "http://hemafed.org/fhir/CodeSystem/disease"
ID_SYSTEM = "http://hemafed.org/fhir/sid/patient-id"


@pytest.fixture(autouse=True)
def _clean_fields() -> Iterator[None]:
    """Nothing registered by one test leaks into the next (or into other test files)."""
    yield
    unregister_variables([v["name"] for v in VARIABLES])


def trial_rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = np.round(rng.normal(66, 10, n).clip(25, 95), 1)
    ldh = np.round(rng.lognormal(5.8, 0.6, n).clip(60, 4900), 1)
    arm = rng.random(n) < 0.5
    lp = 0.03 * (age - 66) + 0.5 * np.log(ldh / 330) - 0.6 * arm
    t, c = rng.exponential(3 * np.exp(-lp)), rng.uniform(0.5, 6, n)
    days = np.maximum(1, np.ceil(np.minimum(t, c) * 365.25))
    return pd.DataFrame({"patient_id": [f"p{seed}-{i}" for i in range(n)], "age": age,
                         "x_ldh": ldh, "x_arm": arm, "os_time": days / 365.25,
                         "os_status": t <= c})


# ------------------------------------------------------------------ exports, written by the libraries

def fhir_bundle(rows: pd.DataFrame, ldh_unit: str = "U/L") -> dict[str, Any]:
    from fhir.resources.R4B.bundle import Bundle
    from fhir.resources.R4B.condition import Condition
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.patient import Patient

    entries: list[dict[str, Any]] = []

    def obs(pid: str, k: str, coding: dict[str, str], **value: Any) -> None:
        entries.append({"resource": Observation(
            id=f"{pid}-{k}", status="final", code={"coding": [coding]},
            subject={"reference": f"Patient/{pid}"}, **value)})

    for r in rows.itertuples():
        pid = str(r.patient_id)
        entries.append({"resource": Patient(
            id=pid, identifier=[{"system": ID_SYSTEM, "value": pid}])})
        entries.append({"resource": Condition(
            id=f"{pid}-dx", subject={"reference": f"Patient/{pid}"},
            code={"coding": [{"system": DISEASE_SYSTEM, "code": "MDS"}]})})
        field = {"system": FIELD_SYSTEM}
        obs(pid, "age", {**field, "code": "age"},
            valueQuantity={"value": r.age, "unit": "a", "system": "http://unitsofmeasure.org",
                           "code": "a"})
        obs(pid, "ldh", {"system": "http://loinc.org", "code": LDH_LOINC},
            valueQuantity={"value": r.x_ldh, "unit": ldh_unit,
                           "system": "http://unitsofmeasure.org", "code": ldh_unit})
        obs(pid, "arm", {**field, "code": "x_arm"}, valueBoolean=bool(r.x_arm))
        obs(pid, "ost", {**field, "code": "os_time"},
            valueQuantity={"value": r.os_time, "unit": "a",
                           "system": "http://unitsofmeasure.org", "code": "a"})
        obs(pid, "oss", {**field, "code": "os_status"}, valueBoolean=bool(r.os_status))
    bundle = Bundle(type="collection", entry=entries)
    return json.loads(bundle.model_dump_json())


def write_phenopackets(rows: pd.DataFrame, folder: Path) -> Path:
    import phenopackets as pp
    from google.protobuf import json_format

    folder.mkdir(parents=True, exist_ok=True)
    yes, no = pp.OntologyClass(id="NCIT:C49488", label="Yes"), pp.OntologyClass(
        id="NCIT:C49487", label="No")
    for r in rows.itertuples():
        pid = str(r.patient_id)
        packet = pp.Phenopacket(id=pid, subject=pp.Individual(id=pid))
        d = packet.diseases.add()
        d.term.CopyFrom(pp.OntologyClass(id="MONDO:0018881", label="myelodysplastic syndrome"))
        d.onset.age.iso8601duration = f"P{r.age}Y"
        for assay, value in (("LOINC:" + LDH_LOINC, ("UCUM:U/L", r.x_ldh)),
                             ("hemafed:os_time", ("UCUM:a", r.os_time)),
                             ("hemafed:x_arm", yes if r.x_arm else no),
                             ("hemafed:os_status", yes if r.os_status else no)):
            m = packet.measurements.add()
            m.assay.CopyFrom(pp.OntologyClass(id=assay, label=assay))
            if isinstance(value, tuple):
                m.value.quantity.unit.CopyFrom(pp.OntologyClass(id=value[0], label=value[0]))
                m.value.quantity.value = float(value[1])
            else:
                m.value.ontology_class.CopyFrom(value)
        packet.meta_data.phenopacket_schema_version = "2.0"
        (folder / f"{pid}.json").write_text(json_format.MessageToJson(packet))
    return folder


# ------------------------------------------------------------------ the spec and the plan

def test_spec_declares_variables_and_names_them() -> None:
    spec = StudySpec.from_mapping(SPEC)
    assert [v.name for v in spec.variables] == ["x_ldh", "x_arm"]
    assert "x_ldh" not in FIELDS  # parsing a spec registers nothing
    with pytest.raises(InvalidInput, match="unknown column 'x_ldhh'"):
        StudySpec.from_mapping({**SPEC, "analyses": [{**SPEC["analyses"][0],
                                                      "formula": "age + x_ldhh"}]})
    with pytest.raises(InvalidInput, match="unknown column 'x_ldh'"):  # undeclared: unknown
        StudySpec.from_mapping({**SPEC, "variables": VARIABLES[1:]})
    with pytest.raises(InvalidInput, match="plausible range"):
        StudySpec.from_mapping({**SPEC, "variables": [{"name": "x_ldh", "type": "float"},
                                                      VARIABLES[1]]})
    narrower = {**SPEC, "variables": [{**VARIABLES[0], "high": 4000}, VARIABLES[1]]}
    assert StudySpec.from_mapping(narrower).sha256 != spec.sha256  # part of what is approved


def test_plan_takes_the_declared_bounds() -> None:
    spec = StudySpec.from_mapping({**SPEC, "analyses": [
        *SPEC["analyses"], {"id": "d2", "kind": "describe", "columns": ["x_ldh", "x_arm"]}]})
    plan = StudyPlan.from_spec(spec)
    assert plan.bounds["x_ldh"] == (50.0, 5000.0)
    risk = {"name": "x_risk", "type": "category", "levels": ["low", "high"]}
    with_levels = StudySpec.from_mapping({**SPEC, "variables": [*VARIABLES, risk], "analyses": [
        {"id": "d", "kind": "describe", "columns": ["x_risk"]}]})
    try:
        assert ("low", "high") in StudyPlan.from_spec(with_levels).levels["x_risk"]
    finally:
        unregister_variables(["x_risk"])
    assert ("False", "True") in plan.levels["x_arm"]
    ok = {"column": "x_ldh", "low": 50.0, "high": 5000.0, "bins": 20}
    assert plan.check("numeric_summary", ok, False) is None
    # the schema's own `ldh` range (0-20000) or a hub's probe is not the declared range
    for low, high in ((0.0, 20000.0), (50.0, 400.0)):
        refused = plan.check("numeric_summary", {**ok, "low": low, "high": high}, False)
        assert refused is not None and refused[0] == "bounds" and "x_ldh" in refused[1]


# ------------------------------------------------------------------ the site

def _site(root: Path, site_id: str, spec: StudySpec) -> Path:
    from hemafed.demo import site_policy
    from hemafed.site.store import init_site
    from hemafed.site.studies import store_spec

    site_dir = root / site_id
    init_site(site_dir, site_id)
    policy = site_policy(site_id, spec, today=dt.date.today())
    (site_dir / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    store_spec(site_dir, spec)  # approval: the spec text (with its variables) at the site
    return site_dir


def test_site_registers_approved_variables_and_refuses_conflicts(tmp_path: Path) -> None:
    from hemafed.site.store import import_into_site, load_cohort

    spec = StudySpec.from_mapping(SPEC)
    site_dir = _site(tmp_path, "s1", spec)
    rows = trial_rows(12, 1)
    bundle = tmp_path / "s1.json"
    bundle.write_text(json.dumps(fhir_bundle(rows)))
    assert "x_ldh" not in FIELDS
    import_into_site(site_dir, bundle, "fhir", study=spec.study_id)
    # a restarted node (a fresh process: nothing registered) reloads the cohort with them
    unregister_variables(["x_ldh", "x_arm"])
    cohort = load_cohort(site_dir)
    np.testing.assert_allclose(cohort.patients["x_ldh"].to_numpy(dtype=float),
                               rows["x_ldh"].to_numpy())
    assert LOINC_TO_FIELD[LDH_LOINC] == "x_ldh"
    assert cohort.patients["x_arm"].tolist() == rows["x_arm"].tolist()

    # a site mapping that declares the variable differently from the approved spec
    rows.rename(columns={"x_ldh": "LDH"}).assign(disease="MDS").to_csv(
        tmp_path / "export.csv", index=False)
    mapping = {"variables": [{**VARIABLES[0], "high": 8000}],
               "patients": {"columns": {"patient_id": "patient_id", "disease": "disease",
                                        "age": "age", "LDH": "x_ldh", "x_arm": "x_arm",
                                        "os_time": "os_time", "os_status": "os_status"}}}
    with pytest.raises(InvalidInput, match="'x_ldh' conflicts with the approved study spec"):
        import_into_site(site_dir, tmp_path / "export.csv", "csv", mapping=mapping,
                         study=spec.study_id)
    assert len(load_cohort(site_dir)) == 12  # nothing half-imported

    # an out-of-range value is refused at intake, naming the variable and the rule
    high = rows.assign(patient_id=[f"q{i}" for i in range(12)])
    high.loc[3, "x_ldh"] = 6000.0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(fhir_bundle(high)))
    with pytest.raises(ValidationFailed) as err:
        import_into_site(site_dir, bad, "fhir", study=spec.study_id)
    text = str(err.value)
    assert "column 'x_ldh'" in text and "above the plausible maximum 5000" in text
    assert len(load_cohort(site_dir)) == 12


# ------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_cox_on_spec_variables_through_the_runner_equals_lifelines(tmp_path: Path) -> None:
    from hemafed.demo import run_study_on
    from hemafed.study.runner import frame_from_json

    spec = StudySpec.from_mapping(SPEC)
    parts = {"fhir-a": trial_rows(90, 11), "pheno-b": trial_rows(60, 12),
             "fhir-c": trial_rows(45, 13)}
    fed = _federation(tmp_path, spec, parts)
    unregister_variables(["x_ldh", "x_arm"])  # the hub registers the spec's own declarations
    result = run_study_on("inprocess", spec, fed)
    doc, described = result["analyses"]
    assert doc["status"] == "ok", doc.get("error")
    # the describe step's histogram bounds are the declared 50-5000 (the sites' plans agree)
    assert described["status"] == "ok", described.get("error")
    numeric = frame_from_json(described["tables"]["numeric"])
    all_rows = pd.concat(parts.values(), ignore_index=True)
    assert numeric.loc["x_ldh", "mean"] == pytest.approx(all_rows["x_ldh"].mean(), rel=1e-9)
    got = frame_from_json(doc["tables"]["summary"])
    pooled = pd.concat(parts.values(), ignore_index=True)
    frame = pooled[["os_time", "age", "x_ldh"]].assign(
        os_status=pooled["os_status"].astype(float), x_arm=pooled["x_arm"].astype(float))
    ref = CoxPHFitter().fit(frame, "os_time", "os_status",
                            fit_options={"precision": 1e-14, "r_precision": 1e-15})
    names = ["age", "x_ldh", "x_arm"]
    assert [str(i) for i in got.index] == names
    np.testing.assert_allclose(got["coef"].astype(float), ref.params_[names], rtol=1e-6)
    np.testing.assert_allclose(got["se(coef)"].astype(float), ref.standard_errors_[names],
                               rtol=1e-6)
    assert doc["provenance"]["sites"] == 3


def _federation(root: Path, spec: StudySpec, parts: dict[str, pd.DataFrame]) -> Any:
    from hemafed.demo import LocalSites, threshold_for
    from hemafed.secure import FederationManifest
    from hemafed.site.runtime import ensure_identity, install_manifest
    from hemafed.site.store import import_into_site
    from hemafed.study import catalogue as _catalogue  # noqa: F401  (registers every site query)

    site_dirs = {}
    for site_id, rows in parts.items():
        site_dir = _site(root, site_id, spec)
        if site_id.startswith("pheno"):
            src = write_phenopackets(rows, root / f"{site_id}-packets")
            import_into_site(site_dir, src, "phenopackets", study=spec.study_id)
        else:
            src = root / f"{site_id}.json"
            unit = "[IU]/L" if site_id == "fhir-c" else "U/L"  # converted on import
            src.write_text(json.dumps(fhir_bundle(rows, unit)))
            import_into_site(site_dir, src, "fhir", study=spec.study_id)
        site_dirs[site_id] = site_dir
    identities = [ensure_identity(d, s) for s, d in site_dirs.items()]
    manifest = FederationManifest.build("vars", identities, threshold_for(len(identities)))
    for d in site_dirs.values():
        install_manifest(d, manifest)
    return LocalSites(site_dirs, manifest)
