"""Split one cohort into virtual hospital sites with controllable, realistic heterogeneity.

Federated methods must give pooled-equivalent answers when sites differ in size, case mix, gene
panels and data completeness. :func:`split_sites` makes such networks from one cohort (a demo cohort
or a public one), deterministically by seed, so that tests and benchmarks can dial each kind of
heterogeneity up or down on its own.

>>> from hemafed.cohort.demo import generate
>>> sites = split_sites(generate("MDS", 300, seed=1), 3, seed=0)
>>> sorted(sites), sum(len(c) for c in sites.values())
(['site01', 'site02', 'site03'], 300)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hemafed.cohort.model import PANEL_COLUMN, Cohort
from hemafed.cohort.schema import CYTO_IPSSR, FIELDS
from hemafed.errors import InvalidInput

LAB_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in FIELDS.values()
    if f.group in ("blood", "myeloma", "scd") and f.kind == "float" and f.name != "ldh_uln"
)
"""Laboratory value columns that ``missingness`` may blank out."""

# Columns whose standardised sum ranks patients from low to high risk for ``case_mix_shift``.
_RISK_UP = ("bm_blast", "age", "b2m", "ldh", "trv", "pb_blast")
_RISK_DOWN = ("hb", "plt", "albumin", "hbf")


def site_ids(n_sites: int) -> list[str]:
    """Site identifiers ``site01``, ``site02``, ... for ``n_sites`` sites."""
    return [f"site{k + 1:02d}" for k in range(n_sites)]


def _site_sizes(n: int, n_sites: int, size_skew: float, minimum: int,
                rng: np.random.Generator) -> np.ndarray:
    """Zipf-like sizes: weight of the k-th largest site ~ k^-size_skew, each site >= minimum."""
    weights = np.arange(1, n_sites + 1, dtype=float) ** (-size_skew)
    weights = weights[rng.permutation(n_sites)]
    spare = n - minimum * n_sites
    share = spare * weights / weights.sum()
    sizes = np.floor(share).astype(int)
    remainder = spare - int(sizes.sum())
    order = np.argsort(-(share - sizes), kind="stable")
    sizes[order[:remainder]] += 1
    return sizes + minimum


def _risk_score(patients: pd.DataFrame) -> np.ndarray:
    """Standardised sum of available risk covariates (NA contributes 0)."""
    total = np.zeros(len(patients))
    parts = [(c, 1.0) for c in _RISK_UP] + [(c, -1.0) for c in _RISK_DOWN]
    for col, sign in parts:
        if col not in patients:
            continue
        x = patients[col].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
        if np.all(np.isnan(x)) or np.nanstd(x) == 0:
            continue
        total += sign * np.nan_to_num((x - np.nanmean(x)) / np.nanstd(x))
    if "cyto_ipssr" in patients:
        cat = patients["cyto_ipssr"].map({c: i for i, c in enumerate(CYTO_IPSSR)})
        x = pd.to_numeric(cat, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if np.nanstd(x) > 0:
            total += 2.0 * np.nan_to_num((x - np.nanmean(x)) / np.nanstd(x))
    sd = total.std()
    return (total - total.mean()) / sd if sd > 0 else total


def _smaller_panel(genes: tuple[str, ...], frequency: pd.Series,
                   rng: np.random.Generator) -> tuple[str, ...]:
    """Keep the most frequently mutated third of genes and about half of the rest."""
    ranked = sorted(genes, key=lambda g: (-float(frequency.get(g, 0.0)), g))
    core = set(ranked[: max(1, len(ranked) // 3)])
    rest = [g for g in ranked if g not in core]
    keep = {g for g in rest if rng.random() < 0.5}
    return tuple(g for g in genes if g in core or g in keep)


def split_sites(
    cohort: Cohort,
    n_sites: int,
    seed: int,
    *,
    size_skew: float = 0.0,
    case_mix_shift: float = 0.0,
    panel_variation: bool = False,
    missingness: float = 0.0,
    min_site_size: int | None = None,
) -> dict[str, Cohort]:
    """Partition ``cohort`` into ``n_sites`` sites ``site01``.. with controllable heterogeneity.

    Parameters
    ----------
    cohort:
        The cohort to split; every patient goes to exactly one site (with their mutations).
    n_sites:
        Number of sites (>= 1).
    seed:
        Seed of every random choice; the same arguments give the same sites.
    size_skew:
        0 gives equal sizes (up to one patient); s > 0 gives Zipf-like sizes where the k-th
        largest site has weight ~ k^-s (1 is a typical network of one big centre and many small
        ones), on top of ``min_site_size`` patients each.
    case_mix_shift:
        In [0, 1]. 0 assigns patients at random; 1 sorts patients by a risk score (blasts,
        IPSS-R cytogenetics, age, haemoglobin, platelets, beta2-microglobulin, TRV ... as
        available) so that sites hold disjoint risk strata; in between, the sort key is
        ``c * risk + sqrt(1 - c^2) * noise``.
    panel_variation:
        If true, every second site (site02, site04, ...) sequences a smaller panel: the most
        frequently mutated third of the original genes plus about half of the rest, named
        ``<panel>-<site>``. Genes off the smaller panel become missing for that site's patients
        (their mutations in removed genes are dropped), not wild-type.
    missingness:
        In [0, 1). Mean MCAR missingness of laboratory values (:data:`LAB_COLUMNS`); each site
        draws its own rate uniformly in [0, 2 * missingness] (capped at 0.95) and blanks each lab
        value independently with it. Values already missing stay missing.
    min_site_size:
        Least number of patients per site; default ``max(1, len(cohort) // (5 * n_sites))``.

    With ``panel_variation=False`` and ``missingness=0`` the union of the sites (in original
    row order) reproduces the cohort exactly.
    """
    n = len(cohort)
    if isinstance(n_sites, bool) or not isinstance(n_sites, int | np.integer) or n_sites < 1:
        raise InvalidInput(f"split_sites: n_sites must be a positive integer, got {n_sites!r}")
    if not 0.0 <= case_mix_shift <= 1.0:
        raise InvalidInput(f"split_sites: case_mix_shift must be in [0, 1], got {case_mix_shift}")
    if not 0.0 <= missingness < 1.0:
        raise InvalidInput(f"split_sites: missingness must be in [0, 1), got {missingness}")
    if size_skew < 0:
        raise InvalidInput(f"split_sites: size_skew must be >= 0, got {size_skew}")
    minimum = max(1, n // (5 * n_sites)) if min_site_size is None else int(min_site_size)
    if minimum < 1 or minimum * n_sites > n:
        raise InvalidInput(f"split_sites: cannot give {n_sites} sites at least {minimum} "
                           f"patient(s) each from a cohort of {n}; use fewer sites or a smaller "
                           "min_site_size")
    rng = np.random.default_rng(seed)
    sizes = _site_sizes(n, n_sites, size_skew, minimum, rng)
    noise = rng.standard_normal(n)
    if case_mix_shift > 0:
        key = case_mix_shift * _risk_score(cohort.patients) + np.sqrt(
            1 - case_mix_shift**2) * noise
    else:
        key = noise
    order = np.argsort(key, kind="stable")
    assignment = np.empty(n, dtype=int)
    assignment[order] = np.repeat(np.arange(n_sites), sizes)

    frequency = pd.Series(dtype=float)
    if panel_variation and len(cohort.mutations):
        frequency = cohort.mutations.drop_duplicates(["patient_id", "gene"])["gene"] \
            .astype(str).value_counts() / max(n, 1)
    names = site_ids(n_sites)
    out: dict[str, Cohort] = {}
    for k, site in enumerate(names):
        site_rng = np.random.default_rng([seed, k + 1])
        part = cohort.select(assignment == k)
        if panel_variation and k % 2 == 1 and part.panels:
            part = _reduce_panels(part, site, frequency, site_rng)
        if missingness > 0:
            part = _blank_labs(part, min(0.95, site_rng.uniform(0, 2 * missingness)), site_rng)
        out[site] = part
    return out


def _reduce_panels(part: Cohort, site: str, frequency: pd.Series,
                   rng: np.random.Generator) -> Cohort:
    renamed: dict[str, str] = {}
    panels: dict[str, tuple[str, ...]] = {}
    for name, genes in sorted(part.panels.items()):
        new = f"{name}-{site}"
        renamed[name] = new
        panels[new] = _smaller_panel(tuple(genes), frequency, rng)
    patients = part.patients.copy()
    patients[PANEL_COLUMN] = patients[PANEL_COLUMN].map(
        lambda p: renamed.get(p, p) if pd.notna(p) else p).astype("string")
    panel_of = dict(zip(patients["patient_id"].astype(str), patients[PANEL_COLUMN], strict=True))
    muts = part.mutations
    on_panel = np.array([
        g in panels.get(str(panel_of.get(pid)), ())
        for pid, g in zip(muts["patient_id"].astype(str), muts["gene"].astype(str), strict=True)
    ], dtype=bool)
    return Cohort(patients, muts.loc[on_panel].reset_index(drop=True), panels)


def _blank_labs(part: Cohort, rate: float, rng: np.random.Generator) -> Cohort:
    patients = part.patients.copy()
    for col in LAB_COLUMNS:
        if col in patients:
            drop = rng.random(len(patients)) < rate
            patients[col] = patients[col].mask(drop)
    return Cohort(patients, part.mutations, part.panels)
