"""The site's genotype store: genotypes aligned to the public variant list, keyed by pseudonym.

Layout inside the site directory (written by :func:`hemafed.genomics.intake.import_genotypes`)::

    genotypes/<study>/dosage.npy   int8 ALT counts, variants (list order) x samples, -1 missing
    genotypes/<study>/meta.json    pseudonyms (column order), build, variant-list SHA-256,
                                   source file, sample-QC exclusions (site-only facts)

A site query finds the store of the site that runs it through :func:`site_store`: the site dirs
registered with :func:`register_site_dir`, else the site directories opened by this process's
federation runtime (``hemafed.federation.runtime``), which is how the in-process and Flower
transports reach it.
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
_SITE_DIRS: dict[str, Path] = {}
_CACHE: dict[tuple[str, float], GenotypeStore] = {}
_LOCK = threading.Lock()


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
        raise InvalidInput(f"{directory}: no genotype store here; import genotypes first "
                           "(hemafed.genomics.intake.import_genotypes)")
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


def register_site_dir(site_id: str, site_dir: str | Path) -> None:
    """Tell this process where ``site_id``'s directory is (for stores outside a runtime)."""
    _SITE_DIRS[site_id] = Path(site_dir)


def _site_dir(site_id: str) -> Path:
    if site_id in _SITE_DIRS:
        return _SITE_DIRS[site_id]
    from hemafed.federation import runtime

    for key, rt in list(runtime._RUNTIMES.items()):
        if getattr(rt.node, "site_id", None) == site_id:
            return Path(key)
    raise InvalidInput(f"site {site_id}: no site directory is open in this process, so no "
                       "genotype store can be found")


def site_store(site_id: str, study: str, variant_list_sha256: str) -> GenotypeStore:
    """The store of ``site_id`` for ``study``; refused unless aligned to the requested list."""
    store = load_store(store_dir(_site_dir(site_id), study))
    if store.variant_list_sha256 != variant_list_sha256:
        raise InvalidInput("genotypes at this site were aligned to another variant list; "
                           "re-import against the study's list")
    return store
