"""Keyed pseudonyms for patient identifiers, domain-separated per study (in the EUPID spirit).

A pseudonym is HMAC-SHA256 of the hospital's patient identifier under a secret that never leaves
the site, with the study as a separate domain: the same patient gets the same pseudonym in every
import for one study (so records can be linked and duplicates refused), different pseudonyms in
different studies (so two studies' releases cannot be linked on the identifier), and nobody
without the site secret can recompute or reverse them.

>>> p = Pseudonymiser(b"s" * 32)
>>> p.pseudonym("MRN-1", "S1") == p.pseudonym("MRN-1", "S1") != p.pseudonym("MRN-1", "S2")
True
"""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd

from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput

PREFIX = "hf-"
DIGITS = 24
"""Hex digits kept (96 bits): a collision among a million patients has probability ~1e-17."""

_DOMAIN = b"hemafed/pseudonym/v1"


def derive_key(site_secret: bytes, purpose: str) -> bytes:
    """A sub-key of the site secret for one purpose (pseudonyms, audit HMAC ...)."""
    if len(site_secret) < 16:
        raise InvalidInput("the site secret must be at least 16 bytes")
    return hmac.new(site_secret, b"hemafed/key/" + purpose.encode(), hashlib.sha256).digest()


class Pseudonymiser:
    """Replaces patient identifiers by keyed pseudonyms; ``site_secret`` stays at the site."""

    def __init__(self, site_secret: bytes) -> None:
        self._key = derive_key(site_secret, "pseudonym")

    def pseudonym(self, patient_id: str, study: str) -> str:
        """The pseudonym of ``patient_id`` (surrounding spaces ignored) in ``study``'s domain."""
        pid = str(patient_id).strip()
        if not pid:
            raise InvalidInput("an empty patient identifier cannot be pseudonymised")
        if not study:
            raise InvalidInput("a pseudonym needs a study domain")
        msg = _DOMAIN + b"\x00" + study.encode() + b"\x00" + pid.encode()
        return PREFIX + hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:DIGITS]

    def apply(self, cohort: Cohort, study: str) -> Cohort:
        """The cohort with every ``patient_id`` (patients and mutations) replaced by its pseudonym."""
        ids = cohort.patients["patient_id"].astype(str)
        mapping = {pid: self.pseudonym(pid, study) for pid in ids}
        patients = cohort.patients.copy()
        patients["patient_id"] = pd.array([mapping[p] for p in ids], dtype="string")
        mutations = cohort.mutations.copy()
        if len(mutations):
            mids = mutations["patient_id"].astype(str)
            unknown = sorted(set(mids) - set(mapping))
            if unknown:
                raise InvalidInput(f"{len(unknown)} mutation row(s) name patients that are not in "
                                   f"the patient table; nothing was imported")
            mutations["patient_id"] = pd.array([mapping[p] for p in mids], dtype="string")
        return Cohort(patients, mutations, dict(cohort.panels))
