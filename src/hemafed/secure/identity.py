"""Long-term site identities and the federation manifest that pins them.

A :class:`SiteIdentity` is a site's Ed25519 signing key: it signs the site's per-session
public keys and every reply, so that a hub (or anyone on the path) cannot substitute keys or
forge messages. The :class:`FederationManifest` is the public, agreed description of the
federation: which sites exist and their identity public keys, the secret-sharing threshold and
the neighbour-graph parameters. Every site and the hub hold the same manifest; its SHA-256
fingerprint is bound into every signature, so parties with different manifests cannot interoperate.

>>> a, b = SiteIdentity.generate("a"), SiteIdentity.generate("b")
>>> m = FederationManifest.build("demo", [a, b], threshold=2)
>>> FederationManifest.from_json(m.to_json()) == m
True
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from hemafed.atomic import write_bytes, write_text
from hemafed.errors import CryptoError, InvalidInput

_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_site_id(site_id: str) -> str:
    """Site ids are short ASCII names (letters, digits, ``._-``)."""
    if not isinstance(site_id, str) or not _SITE_ID.match(site_id):
        raise InvalidInput(f"site id {site_id!r} must be 1-64 characters of letters, digits, "
                           f"'.', '_' or '-', starting with a letter or digit")
    return site_id


@dataclass(frozen=True)
class SiteIdentity:
    """A site's long-term Ed25519 identity key."""

    site_id: str
    private_key: ed25519.Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_site_id(self.site_id)

    @classmethod
    def generate(cls, site_id: str) -> SiteIdentity:
        """A fresh identity."""
        return cls(site_id, ed25519.Ed25519PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        """Raw 32-byte Ed25519 public key (what the manifest pins)."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature of ``data``."""
        return self.private_key.sign(data)

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        """PKCS#8 PEM of the private key, encrypted when ``passphrase`` is given."""
        algorithm: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase) if passphrase
            else serialization.NoEncryption())
        return self.private_key.private_bytes(serialization.Encoding.PEM,
                                              serialization.PrivateFormat.PKCS8, algorithm)

    def save(self, path: str | os.PathLike[str], passphrase: bytes | None = None) -> None:
        """Write the private key as PEM, atomically, readable by the owner only."""
        write_bytes(path, self.to_pem(passphrase))
        os.chmod(path, 0o600)

    @classmethod
    def load(cls, site_id: str, path: str | os.PathLike[str],
             passphrase: bytes | None = None) -> SiteIdentity:
        """Read an identity written by :meth:`save`."""
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), passphrase)
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"{path}: cannot read the site identity key ({exc}); check the "
                              f"file and passphrase") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise CryptoError(f"{path}: not an Ed25519 private key")
        return cls(site_id, key)


def verify_signature(public: bytes, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``data`` under ``public``."""
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


HUB_MODELS = ("malicious", "semi-honest")


def auto_degree(n: int) -> int:
    """Default SecAgg+ neighbour degree for ``n`` sites: the even number ``2*ceil(2*log2 n)``."""
    return 2 * math.ceil(2 * math.log2(max(n, 2)))


@dataclass(frozen=True)
class FederationManifest:
    """Public parameters every party of a federation agrees on.

    ``threshold`` (t >= 2) is the least number of live sites an aggregation may finish with, and
    the Shamir threshold when every site shares with every other. ``neighbour_degree`` (k, even)
    switches on the SecAgg+ sparse graph when it is below ``n - 1``; ``None`` picks
    :func:`auto_degree`. ``neighbour_threshold`` is the Shamir threshold within a neighbourhood
    of a sparse graph (default ``max(2, ceil(t * (k + 1) / n))``, the same live fraction as t).
    ``hub_model`` is the adversary the sites protect against: ``"malicious"`` (default: a
    consistency check before any pairwise seed is revealed: two round trips per aggregation
    when nobody dropped, three after a dropout or on a sparse graph) or
    ``"semi-honest"`` (the hub is trusted to follow the protocol, as in Bonawitz et al.'s
    semi-honest variant: no consistency check, two round trips). Every party must agree: it is
    part of the fingerprint.
    """

    name: str
    threshold: int
    sites: Mapping[str, bytes]
    neighbour_degree: int | None = None
    neighbour_threshold: int | None = None
    hub_model: str = "malicious"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", MappingProxyType(dict(sorted(self.sites.items()))))
        if not self.name:
            raise InvalidInput("manifest: name must not be empty")
        for site_id, key in self.sites.items():
            check_site_id(site_id)
            if not isinstance(key, bytes) or len(key) != 32:
                raise InvalidInput(f"manifest: site {site_id!r} needs a raw 32-byte Ed25519 "
                                   f"public key")
        if not isinstance(self.threshold, int) or self.threshold < 2:
            raise InvalidInput(f"manifest: threshold must be an integer >= 2, got "
                               f"{self.threshold!r}")
        if self.threshold > len(self.sites):
            raise InvalidInput(f"manifest: threshold {self.threshold} exceeds the "
                               f"{len(self.sites)} sites")
        k = self.neighbour_degree
        if k is not None and (not isinstance(k, int) or k < 2 or k % 2):
            raise InvalidInput(f"manifest: neighbour_degree must be an even integer >= 2 or "
                               f"null, got {k!r}")
        nt = self.neighbour_threshold
        if nt is not None and (not isinstance(nt, int) or nt < 2):
            raise InvalidInput(f"manifest: neighbour_threshold must be an integer >= 2 or null, "
                               f"got {nt!r}")
        if self.hub_model not in HUB_MODELS:
            raise InvalidInput(f"manifest: hub_model must be one of {list(HUB_MODELS)}, got "
                               f"{self.hub_model!r}")

    @property
    def semi_honest(self) -> bool:
        """Whether the sites trust the hub to follow the protocol (no consistency check)."""
        return self.hub_model == "semi-honest"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FederationManifest) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    @classmethod
    def build(cls, name: str, identities: Iterable[SiteIdentity], threshold: int,
              neighbour_degree: int | None = None, neighbour_threshold: int | None = None,
              hub_model: str = "malicious") -> FederationManifest:
        """Manifest pinning the public keys of ``identities``."""
        sites = {i.site_id: i.public_bytes for i in identities}
        return cls(name, threshold, sites, neighbour_degree, neighbour_threshold, hub_model)

    def to_json(self) -> str:
        """Canonical JSON (keys sorted, public keys in base64)."""
        doc = {"format": "hemafed-federation-manifest/1", "name": self.name,
               "threshold": self.threshold, "neighbour_degree": self.neighbour_degree,
               "neighbour_threshold": self.neighbour_threshold, "hub_model": self.hub_model,
               "sites": {s: base64.b64encode(k).decode("ascii") for s, k in self.sites.items()}}
        return json.dumps(doc, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> FederationManifest:
        """Parse :meth:`to_json` output; problems raise ``InvalidInput`` naming ``source``."""
        try:
            doc = json.loads(text)
            if doc.get("format") != "hemafed-federation-manifest/1":
                raise ValueError(f"unknown format {doc.get('format')!r}")
            sites = {s: base64.b64decode(k, validate=True) for s, k in doc["sites"].items()}
            return cls(doc["name"], doc["threshold"], sites, doc.get("neighbour_degree"),
                       doc.get("neighbour_threshold"), doc.get("hub_model", "malicious"))
        except InvalidInput as exc:
            raise InvalidInput(f"{source}: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"{source}: not a valid federation manifest ({exc})") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the manifest as JSON, atomically."""
        write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FederationManifest:
        """Read a manifest written by :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"), source=str(path))

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical JSON: what every signature binds."""
        return hashlib.sha256(self.to_json().encode("utf-8")).digest()

    def public_key(self, site_id: str) -> bytes:
        """Pinned identity key of ``site_id``."""
        try:
            return self.sites[site_id]
        except KeyError:
            raise InvalidInput(f"site {site_id!r} is not in manifest {self.name!r}") from None

    def degree_for(self, n: int) -> int:
        """Neighbour degree used with ``n`` participants (``n - 1`` means every pair)."""
        k = self.neighbour_degree if self.neighbour_degree is not None else auto_degree(n)
        return min(k, n - 1)

    def complete_graph(self, n: int) -> bool:
        """Whether ``n`` participants all share keys and masks with each other (no sparse graph)."""
        return self.degree_for(n) >= n - 1

    def share_threshold_for(self, n: int) -> int:
        """Shamir threshold of one site's secrets, shared among its neighbours and itself."""
        k = self.degree_for(n)
        if self.complete_graph(n):
            return self.threshold
        if self.neighbour_threshold is not None:
            t_nb = self.neighbour_threshold
        else:
            t_nb = max(2, math.ceil(self.threshold * (k + 1) / n))
        return min(t_nb, k + 1)
