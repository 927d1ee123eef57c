"""The catalogue through the secure, policy-checked path (hemafed.service.catalogue).

Each refresh is one ``catalogue_counts`` request answered by every approving site's node (plan
and policy check, ledger charge before the noise, audit entry, noise at the site) and securely
summed. The released counts are compared with the true counts read directly from each site's
cohort (pandas): within the stated DP bound on a big-epsilon run, exactly after rounding on a
no-noise control; the hub database is inspected for what it stores.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hubkit import app_client, make_hub, onboard

from hemafed.service.catalogue import (
    BOUND_STDS,
    approve_catalogue,
    catalogue_spec_text,
    parse_plan,
    rounded,
)
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.store import SitePaths, audit_log, load_cohort, load_policy

FIELDS = ["disease", "age", "hb", "plt", "karyotype", "os_time"]
DISEASES = ["MDS", "AML"]


def _true(site: Path) -> dict[str, Any]:
    p = load_cohort(site).patients
    return {"patients": len(p),
            "diseases": {d: int((p["disease"].astype(str) == d).sum()) for d in DISEASES},
            "fields": {f: int(p[f].notna().sum()) if f in p else 0 for f in FIELDS}}


def _setup(db_url: str, site_dirs: list[Path], tmp_path: Path, *, epsilon: float,
           min_cell: int = 10, budget: float = 3.0, approving: int = 2
           ) -> tuple[Any, Any, dict[str, Any]]:
    service = make_hub(db_url, tmp_path / "hub", site_dirs)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=epsilon,
                               min_cell=min_cell)
    r = client.put("/api/catalogue/plan", headers=heads["admin"], json={"spec_yaml": text})
    assert r.status_code == 200, r.text
    assert client.put("/api/catalogue/plan", headers=heads["alice"],
                      json={"spec_yaml": text}).status_code == 403
    spec = parse_plan(text).spec
    for d in site_dirs[:approving]:
        signed = approve_catalogue(d, spec, budget=budget, officer=f"officer-{d.name}")
        r = client.post("/api/site/catalogue/approval", headers=heads[d.name],
                        json={"payload": signed.payload, "signature": signed.signature})
        assert r.status_code == 200, r.text
    return service, client, heads


def _entries(site: Path) -> list[dict[str, Any]]:
    return [e for e in audit_log(site).entries() if e["query"] == "catalogue_counts@1"]


def _released_counts(entry: dict[str, Any]) -> list[tuple[str, int | None, int]]:
    return [("patients", entry["patients"], 0),
            *((f"disease {d}", n, 0) for d, n in entry["diseases"].items()),
            *((f"field {f}", n, 1) for f, n in entry["fields"].items())]


def test_big_epsilon_counts_are_within_the_stated_bound(db_url: str, site_dirs: list[Path],
                                                        tmp_path: Path) -> None:
    service, client, heads = _setup(db_url, site_dirs, tmp_path, epsilon=8.0, budget=9.0)
    # nothing is published before a refresh; a researcher may not refresh
    cat = client.get("/api/catalogue", headers=heads["alice"]).json()
    assert [s["release"] for s in cat["sites"]] == [None, None, None]
    assert client.post("/api/catalogue/refresh", headers=heads["alice"]).status_code == 403
    r = client.post("/api/catalogue/refresh", headers=heads["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["sites"] == ["site-a", "site-b"]

    cat = client.get("/api/catalogue", headers=heads["alice"]).json()
    by_site = {s["site_id"]: s["release"] for s in cat["sites"]}
    assert by_site["site-c"] is None  # not approved: "not published", nothing about why
    truth = {d.name: _true(d) for d in site_dirs}
    for sid in ("site-a", "site-b"):
        rel = by_site[sid]
        assert rel["epsilon"] == 8.0 and rel["epsilon_spent"] == 8.0
        std = rel["noise_std"]
        assert 0 < std["patients"] == std["areas"] == std["fields"] < 3  # one release, one sigma
        t = truth[sid]
        want = {"patients": t["patients"], **{f"disease {d}": n for d, n in t["diseases"].items()},
                **{f"field {f}": n for f, n in t["fields"].items()}}
        for name, got, _ in _released_counts(rel):
            bound = BOUND_STDS * std["patients"]
            if got is None:
                assert want[name] < 10 + bound, (sid, name)
            else:
                assert got % 10 == 0 and abs(got - want[name]) <= bound + 5, (sid, name, got)
    net = cat["network"]
    assert net["sites"] == ["site-a", "site-b"]  # the totals state which sites they cover
    total = truth["site-a"]["patients"] + truth["site-b"]["patients"]
    assert abs(net["patients"] - total) <= BOUND_STDS * net["noise_std"]["patients"] + 5
    assert math.isclose(net["noise_std"]["patients"],
                        by_site["site-a"]["noise_std"]["patients"] * math.sqrt(2))

    # each approving site answered through its node: audited with the epsilon it was charged,
    # the charge in its ledger under the catalogue's own budget; site-c was never asked
    for d in site_dirs[:2]:
        (e,) = _entries(d)
        assert e["decision"] == "allowed" and e["epsilon"] == 8.0
        ledger = PrivacyLedger.from_policy(SitePaths(d).ledger, load_policy(d))
        assert [c.study for c in ledger.charges()] == ["catalogue"]
        assert ledger.budget_for("catalogue").epsilon == 9.0
    assert _entries(site_dirs[2]) == []

    # the hub's database holds the released values only: rounded counts or null
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("select site_id, epsilon, counts from catalogue_releases")
                            ).all()
        cols = {c["name"] for c in sa.inspect(conn).get_columns("sites")}
    engine.dispose()
    assert sorted(str(r[0]) for r in rows) == ["None", "site-a", "site-b"]
    for _, eps, counts in rows:
        counts = counts if isinstance(counts, dict) else __import__("json").loads(counts)
        assert eps == 8.0
        for _, got, _ in _released_counts(counts):
            assert got is None or (isinstance(got, int) and got % 10 == 0)
    assert "catalogue" not in cols  # the officer-published counts of 0002 are gone
    service.dispose()


def test_no_noise_control_is_exact_after_rounding_and_suppressed(site_dirs: list[Path],
                                                                 tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    service, client, heads = _setup(db_url, site_dirs, tmp_path, epsilon=0.0, min_cell=60,
                                    approving=3)
    assert load_policy(site_dirs[0]).study("catalogue").require_dp is False
    # an approval signed for another plan hash, or by another site, is refused
    from hemafed.service.catalogue import catalogue_spec_text as other_text

    other = parse_plan(other_text(epsilon=2.0)).spec
    forged = approve_catalogue(site_dirs[0], other, budget=3.0, officer="x")
    r = client.post("/api/site/catalogue/approval", headers=heads["site-b"],
                    json={"payload": forged.payload, "signature": forged.signature})
    assert r.status_code == 403
    approve_catalogue(site_dirs[0], parse_plan(service.catalogue_plan().spec_yaml).spec,
                      budget=3.0, officer="officer-site-a")  # the site's policy back on plan
    r = client.post("/api/catalogue/refresh", headers=heads["admin"])
    assert r.status_code == 200, r.text
    cat = client.get("/api/catalogue", headers=heads["bob"]).json()
    suppressed = 0
    for s, d in zip(cat["sites"], site_dirs, strict=True):
        t = _true(d)
        rel = s["release"]
        assert rel["noise_std"] == {"patients": 0.0, "areas": 0.0, "fields": 0.0}
        assert rel["patients"] == rounded(t["patients"], 10, 60)
        assert rel["diseases"] == {k: rounded(n, 10, 60) for k, n in t["diseases"].items()}
        assert rel["fields"] == {k: rounded(n, 10, 60) for k, n in t["fields"].items()}
        suppressed += sum(v is None for v in rel["diseases"].values())
    assert suppressed >= 3  # AML: none of these MDS sites reaches the minimum cell of 60
    assert cat["network"]["patients"] == rounded(sum(_true(d)["patients"] for d in site_dirs),
                                                 10, 60)
    # the portal page lists it
    page = client.get("/catalogue", headers=heads["alice"]).text
    assert "exact (no noise)" in page and "fewer than 60" in page
    service.dispose()


def test_refresh_past_the_catalogue_budget_is_refused(site_dirs: list[Path],
                                                      tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    service, client, heads = _setup(db_url, site_dirs, tmp_path, epsilon=0.5, budget=1.0)
    answered = 0
    for _ in range(8):
        r = client.post("/api/catalogue/refresh", headers=heads["admin"])
        if r.status_code != 200:
            break
        answered += 1
    assert 1 <= answered < 8
    assert r.status_code == 403
    error = r.json()["error"]
    assert "privacy budget exhausted for study 'catalogue'" in error
    assert not any(s in error for s in ("site-a", "site-b", "site-c"))  # names the rule only
    for d in site_dirs[:2]:
        ledger = PrivacyLedger.from_policy(SitePaths(d).ledger, load_policy(d))
        assert ledger.spent("catalogue").epsilon <= 1.0 + 1e-9
        refused = [e for e in _entries(d) if e["decision"] != "allowed"]
        assert len([e for e in _entries(d) if e["decision"] == "allowed"]) == answered
        assert refused and "[budget:catalogue" in refused[-1]["reason"]
    # the refusal released nothing: the catalogue still shows the last good refresh
    cat = client.get("/api/catalogue", headers=heads["alice"]).json()
    assert cat["network"]["refresh"] == answered
    assert cat["network"]["epsilon_spent"] == pytest.approx(0.5 * answered)
    service.dispose()


def test_a_request_outside_the_catalogue_plan_is_refused_by_the_site(site_dirs: list[Path],
                                                                     tmp_path: Path) -> None:
    """The approval allows the one catalogue query for the catalogue study, nothing else."""
    from hemafed.federation.api import DPRequest
    from hemafed.site.request import SiteRequest
    from hemafed.site.store import open_node

    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    service, _, _ = _setup(db_url, site_dirs, tmp_path, epsilon=1.0, approving=1)
    plan = parse_plan(catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=1.0))
    node = open_node(site_dirs[0])
    params = plan.params(["site-a", "site-b"])
    base = dict(study_id="catalogue", spec_sha256=plan.spec.sha256, query="catalogue_counts",
                version="1", requester="hub", noise_share_divisor=1, secure=True)
    with pytest.raises(Exception) as exc:  # a field the plan does not name
        node.answer(SiteRequest("r1", params={**params, "features": ["hb", "ldh"]},
                                dp=DPRequest(epsilon=1.0), **base), guaranteed_contributors=2)
    assert exc.value.refusal.code == "outside_plan"  # type: ignore[attr-defined]
    with pytest.raises(Exception) as exc:  # without DP
        node.answer(SiteRequest("r2", params=params, dp=None, **base), guaranteed_contributors=2)
    assert exc.value.refusal.code in ("policy", "outside_plan")  # type: ignore[attr-defined]
    with pytest.raises(Exception) as exc:  # another query for the catalogue study
        node.answer(SiteRequest("r3", params={}, dp=DPRequest(epsilon=1.0),
                                **{**base, "query": "cohort_size"}), guaranteed_contributors=2)
    assert exc.value.refusal.code == "policy"  # type: ignore[attr-defined]
    service.dispose()


def test_cli_approves_the_catalogue_plan_once(site_dirs: list[Path], tmp_path: Path) -> None:
    """`hemafed site catalogue-approve DIR --plan FILE --budget B`: the policy pins the plan
    with its budget; the signed approval verifies with the site's identity key; a bad budget
    is one line on stderr, nothing written."""
    import json

    from typer.testing import CliRunner

    from hemafed.cli import app as cli_app
    from hemafed.service.approval import SignedDecision, identity_public_key, verify_decision

    site = site_dirs[0]
    plan_file = tmp_path / "catalogue.yaml"
    plan_file.write_text(catalogue_spec_text(epsilon=0.5))
    sha = parse_plan(plan_file.read_text()).spec.sha256
    runner = CliRunner()
    bad = runner.invoke(cli_app, ["site", "catalogue-approve", str(site), "--plan",
                                  str(plan_file), "--budget", "0.1"])
    assert bad.exit_code == 1 and "smaller than one refresh" in bad.output
    assert "Traceback" not in bad.output and load_policy(site).study("catalogue") is None
    res = runner.invoke(cli_app, ["site", "catalogue-approve", str(site), "--plan",
                                  str(plan_file), "--budget", "2.5", "--officer", "dpo"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output.strip().splitlines()[-1])
    fields = verify_decision(SignedDecision(doc["payload"], doc["signature"]),
                             site_id=site.name, identity_key_b64=identity_public_key(site),
                             study_id="catalogue", spec_sha256=sha)
    assert fields["decision"] == "approved" and fields["officer"] == "dpo"
    approved = load_policy(site).study("catalogue")
    assert approved is not None and approved.spec_sha256 == sha
    assert approved.budget is not None and approved.budget.epsilon == 2.5


def test_an_exact_catalogue_stays_over_the_sites_of_its_first_release(site_dirs: list[Path],
                                                                      tmp_path: Path) -> None:
    """A no-noise catalogue and the sites' ``refuse_differencing``: a site that approves later
    is not asked (the exact catalogue stays over its first set, which the sites' release
    registers pin); a refresh that would drop a site of that set is refused by the hub naming
    the rule, before any site is asked; a DP plan follows the network again."""
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    service, client, heads = _setup(db_url, site_dirs, tmp_path, epsilon=0.0, approving=2)
    assert client.post("/api/catalogue/refresh", headers=heads["admin"]).json()["sites"] == [
        "site-a", "site-b"]
    plan = parse_plan(service.catalogue_plan().spec_yaml).spec  # type: ignore[union-attr]
    signed = approve_catalogue(site_dirs[2], plan, budget=3.0, officer="officer-site-c")
    assert client.post("/api/site/catalogue/approval", headers=heads["site-c"], json={
        "payload": signed.payload, "signature": signed.signature}).status_code == 200
    # site-c joins: the exact catalogue is refreshed over site-a and site-b only
    r = client.post("/api/catalogue/refresh", headers=heads["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["sites"] == ["site-a", "site-b"]
    cat = client.get("/api/catalogue", headers=heads["alice"]).json()
    assert [s["release"] is None for s in cat["sites"]] == [False, False, True]
    assert cat["network"]["sites"] == ["site-a", "site-b"] and cat["network"]["refresh"] == 2
    # two answers each, and the participant set recorded once (the same set both times)
    assert [len(_entries(d)) for d in site_dirs] == [3, 3, 0]
    assert [sum("participants" in e["reason"] for e in _entries(d)) for d in site_dirs] == [
        1, 1, 0]
    assert all(e["decision"] == "allowed" for d in site_dirs for e in _entries(d))
    page = client.get("/catalogue", headers=heads["alice"]).text
    assert "refuse_differencing" in page
    # a new exact plan that site-b has not approved: refused before any site is asked
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=0.0, min_cell=20)
    assert client.put("/api/catalogue/plan", headers=heads["admin"],
                      json={"spec_yaml": text}).status_code == 200
    for d in (site_dirs[0], site_dirs[2]):
        signed = approve_catalogue(d, parse_plan(text).spec, budget=3.0, officer="dpo")
        client.post("/api/site/catalogue/approval", headers=heads[d.name],
                    json={"payload": signed.payload, "signature": signed.signature})
    before = [len(_entries(d)) for d in site_dirs]
    r = client.post("/api/catalogue/refresh", headers=heads["admin"])
    assert r.status_code == 403
    error = r.json()["error"]
    assert "refuse_differencing" in error and "epsilon > 0" in error
    assert not any(s in error for s in ("site-a", "site-b", "site-c"))  # the rule only
    assert [len(_entries(d)) for d in site_dirs] == before  # no site was asked
    # a DP plan follows the network: all three sites
    text = catalogue_spec_text(diseases=DISEASES, fields=FIELDS, epsilon=1.0)
    client.put("/api/catalogue/plan", headers=heads["admin"], json={"spec_yaml": text})
    for d in site_dirs:
        signed = approve_catalogue(d, parse_plan(text).spec, budget=3.0, officer="dpo")
        client.post("/api/site/catalogue/approval", headers=heads[d.name],
                    json={"payload": signed.payload, "signature": signed.signature})
    r = client.post("/api/catalogue/refresh", headers=heads["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["sites"] == ["site-a", "site-b", "site-c"]
    service.dispose()
