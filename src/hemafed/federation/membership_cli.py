"""Joining a federation, at the hub: the manifest pinning every site's identity key.

Each site prints its public key with ``hemafed site identity DIR``; the hub collects them into a
manifest with ``hemafed hub manifest``; each hospital checks the manifest's fingerprint out of
band and pins it with ``hemafed site join DIR MANIFEST`` (:mod:`hemafed.site.membership_cli`).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hemafed.errors import HemafedError, InvalidInput

console = Console(stderr=True)

def _fail(exc: HemafedError) -> typer.Exit:
    console.print(f"[red]{exc}[/red]")
    return typer.Exit(1)


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
