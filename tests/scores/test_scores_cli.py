"""The ``score`` sub-commands through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from hemafed.scores.cli import app


def write_example(tmp_path: Path) -> Path:
    from ipssm_example import EXAMPLE as text

    path = tmp_path / "ipssm_input.csv"
    path.write_text(text)
    return path


def test_ipssm_calculator_table_csv_and_html(tmp_path: Path) -> None:
    src = write_example(tmp_path)
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(app, ["ipssm", str(src), "--out", str(out), "--html",
                                   str(tmp_path / "html")])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out).set_index("ID")
    assert table.loc["pp347", "IPSSMscore_worst"] == 0.63
    assert table.loc["pp564", "IPSSMcat_mean"] == "Very High"
    assert "contrib_TP53multi" in table.columns
    pages = sorted((tmp_path / "html").glob("*.html"))
    assert len(pages) == 3
    assert "<svg" in pages[0].read_text()


def test_ipssr_json(tmp_path: Path) -> None:
    src = tmp_path / "p.tsv"
    src.write_text("patient_id\thb\tplt\tanc\tbm_blast\tcyto_ipssr\n"
                   "a\t7.6\t119\t0.2\t14\tGood\nb\t9\t90\t1\t3\tAwful\n")
    out = tmp_path / "o.json"
    res = CliRunner().invoke(app, ["ipssr", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["patients"][0]["value"] == 6.0
    assert doc["errors"][0]["patient_id"] == "b"


def test_bad_output_suffix(tmp_path: Path) -> None:
    src = write_example(tmp_path)
    res = CliRunner().invoke(app, ["ipssm", str(src), "--out", str(tmp_path / "o.xlsx")])
    assert res.exit_code != 0
