"""The marginal_counts site query and the zCDP budget arithmetic."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.model import Cohort
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.queries import get_query
from hemafed.synth import accounting
from hemafed.synth.domain import SynthDomain
from hemafed.synth.queries import QUERY, query_params


def test_hand_computed_table() -> None:
    frame = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "disease": ["MDS"] * 4,
                          "sex": ["M", "F", "F", None],
                          "hb": pd.array([7.5, 12.0, None, 7.0], dtype="Float64")})
    cohort = Cohort(frame)
    d = SynthDomain(tuple(SynthDomain.for_columns(["sex", "hb"]).columns))
    out = get_query(QUERY).run(cohort, query_params(d, [["sex", "hb"]]))
    table = out["sex|hb"].reshape(3, 12)
    assert table.sum() == 4
    assert table[0, 2] == 1  # M, hb in [7, 8)
    assert table[1, 7] == 1  # F, hb in [12, 13)
    assert table[1, 11] == 1  # F, hb NA
    assert table[2, 2] == 1  # sex NA, hb 7.0 in [7, 8)
    spec = get_query(QUERY).declare(query_params(d, [["sex", "hb"], ["sex"]]))
    assert spec["sex|hb"].sensitivity == 1 and spec["sex|hb"].is_count


def test_federated_tables_equal_pooled_exactly(mds_cohort: Cohort, mds_sites: dict[str, Cohort],
                                               columns: list[str]) -> None:
    d = SynthDomain.for_columns(columns)
    cliques = [["age", "os_time"], ["cyto_ipssr", "os_status"], ["hb"]]
    fed = LocalSumFederation(mds_sites).secure_sum(QUERY, query_params(d, cliques))
    codes = d.encode(mds_cohort.patients)
    for c in cliques:
        assert np.array_equal(fed["|".join(c)], d.contingency(codes, c))


def test_noise_std_is_multiplier_times_release_sensitivity(mds_sites: dict[str, Cohort],
                                                           columns: list[str]) -> None:
    from hemafed.federation.api import DPRequest

    d = SynthDomain.for_columns(columns)
    cliques = [[c] for c in columns]
    res = LocalSumFederation(mds_sites, dp_seed=1).secure_sum(
        QUERY, query_params(d, cliques), dp=DPRequest(noise_multiplier=2.0))
    assert res.noise_std["age"] == pytest.approx(2.0 * np.sqrt(len(columns)))


def test_rho_conversion_agrees_with_rdp_accountant() -> None:
    # MST spends rho in three Gaussian releases; the sites' RDP ledger must find <= epsilon.
    eps, delta = 2.0, 1e-6
    rho = accounting.rho_for(eps, delta)
    nm = accounting.noise_multiplier_for_rho(rho / 3)
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(nm), 3)
    ledger_eps = acc.get_epsilon(delta)
    assert ledger_eps <= eps * 1.001
    assert ledger_eps > 0.9 * eps  # the conversion is not wastefully loose
    assert accounting.epsilon_for(rho, delta) == pytest.approx(eps, rel=1e-6)
