"""Site partitioning: every patient in exactly one site, and each kind of heterogeneity on its own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort import validate_cohort
from hemafed.cohort.demo import generate
from hemafed.cohort.model import Cohort
from hemafed.cohort.partition import LAB_COLUMNS, split_sites
from hemafed.errors import InvalidInput


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    return generate("MDS", 3000, seed=21)


def _union(sites: dict[str, Cohort], cohort: Cohort) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = {pid: i for i, pid in enumerate(cohort.ids)}
    patients = pd.concat([c.patients for c in sites.values()], ignore_index=True)
    patients = patients.iloc[np.argsort(patients["patient_id"].map(order).to_numpy())]
    muts = pd.concat([c.mutations for c in sites.values()], ignore_index=True)
    key = ["patient_id", "gene", "protein_change", "vaf"]
    return (patients.reset_index(drop=True),
            muts.sort_values(key).reset_index(drop=True))


def test_plain_split_is_a_partition_whose_union_is_the_cohort(cohort: Cohort) -> None:
    sites = split_sites(cohort, 4, seed=1)
    assert list(sites) == ["site01", "site02", "site03", "site04"]
    assert sorted(len(c) for c in sites.values()) == [750, 750, 750, 750]
    patients, muts = _union(sites, cohort)
    pd.testing.assert_frame_equal(patients, cohort.patients)
    key = ["patient_id", "gene", "protein_change", "vaf"]
    pd.testing.assert_frame_equal(muts, cohort.mutations.sort_values(key).reset_index(drop=True))
    for c in sites.values():
        validate_cohort(c.patients, c.mutations, c.panels)


def test_same_seed_same_sites_and_different_seed_differs(cohort: Cohort) -> None:
    a, b, other = (split_sites(cohort, 3, seed=s, size_skew=1.0) for s in (4, 4, 5))
    for site in a:
        pd.testing.assert_frame_equal(a[site].patients, b[site].patients)
    assert any(not a[s].patients["patient_id"].equals(other[s].patients["patient_id"])
               for s in a)


def test_size_skew_gives_unequal_sizes_above_the_minimum(cohort: Cohort) -> None:
    sites = split_sites(cohort, 6, seed=2, size_skew=1.5, min_site_size=60)
    sizes = sorted(len(c) for c in sites.values())
    assert sum(sizes) == len(cohort)
    assert sizes[0] >= 60
    assert sizes[-1] > 4 * sizes[0]


def test_case_mix_shift_orders_sites_by_risk(cohort: Cohort) -> None:
    sites = split_sites(cohort, 4, seed=3, case_mix_shift=0.95)
    blasts = [float(c.patients["bm_blast"].mean()) for c in sites.values()]
    very_poor = [float((c.patients["cyto_ipssr"] == "Very Poor").mean()) for c in sites.values()]
    assert blasts == sorted(blasts) and blasts[-1] > 2 * blasts[0]
    assert very_poor[-1] > very_poor[0]
    random_sites = split_sites(cohort, 4, seed=3)
    random_blasts = [float(c.patients["bm_blast"].mean()) for c in random_sites.values()]
    assert max(random_blasts) - min(random_blasts) < blasts[-1] - blasts[0]


def test_panel_variation_makes_removed_genes_missing_not_wild_type(cohort: Cohort) -> None:
    sites = split_sites(cohort, 4, seed=4, panel_variation=True)
    full = cohort.panels["demo-myeloid-mds"]
    assert set(sites["site01"].panels) == {"demo-myeloid-mds"}
    small = sites["site02"].panels["demo-myeloid-mds-site02"]
    assert set(small) < set(full)
    assert {"TET2", "ASXL1", "SF3B1"} <= set(small)  # the most frequent genes stay
    removed = sorted(set(full) - set(small))
    gm = sites["site02"].gene_matrix(full)
    assert gm[removed].isna().all().all()
    assert not sites["site02"].mutations["gene"].isin(removed).any()
    original = cohort.mutations[cohort.mutations["patient_id"].isin(sites["site02"].ids)]
    kept = original[~original["gene"].isin(removed)]
    assert len(kept) == len(sites["site02"].mutations)
    for c in sites.values():
        validate_cohort(c.patients, c.mutations, c.panels)


def test_missingness_blanks_only_labs_at_site_specific_rates(cohort: Cohort) -> None:
    sites = split_sites(cohort, 4, seed=5, missingness=0.2)
    rates = [float(c.patients["hb"].isna().mean()) for c in sites.values()]
    assert max(rates) - min(rates) > 0.05
    assert 0.05 < float(np.mean(rates)) < 0.35
    for c in sites.values():
        original = cohort.patients.set_index("patient_id").loc[list(c.ids)]
        mine = c.patients.set_index("patient_id")
        others = [col for col in mine.columns if col not in LAB_COLUMNS]
        pd.testing.assert_frame_equal(mine[others], original[others])
        shown = mine["plt"].notna()
        assert (mine.loc[shown, "plt"] == original.loc[shown, "plt"]).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"n_sites": 0}, "n_sites"),
    ({"n_sites": 3, "case_mix_shift": 1.5}, "case_mix_shift"),
    ({"n_sites": 3, "missingness": 1.0}, "missingness"),
    ({"n_sites": 3, "size_skew": -1.0}, "size_skew"),
    ({"n_sites": 3, "min_site_size": 2000}, "at least 2000"),
])
def test_bad_parameters_are_refused_with_the_parameter_named(cohort: Cohort, kwargs: dict,
                                                             message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        split_sites(cohort, seed=0, **kwargs)
