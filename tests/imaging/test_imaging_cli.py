"""``hemafed site import-images`` / ``extract-features`` end to end, refusals included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from hemafed.cli import app
from hemafed.imaging.store import read_index, write_nifti
from hemafed.imaging.virtual import generate, write_dicom_series
from hemafed.imaging.volume import Volume


def _inputs(tmp: Path) -> Path:
    subjects = generate("MM", 1, 3, seed=5)
    rows = []
    for k, s in enumerate(subjects):
        write_nifti(tmp / f"m{k}.nii.gz", s.mask, dtype=np.uint8)
        if k == 0:
            write_dicom_series(s.image, tmp / "dicom0", s.patient_id)
            image = "dicom0"
        else:
            write_nifti(tmp / f"i{k}.nii.gz", s.image)
            image = f"i{k}.nii.gz"
        rows.append({"patient_id": f"MRN-{k}", "image": image, "mask": f"m{k}.nii.gz"})
    pd.DataFrame(rows).to_csv(tmp / "images.csv", index=False)
    return tmp / "images.csv"


def test_import_then_extract(tmp_path: Path) -> None:
    runner = CliRunner()
    site = tmp_path / "site"
    assert runner.invoke(app, ["site", "init", str(site), "--site-id", "A"]).exit_code == 0
    manifest = _inputs(tmp_path)
    res = runner.invoke(app, ["site", "import-images", str(site), str(manifest), "--study", "S"])
    assert res.exit_code == 0, res.output
    assert "imported 3 image(s)" in res.output
    assert set(read_index(site)["source_kind"]) == {"dicom", "nifti"}
    res = runner.invoke(app, ["site", "extract-features", str(site), "--bin-width", "8"])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(site / "imaging" / "features.parquet")
    assert len(table) == 3 and "glszm_zone_percentage" in table.columns


def test_a_bad_mask_refuses_the_whole_manifest(tmp_path: Path) -> None:
    runner = CliRunner()
    site = tmp_path / "site"
    runner.invoke(app, ["site", "init", str(site), "--site-id", "A"])
    manifest = _inputs(tmp_path)
    write_nifti(tmp_path / "m2.nii.gz", Volume(np.ones((5, 5, 5)), (1.0, 1.0, 1.0)))
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    res = runner.invoke(app, ["site", "import-images", str(site), str(manifest)])
    assert res.exit_code == 1
    assert "m2.nii.gz: mask does not match the image geometry" in res.output
    assert "Traceback" not in res.output
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before


def test_manifest_errors_name_the_row(tmp_path: Path) -> None:
    runner = CliRunner()
    site = tmp_path / "site"
    runner.invoke(app, ["site", "init", str(site), "--site-id", "A"])
    (tmp_path / "bad.csv").write_text("patient_id,image,mask\nMRN-1,,m.nii.gz\n")
    res = runner.invoke(app, ["site", "import-images", str(site), str(tmp_path / "bad.csv")])
    assert res.exit_code == 1 and "row 2" in res.output
