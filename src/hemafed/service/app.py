"""The hub service's HTTP application: the JSON API for scripts and sites, and the portal pages.

``create_app(service)`` wires :class:`hemafed.service.hub.HubService` to FastAPI. Browsers log
in with a session cookie (HttpOnly, SameSite=Strict) and post every form with the session's CSRF
token; scripts and site consoles send ``Authorization: Bearer TOKEN`` (no CSRF: no ambient
credential). Live run progress is pushed as server-sent events from ``/api/runs/{id}/events``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.concurrency import run_in_threadpool

from hemafed.errors import HemafedError, InvalidInput, PolicyRefused
from hemafed.service import security
from hemafed.service.approval import SignedDecision
from hemafed.service.describe import epsilon_per_site, plain_language, plan_view
from hemafed.service.hub import AccessDenied, HubService, NotFound, parse_spec
from hemafed.service.models import Run, Study, User
from hemafed.service.web import SESSION_COOKIE, error_response, page

TERMINAL = ("succeeded", "failed", "interrupted")


class LoginRequired(HemafedError):
    """No valid session or token (HTTP 401 for the API, a redirect to /login for pages)."""


@dataclass(frozen=True)
class Caller:
    user: User
    csrf: str | None  # None: authenticated by API token


def _caller(service: HubService, request: Request) -> Caller:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        user = service.token_user(auth[7:].strip())
        if user is None:
            raise LoginRequired("unknown API token")
        return Caller(user, None)
    cookie = request.cookies.get(SESSION_COOKIE)
    found = service.session_user(cookie) if cookie else None
    if found is None:
        raise LoginRequired("log in first (the session is missing or expired)")
    return Caller(found[0], found[1])


def _check_csrf(caller: Caller, token: str | None) -> None:
    if caller.csrf is not None and not (token and security.same(token, caller.csrf)):
        raise AccessDenied("the form's CSRF token is missing or wrong; reload the page")


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object a request carries; ``InvalidInput`` (400) for anything else."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidInput(f"{request.url.path}: the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"{request.url.path}: the body must be a JSON object")
    return body


def _need(body: dict[str, Any], *keys: str) -> None:
    missing = [k for k in keys if k not in body]
    if missing:
        raise InvalidInput(f"missing field(s): {', '.join(missing)}")


def study_json(service: HubService, user: User, study: Study) -> dict[str, Any]:
    spec = parse_spec(study.spec_yaml)
    approvals = service.approvals(user, study.id)
    return {"id": study.id, "study_id": study.study_id, "title": study.title,
            "version": study.version, "spec_sha256": study.spec_sha256,
            "spec_yaml": study.spec_yaml, "epsilon_per_site": epsilon_per_site(spec),
            "analyses": [a.__dict__ for a in plain_language(spec)],
            "plan": plan_view(spec).to_json(),
            "approvals": {sid: None if a is None else {"decision": a.decision, "reason": a.reason,
                                                       "officer": a.officer,
                                                       "time": a.time.isoformat()}
                          for sid, a in approvals.items()}}


def run_json(run: Run) -> dict[str, Any]:
    return {"id": run.id, "study": run.study_pk, "spec_sha256": run.spec_sha256,
            "transport": run.transport, "state": run.state, "progress": run.progress or {},
            "contributors": run.contributors or [], "dropouts": run.dropouts or [],
            "error": run.error, "started": run.started.isoformat(),
            "finished": None if run.finished is None else run.finished.isoformat()}


def results_csv(document: dict[str, Any]) -> str:
    """Every result table in one long CSV: analysis, table, row, column, value."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["analysis", "table", "row", "column", "value"])
    for a in document.get("analyses", []):
        for name, t in (a.get("tables") or {}).items():
            for idx, row in zip(t["index"], t["data"], strict=True):
                for col, v in zip(t["columns"], row, strict=True):
                    w.writerow([a["id"], name, idx, col, "" if v is None else v])
        for k, v in (a.get("stats") or {}).items():
            w.writerow([a["id"], "stats", "", k, v])
    return out.getvalue()


def create_app(service: HubService) -> FastAPI:
    app = FastAPI(title="hemafed hub", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.service = service

    @app.exception_handler(HemafedError)
    async def _errors(request: Request, exc: HemafedError) -> Response:
        if isinstance(exc, LoginRequired):
            if request.url.path.startswith("/api/"):
                return JSONResponse({"error": str(exc)}, status_code=401)
            return RedirectResponse("/login", status_code=303)
        return error_response(request, exc)

    def caller(request: Request) -> Caller:
        return _caller(service, request)

    # --- JSON API -------------------------------------------------------------------------

    @app.post("/api/login")
    async def api_login(request: Request) -> dict[str, str]:
        body = await _body(request)
        token, _ = await run_in_threadpool(service.login, str(body.get("username", "")),
                                           str(body.get("password", "")))
        found = service.session_user(token)
        assert found is not None
        service.logout(token)
        return {"token": service.issue_token(found[0], str(body.get("name", "script")))}

    @app.get("/api/me")
    def api_me(request: Request) -> dict[str, Any]:
        u = caller(request).user
        return {"username": u.username, "role": u.role, "site_id": u.site_id}

    @app.post("/api/users")
    async def api_user(request: Request) -> dict[str, Any]:
        c = caller(request)
        if c.user.role != "admin":
            raise AccessDenied("only the network admin creates accounts")
        b = await _body(request)
        _need(b, "username", "password", "role")
        u = service.create_user(str(b["username"]), str(b["password"]), str(b["role"]),
                                site_id=b.get("site_id"), actor=c.user.username)
        return {"username": u.username, "role": u.role, "site_id": u.site_id}

    @app.post("/api/sites")
    async def api_onboard(request: Request) -> dict[str, Any]:
        c = caller(request)
        b = await _body(request)
        _need(b, "site_id", "identity_key")
        site = service.onboard_site(c.user, str(b["site_id"]), str(b.get("name", "")),
                                    str(b["identity_key"]), b.get("node_key"))
        return {"site_id": site.site_id}

    @app.get("/api/sites")
    def api_sites(request: Request) -> list[dict[str, Any]]:
        return [{"site_id": s.site_id, "name": s.name,
                 "last_seen": None if s.last_seen is None else s.last_seen.isoformat()}
                for s in service.sites(caller(request).user)]

    @app.get("/api/sites/{site_id}")
    def api_site(request: Request, site_id: str) -> dict[str, Any]:
        s = service.site(caller(request).user, site_id)
        return {"site_id": s.site_id, "name": s.name, "identity_key": s.identity_key,
                "last_seen": None if s.last_seen is None else s.last_seen.isoformat(),
                "audit_head": {"seq": s.audit_seq, "hash": s.audit_hash, "verified": s.audit_ok}}

    @app.post("/api/studies")
    async def api_submit(request: Request) -> dict[str, Any]:
        c = caller(request)
        b = await _body(request)
        study = service.submit_study(c.user, str(b.get("spec_yaml", "")))
        return study_json(service, c.user, study)

    @app.post("/api/studies/{pk}/amend")
    async def api_amend(request: Request, pk: int) -> dict[str, Any]:
        c = caller(request)
        b = await _body(request)
        study = service.amend_study(c.user, pk, str(b.get("spec_yaml", "")), b.get("note", ""))
        return study_json(service, c.user, study)

    @app.get("/api/studies")
    def api_studies(request: Request) -> list[dict[str, Any]]:
        u = caller(request).user
        return [study_json(service, u, s) for s in service.studies(u)]

    @app.get("/api/studies/{pk}")
    def api_study(request: Request, pk: int) -> dict[str, Any]:
        u = caller(request).user
        return study_json(service, u, service.study(u, pk))

    @app.post("/api/studies/{pk}/decisions")
    async def api_decide(request: Request, pk: int) -> dict[str, Any]:
        c = caller(request)
        b = await _body(request)
        row = service.record_decision(c.user, pk, str(b.get("site_id", "")),
                                      SignedDecision(str(b.get("payload", "")),
                                                     str(b.get("signature", ""))))
        return {"site_id": row.site_id, "decision": row.decision, "spec_sha256": row.spec_sha256}

    @app.post("/api/studies/{pk}/runs")
    def api_start(request: Request, pk: int) -> dict[str, Any]:
        return run_json(service.start_run(caller(request).user, pk))

    @app.get("/api/runs/{run_id}")
    def api_run(request: Request, run_id: int) -> dict[str, Any]:
        return run_json(service.run(caller(request).user, run_id))

    @app.get("/api/runs/{run_id}/events")
    def api_events(request: Request, run_id: int) -> StreamingResponse:
        user = caller(request).user
        service.run(user, run_id)

        async def stream() -> AsyncIterator[str]:
            last = None
            while True:
                run = await run_in_threadpool(service.run, user, run_id)
                doc = run_json(run)
                text = json.dumps(doc)
                if text != last:
                    yield f"data: {text}\n\n"
                    last = text
                if run.state in TERMINAL or await request.is_disconnected():
                    return
                await asyncio.sleep(0.3)
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/api/runs/{run_id}/results.json")
    def api_results(request: Request, run_id: int) -> JSONResponse:
        res = service.result(caller(request).user, run_id)
        return JSONResponse(res.document, headers={
            "Content-Disposition": f'attachment; filename="run-{run_id}-results.json"'})

    @app.get("/api/runs/{run_id}/results.csv")
    def api_results_csv(request: Request, run_id: int) -> Response:
        res = service.result(caller(request).user, run_id)
        return Response(results_csv(res.document), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="run-{run_id}-results.csv"'})

    @app.get("/api/runs/{run_id}/report.html")
    def api_report(request: Request, run_id: int) -> HTMLResponse:
        return HTMLResponse(service.result(caller(request).user, run_id).report_html)

    @app.get("/api/site/pending")
    def api_pending(request: Request) -> list[dict[str, Any]]:
        u = caller(request).user
        return [study_json(service, u, s) for s in service.pending_for_site(u)]

    @app.get("/api/site/studies")
    def api_site_studies(request: Request) -> list[dict[str, Any]]:
        u = caller(request).user
        if u.role != "officer":
            raise AccessDenied("site officers only")
        return [study_json(service, u, s) for s in service.studies(u)]

    @app.post("/api/site/heartbeat")
    async def api_heartbeat(request: Request) -> dict[str, str]:
        c = caller(request)
        b = await _body(request)
        service.heartbeat(c.user, int(b.get("audit_seq", 0)), str(b.get("audit_hash", "")),
                          bool(b.get("audit_ok", False)))
        return {"ok": "seen"}

    @app.get("/api/catalogue")
    def api_catalogue(request: Request) -> dict[str, Any]:
        return service.catalogue(caller(request).user)

    @app.get("/api/catalogue/plan")
    def api_catalogue_plan(request: Request) -> dict[str, Any]:
        caller(request)
        row = service.catalogue_plan()
        if row is None:
            raise NotFound("the network has no catalogue plan yet")
        return {"spec_yaml": row.spec_yaml, "spec_sha256": row.spec_sha256}

    @app.put("/api/catalogue/plan")
    async def api_set_catalogue_plan(request: Request) -> dict[str, Any]:
        c = caller(request)
        b = await _body(request)
        _need(b, "spec_yaml")
        row = service.set_catalogue_plan(c.user, str(b["spec_yaml"]))
        return {"spec_yaml": row.spec_yaml, "spec_sha256": row.spec_sha256}

    @app.get("/api/catalogue/noise")
    def api_catalogue_noise(request: Request, epsilon: str = "", delta: str = "",
                            fields: str = "") -> dict[str, str]:
        """The noise s.d. the admin form shows next to its epsilon field."""
        from hemafed.service.catalogue import noise_text

        caller(request)
        return {"text": noise_text(epsilon, delta, fields)}

    @app.post("/api/catalogue/refresh")
    def api_refresh_catalogue(request: Request) -> dict[str, Any]:
        return service.refresh_catalogue(caller(request).user)

    @app.post("/api/site/catalogue/approval")
    async def api_catalogue_approval(request: Request) -> dict[str, str]:
        c = caller(request)
        b = await _body(request)
        service.record_catalogue_approval(c.user, SignedDecision(str(b.get("payload", "")),
                                                                 str(b.get("signature", ""))))
        return {"ok": "approved"}

    @app.post("/api/site/description")
    async def api_description(request: Request) -> dict[str, str]:
        c = caller(request)
        service.publish_description(c.user, await _body(request))
        return {"ok": "published"}

    @app.get("/api/site/runs")
    def api_site_runs(request: Request) -> list[dict[str, Any]]:
        return [run_json(r) for r in service.runs(caller(request).user)]

    @app.get("/api/models")
    def api_models(request: Request) -> list[dict[str, Any]]:
        return [{"name": m.name, "version": m.version, "kind": m.kind,
                 "spec_sha256": m.spec_sha256, "run": m.run_id}
                for m in service.models(caller(request).user)]

    @app.get("/api/models/{name}/{version}")
    def api_model(request: Request, name: str, version: int) -> dict[str, Any]:
        m = service.model(caller(request).user, name, version)
        return {"name": m.name, "version": m.version, "kind": m.kind,
                "spec_sha256": m.spec_sha256, "run": m.run_id, "payload": m.payload}

    # --- portal pages ---------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request) -> HTMLResponse:
        return page(request, "login.html", user=None, error=None, title="hemafed hub")

    @app.post("/login")
    def login_post(request: Request, username: str = Form(""), password: str = Form("")) -> Response:
        try:
            token, _ = service.login(username, password)
        except AccessDenied as exc:
            return page(request, "login.html", 401, user=None, error=str(exc), title="hemafed hub")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        max_age=int(service.session_ttl.total_seconds()))
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")) -> Response:
        c = caller(request)
        _check_csrf(c, csrf)
        service.logout(request.cookies.get(SESSION_COOKIE, ""))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    def ctx(c: Caller, **kw: Any) -> dict[str, Any]:
        return {"user": c.user, "csrf": c.csrf, "title": "hemafed hub", **kw}

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        c = caller(request)
        studies = service.studies(c.user)
        rows = []
        for s in studies:
            decisions = service.approvals(c.user, s.id)
            approved = sum(1 for a in decisions.values() if a and a.decision == "approved")
            rows.append({"study": s, "approved": approved, "sites": len(decisions),
                         "refused": [sid for sid, a in decisions.items()
                                     if a and a.decision == "refused"]})
        return page(request, "home.html", **ctx(c, rows=rows, sites=service.sites(c.user)))

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> HTMLResponse:
        c = caller(request)
        if c.user.role != "admin":
            raise AccessDenied("the admin page is for the network admin")
        return page(request, "admin.html", **ctx(c, sites=service.sites(c.user),
                                                  users=service.users(), error=None))

    @app.post("/admin/sites")
    def admin_site(request: Request, csrf: str = Form(""), site_id: str = Form(""),
                   name: str = Form(""), identity_key: str = Form(""), node_key: str = Form(""),
                   officer: str = Form(""), officer_password: str = Form("")) -> Response:
        c = caller(request)
        _check_csrf(c, csrf)
        try:
            service.onboard_site(c.user, site_id.strip(), name.strip(), identity_key,
                                 node_key.strip() or None)
            if officer.strip():
                service.create_user(officer.strip(), officer_password, "officer",
                                    site_id=site_id.strip(), actor=c.user.username)
        except InvalidInput as exc:
            return page(request, "admin.html", 400, **ctx(c, sites=service.sites(c.user),
                                                          users=service.users(), error=str(exc)))
        return RedirectResponse("/admin", status_code=303)

    @app.post("/admin/users")
    def admin_user(request: Request, csrf: str = Form(""), username: str = Form(""),
                   password: str = Form(""), role: str = Form("researcher")) -> Response:
        c = caller(request)
        _check_csrf(c, csrf)
        if c.user.role != "admin":
            raise AccessDenied("only the network admin creates accounts")
        try:
            service.create_user(username.strip(), password, role, actor=c.user.username)
        except InvalidInput as exc:
            return page(request, "admin.html", 400, **ctx(c, sites=service.sites(c.user),
                                                          users=service.users(), error=str(exc)))
        return RedirectResponse("/admin", status_code=303)

    def _plan_page(request: Request, c: Caller, form: dict[str, str] | None = None,
                   problems: list[str] | None = None, status: int = 200) -> HTMLResponse:
        from hemafed.service.catalogue import cost_text, noise_text, parse_plan, plan_form

        if c.user.role != "admin":
            raise AccessDenied("the catalogue plan is set by the network admin")
        row = service.catalogue_plan()
        if form is None:
            form = plan_form(None if row is None else parse_plan(row.spec_yaml))
        return page(request, "admin_catalogue.html", status, **ctx(
            c, form=form, problems=problems, plan_sha256=None if row is None else row.spec_sha256,
            noise=noise_text(form["epsilon"], form["delta"], form["fields"]),
            cost=None if row is None else cost_text(parse_plan(row.spec_yaml)),
            schedule=service.catalogue_schedule()))

    @app.get("/admin/catalogue", response_class=HTMLResponse)
    def admin_catalogue(request: Request) -> HTMLResponse:
        return _plan_page(request, caller(request))

    @app.post("/admin/catalogue")
    def admin_set_catalogue(request: Request, csrf: str = Form(""), diseases: str = Form(""),
                            fields: str = Form(""), epsilon: str = Form(""),
                            delta: str = Form(""), round_to: str = Form(""),
                            min_cell: str = Form(""), refresh_every_days: str = Form("")
                            ) -> Response:
        from hemafed.service.catalogue import plan_text_from_form

        c = caller(request)
        _check_csrf(c, csrf)
        form = {"diseases": diseases, "fields": fields, "epsilon": epsilon, "delta": delta,
                "round_to": round_to, "min_cell": min_cell,
                "refresh_every_days": refresh_every_days}
        if c.user.role != "admin":
            raise AccessDenied("the catalogue plan is set by the network admin")
        try:
            service.set_catalogue_plan(c.user, plan_text_from_form(form))
        except InvalidInput as exc:
            return _plan_page(request, c, form, _problems(exc), 400)
        return RedirectResponse("/admin/catalogue", status_code=303)

    @app.get("/studies/new", response_class=HTMLResponse)
    def new_study(request: Request) -> HTMLResponse:
        c = caller(request)
        return page(request, "study_new.html", **ctx(c, spec_yaml="", problems=None))

    def _problems(exc: InvalidInput) -> list[str]:
        lines = str(exc).splitlines()
        return [ln.strip().lstrip("- ") for ln in lines[1:]] or lines

    @app.post("/studies")
    def submit(request: Request, csrf: str = Form(""), spec_yaml: str = Form("")) -> Response:
        c = caller(request)
        _check_csrf(c, csrf)
        try:
            study = service.submit_study(c.user, spec_yaml)
        except InvalidInput as exc:
            return page(request, "study_new.html", 400,
                        **ctx(c, spec_yaml=spec_yaml, problems=_problems(exc)))
        return RedirectResponse(f"/studies/{study.id}", status_code=303)

    def _study_page(request: Request, c: Caller, pk: int, status: int = 200,
                    problems: list[str] | None = None, draft: str | None = None) -> HTMLResponse:
        study = service.study(c.user, pk)
        doc = study_json(service, c.user, study)
        return page(request, "study.html", status,
                    **ctx(c, study=study, doc=doc, runs=service.runs(c.user, pk),
                          versions=service.versions(c.user, pk), problems=problems,
                          draft=draft if draft is not None else study.spec_yaml,
                          ready=all(a and a["decision"] == "approved"
                                    for a in doc["approvals"].values())))

    @app.get("/studies/{pk}", response_class=HTMLResponse)
    def study_page(request: Request, pk: int) -> HTMLResponse:
        return _study_page(request, caller(request), pk)

    @app.post("/studies/{pk}/amend")
    def amend(request: Request, pk: int, csrf: str = Form(""), spec_yaml: str = Form(""),
              note: str = Form("")) -> Response:
        c = caller(request)
        _check_csrf(c, csrf)
        try:
            service.amend_study(c.user, pk, spec_yaml, note)
        except InvalidInput as exc:
            return _study_page(request, c, pk, 400, _problems(exc), spec_yaml)
        return RedirectResponse(f"/studies/{pk}", status_code=303)

    @app.post("/studies/{pk}/runs")
    def start(request: Request, pk: int, csrf: str = Form("")) -> Response:
        c = caller(request)
        _check_csrf(c, csrf)
        run = service.start_run(c.user, pk)
        return RedirectResponse(f"/runs/{run.id}", status_code=303)

    @app.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: int) -> HTMLResponse:
        c = caller(request)
        run = service.run(c.user, run_id)
        study = service.study(c.user, run.study_pk)
        return page(request, "run.html", **ctx(c, run=run, study=study,
                                                n_analyses=len(parse_spec(study.spec_yaml)
                                                               .analyses)))

    @app.get("/catalogue", response_class=HTMLResponse)
    def catalogue_page(request: Request) -> HTMLResponse:
        c = caller(request)
        return page(request, "catalogue.html", **ctx(c, cat=service.catalogue(c.user),
                                                      error=None))

    @app.post("/catalogue/refresh")
    def catalogue_refresh(request: Request, csrf: str = Form("")) -> Response:
        c = caller(request)
        _check_csrf(c, csrf)
        try:
            service.refresh_catalogue(c.user)
        except (InvalidInput, PolicyRefused) as exc:
            return page(request, "catalogue.html", 409,
                        **ctx(c, cat=service.catalogue(c.user), error=str(exc)))
        return RedirectResponse("/catalogue", status_code=303)

    @app.get("/models", response_class=HTMLResponse)
    def models_page(request: Request) -> HTMLResponse:
        c = caller(request)
        return page(request, "models.html", **ctx(c, models=service.models(c.user)))

    return app
