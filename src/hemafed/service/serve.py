"""Starting the hub service, a site console and the clickable demo on 127.0.0.1 with uvicorn."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from hemafed.errors import InvalidInput

if TYPE_CHECKING:
    from hemafed.service.hub import HubService

log = logging.getLogger(__name__)


def build_hub(data_dir: Path, db_url: str | None = None, sites: Sequence[Path] = (),
              transport: str = "inprocess", superlink: str | None = None,
              ca: Path | None = None, manifest: Path | None = None) -> HubService:
    """A hub over local site dirs (``sites``) or over a deployed SuperLink (``superlink`` with
    its ``ca`` certificate and the federation ``manifest`` the sites joined)."""
    from hemafed.service.db import Database
    from hemafed.service.hub import HubService
    from hemafed.service.runs import DeployedFederation, FederationBackend, LocalFederation

    data_dir.mkdir(parents=True, exist_ok=True)
    url = db_url or f"sqlite:///{(data_dir / 'hub.db').resolve()}"
    federation: FederationBackend | None = None
    if superlink:
        if sites:
            raise InvalidInput("--superlink and --site exclude each other: the hub runs over a "
                               "deployed SuperLink or over local site directories")
        if ca is None or manifest is None:
            raise InvalidInput("--superlink needs --ca (the SuperLink's CA certificate) and "
                               "--manifest (the federation.json the sites joined)")
        federation = DeployedFederation.connect(superlink, ca, manifest, data_dir / "deploy")
    elif sites:
        federation = LocalFederation.from_dirs(list(sites), transport)
    return HubService(Database(url), data_dir, federation=federation)


def _check_host(host: str) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise InvalidInput(f"--host {host}: the service binds the loopback address only; put a "
                           "TLS reverse proxy in front of it to serve a network")


def serve_hub(data_dir: Path, *, db_url: str | None = None, host: str = "127.0.0.1",
              port: int = 8700, sites: Sequence[Path] = (), transport: str = "inprocess",
              admin_password: str | None = None, superlink: str | None = None,
              ca: Path | None = None, manifest: Path | None = None,
              schedule_poll: float = 30.0) -> None:
    """Run the hub service until interrupted, with the catalogue's refresh scheduler."""
    import uvicorn

    from hemafed.service.app import create_app

    _check_host(host)
    service = build_hub(data_dir, db_url, sites, transport, superlink, ca, manifest)
    if admin_password:
        service.ensure_admin("admin", admin_password)
    service.start_scheduler(poll=schedule_poll)  # the catalogue's scheduled refreshes
    try:
        uvicorn.run(create_app(service), host=host, port=port, log_level="warning")
    finally:
        service.stop_scheduler()


def serve_console(site_dir: Path, hub_url: str, token: str, *, host: str = "127.0.0.1",
                  port: int = 8701) -> None:
    """Run a site's console until interrupted."""
    import uvicorn

    from hemafed.service.console import create_console_app

    _check_host(host)
    hub = httpx.Client(base_url=hub_url.rstrip("/"), timeout=60,
                       headers={"Authorization": f"Bearer {token}"})
    uvicorn.run(create_console_app(site_dir, hub), host=host, port=port, log_level="warning")


def prepare_demo_hub(out: Path, site_dirs: Sequence[Path], spec_yaml: str,
                     password: str) -> HubService:
    """A hub over the demo's sites: accounts, the sites onboarded, the demo study approved."""
    from hemafed.service.approval import decide, identity_public_key
    from hemafed.service.hub import parse_spec

    service = build_hub(out / "hub", None, site_dirs, "inprocess")
    if service.users():
        return service
    service.ensure_admin("admin", password)
    admin = service.users()[0]
    researcher = service.create_user("researcher", password, "researcher")
    for d in site_dirs:
        service.onboard_site(admin, d.name, f"virtual hospital {d.name}", identity_public_key(d))
        service.create_user(f"officer-{d.name}", password, "officer", site_id=d.name)
    study = service.submit_study(researcher, spec_yaml)
    spec = parse_spec(spec_yaml)
    dirs = {d.name: Path(d) for d in site_dirs}
    for user in service.users():
        if user.role == "officer" and user.site_id is not None:
            signed = decide(dirs[user.site_id], spec, "approved", officer=user.username)
            service.record_decision(user, study.id, user.site_id, signed)
    # the catalogue: the standing plan, approved once by every site, counted once through
    # the secure path (the admin refreshes it from /catalogue)
    from hemafed.service.catalogue import TOTAL_BUDGET, approve_catalogue, catalogue_spec_text

    plan_row = service.set_catalogue_plan(admin, catalogue_spec_text())
    plan_spec = parse_spec(plan_row.spec_yaml)
    for user in service.users():
        if user.role == "officer" and user.site_id is not None:
            service.record_catalogue_approval(user, approve_catalogue(
                dirs[user.site_id], plan_spec, budget=TOTAL_BUDGET, officer=user.username))
    service.refresh_catalogue(admin)
    return service


def serve_demo(out: Path, site_dirs: Sequence[Path], spec_yaml: str, *,
               port: int = 8700) -> None:
    """The portal on the demo federation, with printed demo credentials."""
    import uvicorn

    from hemafed.service.app import create_app

    password = secrets.token_urlsafe(9)
    service = prepare_demo_hub(out, site_dirs, spec_yaml, password)
    service.start_scheduler()
    log.warning("portal on http://127.0.0.1:%d  (log in as 'researcher', 'admin' or "
                "'officer-SITE' with password %s)", port, password)
    uvicorn.run(create_app(service), host="127.0.0.1", port=port, log_level="warning")
