"""Access rules of the hub service, on SQLite and PostgreSQL: each refusal is a real attempt."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import yaml
from hubkit import PASSWORD, SMALL_SPEC, app_client, bearer, make_hub, onboard

from hemafed.secure.identity import SiteIdentity
from hemafed.service.approval import canonical, decide
from hemafed.service.db import Database
from hemafed.service.hub import HubService
from hemafed.service.runs import LocalFederation
from hemafed.study.spec import StudySpec


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def _setup(db_url: str, site_dirs: list[Path], tmp_path: Path, **kw: Any) -> tuple[Any, ...]:
    service = make_hub(db_url, tmp_path / "hub", site_dirs, **kw)
    client = app_client(service)
    heads = onboard(client, service, site_dirs)
    study = client.post("/api/studies", headers=heads["alice"],
                        json={"spec_yaml": SMALL_SPEC}).json()
    return service, client, heads, study


def test_who_may_read_and_decide(db_url: str, site_dirs: list[Path], tmp_path: Path) -> None:
    service, client, heads, study = _setup(db_url, site_dirs, tmp_path)
    pk = study["id"]
    # another researcher sees neither the study nor its existence
    assert client.get(f"/api/studies/{pk}", headers=heads["bob"]).status_code == 404
    assert client.get("/api/studies", headers=heads["bob"]).json() == []
    assert client.get(f"/api/studies/{pk}", headers=heads["alice"]).status_code == 200
    # a researcher cannot read a site's record (audit head); its officer and the admin can
    assert client.get("/api/sites/site-a", headers=heads["alice"]).status_code == 403
    assert client.get("/api/sites/site-a", headers=heads["site-b"]).status_code == 403
    assert client.get("/api/sites/site-a", headers=heads["site-a"]).status_code == 200
    assert client.get("/api/sites/site-a", headers=heads["admin"]).status_code == 200
    # a researcher cannot onboard a site
    r = client.post("/api/sites", headers=heads["alice"],
                    json={"site_id": "x", "identity_key": "AAAA"})
    assert r.status_code == 403
    # malformed requests get one clear error, not a server error
    r = client.post("/api/sites", headers=heads["admin"], json={"site_id": "x"})
    assert r.status_code == 400 and "identity_key" in r.json()["error"]
    r = client.post("/api/studies", headers=heads["alice"], content=b"not json")
    assert r.status_code == 400
    spec = StudySpec.from_mapping(yaml.safe_load(study["spec_yaml"]))
    signed_b = decide(site_dirs[1], spec, "approved", officer="officer-site-b")
    body_b = {"site_id": "site-b", "payload": signed_b.payload, "signature": signed_b.signature}
    # an officer cannot file a decision for another site, even one that site really signed
    r = client.post(f"/api/studies/{pk}/decisions", headers=heads["site-a"], json=body_b)
    assert r.status_code == 403 and "may not decide for site site-b" in r.json()["error"]
    # a forged signature: site-a's payload signed by a key that is not site-a's identity
    forger = SiteIdentity.generate("site-a")
    payload = json.loads(signed_b.payload) | {"site_id": "site-a", "officer": "officer-site-a"}
    text = canonical(payload)
    forged = {"site_id": "site-a", "payload": text,
              "signature": base64.b64encode(forger.sign(text.encode())).decode()}
    r = client.post(f"/api/studies/{pk}/decisions", headers=heads["site-a"], json=forged)
    assert r.status_code == 403 and "does not verify" in r.json()["error"]
    # a genuine signature over an edited payload (another spec hash) does not verify either
    tampered = dict(body_b, payload=signed_b.payload.replace(spec.sha256, "0" * 64))
    r = client.post(f"/api/studies/{pk}/decisions", headers=heads["site-b"], json=tampered)
    assert r.status_code == 403
    # a genuine decision of site-b for an older version is refused once the study is amended
    client.post(f"/api/studies/{pk}/amend", headers=heads["alice"],
                json={"spec_yaml": SMALL_SPEC + "description: amended\n"})
    r = client.post(f"/api/studies/{pk}/decisions", headers=heads["site-b"], json=body_b)
    assert r.status_code == 403 and "spec_sha256" in r.json()["error"]
    assert client.get(f"/api/studies/{pk}", headers=heads["alice"]).json()["approvals"] == {
        "site-a": None, "site-b": None, "site-c": None}
    # every refusal above is in the hub's own audit log, and the chain verifies
    refused = [e for e in service.audit_log.entries() if e["decision"] == "refused"]
    assert {e["query"] for e in refused} >= {"read_study", "read_site", "decide"}
    assert service.audit_log.verify()
    service.dispose()


def test_sessions_csrf_and_login_rate_limit(db_url: str, site_dirs: list[Path],
                                            tmp_path: Path) -> None:
    clock = Clock()
    service, client, _, _ = _setup(db_url, site_dirs, tmp_path, clock=clock,
                                   session_ttl=dt.timedelta(hours=1))
    r = client.post("/login", data={"username": "alice", "password": PASSWORD},
                    follow_redirects=False)
    assert r.status_code == 303
    page = client.get("/studies/new")
    assert page.status_code == 200
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    # a form without its CSRF token (or with another) is refused, with the token it passes
    assert client.post("/studies", data={"spec_yaml": SMALL_SPEC}).status_code == 403
    assert client.post("/studies", data={"spec_yaml": SMALL_SPEC,
                                         "csrf": "x" * 40}).status_code == 403
    bad = client.post("/studies", data={"spec_yaml": "study_id: s\n", "csrf": csrf})
    assert bad.status_code == 400 and "missing key &#39;analyses&#39;" in bad.text
    # an expired session is refused: the page sends the browser to log in, the API says 401
    clock.now += dt.timedelta(hours=1, seconds=1)
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/api/me").status_code == 401
    # five wrong passwords: the sixth attempt waits, even with the right password
    for _ in range(5):
        r = client.post("/api/login", json={"username": "bob", "password": "wrong password"})
        assert r.status_code == 403
    r = client.post("/api/login", json={"username": "bob", "password": PASSWORD})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    clock.now += dt.timedelta(seconds=3)
    assert bearer(client, "bob")  # after the wait, the right password works again
    service.dispose()


class _BlockingFederation:
    """Runs nothing until released: the hub 'crashes' while a run is in flight."""

    def __init__(self, inner: LocalFederation) -> None:
        self.inner, self.release = inner, threading.Event()
        self.transport = "inprocess"

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self.inner.site_ids

    def run(self, spec: StudySpec, progress: Any = None, key: str = "") -> dict[str, Any]:
        self.release.wait(60)
        raise RuntimeError("the process is gone")


def test_restart_mid_run_is_reported_and_loses_no_study(db_url: str, site_dirs: list[Path],
                                                        tmp_path: Path) -> None:
    from hubkit import approve_all

    service, client, heads, study = _setup(db_url, site_dirs, tmp_path)
    approve_all(client, heads, site_dirs, study)
    blocking = _BlockingFederation(service.federation)  # type: ignore[arg-type]
    service.federation = blocking
    run = client.post(f"/api/studies/{study['id']}/runs", headers=heads["alice"]).json()
    assert client.get(f"/api/runs/{run['id']}", headers=heads["alice"]).json()["state"] in (
        "queued", "running")
    # a new hub process on the same database (the old one died mid-run)
    restarted = HubService(Database(db_url), tmp_path / "hub",
                           federation=LocalFederation.from_dirs(site_dirs))
    client2 = app_client(restarted)
    after = client2.get(f"/api/runs/{run['id']}", headers=heads["alice"]).json()
    assert after["state"] == "interrupted" and "hub stopped" in after["error"]
    assert client2.get(f"/api/studies/{study['id']}", headers=heads["alice"]).json()[
        "spec_sha256"] == study["spec_sha256"]
    blocking.release.set()  # the old worker wakes up: it must not overwrite the truthful state
    service.wait_for_workers()
    assert client2.get(f"/api/runs/{run['id']}", headers=heads["alice"]).json()[
        "state"] == "interrupted"
    # and the study runs again on the restarted hub
    again = client2.post(f"/api/studies/{study['id']}/runs", headers=heads["alice"]).json()
    restarted.wait_for_workers()
    assert client2.get(f"/api/runs/{again['id']}", headers=heads["alice"]).json()[
        "state"] == "succeeded"
    service.dispose()
    restarted.dispose()
