"""Genotype intake at the site: read a file, check it against the public variant list and the
genome build, link its samples to the site's pseudonymised cohort, run sample QC, and store the
result (all or nothing) in the site directory.

Sample QC is a site matter and stays there: samples below ``min_call_rate`` or with an
inbreeding coefficient ``|F| > max_abs_f`` (excess or lack of heterozygosity, computed with the
site's own allele frequencies over variants with MAF >= 5 %) are excluded, and the counts are kept
in the store's ``meta.json`` only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hemafed.errors import InvalidInput
from hemafed.genomics.loci import BUILD_LENGTHS
from hemafed.genomics.readers import RawGenotypes, genotype_format, read_genotypes
from hemafed.genomics.store import (
    DECLARATION,
    GENOTYPE_DIR,
    GenotypeStore,
    load_store,
    store_dir,
)
from hemafed.genomics.variants import VariantList, align

log = logging.getLogger(__name__)


def check_build(raw: RawGenotypes, declared: str | None, vlist: VariantList) -> str:
    """The build of ``raw``: stated by the file or declared, equal to the list's, positions on it."""
    if raw.build and declared and raw.build != declared:
        raise InvalidInput(f"{raw.source}: the file says build {raw.build}, declared {declared}")
    build = raw.build or declared
    if build is None:
        raise InvalidInput(f"{raw.source}: the file states no genome build; declare build=")
    if build != vlist.build:
        raise InvalidInput(f"{raw.source}: genotypes on {build}, the variant list on {vlist.build}; "
                           "lift the file over first")
    lengths = BUILD_LENGTHS[build]
    off = raw.variants["pos"].to_numpy() > raw.variants["chrom"].map(lengths).fillna(0).to_numpy()
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise InvalidInput(f"{raw.source}: variant {raw.variants['id'].iat[i]} lies beyond the "
                           f"end of chromosome {raw.variants['chrom'].iat[i]} on {build}")
    return build


def sample_qc(dosage: np.ndarray, min_call_rate: float, max_abs_f: float) -> np.ndarray:
    """Boolean mask of samples passing call-rate and heterozygosity (inbreeding F) checks."""
    called = dosage >= 0
    call_rate = called.mean(axis=0)
    g = np.where(called, dosage, 0).astype(float)
    n_called = called.sum(axis=1)
    freq = g.sum(axis=1) / np.maximum(2 * n_called, 1)
    common = (np.minimum(freq, 1 - freq) >= 0.05)
    het_obs = ((dosage[common] == 1) & called[common]).sum(axis=0)
    p = freq[common][:, None]
    het_exp = (2 * p * (1 - p) * called[common]).sum(axis=0)
    f = 1.0 - het_obs / np.maximum(het_exp, 1e-12)
    return np.asarray((call_rate >= min_call_rate) & (np.abs(f) <= max_abs_f))


def import_genotypes(site_dir: str | Path, path: str | Path, variant_list: VariantList, *,
                     study: str, fmt: str | None = None, build: str | None = None,
                     multiallelic: str = "refuse", sample_to_patient: Mapping[str, str] | None
                     = None, min_call_rate: float = 0.95, max_abs_f: float = 0.2
                     ) -> GenotypeStore:
    """Import one genotype file into ``site_dir`` for ``study``; replaces an earlier import.

    Sample ids are the hospital's patient ids (or mapped by ``sample_to_patient``); they are
    pseudonymised with the site secret in the study's domain and linked to the site cohort;
    samples without a cohort patient are left out. Any refusal leaves the site dir unchanged.

    The site also declares the store (``declaration.json``: study, format, build, variant-list
    hash and length; public metadata, no patient count), which is all the hub learns of it
    (the ``gwas_store`` query).
    """
    from hemafed.site.pseudonym import Pseudonymiser
    from hemafed.site.store import load_cohort, site_secret

    fmt = genotype_format(path, fmt)
    raw = read_genotypes(path, fmt)
    used_build = check_build(raw, build, variant_list)
    al = align(raw.variants, variant_list, raw.source, multiallelic=multiallelic)
    dosage = raw.dosage[al.rows]
    flip = al.swapped[:, None] & (dosage >= 0)
    dosage = np.where(flip, 2 - dosage, dosage).astype(np.int8)

    pseudo = Pseudonymiser(site_secret(site_dir))
    ids = [str((sample_to_patient or {}).get(s, s)) for s in raw.samples]
    pseudonyms = [pseudo.pseudonym(i, study) for i in ids]
    cohort_ids = set(load_cohort(site_dir).ids)
    linked = np.array([p in cohort_ids for p in pseudonyms], dtype=bool)
    if not linked.any():
        raise InvalidInput(f"{raw.source}: none of the {len(ids)} samples is a patient of the "
                           f"site cohort for study {study!r}; import the clinical data first or "
                           "pass sample_to_patient")
    if len(set(np.asarray(pseudonyms)[linked])) != int(linked.sum()):
        raise InvalidInput(f"{raw.source}: two samples map to the same patient")
    passing = sample_qc(dosage[:, linked], min_call_rate, max_abs_f)
    keep = np.flatnonzero(linked)[passing]
    if keep.size == 0:
        raise InvalidInput(f"{raw.source}: no sample passes sample QC (call rate >= "
                           f"{min_call_rate}, |F| <= {max_abs_f})")
    meta = {"samples": [pseudonyms[i] for i in keep], "build": used_build, "study": study,
            "variant_list_sha256": variant_list.sha256, "source": str(path),
            "n_variants": int(dosage.shape[0]), "swapped_alleles": int(al.swapped.sum()),
            "dropped_multiallelic": al.dropped_multiallelic, "not_on_list": al.not_on_list,
            "unlinked_samples": int((~linked).sum()),
            "sample_qc_excluded": int((~passing).sum()),
            "sample_qc": {"min_call_rate": min_call_rate, "max_abs_f": max_abs_f}}
    target = store_dir(site_dir, study)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{study}.", dir=target.parent))
    try:
        with open(tmp / "dosage.npy", "wb") as fh:
            np.save(fh, np.ascontiguousarray(dosage[:, keep]))
            fh.flush()
            os.fsync(fh.fileno())
        (tmp / DECLARATION).write_text(json.dumps({
            "study": study, "format": fmt, "build": used_build,
            "variant_list_sha256": variant_list.sha256, "n_variants": len(variant_list)}))
        (tmp / "meta.json").write_text(json.dumps(meta))
        old = None
        if target.exists():
            old = target.parent / f".{study}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("genotypes imported for study %s: %d variants, %d samples kept (%s)", study,
             dosage.shape[0], keep.size, GENOTYPE_DIR)
    return load_store(target)
