"""Hostile input, property-based: arbitrary JSON parameters at every registered query through a
real site node, and fuzzed intake files (CSV, FHIR, Phenopackets, VCF) through the site intake.

Queries: no exception escapes as anything but an audited refusal, every refusal is audited with
an entry naming it, and what would reach the hub (the refusal's code, name and reference) holds
no text computed from the data. Intake: one ``HemafedError``, never a traceback, and the site
directory unchanged byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hemafed.cohort.demo import generate
from hemafed.errors import HemafedError
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import registered
from hemafed.privacy.refusal import CODES, Refusal
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.node import SiteNode
from hemafed.site.policy import SitePolicy
from hemafed.site.request import SiteRequest
from hemafed.site.store import import_into_site, init_site
from hemafed.study import catalogue as _catalogue  # noqa: F401  (registers every site query)
from hemafed.study.derived import with_derived_scores

QUERIES = sorted(q.key for q in registered())
SHA = "c" * 64

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from([1e308, -1e308, 5e-324, 2**63, "age", "os_time", "sex"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20)
KEYS = ["column", "low", "high", "bins", "levels", "grid", "beta", "design", "duration_col",
        "event_col", "group_col", "group_levels", "max_patients", "resolution", "steps_per_unit",
        "max_time", "time_mapping", "outcome", "causes", "cliques", "domain", "fine_bins",
        "model", "edges", "tree", "frontier", "predictor", "lp_bins", "time_index", "tie_index"]
params_strategy = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), json_values,
                                  max_size=6)
dp_strategy = st.one_of(st.none(), st.builds(
    lambda e, d, nm: DPRequest(None if nm else e, d, nm or None),
    st.floats(1e-6, 1e308), st.floats(1e-12, 0.5), st.one_of(st.none(), st.floats(1e-300, 1e308))))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> SiteNode:
    root = tmp_path_factory.mktemp("fuzz-site")
    policy = SitePolicy("fuzz", allowed_queries=tuple(QUERIES), studies=(),
                        total_budget=SitePolicy("x").total_budget)
    policy = SitePolicy.from_mapping({
        "site_id": "fuzz", "allowed_queries": QUERIES, "privacy_budget": {
            "total": {"epsilon": 1e6, "delta": 0.1}, "per_study": {"epsilon": 1e6, "delta": 0.1}},
        "studies": [{"study_id": "F", "spec_sha256": SHA, "expires": "2999-01-01",
                     "approved_by": "fuzz"}]})
    ledger = PrivacyLedger.from_policy(root / "ledger.jsonl", policy)
    cohort = with_derived_scores(generate("MDS", 60, 1))
    return SiteNode(cohort, policy, ledger, AuditLog(root / "audit.log"),
                    rng=np.random.default_rng(0))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=st.sampled_from(QUERIES), params=params_strategy, dp=dp_strategy)
def test_arbitrary_parameters_at_every_query(node: SiteNode, query: str, params: dict[str, Any],
                                             dp: DPRequest | None) -> None:
    name, version = query.split("@")
    try:
        request = SiteRequest(f"r{len(node.audit.entries())}", "F", SHA, name, version, params,
                              "fuzz", dp, 1, True)
    except HemafedError:
        return  # not a request the wire format can carry (e.g. NaN in JSON): never sent
    before = len(node.audit.entries())
    try:
        node.answer(request)
    except HemafedError as exc:
        refusal = getattr(exc, "refusal", None)
        assert isinstance(refusal, Refusal), f"{type(exc).__name__}: {exc}"
        assert refusal.code in CODES
        entries = node.audit.entries()
        assert len(entries) == before + 1 and entries[-1]["decision"] == "refused"
        assert refusal.audit_ref in entries[-1]["reason"]
        # what the hub would get: the fixed sentence from code and name, nothing computed
        wire = json.dumps({k: v.decode() for k, v in refusal.to_wire().items()})
        assert refusal.name == "" or refusal.name in params or refusal.code != \
            "invalid_parameter" or refusal.name in ("params", "dp", "request")
        assert "patient" not in wire
    else:
        assert node.audit.entries()[-1]["decision"] == "allowed"


def test_every_registered_query_is_fuzzed() -> None:
    assert len(QUERIES) >= 20


# --- intake ------------------------------------------------------------------------------

def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("intake") / "site"
    init_site(root, "intake")
    return root


def _refused_and_unchanged(site: Path, path: Path, **kwargs: Any) -> None:
    before = _digest(site)
    with pytest.raises(HemafedError):
        import_into_site(site, path, **kwargs)
    assert _digest(site) == before


PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "male"}
KNOWN = {
    "nested.fhir.json": ("fhir", ("[" * 100_000 + "]" * 100_000).encode()),
    "digits.fhir.json": ("fhir", json.dumps({"resourceType": "Bundle", "entry": [
        {"resource": PATIENT}]}).replace('"male"}', '"male", "x": ' + "9" * 5000 + "}")
        .encode()),
    "latin1.fhir.json": ("fhir", json.dumps({"resourceType": "Bundle", "entry": [
        {"resource": {**PATIENT, "name": [{"family": "Müller"}]}}]}).encode("latin-1")),
    "nested.pheno.json": ("phenopackets", ("{\"a\":" * 50_000 + "1" + "}" * 50_000).encode()),
    "digits.pheno.json": ("phenopackets", ('{"id": "x", "subject": {"id": "p1", "age": '
                                           + "7" * 5000 + "}}").encode()),
    "latin1.pheno.json": ("phenopackets", '{"id": "Pätient", "subject": {"id": "é"}}'.encode(
        "latin-1")),
    "utf16.fhir.json": ("fhir", json.dumps({"resourceType": "Bundle"}).encode("utf-16")),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_the_known_traceback_cases_are_clear_errors(site: Path, tmp_path: Path,
                                                    name: str) -> None:
    fmt, data = KNOWN[name]
    path = tmp_path / name
    path.write_bytes(data)
    _refused_and_unchanged(site, path, fmt=fmt)


FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.binary(max_size=400))
def test_fuzzed_csv(site: Path, tmp_path: Path, body: bytes) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(b"patient_id,disease,hb\n" + body)
    before = _digest(site)
    try:
        import_into_site(site, path)
    except HemafedError:
        assert _digest(site) == before


@FUZZ
@given(doc=json_values, fmt=st.sampled_from(["fhir", "phenopackets"]))
def test_fuzzed_fhir_and_phenopackets(site: Path, tmp_path: Path, doc: Any, fmt: str) -> None:
    path = tmp_path / f"fuzz.{fmt}.json"
    try:
        path.write_text(json.dumps(doc))
    except ValueError:
        return
    before = _digest(site)
    try:
        import_into_site(site, path, fmt=fmt)
    except HemafedError:
        assert _digest(site) == before


@FUZZ
@given(lines=st.lists(st.text(max_size=60), max_size=8))
def test_fuzzed_vcf(site: Path, tmp_path: Path, lines: list[str]) -> None:
    patients = tmp_path / "p.csv"
    patients.write_text("patient_id,disease\nS1,MDS\n")
    vcf = tmp_path / "fuzz.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT"
                   "\tS1\n" + "\n".join(lines) + "\n", encoding="utf-8", errors="replace")
    before = _digest(site)
    try:
        import_into_site(site, patients, mutations=vcf)
    except HemafedError:
        assert _digest(site) == before
