"""Image intake: real DICOM files shipped with pydicom, NIfTI, DICOM SEG, and every refusal."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from hemafed.errors import InvalidInput
from hemafed.imaging.fhir import imaging_study
from hemafed.imaging.intake import read_dicom_series, read_image, read_mask, read_nifti
from hemafed.imaging.store import import_image, load_image, read_index, write_nifti
from hemafed.imaging.volume import Volume
from hemafed.site.store import init_site


def _testfile(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not bundled with this pydicom")
    return str(path)


def test_reads_pydicoms_ct_with_rescale_and_geometry() -> None:
    path = _testfile("CT_small.dcm")
    ds = pydicom.dcmread(path)
    vol = read_dicom_series(path)
    assert vol.shape == (1, 128, 128)
    # Hounsfield units: stored value * slope + intercept, computed here independently
    expected = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.array[0], expected)
    assert vol.spacing[1:] == (0.661468, 0.661468)
    assert vol.origin == tuple(float(v) for v in ds.ImagePositionPatient)
    assert vol.meta["modality"] == "CT" and vol.meta["series_instance_uid"] == ds.SeriesInstanceUID


@pytest.mark.parametrize("variant", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm",
                                     "MR_small_implicit.dcm"])
def test_mr_transfer_syntaxes_decode_to_the_same_pixels(variant: str) -> None:
    ref = read_dicom_series(_testfile("MR_small.dcm"))
    other = read_dicom_series(_testfile(variant))
    np.testing.assert_array_equal(ref.array, other.array)


@pytest.mark.parametrize("name, reason", [
    ("rtplan.dcm", r"not an image: it holds no pixel data \(RT Plan Storage\)"),
    ("rtstruct.dcm", "not an image"),
    ("test-SR.dcm", "not an image"),
    ("MR_truncated.dcm", "pixel data cannot be decoded"),
    ("SC_rgb_jpeg.dcm", "unsupported modality 'OT'"),
    ("no_meta.dcm", "not a DICOM file"),
])
def test_real_non_image_corrupt_or_unsupported_files_are_refused(name: str, reason: str) -> None:
    path = _testfile(name)
    with pytest.raises(InvalidInput, match=reason) as err:
        read_dicom_series(path)
    assert path in str(err.value)


def test_a_text_file_is_not_dicom(tmp_path: Path) -> None:
    (tmp_path / "notes.dcm").write_text("not an image")
    with pytest.raises(InvalidInput, match=r"notes\.dcm: not a DICOM file"):
        read_dicom_series(tmp_path / "notes.dcm")


def _series(tmp: Path, n: int = 5, step: float = 2.5, skip: int | None = None,
            tweak: dict[int, dict[str, Any]] | None = None) -> Path:
    """A multi-slice series made from pydicom's real CT slice, positions along the normal."""
    base = pydicom.dcmread(_testfile("CT_small.dcm"))
    series_uid = generate_uid()
    out = tmp / "series"
    out.mkdir()
    for k in range(n):
        if k == skip:
            continue
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        x, y, z = (float(v) for v in base.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + k * step]
        for key, value in (tweak or {}).get(k, {}).items():
            setattr(ds, key, value)
        ds.save_as(out / f"slice{(7 * k) % n:03d}.dcm")  # file names not in slice order
    return out


def test_series_is_sorted_along_the_normal(tmp_path: Path) -> None:
    vol = read_dicom_series(_series(tmp_path))
    assert vol.shape == (5, 128, 128) and vol.spacing[0] == pytest.approx(2.5)
    assert vol.meta["instance_numbers"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("kw, reason", [
    ({"skip": 2}, "1 missing slice"),
    ({"tweak": {3: {"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}}}, "inconsistent orientation"),
    ({"tweak": {1: {"PixelSpacing": [0.9, 0.9]}}}, "inconsistent pixel spacing"),
    ({"tweak": {4: {"SeriesInstanceUID": "1.2.3.4"}}}, "belongs to series 1.2.3.4"),
    ({"tweak": {4: {"Modality": "US"}}}, "unsupported modality 'US'"),
])
def test_bad_series_are_refused_naming_the_file(tmp_path: Path, kw: dict[str, Any],
                                                reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as err:
        read_dicom_series(_series(tmp_path, **kw))
    assert "slice" in str(err.value)


def test_corrupt_file_in_a_series_is_named(tmp_path: Path) -> None:
    d = _series(tmp_path)
    bad = d / "slice001.dcm"
    bad.write_bytes(bad.read_bytes()[:600])
    with pytest.raises(InvalidInput, match=r"slice001\.dcm") as err:
        read_dicom_series(d)
    assert "corrupt" in str(err.value) or "cannot be decoded" in str(err.value)


def test_nifti_roundtrip_keeps_array_and_geometry(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vol = Volume(rng.normal(size=(4, 5, 6)), (3.0, 1.0, 0.5), (10.0, -20.0, 5.0),
                 source="mem")
    write_nifti(tmp_path / "v.nii.gz", vol, dtype=np.float64)
    back = read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_allclose(back.array, vol.array)
    assert back.spacing == pytest.approx(vol.spacing) and back.origin == pytest.approx(vol.origin)
    np.testing.assert_allclose(back.direction, vol.direction, atol=1e-12)


def test_nifti_mask_geometry_mismatch_and_empty_mask_are_refused(tmp_path: Path) -> None:
    img = Volume(np.ones((4, 5, 6)), (2.0, 1.0, 1.0), source="img")
    write_nifti(tmp_path / "img.nii.gz", img)
    write_nifti(tmp_path / "small.nii.gz", Volume(np.ones((4, 5, 5)), (2.0, 1.0, 1.0)))
    write_nifti(tmp_path / "shifted.nii.gz", Volume(np.ones((4, 5, 6)), (2.0, 1.0, 1.0),
                                                     origin=(0.0, 0.0, 3.0)))
    write_nifti(tmp_path / "empty.nii.gz", Volume(np.zeros((4, 5, 6)), (2.0, 1.0, 1.0)))
    image = read_image(tmp_path / "img.nii.gz")
    with pytest.raises(InvalidInput, match=r"small.nii.gz: mask does not match.*size"):
        read_mask(tmp_path / "small.nii.gz", image)
    with pytest.raises(InvalidInput, match=r"shifted.nii.gz: mask does not match.*origin"):
        read_mask(tmp_path / "shifted.nii.gz", image)
    with pytest.raises(InvalidInput, match=r"empty\.nii\.gz: the segmentation mask is empty"):
        read_mask(tmp_path / "empty.nii.gz", image)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(InvalidInput, match=r"junk\.nii\.gz: not a readable NIfTI"):
        read_image(tmp_path / "junk.nii.gz")


def test_dicom_seg_mask_is_aligned_to_its_series(tmp_path: Path) -> None:
    import highdicom as hd

    d = _series(tmp_path)
    vol = read_dicom_series(d)
    sources = sorted((pydicom.dcmread(p) for p in d.iterdir()), key=lambda s: s.InstanceNumber)
    truth = np.zeros(vol.shape, dtype=bool)
    truth[1:4, 40:60, 50:70] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("52988006", "SCT", "Lesion"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=truth.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=generate_uid(), series_number=99, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="hemafed-test", manufacturer_model_name="t",
        software_versions="0", device_serial_number="0")
    seg.save_as(tmp_path / "seg.dcm")
    mask = read_mask(tmp_path / "seg.dcm", vol)
    np.testing.assert_array_equal(mask.array, truth)


def test_import_stores_pseudonymised_atomically_and_refuses_duplicates(tmp_path: Path) -> None:
    site = tmp_path / "site"
    init_site(site, "siteA")
    d = _series(tmp_path)
    vol = read_dicom_series(d)
    roi = np.zeros(vol.shape)
    roi[1:4, 30:50, 30:50] = 1
    mask_file = tmp_path / "mask.nii.gz"
    write_nifti(mask_file, Volume(roi, vol.spacing, vol.origin, vol.direction), dtype=np.uint8)
    rec = import_image(site, "MRN-0042", d, mask_file, study="S1")
    assert rec.pseudonym.startswith("hf-") and "MRN-0042" not in str(rec.directory)
    img, msk = load_image(site, rec.pseudonym, rec.image_id)
    np.testing.assert_allclose(img.array, vol.array, atol=1e-3)
    assert int(msk.array.sum()) == int(roi.sum())
    fhir = json.loads((rec.directory / "imaging_study.json").read_text())
    assert fhir["subject"]["reference"] == f"Patient/{rec.pseudonym}"
    assert fhir["numberOfInstances"] == 5
    stored = "".join(p.read_text(errors="ignore") for p in rec.directory.glob("*.json"))
    assert "MRN-0042" not in stored
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    with pytest.raises(InvalidInput, match="already imported"):
        import_image(site, "MRN-0042", d, mask_file, study="S1")
    bad_mask = tmp_path / "bad.nii.gz"
    write_nifti(bad_mask, Volume(np.ones((5, 128, 100)), vol.spacing, vol.origin, vol.direction))
    with pytest.raises(InvalidInput, match=r"bad\.nii\.gz: mask does not match"):
        import_image(site, "MRN-0043", d, bad_mask, study="S1")
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before  # nothing half-written
    assert len(read_index(site)) == 1


def test_imaging_study_is_valid_fhir_and_needs_uids() -> None:
    vol = read_dicom_series(_testfile("MR_small.dcm"))
    res = imaging_study(vol.meta, "hf-abc")
    assert res["resourceType"] == "ImagingStudy" and res["modality"][0]["code"] == "MR"
    assert res["series"][0]["uid"] == vol.meta["series_instance_uid"]
    with pytest.raises(InvalidInput, match="UIDs"):
        imaging_study({"modality": "MR"}, "hf-abc")


def test_images_are_encrypted_in_the_vault_and_features_equal_the_plain_files(
        tmp_path: Path) -> None:
    """No plain pixel is left in the site directory after intake; features computed through the
    vault equal those of the hospital's plain NIfTI files."""
    import nibabel as nib

    from hemafed.imaging.radiomics import FeatureSettings, extract
    from hemafed.imaging.site_features import extract_site_features
    from hemafed.imaging.store import nifti_image

    site = tmp_path / "site"
    init_site(site, "siteA")
    rng = np.random.default_rng(3)
    arr = (100 + 20 * rng.standard_normal((12, 24, 24))).astype(np.float32)
    roi = np.zeros(arr.shape)
    roi[3:9, 6:18, 5:17] = 1
    vol = Volume(arr.astype(float), (2.0, 0.9, 0.9), (1.0, -4.0, 7.5),
                 ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)))
    image_file, mask_file = tmp_path / "img.nii", tmp_path / "mask.nii"
    nib.save(nifti_image(vol), str(image_file))
    nib.save(nifti_image(Volume(roi, vol.spacing, vol.origin, vol.direction), np.uint8),
             str(mask_file))
    rec = import_image(site, "MRN-7", image_file, mask_file, study="S1")
    plain = arr.tobytes()[:4096]  # the pixels as the hospital's file holds them
    for path in site.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not path.name.endswith((".nii", ".nii.gz")), path
            assert b"n+1" not in data and plain not in data, path  # no NIfTI header, no pixels
    assert sorted(p.name for p in (site / "vault").iterdir()) == [
        f"{rec.image_id}.image.nii.gz.c4gh", f"{rec.image_id}.mask.nii.gz.c4gh"]
    settings = FeatureSettings(bin_width=8.0, aggregation="averaged")
    table = extract_site_features(site, settings)
    src = read_image(image_file)  # the plain file as the hospital holds it
    ref = extract(src.array, read_mask(mask_file, src).array, src.spacing, settings)
    got = table.drop(columns=["patient_id", "image_id"]).iloc[0]
    np.testing.assert_allclose(got[list(ref)].to_numpy(dtype=float),
                               np.asarray(list(ref.values()), dtype=float), rtol=1e-12,
                               equal_nan=True)
