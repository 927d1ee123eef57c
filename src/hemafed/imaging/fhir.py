"""DICOM series metadata as an HL7 FHIR R4B ``ImagingStudy`` (validated by ``fhir.resources``).

The subject is the patient's pseudonym (``Patient/<pseudonym>``), never the hospital's id; the
study is identified by its DICOM Study Instance UID (``urn:oid:``); modalities are coded in the
DICOM code system (``http://dicom.nema.org/resources/ontology/DCM``). Nothing leaves the site
because of this: the resource is stored beside the images for the site's own catalogue.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from hemafed.errors import InvalidInput

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"


def _date(study_date: str) -> str | None:
    try:
        return dt.datetime.strptime(study_date, "%Y%m%d").date().isoformat()
    except ValueError:
        return None


def imaging_study(meta: dict[str, Any], pseudonym: str) -> dict[str, Any]:
    """A validated ``ImagingStudy`` (as a JSON-ready dict) for one imported DICOM series."""
    from fhir.resources.R4B.imagingstudy import ImagingStudy

    modality = meta.get("modality") or ""
    study_uid = meta.get("study_instance_uid") or ""
    series_uid = meta.get("series_instance_uid") or ""
    if not (modality and study_uid and series_uid):
        raise InvalidInput("an ImagingStudy needs the DICOM modality, study and series UIDs")
    uids = list(meta.get("sop_instance_uids") or [])
    numbers = list(meta.get("instance_numbers") or range(1, len(uids) + 1))
    coding = {"system": DCM_SYSTEM, "code": modality}
    series: dict[str, Any] = {
        "uid": series_uid, "modality": coding, "numberOfInstances": len(uids),
        "instance": [{"uid": u, "number": int(n),
                      "sopClass": {"system": SOP_CLASS_SYSTEM,
                                   "code": f"urn:oid:{meta.get('sop_class_uid', '')}"}}
                     for u, n in zip(uids, numbers, strict=True)],
    }
    if meta.get("series_number"):
        series["number"] = int(meta["series_number"])
    if meta.get("series_description"):
        series["description"] = str(meta["series_description"])
    if meta.get("body_part"):
        series["bodySite"] = {"display": str(meta["body_part"])}
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy", "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study_uid}"}],
        "subject": {"reference": f"Patient/{pseudonym}"},
        "modality": [coding], "numberOfSeries": 1, "numberOfInstances": len(uids),
        "series": [series],
    }
    started = _date(str(meta.get("study_date") or ""))
    if started:
        resource["started"] = started
    return ImagingStudy.model_validate(resource).model_dump(mode="json", exclude_none=True)
