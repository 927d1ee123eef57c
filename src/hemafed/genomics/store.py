"""The site's genotype store: genotypes aligned to the public variant list, keyed by pseudonym.

Layout inside the site directory (written by :func:`hemafed.genomics.intake.import_genotypes`)::

    genotypes/<study>/dosage.npy   int8 ALT counts, variants (list order) x samples, -1 missing
    genotypes/<study>/meta.json    pseudonyms (column order), build, variant-list SHA-256,
                                   source file, sample-QC exclusions (site-only facts)
    genotypes/<study>/declaration.json
                                   the site's *public* declaration of the store: study, file
                                   format, genome build, variant-list SHA-256 and length (never
                                   a patient count); the only file the ``gwas_store`` query reads

A site query finds the store of the site that runs it through :func:`site_store`: the site dirs
registered with :func:`register_site_dir`. The site runtime registers each site directory
it opens (``hemafed.site.runtime.register_site_opened``), in the site's own process, which
is how the in-process, Flower simulation and Flower deployment transports reach it; nothing
reads the runtime's tables. The hub learns which sites hold a store only from the sites'
answers to ``gwas_store`` (:func:`hemafed.genomics.gwas.store_sites`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemafed.errors import InvalidInput

GENOTYPE_DIR = "genotypes"
DECLARATION = "declaration.json"
DECLARED_KEYS = ("study", "format", "build", "variant_list_sha256", "n_variants")
"""What a site publishes about a genotype store (public metadata, no patient count)."""
NO_STORE_RULE = "no_genotype_store"
_SITE_DIRS: dict[str, Path] = {}
_CACHE: dict[tuple[str, float], GenotypeStore] = {}
_LOCK = threading.Lock()


class NoGenotypeStore(InvalidInput):
    """This site declares no genotype store for the study; the site refuses under the rule
    :data:`NO_STORE_RULE` (``site_rule``: the node names it, and nothing else, to the hub)."""

    site_rule = NO_STORE_RULE


@dataclass(frozen=True)
class GenotypeStore:
    """One study's genotypes at one site (``dosage`` memory-mapped, read-only)."""

    dosage: np.ndarray
    samples: tuple[str, ...]
    build: str
    variant_list_sha256: str
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        if self.dosage.ndim != 2 or self.dosage.shape[1] != len(self.samples):
            raise InvalidInput(f"genotype store: {self.dosage.shape} genotypes for "
                               f"{len(self.samples)} samples")

    @property
    def n_variants(self) -> int:
        return int(self.dosage.shape[0])


def store_dir(site_dir: str | Path, study: str) -> Path:
    if not study or "/" in study or study.startswith("."):
        raise InvalidInput(f"study {study!r} is not a valid genotype-store name")
    return Path(site_dir) / GENOTYPE_DIR / study


def load_store(directory: str | Path) -> GenotypeStore:
    """Open a store directory (cached while ``meta.json`` is unchanged)."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise NoGenotypeStore(f"{directory}: no genotype store here; import genotypes first "
                              "(hemafed genomics import)")
    key = (str(directory.resolve()), meta_path.stat().st_mtime)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
        meta = json.loads(meta_path.read_text())
        dosage = np.load(directory / "dosage.npy", mmap_mode="r")
        store = GenotypeStore(dosage, tuple(meta["samples"]), meta["build"],
                              meta["variant_list_sha256"], meta)
        _CACHE[key] = store
        return store


def read_declaration(site_dir: str | Path, study: str) -> dict[str, Any] | None:
    """The site's public declaration of its ``study`` store (``None`` when it has none)."""
    path = store_dir(site_dir, study) / DECLARATION
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: the genotype-store declaration is damaged ({exc}); "
                           "import the genotypes again") from exc
    if not isinstance(doc, dict) or set(doc) != set(DECLARED_KEYS):
        raise InvalidInput(f"{path}: the genotype-store declaration must hold exactly "
                           f"{list(DECLARED_KEYS)}; import the genotypes again")
    return doc


def register_site_dir(site_id: str, site_dir: str | Path) -> None:
    """Tell this process where ``site_id``'s directory is (the runtime does this for each site
    it opens; call it yourself for a store used outside a runtime)."""
    _SITE_DIRS[site_id] = Path(site_dir)


def site_dir_of(site_id: str) -> Path:
    """The directory of the site ``site_id`` whose query runs in this process."""
    if site_id in _SITE_DIRS:
        return _SITE_DIRS[site_id]
    raise InvalidInput(f"site {site_id}: no site directory is registered in this process, so "
                       "no genotype store can be found")


def site_store(site_id: str, study: str, variant_list_sha256: str) -> GenotypeStore:
    """The store of ``site_id`` for ``study``; refused unless aligned to the requested list."""
    store = load_store(store_dir(site_dir_of(site_id), study))
    if store.variant_list_sha256 != variant_list_sha256:
        raise InvalidInput("genotypes at this site were aligned to another variant list; "
                           "re-import against the study's list")
    return store
