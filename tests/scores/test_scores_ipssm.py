"""IPSS-M against the authors' published examples and the published cohort scores."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ipssm_example import EXAMPLE

from hemafed.scores.ipssm import calculator_output, ipssm, ipssm_from_calculator_table


def example() -> pd.DataFrame:
    return pd.read_csv(io.StringIO(EXAMPLE), dtype={"TP53mut": "string"})


def test_published_examples() -> None:
    # Expected values: tests/testthat/test_ipssm.R of the R package.
    out = calculator_output(ipssm_from_calculator_table(example())).set_index("ID")
    assert out.loc["pp347", ["IPSSMscore_best", "IPSSMscore_mean", "IPSSMscore_worst"]].tolist() \
        == [0.30, 0.31, 0.63]
    assert out.loc["pp347", ["IPSSMcat_best", "IPSSMcat_mean", "IPSSMcat_worst"]].tolist() == [
        "Moderate High", "Moderate High", "High"]
    assert out.loc["pp347", "IPSSMscore"] == 0.31
    assert out.loc["pp564", ["IPSSMscore_best", "IPSSMscore_mean", "IPSSMscore_worst"]].tolist() \
        == [4.55, 4.55, 4.55]
    assert out.loc["pp564", "IPSSMcat"] == "Very High"
    # The example named zeroScore is built to sit at the reference patient: score 0.
    assert out.loc["zeroScore", "IPSSMscore"] == 0.0
    assert out.loc["zeroScore", "IPSSMcat"] == "Moderate Low"


def test_hand_computed_pp564_terms() -> None:
    r = ipssm_from_calculator_table(example())
    c = r.contributions.loc["pp564"]
    # TP53 multi-hit: (1 - 0.071) * 1.18 / ln 2
    assert c["TP53multi"] == pytest.approx((1 - 0.071) * 1.18 / np.log(2))
    assert c["HB1"] == pytest.approx((7.5 - 9.87) * -0.171 / np.log(2))
    assert c.sum() == pytest.approx(r.values.loc["pp564", "score_mean_unrounded"])


def test_canonical_input_matches_calculator_input() -> None:
    ex = example()
    patients = pd.DataFrame({
        "patient_id": ex["ID"], "hb": ex["HB"], "plt": ex["PLT"], "bm_blast": ex["BM_BLAST"],
        "cyto_ipssr": ex["CYTO_IPSSR"], "del5q": ex["del5q"], "del7_7q": ex["del7_7q"],
        "del17_17p": ex["del17_17p"], "complex": ex["complex"], "tp53_loh": ex["TP53loh"]})
    genes = ex.set_index("ID").drop(columns=["HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "del5q",
                                             "del7_7q", "complex", "del17_17p", "TP53mut",
                                             "TP53maxvaf", "TP53loh"])
    genes["TP53"] = [0, 1, 0]
    mutations = pd.DataFrame({"patient_id": ["pp564"], "gene": ["TP53"], "vaf": [0.85]})
    a = ipssm(patients, genes, mutations).values
    b = ipssm_from_calculator_table(ex).values
    pd.testing.assert_frame_equal(a, b)


def test_malformed_patients_reported_not_raised() -> None:
    ex = example()
    ex.loc[0, "CYTO_IPSSR"] = "Awful"
    ex.loc[1, "HB"] = 150  # g/L entered as g/dL
    r = ipssm_from_calculator_table(ex)
    assert set(r.errors["patient_id"]) == {"pp347", "pp564"}
    assert "unknown cytogenetic category" in r.reasons.loc["pp347", "reason"]
    assert np.isnan(r.values.loc["pp564", "value"])
    assert r.values.loc["zeroScore", "value"] == 0.0


def test_unknown_tp53_allelic_state_widens_the_range() -> None:
    ex = example().iloc[[2]].copy()
    ex["TP53mut"] = "1"
    ex["TP53maxvaf"] = 0.2
    ex["TP53loh"] = np.nan
    v = ipssm_from_calculator_table(ex).values.iloc[0]
    assert v["score_worst"] - v["score_best"] == pytest.approx(
        round(1.18 / np.log(2), 2), abs=0.011)


@pytest.mark.realdata
def test_reproduces_published_cohort(shared_data: Path) -> None:
    import mds_cohort

    table, clin = mds_cohort.load(shared_data / "mds-ipssm-cohort")
    r = ipssm_from_calculator_table(table)
    pub = clin.set_index("ID")
    has = pub["IPSSM_SCORE"].notna()
    assert has.sum() == 2701
    diff = (r.values["score_mean"] - pub["IPSSM_SCORE"])[has]
    off = set(diff.index[diff.abs() > 0.005])
    # Explained mismatches (see the report): three patients whose released Hb is floored at 4.0
    # g/dL while the published score used the raw Hb below 4; one whose TP53 is mono-allelic by
    # sequencing (chr17 normal) although the karyotype shows a subclonal del(17p).
    assert off == {"E-H-103042-T1-1-D1-1", "E-H-102579-T1-1-D1-1", "E-H-102628-T1-1-D1-1",
                   "E-H-106249-T1-1-D1-1"}
    assert (r.values.loc[has[has].index, "n_missing"] == 0).all()
    cat = pub["IPSSM"].str.replace("-", " ")
    agree = (r.values["category_mean"] == cat)[has]
    assert set(agree.index[~agree]) == {"E-H-106249-T1-1-D1-1"}
