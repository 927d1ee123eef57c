"""``hemafed hub serve`` and ``hemafed site console DIR``: mounted by ``hemafed.cli``.

Only typer is imported here; the service (FastAPI, SQLAlchemy, uvicorn) loads when a command runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def _need_service_extra(exc: ImportError) -> typer.Exit:
    typer.echo(f"error: the service needs the 'service' extra ({exc.name} is missing): "
               "pip install 'hemafed[service]'", err=True)
    return typer.Exit(1)


def hub_serve(data: Path = typer.Option(Path(".hemafed-hub-service"), "--data",
                                        help="folder for the SQLite database and hub audit log"),
              db: str = typer.Option("", "--db", help="database URL (default: SQLite in --data; "
                                     "postgresql://user@host/db for production)"),
              port: int = typer.Option(8700, "--port"),
              host: str = typer.Option("127.0.0.1", "--host"),
              site: Annotated[list[Path] | None, typer.Option(
                  "--site", help="a local site directory to run over (repeat)")] = None,
              transport: str = typer.Option("inprocess", "--transport",
                                            help="inprocess or sim, for local --site dirs"),
              superlink: str = typer.Option("", "--superlink", help="HOST:PORT of a deployed "
                                            "SuperLink to run over (instead of --site)"),
              ca: Annotated[Path | None, typer.Option(
                  "--ca", help="CA certificate (PEM) of the SuperLink")] = None,
              manifest: Annotated[Path | None, typer.Option(
                  "--manifest", help="federation.json the deployed sites joined")] = None,
              ) -> None:
    """Serve the hub API and researcher portal (admin password from HEMAFED_ADMIN_PASSWORD)."""
    from hemafed.errors import HemafedError

    try:
        from hemafed.service.serve import serve_hub
    except ImportError as exc:
        raise _need_service_extra(exc) from exc

    try:
        serve_hub(data, db_url=db or None, host=host, port=port, sites=site or [],
                  transport=transport, admin_password=os.environ.get("HEMAFED_ADMIN_PASSWORD"),
                  superlink=superlink or None, ca=ca, manifest=manifest)
    except HemafedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def site_console(site_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
                 hub: str = typer.Option("http://127.0.0.1:8700", "--hub", help="hub URL"),
                 token_file: Path = typer.Option(Path("hub-token"), "--token-file",
                                                 help="file holding the site officer's hub token"),
                 port: int = typer.Option(8701, "--port"),
                 add_user: str = typer.Option("", "--add-user", help="create a console account "
                                              "(password from HEMAFED_CONSOLE_PASSWORD) and exit"))\
        -> None:
    """Serve this site's console on 127.0.0.1: review, approve or refuse studies; audit; budget."""
    from hemafed.errors import HemafedError

    try:
        from hemafed.service.console import set_console_password
        from hemafed.service.serve import serve_console
    except ImportError as exc:
        raise _need_service_extra(exc) from exc

    try:
        if add_user:
            set_console_password(site_dir, add_user, os.environ.get("HEMAFED_CONSOLE_PASSWORD", ""))
            typer.echo(f"console account {add_user} saved")
            return
        token = token_file.read_text(encoding="utf-8").strip() if token_file.exists() else ""
        if not token:
            raise typer.BadParameter(f"{token_file}: put the site officer's hub API token there",
                                     param_hint="--token-file")
        serve_console(site_dir, hub, token, port=port)
    except HemafedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def site_catalogue_approve(
        site_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
        budget: float = typer.Option(..., "--budget", help="total catalogue budget (epsilon) "
                                     "this site's ledger keeps for the catalogue"),
        plan: Annotated[Path | None, typer.Option(
            "--plan", help="the catalogue plan YAML (default: fetch it from --hub)")] = None,
        hub: str = typer.Option("", "--hub", help="hub URL to fetch the plan from and file "
                                "the signed approval with"),
        token_file: Path = typer.Option(Path("hub-token"), "--token-file",
                                        help="file holding the site officer's hub token"),
        officer: str = typer.Option("site officer", "--officer", help="who approves"),
) -> None:
    """Approve the network's standing catalogue plan, once, with a total catalogue budget."""
    import json

    from hemafed.errors import HemafedError, InvalidInput

    try:
        import httpx

        from hemafed.service.catalogue import approve_catalogue, parse_plan
    except ImportError as exc:
        raise _need_service_extra(exc) from exc
    try:
        token = token_file.read_text(encoding="utf-8").strip() if token_file.exists() else ""
        client = httpx.Client(base_url=hub, headers={"Authorization": f"Bearer {token}"},
                              timeout=30) if hub else None
        try:
            if plan is not None:
                text = plan.read_text(encoding="utf-8")
            elif client is not None:
                r = client.get("/api/catalogue/plan")
                if r.status_code != 200:
                    raise InvalidInput(f"the hub refused /api/catalogue/plan ({r.status_code})")
                text = r.json()["spec_yaml"]
            else:
                raise InvalidInput("give --plan FILE or --hub URL")
            signed = approve_catalogue(site_dir, parse_plan(text).spec, budget=budget,
                                       officer=officer)
            doc = {"payload": signed.payload, "signature": signed.signature}
            if client is not None:
                r = client.post("/api/site/catalogue/approval", json=doc)
                if r.status_code != 200:
                    raise InvalidInput(f"approved at the site, but the hub refused the signed "
                                       f"approval ({r.status_code}): {r.text[:300]}")
                typer.echo("catalogue plan approved and filed with the hub")
            else:
                typer.echo(json.dumps(doc))
        finally:
            if client is not None:
                client.close()
    except (HemafedError, OSError, httpx.HTTPError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
