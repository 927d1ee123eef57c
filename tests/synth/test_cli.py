"""``hemafed synth`` commands: fit, sample and the evaluate gate's exit status."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hemafed.cohort.model import Cohort
from hemafed.synth.cli import app, read_frame

runner = CliRunner()


def test_fit_sample_evaluate(tmp_path: Path, mds_cohort: Cohort) -> None:
    model = tmp_path / "mst.json"
    res = runner.invoke(app, ["fit", "--demo", "MDS", "--n", "800", "--sites", "4",
                              "--columns", "sex,cyto_ipssr,os_status", "--epsilon", "4",
                              "--out", str(model)])
    assert res.exit_code == 0, res.output
    doc = json.loads(model.read_text())
    assert doc["privacy"]["epsilon_spent"] <= 4.0 + 1e-9
    synth = tmp_path / "synth.csv"
    res = runner.invoke(app, ["sample", str(model), "--n", "300", "--out", str(synth)])
    assert res.exit_code == 0, res.output
    frame = read_frame(synth)
    assert len(frame) == 300 and str(frame["os_status"].dtype) == "boolean"

    cols = ["age", "sex", "hb", "os_time", "os_status"]
    real = mds_cohort.patients[cols]
    train, hold = tmp_path / "train.csv", tmp_path / "hold.csv"
    real.iloc[:600].to_csv(train, index=False)
    real.iloc[600:1000].to_csv(hold, index=False)
    report = tmp_path / "report.json"
    # The training table itself as "synthetic" data must be stopped by the gate.
    res = runner.invoke(app, ["evaluate", "--train", str(train), "--synthetic", str(train),
                              "--holdout", str(hold), "--out", str(report)])
    assert res.exit_code == 1
    gate = json.loads(report.read_text())["gate"]
    assert not gate["passes"] and any("mia_auc" in f for f in gate["failures"])
    typed = read_frame(train)
    assert str(typed["hb"].dtype) == "Float64" and str(typed["os_status"].dtype) == "boolean"
