"""Typed query parameters: every migrated query's dataclass is frozen, refuses unknown keys,
wrong types and out-of-range values naming the parameter, and round-trips the hub's mapping.

The hub's mappings below are the ones its estimators send (built by their own helpers where
there is one), so a change of the wire format shows here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from hemafed.errors import InvalidInput
from hemafed.federation import checks
from hemafed.federation.queries import SITE_ID_PARAM, QueryParams, get_query, registered
from hemafed.study.catalogue import catalogued
from hemafed.study.queries import query_catalogue

catalogued()  # importing the catalogue registers every site query

from hemafed.analytics.competing import MDS_AML_VS_DEATH, competing_params  # noqa: E402
from hemafed.analytics.design import parse_formula  # noqa: E402
from hemafed.analytics.multistate import DEFAULT_COLUMNS  # noqa: E402
from hemafed.learn.gbdt import Outcome, default_grid  # noqa: E402
from hemafed.learn.survival_net import NetConfig, encode_weights  # noqa: E402
from hemafed.learn.trees import TreeBuilder  # noqa: E402
from hemafed.synth.domain import SynthDomain  # noqa: E402
from hemafed.synth.queries import query_params as marginal_params  # noqa: E402

DESIGN = [{"kind": "numeric", "column": "age", "low": 0.0, "high": 100.0}]
NET = NetConfig(parse_formula("age + hb"), (4,), 0.1, (1.0, 2.0, 4.0))
NEURAL = {"net": NET.to_params(), "duration_col": "os_time", "event_col": "os_status",
          "max_patients": checks.MAX_PATIENTS, "seed": 3,
          "weights": encode_weights(np.zeros(NET.size)), "round": 2}
"""What FederatedDeepSurv.fit sends in every round of either neural query."""
GRID = default_grid(2.0, 0.5)
BOOST = {"design": DESIGN, "outcome": Outcome("survival:cox", duration_col="os_time",
                                              event_col="os_status", grid=GRID).to_params(),
         "model": {"base": 0.1, "trees": []}}
"""What FederatedGBDT.fit sends to every boosting query (its ``common`` and ``model``)."""

HUB_PARAMS: dict[str, dict[str, Any]] = {
    "cohort_size": {},
    "category_counts": {"column": "sex", "levels": ["F", "M"]},
    "moments": {"column": "age", "low": 0.0, "high": 110.0, "resolution": 1e-4},
    "catalogue_counts": {"column": "disease", "levels": ["MDS", "AML"],
                         "features": ["age", "hb"], "sites": ["a", "b"]},
    "numeric_summary": {"column": "age", "low": 0.0, "high": 110.0, "bins": 22},
    "crosstab": {"row": "sex", "col": "disease", "row_levels": ["F", "M"],
                 "col_levels": ["MDS", "AML"]},
    "quantile_cdf": {"column": "hb", "low": 7.0, "high": 10.0, "step": 0.5},
    "marginal_counts": marginal_params(SynthDomain.for_columns(["sex"]), [["sex"]]),
    "logistic_newton": {"design": DESIGN, "outcome": "response", "beta": [0.1, -0.2],
                        "positive": ["CR"]},
    "learn_feature_histogram": {"design": DESIGN, "fine_bins": 64},
    "competing_risk_table": competing_params(MDS_AML_VS_DEATH, [1.0, 2.0, 3.0],
                                             group_col="sex", group_levels=["F", "M"]),
    "illness_death_counts": {**DEFAULT_COLUMNS, "grid": [1.0, 2.0]},
    "illness_death_influence": {**DEFAULT_COLUMNS, "grid": [1.0, 2.0],
                                "at_risk": [[5.0, 4.0], [1.0, 1.0]],
                                "transitions": [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]},
    "neural_train_round": {**NEURAL, "loss": "cox", "optimizer": "adam", "lr": 1e-3, "mu": 0.0,
                           "local_epochs": 1, "batch_size": 64, "weight_bound": 4.0,
                           "eval_grid": [0.5, 1.0, 2.0], "risk_bins": 200, "risk_bound": 8.0},
    "neural_dp_gradient": {**NEURAL, "max_grad_norm": 1.0},
    "gbdt_label_sums": {**BOOST, "outcome": Outcome("binary:logistic",
                                                    label_col="response").to_params()},
    "gbdt_cox_risk_sets": BOOST,
    "gbdt_histograms": {**BOOST, "edges": {"names": ["age"], "cuts": [[40.0, 60.0]]},
                        "tree": TreeBuilder().freeze().to_params(), "frontier": [0],
                        "risk_a": [0.1, 0.2, 0.3, 0.4], "risk_b": [0.01, 0.02, 0.03, 0.04]},
}
"""One valid request per migrated query, as the hub sends it."""

OUT_OF_RANGE: dict[str, list[tuple[str, Any]]] = {
    "category_counts": [("levels", []), ("levels", ["F", "F"])],
    "moments": [("high", -1.0), ("low", math.inf), ("resolution", 0.0), ("high", 1e200)],
    "catalogue_counts": [("sites", ["a", "a"]), ("features", [])],
    "numeric_summary": [("bins", 0), ("bins", 10_001), ("high", -5.0)],
    "crosstab": [("col_levels", [])],
    "quantile_cdf": [("step", -0.5), ("step", 0.7), ("step", 1e-6)],
    "marginal_counts": [("cliques", [])],
    "logistic_newton": [("beta", [0.1]), ("beta", [0.1, math.nan]), ("positive", [])],
    "learn_feature_histogram": [("fine_bins", 1), ("fine_bins", 100_001)],
    "competing_risk_table": [("grid", [2.0, 1.0]), ("time_mapping", "sideways"),
                             ("group_levels", [])],
    "illness_death_counts": [("grid", [-1.0, 2.0]), ("exit_time", "")],
    "illness_death_influence": [("at_risk", [[5.0, 4.0]]), ("transitions", [[-1.0, 0.0]] * 3),
                                ("resolution", -1.0)],
    "neural_train_round": [("weights", encode_weights(np.zeros(NET.size + 1))),
                           ("weights", "not base64!"), ("net", {"hidden": [4]}),
                           ("duration_col", ""), ("seed", 2**31), ("round", -1),
                           ("loss", "mse"), ("optimizer", "lbfgs"), ("lr", 0.0),
                           ("weight_bound", math.inf), ("local_epochs", 0), ("mu", -0.1),
                           ("batch_size", 1), ("eval_grid", [2.0, 1.0]), ("risk_bins", 1),
                           ("risk_bins", 10_001), ("risk_bound", math.inf)],
    "neural_dp_gradient": [("max_grad_norm", 0.0), ("max_grad_norm", math.nan),
                           ("event_col", "")],
    "gbdt_label_sums": [("model", {"base": math.inf, "trees": []}),
                        ("outcome", {"objective": "binary:logistic"}), ("design", [])],
    "gbdt_cox_risk_sets": [("model", {"base": 0.0, "trees": [{"feature": [-1]}]}),
                           ("model", {"base": 201.0, "trees": []}), ("resolution", 0.0),
                           ("outcome", {"objective": "survival:cox", "grid": ["a"]})],
    "gbdt_histograms": [("frontier", []), ("frontier", [-1]), ("frontier", [0, 0]),
                        ("risk_a", [0.1]), ("risk_b", [0.1, math.inf, 0.1, 0.1]),
                        ("edges", {"names": ["hb"], "cuts": [[1.0]]}),
                        ("tree", {"feature": []})],
}
"""Per migrated query, values out of range (or not well formed) for one key each."""

NOT_MIGRATED = {
    "combat_apply@1", "combat_moments@1", "combat_residuals@1", "cox_concordance_histogram@1",
    "cox_long_event_times@1", "cox_long_sums@1", "cox_risk_set_sums@3", "cox_site_derivatives@1",
    "cox_start_stop_sums@1", "finegray_score_outer@1", "finegray_sums@1", "finegray_table@1",
    "gwas_counts@1",
    "gwas_firth@1", "gwas_ld_pairs@1", "gwas_linear@1", "gwas_logistic@1", "gwas_null@1",
    "gwas_pca_gram@1", "gwas_store@1",
    "imaging_screen@1", "iptw_balance@1", "iptw_cox_robust@1", "iptw_cox_sums@1",
    "iptw_km_influence@1", "iptw_km_table@1", "km_risk_table@1", "learn_eval_sums@1",
    "learn_loso_concordance@1", "learn_risk_histogram@1", "learn_site_concordance@1",
    "lmm_reml_sums@1", "time_histogram@1",
}
"""Registered queries still reading an untyped mapping. This list may only shrink: a new query
comes with a ``params_type``, and migrating one means deleting it here."""


def _params_type(name: str) -> type[QueryParams]:
    q = get_query(name)
    assert q.params_type is not None, f"{name} is not migrated"
    return q.params_type


MIGRATED = sorted(HUB_PARAMS)


def test_every_migrated_query_has_a_hub_mapping_here() -> None:
    migrated = {q.name for q in registered() if q.migrated}
    assert migrated == set(HUB_PARAMS)


def test_the_unmigrated_list_only_shrinks() -> None:
    untyped = {q.key for q in registered() if not q.migrated}
    assert untyped - NOT_MIGRATED == set(), "new untyped query: give it a params_type"
    assert NOT_MIGRATED - untyped == set(), "migrated: delete it from NOT_MIGRATED"


@pytest.mark.parametrize("name", MIGRATED)
def test_frozen(name: str) -> None:
    p = _params_type(name).from_mapping(HUB_PARAMS[name])
    field = dataclasses.fields(p)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(p, field, getattr(p, field))
    hash(p)


@pytest.mark.parametrize("name", MIGRATED)
def test_round_trips_the_hub_mapping(name: str) -> None:
    hub = HUB_PARAMS[name]
    ptype = _params_type(name)
    p = ptype.from_mapping(hub)
    wire = p.to_mapping()
    assert {k: wire[k] for k in hub} == hub
    assert set(wire) <= set(ptype.keys())
    assert ptype.from_mapping(wire) == p
    q = get_query(name)
    assert q.declare(hub) == q.declare(p) == q.declare(wire)
    assert q.check(hub) == p


@pytest.mark.parametrize("name", MIGRATED)
def test_unknown_key_refused_naming_it(name: str) -> None:
    with pytest.raises(InvalidInput, match="unknown parameter 'colunm'"):
        _params_type(name).from_mapping({**HUB_PARAMS[name], "colunm": "age"})


@pytest.mark.parametrize("name", MIGRATED)
def test_wrong_type_refused_naming_the_key(name: str) -> None:
    ptype = _params_type(name)
    for key in [*HUB_PARAMS[name], "max_patients"]:
        with pytest.raises(InvalidInput, match=f"'{key}'"):
            ptype.from_mapping({**HUB_PARAMS[name], key: object()})


@pytest.mark.parametrize("name", MIGRATED)
def test_out_of_range_refused_naming_the_key(name: str) -> None:
    ptype = _params_type(name)
    cases = [("max_patients", 0), ("max_patients", 10**10), ("max_patients", 2.5),
             *OUT_OF_RANGE.get(name, [])]
    for key, value in cases:
        with pytest.raises(InvalidInput, match=f"'{key}'"):
            ptype.from_mapping({**HUB_PARAMS[name], key: value})


@pytest.mark.parametrize("name", MIGRATED)
def test_reserved_site_keys_refused_before_the_type(name: str) -> None:
    with pytest.raises(InvalidInput, match="reserved for the answering site"):
        get_query(name).check({**HUB_PARAMS[name], SITE_ID_PARAM: "a"})


def test_catalogue_lists_the_dataclass_fields() -> None:
    rows = {r["name"]: r["parameters"] for r in query_catalogue()}
    assert rows["quantile_cdf"] == ["column", "high", "low", "max_patients", "step"]
    assert rows["cohort_size"] == ["max_patients"]


def test_one_max_patients_default() -> None:
    from hemafed.study.plan import MAX_PATIENTS

    assert checks.MAX_PATIENTS == MAX_PATIENTS
    for name in MIGRATED:
        p = _params_type(name).from_mapping(HUB_PARAMS[name])
        assert p.max_patients == MAX_PATIENTS  # type: ignore[attr-defined]


# --- the named checks, on hand-made cases ------------------------------------------------------

def test_positive_int() -> None:
    assert checks.positive_int({"k": 3.0}, "k") == 3
    for bad in (2.5, True, "3", math.nan, 0):
        with pytest.raises(InvalidInput, match="'k'"):
            checks.positive_int({"k": bad}, "k")
    with pytest.raises(InvalidInput, match=r"'k' must be a whole number in 1\.\.\.5"):
        checks.positive_int({"k": 6}, "k", cap=5)


def test_bounds() -> None:
    assert checks.bounds({"low": -1, "high": 2.5}) == (-1.0, 2.5)
    assert checks.bounds({"a": 0, "b": 1}, "a", "b") == (0.0, 1.0)
    for low, high in ((1, 1), (2, 1), (True, 3), (-math.inf, 0), (0, math.nan), (0, 1e101)):
        with pytest.raises(InvalidInput, match="'low'"):
            checks.bounds({"low": low, "high": high})


def test_epsilon_delta_resolution() -> None:
    assert checks.epsilon({"epsilon": 0.5}) == 0.5
    assert checks.delta({}, default=1e-6) == 1e-6
    assert checks.resolution({}) == 1e-6
    for bad in (0, -1.0, math.inf, None):
        with pytest.raises(InvalidInput, match="'epsilon'"):
            checks.epsilon({"epsilon": bad})
    with pytest.raises(InvalidInput, match="'epsilon'"):
        checks.epsilon({})
    with pytest.raises(InvalidInput, match="'delta'"):
        checks.delta({"delta": 1.0})


def test_levels_names_choice_flag() -> None:
    assert checks.levels({"levels": [1, "2"]}) == ("1", "2")
    with pytest.raises(InvalidInput, match="'levels'"):
        checks.levels({"levels": [1, "1"]})
    assert checks.names({"s": []}, "s", allow_empty=True) == ()
    with pytest.raises(InvalidInput, match="'s'"):
        checks.names({"s": ["a", ""]}, "s")
    assert checks.choice({}, "ties", ("efron", "breslow"), "efron") == "efron"
    with pytest.raises(InvalidInput, match="'ties' must be one of breslow, efron"):
        checks.choice({"ties": "exact"}, "ties", ("efron", "breslow"))
    with pytest.raises(InvalidInput, match="'dp'"):
        checks.flag({"dp": 1}, "dp")
