"""The local generator and the evaluation on the real MDS IPSS-M cohort (skips when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hemafed.cohort.public import read_mds_ipssm
from hemafed.synth.copula import GaussianCopulaSynthesizer
from hemafed.synth.domain import SynthDomain
from hemafed.synth.evaluate import evaluate

COLUMNS = ["age", "sex", "hb", "plt", "anc", "bm_blast", "cyto_ipssr", "os_time", "os_status",
           "amlt_time", "amlt_status"]


@pytest.mark.realdata
def test_real_mds_encodes_and_copula_passes_gate(shared_data: Path) -> None:
    patients = read_mds_ipssm(shared_data / "mds-ipssm-cohort").cohort.patients[COLUMNS]
    # Every real value falls into the public domain (no unknown category, NA its own level).
    codes = SynthDomain.for_columns(COLUMNS).encode(patients)
    assert codes.shape == (len(patients), len(COLUMNS))
    rng = np.random.default_rng(0)
    is_train = rng.random(len(patients)) < 0.7
    train = patients[is_train].reset_index(drop=True)
    holdout = patients[~is_train].reset_index(drop=True)
    synth = GaussianCopulaSynthesizer().fit(train).sample(len(train), seed=1)
    report = evaluate(train, synth, holdout)
    assert report.fidelity["tvd_1way_mean"] < 0.06
    assert report.fidelity["km_max_diff_os"] < 0.1
    # IPSS-R categories computable from the columns: their distribution is kept roughly.
    assert report.fidelity["ipssr_category_tvd"] < 0.15
    assert report.utility["c_index_tstr"] > 0.6
    assert report.passes()
