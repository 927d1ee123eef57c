"""Which federations a site takes part in: the officer's approval of one manifest, pinned.

A federation manifest (:class:`~hemafed.secure.FederationManifest`) lists the member sites'
identity keys and the secret-sharing threshold ``t``. Against a malicious hub the protocol is
safe only while ``2t > n + c`` (``n`` sites, ``c`` of them colluding with the hub: the hub could
otherwise show two survivor lists and get each signed by ``t`` sites), and a manifest with a low
threshold lets a hub that holds the other members' keys (Sybil sites) unmask one site's input.
:func:`check_manifest` applies that bound and the site policy's own minimums
(:class:`MembershipRules`); :func:`pin_manifest` records the approved fingerprint beside the
manifest, and :func:`require_pinned` refuses to run on any other manifest, so a later manifest
needs a new ``hemafed site join``.

>>> MembershipRules().colluding_sites
0
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hemafed.atomic import write_text
from hemafed.errors import InvalidInput, PolicyRefused
from hemafed.secure import FederationManifest

PIN_FILE = Path("federation.approved.json")


@dataclass(frozen=True)
class MembershipRules:
    """A site policy's rules for joining a federation.

    ``min_threshold``: the least threshold ``t`` accepted; ``min_sites``: the least number of
    member sites; ``colluding_sites``: ``c`` in ``2t > n + c``, the member sites assumed to
    collude with a malicious hub; ``allow_semi_honest``: whether a manifest that trusts the hub
    to follow the protocol (``hub_model: semi-honest``) is accepted at all.
    """

    min_threshold: int = 2
    min_sites: int = 2
    colluding_sites: int = 0
    allow_semi_honest: bool = False

    def __post_init__(self) -> None:
        for name in ("min_threshold", "min_sites", "colluding_sites"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"federation.{name} must be an integer >= 0, got {value!r}")
        if self.min_threshold < 2:
            raise ValueError("federation.min_threshold must be >= 2")
        if not isinstance(self.allow_semi_honest, bool):
            raise ValueError("federation.allow_semi_honest must be true or false")


def describe_manifest(manifest: FederationManifest) -> list[str]:
    """The lines an officer reads before approving: members, threshold, hub model, fingerprint."""
    lines = [f"federation {manifest.name!r}: {len(manifest.sites)} member sites, threshold "
             f"{manifest.threshold}, hub model {manifest.hub_model}"]
    lines += [f"  member {site}" for site in sorted(manifest.sites)]
    lines.append(f"fingerprint (compare with the hub, out of band): {manifest.fingerprint.hex()}")
    return lines


def check_manifest(manifest: FederationManifest, rules: MembershipRules, site_id: str) -> None:
    """Refuse (``PolicyRefused``, naming the rule) a manifest this site must not join."""
    n, t, c = len(manifest.sites), manifest.threshold, rules.colluding_sites
    if manifest.hub_model != "malicious" and not rules.allow_semi_honest:
        raise PolicyRefused(site_id, f"manifest {manifest.name!r} trusts the hub to follow the "
                                     f"protocol (hub model {manifest.hub_model}); this site's "
                                     f"policy accepts only the malicious-hub model "
                                     f"(federation.allow_semi_honest is false)")
    if manifest.hub_model == "malicious" and not 2 * t > n + c:
        raise PolicyRefused(site_id, f"manifest {manifest.name!r}: threshold {t} of {n} sites "
                                     f"breaks 2t > n + c with c = {c} colluding site(s) (the "
                                     f"malicious-hub bound): a hub holding other members' keys "
                                     f"could unmask this site's input; ask for a threshold of "
                                     f"at least {(n + c) // 2 + 1}")
    if t < rules.min_threshold:
        raise PolicyRefused(site_id, f"manifest {manifest.name!r}: threshold {t} is below this "
                                     f"site's federation.min_threshold {rules.min_threshold}")
    if n < rules.min_sites:
        raise PolicyRefused(site_id, f"manifest {manifest.name!r}: {n} member sites is below "
                                     f"this site's federation.min_sites {rules.min_sites}")


def pin_manifest(site_dir: str | Path, manifest: FederationManifest, *,
                 approved_by: str = "site officer", when: dt.datetime | None = None) -> None:
    """Record the approved manifest's fingerprint (atomically) beside the manifest."""
    when = when or dt.datetime.now(dt.UTC)
    doc: dict[str, Any] = {"fingerprint": manifest.fingerprint.hex(), "name": manifest.name,
                           "threshold": manifest.threshold, "members": sorted(manifest.sites),
                           "approved_by": approved_by, "approved_at": when.isoformat()}
    write_text(Path(site_dir) / PIN_FILE, json.dumps(doc, indent=1) + "\n")


def require_pinned(site_dir: str | Path, manifest: FederationManifest) -> None:
    """``InvalidInput`` unless ``manifest`` is the one the officer approved (pinned)."""
    path = Path(site_dir) / PIN_FILE
    try:
        pinned = json.loads(path.read_text(encoding="utf-8"))["fingerprint"]
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no approved federation manifest; run `hemafed site join "
                           f"{site_dir} MANIFEST`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{path}: the approved-manifest pin is damaged ({exc}); run "
                           f"`hemafed site join` again") from exc
    if pinned != manifest.fingerprint.hex():
        raise InvalidInput(f"site {site_dir}: the federation manifest (fingerprint "
                           f"{manifest.fingerprint.hex()[:16]}...) is not the one the site "
                           f"officer approved ({str(pinned)[:16]}...); a changed manifest needs "
                           f"a new approval: `hemafed site join {site_dir} MANIFEST`")
