"""Tests of `hemafed site ...` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from hemafed.site.cli import app
from hemafed.site.store import load_cohort
from hemafed.site.vault import generate_keypair

runner = CliRunner()


def _ok(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_init_import_check_and_audit_verify(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert "initialised" in _ok("init", str(site), "--site-id", "hosp-a")
    data = tmp_path / "cohort.csv"
    data.write_text("patient_id,disease,hb\nMRN1,MDS,8.5\nMRN2,AML,9\n")
    out = _ok("import", str(site), str(data), "--study", "S1")
    assert "imported 2 patients" in out and "MRN" not in out
    _ok("import", str(site), str(_write(tmp_path / "more.tsv", "patient_id\tdisease\nMRN3\tMDS\n")),
        "--format", "tsv", "--study", "S1")
    assert "OK" in _ok("check", str(site))
    assert "intact: 2 entries" in _ok("audit", str(site), "--verify")
    assert "site.import@1" in _ok("audit", str(site))
    budget = _ok("budget", str(site))
    assert "*total*" in budget and "releases    0" in budget and "of 10 (delta 1e-05)" in budget

    bad = runner.invoke(app, ["import", str(site), str(_write(tmp_path / "bad.csv",
                                                                "patient_id,disease\nX,NOPE\n"))])
    assert bad.exit_code == 1 and "nothing was imported" in bad.output

    log = site / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0].replace("imported 2", "imported 0") + lines[1])  # edit
    result = runner.invoke(app, ["audit", str(site), "--verify"])
    assert result.exit_code == 1 and "line 1" in result.output and "edited" in result.output
    log.write_text(lines[1] + lines[0])  # reorder
    result = runner.invoke(app, ["audit", str(site), "--verify"])
    assert result.exit_code == 1 and "line 1" in result.output and "TAMPERED" in result.output
    log.write_text(lines[0])  # delete the last entry
    result = runner.invoke(app, ["audit", str(site), "--verify"])
    assert result.exit_code == 1 and "cut from the end" in result.output
    assert runner.invoke(app, ["check", str(site)]).exit_code == 1


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_vault_commands(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _ok("init", str(site), "--site-id", "hosp-b")
    raw = _write(tmp_path / "s.vcf", "##fileformat=VCFv4.2\n" + "chr1\t1\t.\tA\tG\n" * 20000)
    _ok("vault", "add", str(site), str(raw), "--name", "s1")
    assert _ok("vault", "list", str(site)).split() == ["s1"]
    _ok("vault", "get", str(site), "s1", str(tmp_path / "back.vcf"))
    assert (tmp_path / "back.vcf").read_bytes() == raw.read_bytes()
    generate_keypair(tmp_path / "r.sec", tmp_path / "r.pub")
    _ok("vault", "reencrypt", str(site), "s1", "--recipient", str(tmp_path / "r.pub"),
        "--out", str(tmp_path / "for-r.c4gh"))
    assert (tmp_path / "for-r.c4gh").read_bytes()[:8] == b"crypt4gh"
    missing = runner.invoke(app, ["vault", "get", str(site), "nope", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "holds no 'nope'" in missing.output


def test_import_with_a_column_mapping(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _ok("init", str(site), "--site-id", "hosp-c")
    export = _write(tmp_path / "export.csv", "PatientID,Hb,Comment\nMRN1,85,x\nMRN2,100,y\n")
    mapping = _write(tmp_path / "map.yaml", "patients:\n  columns:\n    PatientID: patient_id\n"
                     "    Hb: {field: hb, unit: g/L}\n  ignore: [Comment]\n"
                     "  constants: {disease: MDS}\n")
    _ok("import", str(site), str(export), "--mapping", str(mapping), "--study", "S1")
    cohort = load_cohort(site)
    assert sorted(cohort.patients["hb"].tolist()) == [8.5, 10.0]  # g/L converted to g/dL
    assert not any(i.startswith("MRN") for i in cohort.ids)
