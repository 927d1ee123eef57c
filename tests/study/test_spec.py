import pytest

from hemafed.errors import InvalidInput
from hemafed.study.spec import StudySpec

BASE = {"study_id": "s1", "analyses": [
    {"id": "km", "kind": "km", "duration": "os_time", "event": "os_status"}]}


def test_hash_ignores_formatting_but_not_content(tmp_path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("study_id: s1\nanalyses:\n  - {id: km, kind: km, duration: os_time, event: os_status}\n")
    b = tmp_path / "b.yaml"
    b.write_text("# comment\nanalyses:\n- id: km\n  kind: km\n  event: os_status\n  duration: os_time\n"
                 "study_id: s1\n")
    assert StudySpec.load(a).sha256 == StudySpec.load(b).sha256 == StudySpec.from_mapping(BASE).sha256
    changed = {**BASE, "analyses": [{**BASE["analyses"][0], "event": "lfs_status"}]}
    assert StudySpec.from_mapping(changed).sha256 != StudySpec.from_mapping(BASE).sha256


def test_every_problem_is_reported() -> None:
    bad = {"study_id": "", "colour": 1, "analyses": [
        {"id": "x", "kind": "km", "duration": "os_time"},
        {"id": "x", "kind": "teleport"},
        {"id": "y", "kind": "cox", "duration": "a", "event": "b", "formula": "age", "tie": "x"}]}
    with pytest.raises(InvalidInput) as info:
        StudySpec.from_mapping(bad)
    text = str(info.value)
    for expected in ("unknown key 'colour'", "study_id must be a non-empty string",
                     "(km): missing 'event'", "unknown kind 'teleport'", "unknown option 'tie'"):
        assert expected in text


def test_unreadable_yaml(tmp_path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("study_id: [unclosed\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        StudySpec.load(p)


def test_unknown_disease_columns_and_genes_are_refused_with_the_nearest_name() -> None:
    bad = {"study_id": "s1", "disease": "CML", "analyses": [
        {"id": "d", "kind": "describe", "columns": ["age", "bm_blst"]},
        {"id": "c", "kind": "cox", "duration": "os_tme", "event": "os_status",
         "formula": "age + gene:TP5 + gene:SF3B1"},
        {"id": "k", "kind": "km", "duration": "os_time", "event": "os_status",
         "group": "ipssm_categry"}]}
    with pytest.raises(InvalidInput) as info:
        StudySpec.from_mapping(bad)
    text = str(info.value)
    assert "5 problem(s)" in text
    for expected in ("unknown disease 'CML'", "unknown column 'bm_blst'; did you mean 'bm_blast'",
                     "unknown column 'os_tme'; did you mean 'os_time'",
                     "unknown gene 'TP5'; did you mean 'gene:TP53'",
                     "unknown column 'ipssm_categry'; did you mean 'ipssm_category'"):
        assert expected in text, expected


def test_bundled_specs_validate() -> None:
    from pathlib import Path

    for path in (Path(__file__).parents[2] / "src/hemafed/study/specs").glob("*.yaml"):
        assert StudySpec.load(path).analyses


def test_gwas_epsilon_is_refused_not_ignored() -> None:
    # the study's GWAS runs the exact release: an epsilon there would be silently unapplied
    gwas = {"id": "g", "kind": "gwas", "trait": "hb", "variant_list": "v.tsv"}
    StudySpec.from_mapping({"study_id": "s1", "analyses": [gwas]})
    with pytest.raises(InvalidInput, match=r"\(gwas\): unknown option 'epsilon'"):
        StudySpec.from_mapping({"study_id": "s1", "analyses": [{**gwas, "epsilon": 1.0}]})
