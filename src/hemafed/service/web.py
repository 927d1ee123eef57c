"""Shared web plumbing of the hub portal and the site console: templates, CSRF, error pages."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from hemafed.errors import HemafedError, InvalidInput, PolicyRefused
from hemafed.service.hub import AccessDenied, NotFound, TooManyAttempts

SESSION_COOKIE = "hemafed_session"

_ENV = Environment(loader=PackageLoader("hemafed.service", "templates"),
                   autoescape=select_autoescape(["html"]))


def _when(t: dt.datetime | None) -> str:
    return "never" if t is None else t.strftime("%Y-%m-%d %H:%M:%S UTC")


_ENV.filters["when"] = _when
_ENV.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=1, default=str)
templates = Jinja2Templates(env=_ENV)


def status_of(exc: HemafedError) -> int:
    if isinstance(exc, TooManyAttempts):
        return 429
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, AccessDenied | PolicyRefused):
        return 403
    if isinstance(exc, InvalidInput):
        return 400
    return 500


def error_response(request: Request, exc: HemafedError) -> Response:
    status = status_of(exc)
    headers = {"Retry-After": f"{exc.wait:.0f}"} if isinstance(exc, TooManyAttempts) else None
    wants_json = request.url.path.startswith("/api/") or "application/json" in request.headers.get(
        "accept", "")
    if wants_json:
        return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)
    return templates.TemplateResponse(request, "error.html", {"message": str(exc),
                                                              "status": status, "user": None},
                                      status_code=status, headers=headers)


def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)
