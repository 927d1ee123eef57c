"""The three untested leads of the batched sums (docs/security.md, third attack review, row
"batched sums"), driven as a curious hub would: real site directories, the real site node and
secure aggregation in process; the hub rewrites the batch payload it sends (protocol-valid).

1. a one-shot batch whose non-DP part would be released over another participant set;
2. two parts of one batch with the same ``request_id``;
3. parts of different studies in one batch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import hemafed.federation.runtime as hub_runtime
from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import DropoutRefused, HemafedError, PolicyRefused
from hemafed.federation.batch import pack_batch
from hemafed.federation.inprocess import InProcessSites
from hemafed.federation.runtime import SecureFederation
from hemafed.site.audit import AuditLog
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

SPEC = {"study_id": "batch-leads", "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + hb + bm_blast"}]}
GRID = {"duration_col": "os_time", "event_col": "os_status", "steps_per_unit": 365.25,
        "max_time": 60.0}
PARTS: list[Any] = [("cohort_size", {}, None), ("time_histogram", GRID, None)]


def _open(root: Path, **kw: Any) -> tuple[Any, StudySpec, InProcessSites, SecureFederation]:
    cohorts = split_sites(generate("MDS", 600, 7), 5, 7, size_skew=0.4)
    spec = StudySpec.from_mapping(SPEC)
    fed = build_sites(root, cohorts, spec)
    local = InProcessSites(site_handler, fed.site_configs(), **kw)
    secure = SecureFederation(local.exchange, fed.manifest, site_ids=local.site_ids,
                              spec_sha256=spec.sha256, requester="tester")
    return fed, spec, local, secure


def _hostile(monkeypatch: pytest.MonkeyPatch, rewrite: Any) -> None:
    """The hub rewrites the parts of every batch it sends (as a modified hub would)."""
    def packed(requests: list[bytes]) -> bytes:
        docs = [json.loads(r) for r in requests]
        rewrite(docs)
        return pack_batch([json.dumps(d).encode() for d in docs])
    monkeypatch.setattr(hub_runtime, "pack_batch", packed)


def _entries(fed: Any) -> dict[str, list[dict[str, Any]]]:
    return {s: AuditLog(d / "audit.log").entries() for s, d in fed.site_dirs.items()}


def test_two_parts_with_one_request_id_are_answered_each_under_its_own_audit_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lead 2: each part goes through its own plan and policy check and gets its own audit
    entries, both under the repeated id; nothing beyond the two approved sums is released."""
    fed, spec, _, secure = _open(tmp_path / "a")
    secure.secure_sum("cohort_size", {}, study=spec.study_id)
    ids: list[str] = []

    def same_id(docs: list[dict[str, Any]]) -> None:
        docs[1]["request_id"] = docs[0]["request_id"]
        ids.append(docs[0]["request_id"])

    _hostile(monkeypatch, same_id)
    out = secure.secure_sums(PARTS, study=spec.study_id)
    assert out[0]["n"][0] == 600
    for entries in _entries(fed).values():
        mine = [e for e in entries if e.get("request_id") == ids[0]]
        allowed = sorted(e["query"] for e in mine if e["decision"] == "allowed"
                         and not e["reason"].startswith("participants "))
        assert allowed == ["cohort_size@1", "time_histogram@1"]


def test_a_part_of_another_study_refuses_the_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lead 3: a part naming another study (not approved under the batch's spec)."""
    fed, spec, _, secure = _open(tmp_path / "b")
    secure.secure_sum("cohort_size", {}, study=spec.study_id)

    def other_study(docs: list[dict[str, Any]]) -> None:
        docs[1]["study_id"] = "another-study"

    _hostile(monkeypatch, other_study)
    with pytest.raises(HemafedError) as info:
        secure.secure_sums(PARTS, study=spec.study_id)
    assert isinstance(info.value, PolicyRefused)
    text = re.sub(r"request [0-9a-f]+", "request ref", str(info.value))
    assert text == ("5 of 5 sites refused: the site policy refused it (rule "
                    "'study_not_approved') (the sites' audit logs hold the detail under "
                    "request ref)")
    for entries in _entries(fed).values():
        assert not [e for e in entries if "another-study" in e["reason"]
                    and e["decision"] == "allowed"]


def test_a_one_shot_batch_over_fewer_sites_is_refused(tmp_path: Path) -> None:
    """Lead 1: after a first sum over all five sites, a site is away for the batch (default
    policy, refuse_differencing on): the one-shot batch cannot be unmasked without the absent
    site, and its retry over the survivors is refused under rule ``participants``, so neither
    non-DP part is released over the survivors."""
    gone = "site04"
    _fed, spec, _, secure = _open(tmp_path / "c", drop=lambda i, s: s == gone and i >= 2)
    secure.secure_sum("cohort_size", {}, study=spec.study_id)
    with pytest.raises(DropoutRefused) as info:
        secure.secure_sums(PARTS, study=spec.study_id)
    assert "participants" in str(info.value) or "refuse_differencing" in str(info.value)
    assert not re.search(r"\b(1[0-9]{2}|[2-9][0-9])\b", str(info.value))  # no count
