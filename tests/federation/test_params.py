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
from hemafed.federation.queries import SITE_ID_PARAM, Query, QueryParams, get_query, registered
from hemafed.study.catalogue import catalogued
from hemafed.study.queries import query_catalogue

catalogued()  # importing the catalogue registers every site query

from hemafed.analytics.competing import MDS_AML_VS_DEATH, competing_params  # noqa: E402
from hemafed.analytics.concordance import concordance_request  # noqa: E402
from hemafed.analytics.design import parse_formula  # noqa: E402
from hemafed.analytics.multistate import DEFAULT_COLUMNS  # noqa: E402
from hemafed.analytics.survival_grid import query_params as survival_params  # noqa: E402
from hemafed.analytics.weighting import weight_request  # noqa: E402
from hemafed.genomics.pca import PCAResult  # noqa: E402
from hemafed.genomics.queries import pack  # noqa: E402
from hemafed.imaging.combat import FederatedComBat  # noqa: E402
from hemafed.learn.gbdt import Outcome, default_grid  # noqa: E402
from hemafed.learn.metrics import column_predictor, ipssm_predictor  # noqa: E402
from hemafed.learn.survival_net import NetConfig, encode_weights  # noqa: E402
from hemafed.learn.trees import TreeBuilder  # noqa: E402
from hemafed.synth.domain import SynthDomain  # noqa: E402
from hemafed.synth.queries import query_params as marginal_params  # noqa: E402

DESIGN = [{"kind": "numeric", "column": "age", "low": 0.0, "high": 100.0}]
LONG_COLUMNS = {"id_col": "patient_id", "start_col": "start", "stop_col": "stop",
                "event_col": "event", "max_rows_per_patient": 20}
FG_TABLE = {"causes": [list(c) for c in MDS_AML_VS_DEATH], "cause": 1, "design": DESIGN,
            "grid": [1.0, 2.0, 3.0]}
FG_WEIGHTED = {**FG_TABLE, "cens_surv": [1.0, 0.9, 0.8], "time_index": [0, 2]}

# FederatedGWAS.fit's requests: ``base`` to every genotype query, ``assoc`` to the model ones
GWAS_BASE = {"study": "gwas1", "variant_list": "ab" * 32, "max_patients": 1_000_000}
PCA = PCAResult(np.array([3, 7]), np.array([0.2, 0.4]), np.array([[0.6], [-0.8]]),
                np.array([5.0]), 100, ("a", "b")).params()
QUANT = {**GWAS_BASE, "trait": {"column": "hb", "threshold": None},
         "covariates": ["age", "sex"], "pca": PCA}
BINARY = {**QUANT, "trait": {"column": "hb", "threshold": 10.0}}
VARIANTS = pack(np.array([0, 4, 9]), "<i4")
COX_REQUEST = survival_params("os_time", "os_status", [1.0, 2.0, 3.0], design=DESIGN,
                              ties="efron")
"""What :class:`hemafed.analytics.cox.FederatedCoxPH` sends in every round (before ``beta``)."""
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
IPTW = weight_request(parse_formula("age + sex", None), "hma", [0.1, 0.01, -0.2], 0.4,
                      "os_time", "os_status", [1.0, 2.0, 3.0], max_weight=20.0)
"""What FederatedIPTW.fit sends to every ``iptw_*`` query (its ``base``)."""
IPTW_COX = {**IPTW, "beta": [0.3]}
SPLIT = {"feature": [0, -1, -1], "threshold": [50.0, 0.0, 0.0],
         "default_left": [True, False, False], "left": [1, 0, 0], "right": [2, 0, 0],
         "value": [0.0, -0.1, 0.1], "gain": [1.0, 0.0, 0.0], "cover": [5.0, 2.0, 3.0]}
GBDT_COX = {"kind": "gbdt", "design": DESIGN, "base": 0.1, "trees": [SPLIT],
            "bounds": [-0.2 - 1e-9, 0.2 + 1e-9], "hazard_times": [1.0, 2.0, 3.0],
            "hazard": [0.1, 0.25, 0.3]}
"""What :func:`hemafed.learn.metrics.gbdt_predictor` gives of a one-split Cox model."""
EVAL = {"duration_col": "os_time", "event_col": "os_status", "grid": [1.0, 2.0, 3.0],
        "predictor": GBDT_COX}
"""What :func:`hemafed.learn.metrics.evaluate` sends to both its queries (its ``base``)."""
COMBAT: dict[str, Any] = {
    "features": ["f1", "f2"], "covariates": ["age"],
    "bounds": {"f1": [0.0, 1.0], "f2": [0.0, 1.0], "age": [0.0, 100.0]},
    "max_patients": 1_000_000, "library": "hemafed"}
"""What FederatedComBat.fit sends in both steps (its ``base``; ``beta`` added to the second)."""
COMBAT_FIT = FederatedComBat.from_parameters({
    "features": ["f1", "f2"], "covariates": ["age"], "alpha": [0.5, 0.5],
    "beta": [[0.001, 0.0]], "var_pooled": [0.01, 0.01], "n": 40, "sites": ["a", "b"]})
COMBAT_APPLY = {**COMBAT_FIT.site_parameters(), "max_patients": 1_000_000,
                "bounds": {**COMBAT["bounds"], "h_f1": [-1.0, 2.0]}}
"""What FederatedComBat.apply sends (the pooled parameters, with an ``h_`` bound)."""

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
    "time_histogram": {"duration_col": "os_time", "event_col": "os_status",
                       "steps_per_unit": 365.25, "max_time": 60.0},
    "km_risk_table": survival_params("os_time", "os_status", [1.0, 2.0, 3.0],
                                     time_mapping="up", group_col="sex", group_levels=["F", "M"]),
    "cox_risk_set_sums": COX_REQUEST | {"strata_col": "sex", "strata_levels": ["F", "M"],
                                        "beta": [0.01], "time_index": [0, 2], "tie_index": [2],
                                        "event_sums": False},
    "cox_site_derivatives": COX_REQUEST | {"beta": [0.01]},
    "cox_concordance_histogram": concordance_request(COX_REQUEST, [0.01], 64),
    "illness_death_influence": {**DEFAULT_COLUMNS, "grid": [1.0, 2.0],
                                "at_risk": [[5.0, 4.0], [1.0, 1.0]],
                                "transitions": [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]},
    "cox_start_stop_sums": {"duration_col": "os_time", "event_col": "os_status",
                            "grid": [1.0, 2.0], "time_mapping": "exact", "design": DESIGN,
                            "switch": ["amlt_time", "amlt_status"], "ties": "efron",
                            "beta": [0.01, 0.2]},
    "cox_long_event_times": {**LONG_COLUMNS, "steps_per_unit": 1.0, "max_time": 10_000.0},
    "cox_long_sums": {**LONG_COLUMNS, "grid": [1.0, 2.0], "design": DESIGN, "ties": "breslow",
                      "beta": [0.01]},
    "finegray_table": FG_TABLE,
    "finegray_sums": {**FG_WEIGHTED, "beta": [0.01], "competing_sums": True},
    "finegray_score_outer": {**FG_WEIGHTED, "beta": [0.01], "events": 12,
                             "p0": [0.1, 0.2, 0.3], "p1": [[1.0], [2.0], [3.0]],
                             "q0": [0.3, 0.1, 0.0], "q1": [[0.5], [0.2], [0.0]],
                             "e1": [[0.4], [0.0], [0.6]], "ss2": [[0.0], [-0.1], [-0.2]],
                             "qn": [[0.0], [0.05], [0.0]]},
    "imaging_screen": {"features": ["f1", "f2"], "outcome": "os_status",
                       "bounds": {"f1": [0.0, 1.0], "f2": [-2.0, 2.0]},
                       "time": "os_time", "horizon": 2.0},
    "lmm_reml_sums": {"outcome": "hb", "time": "time", "covariates": ["age"],
                      "bounds": {"hb": [0.0, 20.0], "time": [0.0, 10.0], "age": [0.0, 100.0]},
                      "max_obs": 50, "theta": [1.0, 0.0, 1.0]},
    "gwas_store": {"study": "gwas1", "variant_list": "ab" * 32, "build": "GRCh38",
                   "sites": ["a", "b"]},
    "gwas_counts": {**GWAS_BASE, "start": 0, "stop": 500},
    "gwas_pca_gram": {**GWAS_BASE, "variants": pack(np.array([3, 7]), "<i4"),
                      "freq": pack(np.array([0.2, 0.4]))},
    "gwas_ld_pairs": {**GWAS_BASE, "variants": VARIANTS,
                      "pairs": pack(np.array([[0, 1], [1, 2]]), "<i4")},
    "gwas_null": {**BINARY, "beta": pack(np.zeros(4))},
    "gwas_linear": {**QUANT, "variants": VARIANTS, "missing_variants": pack(np.array([4]), "<i4")},
    "gwas_logistic": {**BINARY, "variants": VARIANTS, "beta": pack(np.zeros((3, 5)))},
    "gwas_firth": {**BINARY, "variants": VARIANTS, "beta": pack(np.zeros((3, 5)))},
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
    "iptw_balance": IPTW,
    "iptw_km_table": IPTW,
    "iptw_km_influence": {**IPTW, "w_events": [[1.0, 0.0, 2.5], [0.5, 0.5, 0.0]],
                          "w_at_risk": [[9.0, 7.0, 6.0], [8.0, 6.5, 5.0]]},
    "iptw_cox_sums": IPTW_COX,
    "iptw_cox_robust": {**IPTW_COX, "h": [0.1, 0.0, 0.2], "g": [0.05, 0.0, 0.1],
                        "hd": [0.1, 0.0, 0.15], "gd": [0.05, 0.0, 0.07],
                        "xb": [0.5, 0.0, 0.45]},
    "learn_risk_histogram": {**EVAL, "fine_bins": 8192},
    "learn_eval_sums": {**EVAL, "censoring_survival": [1.0, 0.95, 0.9],
                        "risk_cuts": [-0.1, 0.0, 0.1], "decile_cuts": [0.0],
                        "horizon_index": 1, "brier_index": [0, 2]},
    "learn_site_concordance": {**EVAL, "predictor": column_predictor("ipssr", 0.0, 10.0)},
    "learn_loso_concordance": {**{k: EVAL[k] for k in ("duration_col", "event_col", "grid")},
                               "models": {"a": GBDT_COX, "b": ipssm_predictor()}},
    "combat_moments": COMBAT,
    "combat_residuals": {**COMBAT, "beta": [[0.01, 0.002]]},
    "combat_apply": COMBAT_APPLY,
}
"""One valid request per migrated query, as the hub sends it (the Fine-Gray and long-format
Cox fitters build theirs inline in ``fit``: these have their keys and value types)."""

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
    "time_histogram": [("steps_per_unit", 0.0), ("max_time", -1.0), ("max_time", 1e6),
                       ("duration_col", "")],
    "km_risk_table": [("grid", [2.0, 1.0]), ("grid", []), ("time_mapping", "sideways"),
                      ("group_levels", ["F", "F"]), ("event_col", "")],
    "cox_risk_set_sums": [("beta", [0.01, 0.02]), ("beta", [math.nan]), ("beta", [5.0]),
                          ("ties", "exact"), ("time_index", [2, 0]), ("time_index", [3]),
                          ("tie_index", [1.5]), ("event_sums", 1), ("strata_levels", []),
                          ("resolution", 0.0), ("design", [])],
    "cox_site_derivatives": [("beta", []), ("grid", [1.0, math.inf]), ("resolution", -1e-9)],
    "cox_concordance_histogram": [("lp_bins", 1), ("lp_bins", 10_001), ("beta", [1e9])],
    "illness_death_influence": [("at_risk", [[5.0, 4.0]]), ("transitions", [[-1.0, 0.0]] * 3),
                                ("resolution", -1.0)],
    "cox_start_stop_sums": [("beta", [0.01]), ("beta", [10.0, 0.0]), ("switch", ["amlt_time"]),
                            ("ties", "exact"), ("time_mapping", "sideways"),
                            ("grid", [2.0, 1.0]), ("duration_col", "")],
    "cox_long_event_times": [("steps_per_unit", 0.0), ("steps_per_unit", math.inf),
                             ("max_time", 1e9), ("max_time", -1.0), ("event_col", ""),
                             ("max_rows_per_patient", 0)],
    "cox_long_sums": [("max_rows_per_patient", 10_001), ("max_rows_per_patient", 2.5),
                      ("beta", [math.inf]), ("beta", [0.0, 0.0]), ("start_col", "")],
    "finegray_table": [("cause", 3), ("cause", 0), ("cause", True), ("time_mapping", "down"),
                       ("grid", [-1.0, 2.0, 3.0]), ("causes", [])],
    "finegray_sums": [("cens_surv", [1.0, 0.0, 0.5]), ("cens_surv", [1.0, 0.9]),
                      ("cens_surv", [1.0, 1.5, 0.5]), ("cens_surv", [1.0, math.nan, 0.5]),
                      ("time_index", [2, 0]), ("time_index", [0, 3]), ("time_index", [0.5]),
                      ("time_index", []), ("beta", [0.01, 0.02]), ("beta", [5.0])],
    "finegray_score_outer": [("events", -1), ("events", 2.5), ("p0", [0.0, math.inf, 0.0]),
                             ("q0", [0.0]), ("p1", [[0.0]] * 2), ("qn", [[0.0, 1.0]] * 3),
                             ("e1", [[math.nan]] * 3), ("cens_surv", [0.5] * 4)],
    "imaging_screen": [("features", []), ("outcome", ""), ("bounds", {"f1": [1.0, 0.0]}),
                       ("bounds", {"f1": [0.0, math.inf], "f2": [0.0, 1.0]}),
                       ("time", ""), ("horizon", 0.0)],
    # 'resolution' was formerly unchecked (a string reached the codec)
    "lmm_reml_sums": [("theta", [1.0, 0.0]), ("theta", [1.0, math.inf, 1.0]), ("max_obs", 0),
                      ("max_obs", 10_001), ("bounds", {"hb": [1.0, 0.0]}),
                      ("covariates", ["age", "age"]), ("resolution", 0.0),
                      ("resolution", "1e-6")],
    "gwas_store": [("sites", ["b", "a"]), ("sites", []), ("build", "")],
    "gwas_counts": [("start", -1), ("stop", 0), ("study", ""), ("variant_list", "")],
    "gwas_pca_gram": [("freq", pack(np.array([0.2, 1.0]))), ("variants", "not base64!"),
                      ("freq", pack(np.array([0.2])))],
    "gwas_ld_pairs": [("pairs", pack(np.array([0, 3]), "<i4")), ("pairs", pack(np.array([1]),
                                                                                "<i4"))],
    "gwas_null": [("beta", pack(np.zeros(3))), ("trait", {"column": "no_such_column"}),
                  ("trait", {"column": "hb", "threshold": math.inf}),
                  ("covariates", ["age", "age"]), ("covariates", ["disease"]),
                  ("pca", {**PCA, "eigenvalues": [-1.0]}), ("pca", {**PCA, "n": 3})],
    "gwas_linear": [("variants", ""), ("missing_variants", "%%"),
                    ("trait", {"column": "hb", "threshold": None, "extra": 1})],
    "gwas_logistic": [("beta", pack(np.zeros((3, 4)))),
                      ("trait", {"column": "hb", "threshold": None})],
    "gwas_firth": [("beta", pack(np.array([math.nan] * 15)))],
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
    "iptw_balance": [("gamma", [0.1, 0.01]), ("gamma", [0.1, math.nan, 0.0]),
                     ("gamma", [0.0, 5.0, 0.0]), ("marginal", 0.0), ("marginal", 1.5),
                     ("max_weight", 0.0), ("max_weight", math.inf), ("treatment", ""),
                     ("design", []), ("grid", [2.0, 1.0]), ("time_mapping", "sideways"),
                     ("resolution", 0.0), ("event_col", "")],
    "iptw_km_table": [("grid", []), ("grid", [-1.0, 1.0]), ("duration_col", ""),
                      ("marginal", -0.4), ("resolution", "1e-6")],
    "iptw_km_influence": [("w_events", [[1.0, 0.0, 2.5]]), ("w_events", [[1.0, 0.0]] * 2),
                          ("w_at_risk", [[9.0, -7.0, 6.0], [8.0, 6.5, 5.0]]),
                          ("w_at_risk", [[9.0, math.inf, 6.0], [8.0, 6.5, 5.0]]),
                          ("resolution", -1e-14)],
    "iptw_cox_sums": [("beta", []), ("beta", [0.1, 0.2]), ("beta", [math.nan]),
                      ("beta", [500.0]), ("ties", "exact"), ("gamma", [0.1])],
    "iptw_cox_robust": [("h", [0.1, 0.0]), ("h", [-0.1, 0.0, 0.2]), ("g", [0.0, math.nan, 0.0]),
                        ("xb", [0.5]), ("hd", None), ("beta", [1e9])],
    "learn_risk_histogram": [("fine_bins", 0), ("fine_bins", 100_001), ("fine_bins", 2.5),
                             ("predictor", {**GBDT_COX, "bounds": [0.2, -0.2]}),
                             ("predictor", {**GBDT_COX, "bounds": [0.0, math.inf]}),
                             ("predictor", {**GBDT_COX, "kind": "svm"}),
                             ("predictor", {**GBDT_COX, "colunm": "age"}),
                             ("predictor", {**GBDT_COX, "design": []}),
                             ("predictor", {**GBDT_COX, "base": math.nan}),
                             ("predictor", {**GBDT_COX, "base": 250.0}),
                             ("predictor", {**GBDT_COX, "trees": [{**SPLIT, "feature": [1, -1, -1]}]}),
                             ("predictor", {**GBDT_COX, "hazard": [0.1, 0.2]}),
                             ("predictor", {**GBDT_COX, "hazard_times": [2.0, 1.0, 3.0]}),
                             ("predictor", {k: v for k, v in GBDT_COX.items() if k != "hazard"}),
                             ("grid", [2.0, 1.0]), ("duration_col", "")],
    "learn_eval_sums": [("censoring_survival", [1.0, 0.9]),
                        ("censoring_survival", [1.0, 1.5, 0.5]),
                        ("censoring_survival", [1.0, math.nan, 0.5]),
                        ("risk_cuts", [0.1, 0.0]), ("decile_cuts", [math.inf]),
                        ("horizon_index", 3), ("horizon_index", -1), ("horizon_index", 0.5),
                        ("brier_index", [2, 0]), ("brier_index", [0, 3]),
                        ("brier_index", [0.5]), ("brier_index", [True]),
                        ("resolution", 0.0)],
    "learn_site_concordance": [("predictor", {"kind": "column", "bounds": [0.0, 1.0]}),
                               ("predictor", ipssm_predictor() | {"bounds": [1.0]}),
                               ("event_col", ""), ("grid", [])],
    "learn_loso_concordance": [("models", {}), ("models", {"": ipssm_predictor()}),
                               ("models", {"a": {"kind": "gbdt"}}),
                               ("models", {"a": {**GBDT_COX, "base": math.inf}}),
                               ("models", [GBDT_COX]), ("grid", [-1.0, 2.0])],
    "combat_moments": [("features", []), ("features", ["f1", "f1"]), ("covariates", ["f1"]),
                       ("bounds", {"f1": [1.0, 0.0], "f2": [0.0, 1.0], "age": [0.0, 100.0]}),
                       ("bounds", {**COMBAT["bounds"], "hb": [0.0, 20.0]}),
                       ("bounds", {"f1": [0.0, 1.0], "f2": [0.0, 1.0]}), ("resolution", 0.0),
                       ("library", "pyradiomics"), ("settings", {"bin_width": -1.0}),
                       ("settings", {"bin_width": 8.0, "colour": "red"})],
    "combat_residuals": [("beta", [[0.01]]), ("beta", [[math.inf, 0.0]]), ("beta", [[1e5, 0.0]]),
                         ("beta", [["a", 0.0]]), ("resolution", -1.0),
                         ("bounds", {**COMBAT["bounds"], "h_f1": [0.0, 1.0]})],
    "combat_apply": [("alpha", [0.5]), ("alpha", [0.5, 1e6]), ("alpha", [math.nan, 0.5]),
                     ("var_pooled", [0.0, 0.01]), ("var_pooled", [2.0, 0.01]),
                     ("beta", [[1e5, 0.0]]), ("beta", [[0.001, 0.0], [0.0, 0.0]]), ("n", -1),
                     ("n", 2.5), ("sites", ["a", "a"]), ("sites", [""]), ("covariates", None),
                     ("bounds", {**COMBAT_APPLY["bounds"], "h_f1": [2.0, -1.0]}),
                     ("bounds", {**COMBAT_APPLY["bounds"], "h_age": [0.0, 1.0]})],
}
"""Per migrated query, values out of range (or not well formed) for one key each."""

def _params_type(name: str) -> type[QueryParams]:
    return get_query(name).typed


MIGRATED = sorted(HUB_PARAMS)


def test_every_query_has_a_hub_mapping_here() -> None:
    assert {q.name for q in registered()} == set(HUB_PARAMS)


def test_a_query_without_typed_parameters_is_not_registered() -> None:
    with pytest.raises(ValueError, match="give it a params_type"):
        Query("untyped_probe", "1", compute=lambda cohort, params: {},
              declare=lambda params: {})
    assert all(isinstance(q.typed, type) and issubclass(q.typed, QueryParams)
               for q in registered())


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
    for key in {*HUB_PARAMS[name], *({"max_patients"} & set(ptype.keys()))}:
        with pytest.raises(InvalidInput, match=f"'{key}'"):
            ptype.from_mapping({**HUB_PARAMS[name], key: object()})


@pytest.mark.parametrize("name", MIGRATED)
def test_out_of_range_refused_naming_the_key(name: str) -> None:
    ptype = _params_type(name)
    bound = [("max_patients", 0), ("max_patients", 10**10), ("max_patients", 2.5)]
    cases = [*(bound if "max_patients" in set(ptype.keys()) else []), *OUT_OF_RANGE.get(name, [])]
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
        # gwas_store: public store declarations only, no patient count to bound
        assert getattr(p, "max_patients", MAX_PATIENTS) == MAX_PATIENTS
    assert "max_patients" not in set(_params_type("gwas_store").keys())


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
