"""A site's decision on a study, in one place: policy update at the site, signature, hub check.

At the site (:func:`decide`): the officer's decision on one spec hash is signed with the site's
identity key (``keys/identity.pem``, :class:`hemafed.secure.identity.SiteIdentity`); an approval
also adds the study, pinned to that hash, to the site's policy through the site's own policy
functions (``SitePolicy`` + ``save``, an atomic write). The plan check the privacy work adds
belongs here, before the policy is written.

At the hub (:func:`verify_decision`): the signature is checked against the identity key the
admin registered for the site, and the signed fields must be exactly the site, study and spec
hash the decision is filed under. A forged or replayed decision is refused.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hemafed.errors import InvalidInput, PolicyRefused
from hemafed.secure.identity import SiteIdentity, verify_signature
from hemafed.site.policy import ApprovedStudy, Budget
from hemafed.site.runtime import IDENTITY_FILE
from hemafed.site.store import SitePaths, load_policy, site_id_of
from hemafed.site.studies import store_spec
from hemafed.study.spec import StudySpec

PAYLOAD_KIND = "hemafed-study-decision/1"
DECISIONS = ("approved", "refused")
APPROVAL_DAYS = 365


@dataclasses.dataclass(frozen=True)
class SignedDecision:
    """The canonical JSON a site signed and its base64 Ed25519 signature."""

    payload: str
    signature: str

    def fields(self) -> dict[str, Any]:
        doc = json.loads(self.payload)
        if not isinstance(doc, dict):
            raise InvalidInput("decision payload: expected a JSON object")
        return doc


def canonical(doc: Mapping[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def identity_public_key(site_dir: str | Path) -> str:
    """The site's identity public key, base64 (what the admin registers at the hub)."""
    ident = SiteIdentity.load(site_id_of(site_dir), Path(site_dir) / IDENTITY_FILE)
    return base64.b64encode(ident.public_bytes).decode("ascii")


def decide(site_dir: str | Path, spec: StudySpec, decision: str, *, officer: str,
           reason: str = "", now: dt.datetime | None = None, budget: Budget | None = None,
           only_queries: tuple[str, ...] | None = None,
           require_dp: bool = False) -> SignedDecision:
    """Record the officer's decision at the site and return it signed with the site identity.

    ``budget``, ``only_queries`` and ``require_dp`` restrict the approved study in the policy
    (the standing catalogue plan, :mod:`hemafed.service.catalogue`: its own budget, its one
    query, which the site's allowed queries then include)."""
    if decision not in DECISIONS:
        raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if decision == "refused" and not reason.strip():
        raise InvalidInput("a refusal needs a reason for the researcher")
    site_id = site_id_of(site_dir)
    now = now or dt.datetime.now(dt.UTC)
    if decision == "approved":
        _approve_in_policy(site_dir, spec, officer=officer, today=now.date(), budget=budget,
                           only_queries=only_queries, require_dp=require_dp)
    identity = SiteIdentity.load(site_id, Path(site_dir) / IDENTITY_FILE)
    payload = canonical({"kind": PAYLOAD_KIND, "site_id": site_id, "study_id": spec.study_id,
                         "spec_sha256": spec.sha256, "decision": decision,
                         "reason": reason.strip(), "officer": officer,
                         "time": now.astimezone(dt.UTC).isoformat()})
    signature = base64.b64encode(identity.sign(payload.encode("utf-8"))).decode("ascii")
    return SignedDecision(payload, signature)


def _approve_in_policy(site_dir: str | Path, spec: StudySpec, *, officer: str,
                       today: dt.date, budget: Budget | None = None,
                       only_queries: tuple[str, ...] | None = None,
                       require_dp: bool = False) -> None:
    policy = load_policy(site_dir)
    kept = tuple(s for s in policy.studies if s.study_id != spec.study_id)
    approved = ApprovedStudy(study_id=spec.study_id, spec_sha256=spec.sha256,
                             expires=today + dt.timedelta(days=APPROVAL_DAYS),
                             approved_by=f"{officer} (site console)", budget=budget,
                             allowed_queries=only_queries, require_dp=require_dp)
    if only_queries:
        policy = dataclasses.replace(policy, allowed_queries=(
            *policy.allowed_queries,
            *(q for q in only_queries if q not in policy.allowed_queries)))
    # the spec's text first: the site derives the study's plan from it (hemafed.study.plan), so
    # every request of the approved study is checked against what the spec implies
    store_spec(site_dir, spec)
    dataclasses.replace(policy, studies=(*kept, approved)).save(SitePaths(Path(site_dir)).policy)


def verify_decision(signed: SignedDecision, *, site_id: str, identity_key_b64: str,
                    study_id: str, spec_sha256: str) -> dict[str, Any]:
    """The signed fields, when the signature and the fields match; ``PolicyRefused`` if not."""
    try:
        public = base64.b64decode(identity_key_b64, validate=True)
        signature = base64.b64decode(signed.signature, validate=True)
    except ValueError:
        raise PolicyRefused(site_id, "approval signature: not valid base64") from None
    if not verify_signature(public, signature, signed.payload.encode("utf-8")):
        raise PolicyRefused(site_id, "approval signature does not verify with the site's "
                                     "registered identity key")
    doc = signed.fields()
    expected = {"kind": PAYLOAD_KIND, "site_id": site_id, "study_id": study_id,
                "spec_sha256": spec_sha256}
    wrong = [k for k, v in expected.items() if doc.get(k) != v]
    if wrong or doc.get("decision") not in DECISIONS:
        raise PolicyRefused(site_id, f"signed approval does not match this study and site "
                                     f"({', '.join(wrong) or 'decision'})")
    return doc
