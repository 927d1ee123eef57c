"""The site console: a hospital's own web page for deciding what may run on its patients.

``create_console_app(site_dir, hub)`` serves, on the hospital's machine (127.0.0.1), with its own
login (argon2 hashes in ``console-users.json`` in the site directory): the studies pending at the
hub, fetched by the site (the site calls out; the hub never reaches in), each in plain language
with its epsilon; approve (signed with the site identity key, policy updated atomically, through
:func:`hemafed.service.approval.decide`) or refuse with a reason; the audit log with live
verification; the privacy ledger and remaining budget; a data-quality summary of the cohort; the
runs that touched the site. Every page visit reports the site's audit head to the hub.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from hemafed import atomic
from hemafed.errors import HemafedError, InvalidInput
from hemafed.service import security
from hemafed.service.app import LoginRequired
from hemafed.service.approval import decide, identity_public_key
from hemafed.service.describe import epsilon_per_site, plain_language, plan_view
from hemafed.service.hub import AccessDenied, TooManyAttempts
from hemafed.service.quality import cohort_quality
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.store import SitePaths, audit_log, load_policy, site_id_of
from hemafed.study.spec import StudySpec

USERS_FILE = "console-users.json"
COOKIE = "hemafed_console"
SESSION_TTL = dt.timedelta(hours=8)


def set_console_password(site_dir: str | Path, username: str, password: str) -> None:
    """Add or reset a console account of this site (written atomically, owner-only)."""
    path = Path(site_dir) / USERS_FILE
    users = json.loads(path.read_text()) if path.exists() else {}
    try:
        users[username] = security.hash_password(password)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    atomic.write_text(path, json.dumps(users, indent=1) + "\n")
    os.chmod(path, 0o600)


@dataclass
class _Session:
    username: str
    csrf: str
    expires: dt.datetime


class HubUnreachable(HemafedError):
    """The hub did not answer or refused the site's token."""


def create_console_app(site_dir: str | Path, hub: httpx.Client, *,
                       clock: Any = None) -> FastAPI:
    """The console of ``site_dir``; ``hub`` is an HTTP client with the site officer's token."""
    from hemafed.service.web import error_response, page

    site_dir = Path(site_dir)
    site_id = site_id_of(site_dir)
    now = clock or (lambda: dt.datetime.now(dt.UTC))
    sessions: dict[str, _Session] = {}
    failures: dict[str, list[dt.datetime]] = {}
    app = FastAPI(title=f"hemafed site console: {site_id}", docs_url=None, openapi_url=None)

    def hub_call(method: str, path: str, **kw: Any) -> Any:
        try:
            r = hub.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise HubUnreachable(f"the hub did not answer ({exc}); check --hub") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("error", r.text)
            except ValueError:
                detail = r.text
            raise HubUnreachable(f"the hub refused {path} ({r.status_code}): {detail}")
        return r.json()

    def report_head() -> dict[str, Any]:
        log = audit_log(site_dir)
        check = log.verify()
        entries = log.entries()
        head = entries[-1]["hash"] if entries else "0" * 64
        status: dict[str, Any] = {"audit_seq": check.entries, "audit_hash": head,
                                  "audit_ok": bool(check)}
        try:
            hub_call("POST", "/api/site/heartbeat", json=status)
        except HubUnreachable:
            status["hub"] = "unreachable"
        return status

    @app.exception_handler(HemafedError)
    async def _errors(request: Request, exc: HemafedError) -> Response:
        if isinstance(exc, LoginRequired):
            return RedirectResponse("/login", status_code=303)
        return error_response(request, exc)

    def who(request: Request) -> _Session:
        token = request.cookies.get(COOKIE, "")
        s = sessions.get(security.token_digest(token)) if token else None
        if s is None or s.expires <= now():
            raise LoginRequired("log in to the site console")
        return s

    def check_csrf(s: _Session, csrf: str) -> None:
        if not (csrf and security.same(csrf, s.csrf)):
            raise AccessDenied("the form's CSRF token is missing or wrong; reload the page")

    def ctx(s: _Session | None, **kw: Any) -> dict[str, Any]:
        user = None if s is None else {"username": s.username, "role": "site officer",
                                       "site_id": site_id}
        return {"user": user, "csrf": None if s is None else s.csrf, "console": True,
                "brand": f"hemafed site console · {site_id}",
                "title": f"{site_id} console", **kw}

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", **ctx(None, error=None))

    @app.post("/login")
    def login(request: Request, username: str = Form(""), password: str = Form("")) -> Response:
        t = now()
        wait = security.wait_seconds(failures.get(username, []), t)
        if wait > 0:
            raise TooManyAttempts(wait)
        path = site_dir / USERS_FILE
        users = json.loads(path.read_text()) if path.exists() else {}
        if username not in users or not security.check_password(users[username], password):
            failures.setdefault(username, []).append(t)
            return page(request, "login.html", 401,
                        **ctx(None, error="wrong user name or password"))
        failures.pop(username, None)
        token = security.new_token()
        sessions[security.token_digest(token)] = _Session(username, security.new_token(),
                                                          t + SESSION_TTL)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        s = who(request)
        check_csrf(s, csrf)
        sessions.pop(security.token_digest(request.cookies.get(COOKIE, "")), None)
        return RedirectResponse("/login", status_code=303)

    @app.get("/", response_class=HTMLResponse)
    def pending(request: Request) -> HTMLResponse:
        s = who(request)
        head = report_head()
        studies = hub_call("GET", "/api/site/pending")
        return page(request, "console_pending.html",
                    **ctx(s, studies=studies, head=head,
                          identity_key=identity_public_key(site_dir)))

    def _study(pk: int) -> tuple[dict[str, Any], StudySpec]:
        doc = hub_call("GET", f"/api/studies/{pk}")
        spec = StudySpec.from_mapping(yaml.safe_load(doc["spec_yaml"]))
        if spec.sha256 != doc["spec_sha256"]:
            raise InvalidInput(f"the hub says study {pk} has hash {doc['spec_sha256']}, but its "
                               f"spec hashes to {spec.sha256}: do not approve; tell the admin")
        return doc, spec

    @app.get("/studies/{pk}", response_class=HTMLResponse)
    def study(request: Request, pk: int) -> HTMLResponse:
        s = who(request)
        doc, spec = _study(pk)
        return page(request, "console_study.html",
                    **ctx(s, doc=doc, analyses=plain_language(spec),
                          plan=plan_view(spec).to_json(),
                          epsilon=epsilon_per_site(spec), mine=doc["approvals"].get(site_id),
                          policy=load_policy(site_dir)))

    @app.post("/studies/{pk}/decide")
    def decide_post(request: Request, pk: int, csrf: str = Form(""),
                    decision: str = Form(""), reason: str = Form("")) -> Response:
        s = who(request)
        check_csrf(s, csrf)
        _, spec = _study(pk)
        signed = decide(site_dir, spec, decision, officer=s.username, reason=reason, now=now())
        hub_call("POST", f"/api/studies/{pk}/decisions",
                 json={"site_id": site_id, "payload": signed.payload,
                       "signature": signed.signature})
        audit_log(site_dir).append(requester=s.username, study=spec.study_id,
                                   query="console.decide", params={"sha256": spec.sha256},
                                   allowed=decision == "approved", reason=reason or decision)
        return RedirectResponse("/", status_code=303)

    @app.get("/audit", response_class=HTMLResponse)
    def audit(request: Request) -> HTMLResponse:
        s = who(request)
        log = audit_log(site_dir)
        check = log.verify()
        entries = log.entries()[-200:][::-1]
        report_head()
        return page(request, "console_audit.html",
                    **ctx(s, entries=entries, ok=bool(check), check=str(check)))

    @app.get("/budget", response_class=HTMLResponse)
    def budget(request: Request) -> HTMLResponse:
        s = who(request)
        policy = load_policy(site_dir)
        ledger = PrivacyLedger.from_policy(SitePaths(site_dir).ledger, policy)
        studies = sorted({c.study for c in ledger.charges()} | {a.study_id for a in policy.studies})
        rows = [{"study": sid, "spent": ledger.spent(sid), "remaining": ledger.remaining(sid)}
                for sid in studies]
        return page(request, "console_budget.html",
                    **ctx(s, rows=rows, total=ledger.spent_total(), policy=policy))

    @app.get("/quality", response_class=HTMLResponse)
    def quality(request: Request) -> HTMLResponse:
        s = who(request)
        return page(request, "console_quality.html", **ctx(s, fields=cohort_quality(site_dir)))

    def _catalogue_plan() -> tuple[Any, Any]:
        """The hub's catalogue plan, re-parsed here (the site checks what it approves)."""
        from hemafed.service.catalogue import parse_plan

        doc = hub_call("GET", "/api/catalogue/plan")
        plan = parse_plan(doc["spec_yaml"])
        if plan.spec.sha256 != doc["spec_sha256"]:
            raise InvalidInput("the hub's catalogue plan does not hash to what it says: do not "
                               "approve; tell the admin")
        return doc, plan

    def _catalogue_page(request: Request, s: _Session, note: str | None = None) -> HTMLResponse:
        from hemafed.service.catalogue import CATALOGUE_ID, TOTAL_BUDGET, cost_text, describe_plan

        try:
            _, plan = _catalogue_plan()
        except HubUnreachable:
            plan = None
        policy = load_policy(site_dir)
        mine = policy.study(CATALOGUE_ID)
        approved = plan is not None and mine is not None and mine.spec_sha256 == plan.spec.sha256
        ledger = PrivacyLedger.from_policy(SitePaths(site_dir).ledger, policy)
        cat = hub_call("GET", "/api/catalogue")
        entry = next((x for x in cat["sites"] if x["site_id"] == site_id), None)
        return page(request, "console_catalogue.html", **ctx(
            s, plan=plan, text=describe_plan(plan) if plan else None, approved=approved,
            cost=cost_text(plan) if plan else None,
            spent=ledger.spent(CATALOGUE_ID) if approved else None,
            remaining=ledger.remaining(CATALOGUE_ID) if approved else None,
            entry=entry, default_budget=TOTAL_BUDGET, note=note))

    @app.get("/catalogue", response_class=HTMLResponse)
    def catalogue(request: Request) -> HTMLResponse:
        return _catalogue_page(request, who(request))

    @app.post("/catalogue/approve")
    def catalogue_approve(request: Request, csrf: str = Form(""),
                          budget: str = Form("")) -> Response:
        from hemafed.service.catalogue import approve_catalogue

        s = who(request)
        check_csrf(s, csrf)
        try:
            total = float(budget)
        except ValueError:
            raise InvalidInput("the catalogue budget must be a number (an epsilon)") from None
        _, plan = _catalogue_plan()
        signed = approve_catalogue(site_dir, plan.spec, budget=total, officer=s.username,
                                   now=now())
        hub_call("POST", "/api/site/catalogue/approval",
                 json={"payload": signed.payload, "signature": signed.signature})
        audit_log(site_dir).append(requester=s.username, study="catalogue",
                                   query="console.approve_catalogue",
                                   params={"sha256": plan.spec.sha256, "budget": total},
                                   allowed=True, reason="standing catalogue plan approved")
        return _catalogue_page(request, s, "The catalogue plan is approved.")

    @app.post("/catalogue/describe")
    def catalogue_describe(request: Request, csrf: str = Form(""), diseases: str = Form(""),
                           fields: str = Form("")) -> Response:
        s = who(request)
        check_csrf(s, csrf)
        doc = {"diseases": [x.strip() for x in diseases.split(",") if x.strip()],
               "fields": [x.strip() for x in fields.split(",") if x.strip()]}
        hub_call("POST", "/api/site/description", json=doc)
        audit_log(site_dir).append(requester=s.username, study="catalogue",
                                   query="console.publish_description", params=doc,
                                   allowed=True, reason="public description published")
        return _catalogue_page(request, s, "The description is published.")

    @app.get("/runs", response_class=HTMLResponse)
    def runs(request: Request) -> HTMLResponse:
        s = who(request)
        hub_runs = hub_call("GET", "/api/site/runs")
        local: dict[str, dict[str, Any]] = {}
        for e in audit_log(site_dir).entries():
            row = local.setdefault(e["study"], {"study": e["study"], "allowed": 0, "refused": 0,
                                                "first": e["time"], "last": e["time"],
                                                "epsilon": 0.0})
            row["allowed" if e["decision"] == "allowed" else "refused"] += 1
            row["last"] = e["time"]
            row["epsilon"] += float(e.get("epsilon") or 0.0)
        return page(request, "console_runs.html",
                    **ctx(s, hub_runs=hub_runs, local=list(local.values())))

    return app
