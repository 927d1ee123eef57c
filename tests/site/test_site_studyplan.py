"""The site reads its approved specs through hemafed.studyplan: registered kinds, never imports.

The spec model and the plan's hook sit below the site (tests/test_layers.py); the study layer
registers the built-in kinds, spec rules and planner into them. A site process that has not
registered them refuses to check a stored spec with a clear error instead of refusing the
study for a wrong reason, and still loads its cohort's approved study variables.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import hemafed.studyplan.spec as model
from hemafed.cohort.study_fields import unregister_variables
from hemafed.errors import InvalidInput
from hemafed.site.studies import approved_variables, load_plans, store_spec
from hemafed.study import spec as public_spec
from hemafed.study.plan import StudyPlan
from hemafed.studyplan.plans import plan_of, registered_planner

SPEC = {"study_id": "s1", "analyses": [
    {"id": "size", "kind": "describe", "columns": ["age", "ipssm_category"]},
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + sex", "levels": {"sex": ["F", "M"]}}],
    "variables": [{"name": "x_arm", "type": "bool", "description": "randomised arm"}]}


@pytest.fixture(autouse=True)
def _clean_fields() -> Iterator[None]:
    """The study variable a plan registers does not leak into other tests."""
    yield
    unregister_variables(["x_arm"])


def _approved(site_dir: Path) -> SimpleNamespace:
    spec = public_spec.StudySpec.from_mapping(SPEC)
    store_spec(site_dir, spec)
    return SimpleNamespace(studies=[SimpleNamespace(study_id="s1", spec_sha256=spec.sha256)])


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    src = Path(__file__).resolve().parents[2] / "src"
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(src), "PATH": ""},
                          check=False)


def test_the_public_path_is_the_model_and_registers_the_planner() -> None:
    assert public_spec.StudySpec is model.StudySpec and public_spec.Analysis is model.Analysis
    assert public_spec.KINDS is model.KINDS and public_spec.valid_columns is model.valid_columns
    assert registered_planner() == StudyPlan.from_spec
    spec = public_spec.StudySpec.from_mapping(SPEC)
    assert plan_of(spec) == StudyPlan.from_spec(spec)


def test_the_site_derives_the_plan_the_study_layer_does(tmp_path: Path) -> None:
    policy = _approved(tmp_path)
    plans = load_plans(tmp_path, policy)  # type: ignore[arg-type]
    assert plans == {"s1": StudyPlan.from_spec(public_spec.StudySpec.from_mapping(SPEC))}
    assert [v.name for v in approved_variables(tmp_path, policy)["s1"]] == ["x_arm"]


def test_the_registered_rules_check_what_needs_an_estimator() -> None:
    # derived score columns, a formula's levels (analytics.design), a long table's lattice
    bad = {"study_id": "s", "analyses": [
        {"id": "c", "kind": "cox", "duration": "os_time", "event": "os_status",
         "formula": "age + sex", "levels": {"sex": "F"}},
        {"id": "l", "kind": "cox_long", "formula": "x", "steps_per_unit": 3.0}]}
    with pytest.raises(InvalidInput) as err:
        public_spec.StudySpec.from_mapping(bad)
    assert "analysis 'c' (cox)" in str(err.value)
    assert "analysis 'l' (cox_long): steps_per_unit must be one of the public lattices" \
        in str(err.value)
    assert "ipssm_score" in model.valid_columns() and "SF3B1" in model.known_genes()


def test_a_section_no_rules_check_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "_RULES", [model.SpecRules()])
    with pytest.raises(InvalidInput, match="no checker of the spec's imaging section"):
        model.StudySpec.from_mapping({**SPEC, "imaging": {}})


def test_a_site_with_nothing_registered_refuses_clearly(tmp_path: Path) -> None:
    _approved(tmp_path)
    text = json.loads((tmp_path / "studies" / "s1.json").read_text())
    done = _fresh_python(f"""
        import sys
        from types import SimpleNamespace
        import hemafed.site.runtime
        import hemafed.site.store
        from hemafed.errors import InvalidInput
        from hemafed.site import studies
        from hemafed.studyplan.spec import spec_sha256
        # the site imports no estimator and no study module
        assert not [m for m in sys.modules if m.startswith(("hemafed.study.", "hemafed.genomics",
                                                            "hemafed.analytics"))], sys.modules
        policy = SimpleNamespace(studies=[SimpleNamespace(study_id="s1",
                                                          spec_sha256=spec_sha256({text!r}))])
        # the cohort's approved variables need no kinds: they come from the hash-checked text
        print([v.name for v in studies.approved_variables({str(tmp_path)!r}, policy)["s1"]])
        try:
            studies.load_plans({str(tmp_path)!r}, policy)
        except InvalidInput as exc:
            print(exc)
    """)
    assert done.returncode == 0, done.stderr
    names, error = done.stdout.splitlines()
    assert names == "['x_arm']"
    assert error == (f"{tmp_path / 'studies' / 's1.json'}: cannot check a study spec: no "
                     "analysis kinds and no spec rules are registered in this process (import "
                     "hemafed.study.spec, which registers the built-in ones)")
