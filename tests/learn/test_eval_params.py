"""Typed parameters of the four model-evaluation queries (``learn_risk_histogram``,
``learn_eval_sums``, ``learn_site_concordance``, ``learn_loso_concordance``): one
:class:`~hemafed.learn.predictor.Predictor` shared by all four, a hand-counted Harrell's C, a
bad parameter refused at the site by name, and the typed and mapping paths giving identical
numbers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.queries import get_query
from hemafed.learn.gbdt import FederatedGBDT
from hemafed.learn.metrics import (
    EvalSumsParams,
    column_predictor,
    eval_sums,
    evaluate,
    gbdt_predictor,
    ipssm_predictor,
    site_eval_rows,
)
from hemafed.learn.predictor import Predictor
from hemafed.learn.validation import LosoParams
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.node import SiteNode, SiteRequest
from hemafed.site.policy import ApprovedStudy, Budget, SitePolicy

GRID = [1.0, 2.0, 3.0]
SCORE = column_predictor("score", 0.0, 4.0)
BASE = {"duration_col": "os_time", "event_col": "os_status", "grid": GRID, "predictor": SCORE}
QUERIES = ("learn_risk_histogram", "learn_eval_sums", "learn_site_concordance",
           "learn_loso_concordance")


@pytest.fixture(scope="module")
def five() -> Cohort:
    """Five patients on the grid 1, 2, 3 (times map up: 0.5 and 1.0 to 1, 1.7 to 2, 2.5 to 3;
    5.0 is past the grid, censored at 3)."""
    return Cohort(pd.DataFrame({
        "patient_id": ["a", "b", "c", "d", "e"], "os_time": [0.5, 1.0, 1.7, 2.5, 5.0],
        "os_status": [1, 0, 1, 0, 1], "score": [3.0, 1.0, 2.0, 2.0, 0.0]}))


@pytest.fixture(scope="module")
def model() -> tuple[FederatedGBDT, Cohort]:
    cohort = generate("MDS", 150, seed=5)
    fed = LocalSumFederation({"a": cohort})
    return FederatedGBDT("survival:cox", n_rounds=2, max_depth=2).fit(
        fed, ["age", "hb", "gene:TP53"], ("os_time", "os_status")), cohort


def test_harrells_c_counted_by_hand(five: Cohort) -> None:
    # events: a (at 1, score 3) and c (at 2, score 2); e's event is past the grid
    # a is comparable with b (censored at 1), c, d, e: all four below it -> 8 half-pairs
    # c is comparable with d (tie: 1 half-pair) and e (below: 2) -> 3
    out = get_query("learn_site_concordance").run(five, BASE)
    assert out["concordant2"][0] == 11 and out["comparable"][0] == 6
    assert out["n"][0] == 5 and out["events"][0] == 2
    # the same from the fold model keyed by the answering site's own id
    loso = {k: BASE[k] for k in ("duration_col", "event_col", "grid")} | {
        "models": {"s1": SCORE, "s2": ipssm_predictor()}}
    again = get_query("learn_loso_concordance").run(five, loso, site_id="s1")
    assert all(np.array_equal(again[k], out[k]) for k in out)


def test_risk_histogram_by_hand(five: Cohort) -> None:
    # bounds [0, 4] in 4 cells: scores 3, 1, 2, 2, 0 fall in cells 3, 1, 2, 2, 0
    out = get_query("learn_risk_histogram").run(five, {**BASE, "fine_bins": 4})
    assert out["counts"].tolist() == [1.0, 1.0, 2.0, 1.0]


def test_one_predictor_type_shared_by_the_four(model) -> None:
    fitted, _ = model
    wire = gbdt_predictor(fitted)
    p = Predictor.from_params(wire)
    assert p.to_params() == wire and p.has_survival and hash(p)
    hub = {**BASE, "predictor": wire}
    for name in QUERIES[:3]:
        extra = {"censoring_survival": [1.0, 0.9, 0.8], "risk_cuts": [], "decile_cuts": [],
                 "horizon_index": 2, "brier_index": [0]} if name == "learn_eval_sums" else {}
        typed = get_query(name).check({**hub, **extra})
        assert typed.predictor == p  # type: ignore[union-attr]
    loso = get_query("learn_loso_concordance").check(
        {k: hub[k] for k in ("duration_col", "event_col", "grid")} | {"models": {"x": wire}})
    assert isinstance(loso, LosoParams) and loso.fold_model("x") == p
    with pytest.raises(InvalidInput, match="site y: parameter 'models' has no fold model"):
        loso.fold_model("y")


@pytest.mark.parametrize(("key", "bad"), [
    ("horizon_index", 7), ("brier_index", [1, 0]), ("censoring_survival", [1.0]),
    ("predictor", {"kind": "column", "bounds": [0.0, 4.0]}), ("risk_cuts", [2.0, 1.0])])
def test_bad_parameter_refused_at_the_site_by_name(five: Cohort, tmp_path: Path, key: str,
                                                   bad: object) -> None:
    now = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
    policy = SitePolicy("s1", tuple(f"{q}@1" for q in QUERIES), studies=(
        ApprovedStudy("S1", "ab" * 32, dt.date(2026, 12, 31), "IRB 12"),),
        study_budget=Budget(1.0, 1e-6), total_budget=Budget(3.0, 1e-6), require_plan=False)
    ledger = PrivacyLedger.from_policy(tmp_path / "ledger.jsonl", policy, clock=lambda: now)
    node = SiteNode(five, policy, ledger, AuditLog(tmp_path / "audit.log", clock=lambda: now),
                    clock=lambda: now, rng=np.random.default_rng(0))
    params = {**BASE, "censoring_survival": [1.0, 0.9, 0.8], "risk_cuts": [1.5],
              "decile_cuts": [2.5], "horizon_index": 1, "brier_index": [0, 2], key: bad}
    with pytest.raises(InvalidInput) as err:
        node.answer(SiteRequest("r1", "S1", "ab" * 32, "learn_eval_sums", "1", params, "hub"))
    refusal = err.value.refusal  # type: ignore[attr-defined]
    assert (refusal.code, refusal.name) == ("invalid_parameter", key)
    assert node.audit.entries()[-1]["decision"] == "refused"


def test_typed_and_mapping_paths_give_identical_sums(model) -> None:
    fitted, cohort = model
    ev = evaluate(LocalSumFederation({"a": cohort}), gbdt_predictor(fitted), horizon=3.0,
                  brier_times=[1.0, 2.0, 3.0])
    grid = [float(t) for t in np.asarray(ev.brier.index)]
    hub = {"duration_col": "os_time", "event_col": "os_status", "grid": grid,
           "predictor": gbdt_predictor(fitted), "censoring_survival": [1.0, 0.95, 0.9],
           "risk_cuts": [-0.1, 0.0, 0.1], "decile_cuts": [0.0], "horizon_index": 2,
           "brier_index": [0, 1, 2]}
    typed = EvalSumsParams.from_mapping(hub)
    q = get_query("learn_eval_sums")
    by_mapping, by_typed = q.run(cohort, hub), q.run_checked(cohort, q.check(hub))
    direct = eval_sums(site_eval_rows(cohort, hub), hub)
    also = eval_sums(typed.site_rows(cohort), typed)
    for k in by_mapping:
        assert np.array_equal(by_mapping[k], by_typed[k])
        assert np.array_equal(by_mapping[k], direct[k]) and np.array_equal(direct[k], also[k])
    assert by_mapping["n"][0] > 0 and by_mapping["brier"].sum() > 0
    # a mapping holding other keys too still gives the rows (the public helper ignores them)
    rows = site_eval_rows(cohort, {**hub, "anything": 1})
    assert rows.risk.size == by_mapping["n"][0]


def test_a_predictor_holds_exactly_its_kinds_fields() -> None:
    assert Predictor.from_params(SCORE) == Predictor("column", (0.0, 4.0), column="score")
    for bad in (dict(kind="gbdt", bounds=(0.0, 1.0)), dict(kind="ipssm", bounds=(1.0, 0.0)),
                dict(kind="ipssm", bounds=(0.0, 1.0), column="score"),
                dict(kind="column", bounds=(0.0, 1.0))):
        with pytest.raises(ValueError, match="exactly its kind's fields"):
            Predictor(**bad)  # type: ignore[arg-type]
