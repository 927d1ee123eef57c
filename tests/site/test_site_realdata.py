"""Two real MDS 'sites' (IPSS-M study cohort split in halves) answer like the pooled table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hemafed.federation.api import DPRequest
from hemafed.site.node import SiteRequest
from hemafed.site.store import import_into_site, init_site, load_cohort, open_node

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SHA = "ef" * 32


@pytest.mark.realdata
@pytest.mark.slow
def test_two_real_sites_sum_to_the_pooled_moments(shared_data: Path, tmp_path: Path) -> None:
    raw = pd.read_csv(shared_data / "mds-ipssm-cohort" / "df_clinical.tsv", sep="\t")
    canonical = pd.DataFrame({"patient_id": raw["ID"], "disease": "MDS", "sex": raw["SEX"],
                              "age": raw["AGE"], "hb": raw["HB"]})
    halves = [canonical.iloc[: len(canonical) // 2], canonical.iloc[len(canonical) // 2:]]
    params = {"column": "hb", "low": 2, "high": 25}
    sums = []
    for i, half in enumerate(halves):
        site = tmp_path / f"site{i}"
        init_site(site, f"hosp-{i}")
        half.to_csv(tmp_path / f"half{i}.csv", index=False)
        import_into_site(site, tmp_path / f"half{i}.csv", study="MDS-1")
        assert len(load_cohort(site)) == len(half)
        assert not set(load_cohort(site).ids) & set(raw["ID"])
        policy = yaml.safe_load((site / "policy.yaml").read_text())
        policy["studies"] = [{"study_id": "MDS-1", "spec_sha256": SHA, "expires": "2027-01-01",
                              "approved_by": "test"}]
        policy["require_plan"] = False  # a hash-only approval (tests/privacy cover plans)
        policy["allowed_queries"] = [*policy["allowed_queries"], "moments@1"]
        (site / "policy.yaml").write_text(yaml.safe_dump(policy))
        node = open_node(site, clock=lambda: NOW, rng=np.random.default_rng(i))
        sums.append(node.answer(SiteRequest(f"r{i}", "MDS-1", SHA, "moments", "1", params, "hub")))
        noisy = node.answer(SiteRequest(f"d{i}", "MDS-1", SHA, "moments", "1", params, "hub",
                                        DPRequest(1.0, 1e-6), noise_share_divisor=2),
                            guaranteed_contributors=2)
        assert noisy.epsilon_charged == 1.0 and node.ledger.spent("MDS-1").epsilon == pytest.approx(1.0, rel=1e-4)
    hb = raw["HB"].dropna()
    assert sum(a["n"][0] for a in sums) == len(hb)
    assert sum(a["sum"][0] for a in sums) == pytest.approx(hb.sum(), rel=1e-12)
    assert sum(a["sum_sq"][0] for a in sums) == pytest.approx((hb**2).sum(), rel=1e-12)
