"""Joining a federation: site identity keys, the hub's manifest, and pinning it at each site.

``hemafed site identity DIR`` creates (once) the site's Ed25519 signing key and prints its public
key; the hub collects them into a manifest with ``hemafed hub manifest``; each hospital checks the
manifest's fingerprint out of band and pins it with ``hemafed site join DIR MANIFEST``.
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


def hub_manifest(name: Annotated[str, typer.Argument(help="federation name")],
                 identities: Annotated[list[Path], typer.Option(
                     "--identity", exists=True, dir_okay=False,
                     help="a site's identity.pub line file (repeat)")],
                 threshold: Annotated[int, typer.Option("--threshold", min=2,
                                                        help="least live sites per aggregation")],
                 out: Annotated[Path, typer.Option("--out", help="manifest file to write")]
                 = Path("federation.json"),
                 hub_model: Annotated[str, typer.Option(
                     "--hub-model", help="'malicious' (default: a consistency check before "
                     "any pairwise seed is revealed; 2 round trips per secure sum, 3 after a "
                     "dropout) or 'semi-honest' (the hub is trusted to follow the protocol: 2 "
                     "round trips even after a dropout); see "
                     "docs/security.md")] = "malicious") -> None:
    """Build the federation manifest pinning every site's identity key."""
    from hemafed.secure import FederationManifest

    try:
        sites: dict[str, bytes] = {}
        for path in identities:
            parts = path.read_text(encoding="utf-8").split()
            if len(parts) != 2:
                raise InvalidInput(f"{path}: expected 'SITE_ID BASE64KEY'")
            if parts[0] in sites:
                raise InvalidInput(f"{path}: site {parts[0]!r} given twice")
            sites[parts[0]] = base64.b64decode(parts[1], validate=True)
        manifest = FederationManifest(name, threshold, sites, hub_model=hub_model)
        if manifest.hub_model == "malicious" and 2 * threshold <= len(sites):
            raise InvalidInput(
                f"threshold {threshold} of {len(sites)} sites is too low against a malicious hub: "
                f"it could show two survivor lists and get each signed by t sites (safe only when "
                f"2t > n + colluding sites); use --threshold {len(sites) // 2 + 1} or more "
                f"(two thirds, {max(2, -(-2 * len(sites) // 3))}, is the usual choice)")
    except (HemafedError, ValueError) as exc:
        raise _fail(exc if isinstance(exc, HemafedError) else InvalidInput(str(exc))) from exc
    manifest.save(out)
    typer.echo(f"wrote {out}: {len(sites)} sites, threshold {threshold}, hub model "
               f"{manifest.hub_model}")
    typer.echo(f"fingerprint: {manifest.fingerprint.hex()}")
