"""Joining a federation, at the site: its identity key, and pinning the hub's manifest.

``hemafed site identity DIR`` creates (once) the site's Ed25519 signing key and prints its public
key; the hub collects them into a manifest with ``hemafed hub manifest``
(:mod:`hemafed.federation.membership_cli`); each hospital checks the manifest's fingerprint out
of band and pins it with ``hemafed site join DIR MANIFEST``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hemafed.errors import HemafedError, InvalidInput

console = Console(stderr=True)

SiteDir = Annotated[Path, typer.Argument(exists=True, file_okay=False, help="the site directory")]


def _fail(exc: HemafedError) -> typer.Exit:
    console.print(f"[red]{exc}[/red]")
    return typer.Exit(1)


def site_identity(site_dir: SiteDir) -> None:
    """Create the site's signing key if needed and print its public key for the hub."""
    from hemafed.atomic import write_text
    from hemafed.site.runtime import ensure_identity
    from hemafed.site.store import site_id_of

    try:
        site_id = site_id_of(site_dir)
        identity = ensure_identity(site_dir, site_id)
    except HemafedError as exc:
        raise _fail(exc) from exc
    line = f"{site_id} {base64.b64encode(identity.public_bytes).decode('ascii')}"
    write_text(site_dir / "keys" / "identity.pub", line + "\n")
    typer.echo(line)


def site_join(site_dir: SiteDir,
              manifest: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                                       help="federation.json from the hub")],
              approved_by: Annotated[str, typer.Option(
                  "--approved-by", help="who approves joining (recorded with the pin)")]
              = "site officer",
              replace: Annotated[bool, typer.Option(
                  "--replace", help="approve a manifest that differs from the one pinned")]
              = False) -> None:
    """Show the manifest's members and threshold, check them against the site policy, and pin
    its fingerprint at this site (a later, different manifest needs a new approval)."""
    import json

    from hemafed.secure import FederationManifest
    from hemafed.site.membership import PIN_FILE, check_manifest, describe_manifest
    from hemafed.site.runtime import MANIFEST_FILE, ensure_identity, install_manifest
    from hemafed.site.store import load_policy, site_id_of

    try:
        site_id = site_id_of(site_dir)
        parsed = FederationManifest.load(manifest)
        for line in describe_manifest(parsed):
            typer.echo(line)
        ours = ensure_identity(site_dir, site_id).public_bytes
        if parsed.sites.get(site_id) != ours:
            raise InvalidInput(f"{manifest}: site {site_id!r} is missing or has another key; "
                               "send the hub the line printed by `hemafed site identity`")
        check_manifest(parsed, load_policy(site_dir).federation, site_id)
        pin = site_dir / PIN_FILE
        if pin.exists() and (site_dir / MANIFEST_FILE).exists() and not replace:
            pinned = json.loads(pin.read_text(encoding="utf-8")).get("fingerprint")
            if pinned != parsed.fingerprint.hex():
                raise InvalidInput(f"{site_dir}: another federation manifest is approved "
                                   f"(fingerprint {str(pinned)[:16]}...); check the new one "
                                   f"with the hub out of band, then run again with --replace")
        install_manifest(site_dir, parsed, approved_by=approved_by)
    except (HemafedError, ValueError) as exc:
        raise _fail(exc if isinstance(exc, HemafedError) else InvalidInput(str(exc))) from exc
    typer.echo(f"joined {parsed.name!r}: {len(parsed.sites)} sites, threshold {parsed.threshold}")
