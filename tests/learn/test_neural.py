"""Tests of the federated neural survival model (FedAvg / FedProx / DP-SGD) against centralised
training, lifelines and the sites' own privacy ledgers."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("opacus")

from lifelines import CoxPHFitter  # noqa: E402
from lifelines.utils import concordance_index  # noqa: E402

from hemafed.analytics.design import parse_formula  # noqa: E402
from hemafed.cohort.demo import generate  # noqa: E402
from hemafed.cohort.model import Cohort  # noqa: E402
from hemafed.cohort.partition import split_sites  # noqa: E402
from hemafed.errors import InvalidInput  # noqa: E402
from hemafed.federation.api import AggregateResult, DPRequest  # noqa: E402
from hemafed.federation.local import LocalSumFederation  # noqa: E402
from hemafed.federation.queries import get_query  # noqa: E402
from hemafed.learn.neural import (  # noqa: E402
    DPTraining,
    FederatedDeepSurv,
    NetConfig,
    neural_rows,
)
from hemafed.site.audit import AuditLog  # noqa: E402
from hemafed.site.ledger import PrivacyLedger  # noqa: E402
from hemafed.site.node import SiteNode, SiteRequest  # noqa: E402
from hemafed.site.policy import ApprovedStudy, Budget, SitePolicy  # noqa: E402

FORMULA = "age + hb + plt + bm_blast + cyto_ipssr + gene:TP53 + gene:SF3B1"
SHA = "ab" * 32
NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def mds() -> Cohort:
    return generate("MDS", 1500, seed=11)


@pytest.fixture(scope="module")
def holdout() -> Cohort:
    return generate("MDS", 800, seed=12)


def _cindex(model: FederatedDeepSurv, cohort: Cohort) -> float:
    p = cohort.patients
    return float(concordance_index(p["os_time"], -model.predict_risk(cohort), p["os_status"]))


def _naive_cox_loss(g: Any, time: np.ndarray, event: np.ndarray) -> Any:
    """Breslow partial likelihood written out with an explicit risk-set matrix (no sorting)."""
    at_risk = torch.from_numpy((time[None, :] >= time[:, None]).astype(np.float32))
    log_risk = torch.log((at_risk * torch.exp(g)[None, :]).sum(dim=1))
    ev = torch.from_numpy(event.astype(np.float32))
    return -((g - log_risk) * ev).sum() / ev.sum()


def test_one_site_full_batch_fedavg_equals_centralised_training(mds: Cohort) -> None:
    small = Cohort(mds.patients.iloc[:300].reset_index(drop=True), mds.mutations, mds.panels)
    model = FederatedDeepSurv(hidden=(8,), dropout=0.0, lr=0.05, local_epochs=2, rounds=3,
                              seed=5, optimizer="sgd", batch_size=None)
    model.fit(LocalSumFederation([small]), "os_time", "os_status", FORMULA)

    spec = parse_formula(FORMULA)
    rows = neural_rows(small, spec, "os_time", "os_status")
    torch.manual_seed(5)
    net = NetConfig(spec, (8,), 0.0, model.time_grid).build()
    initial = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy().copy()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    x = torch.from_numpy(rows.x)
    for _ in range(6):  # rounds x local epochs, one full-batch step each
        opt.zero_grad()
        _naive_cox_loss(net(x)[:, 0], rows.time, rows.event).backward()
        opt.step()
    central = torch.nn.utils.parameters_to_vector(net.parameters()).detach().numpy()
    start = model.history[0]["train_loss"]
    assert np.abs(central - initial).max() > 1e-3  # training moved the weights
    np.testing.assert_allclose(model.weights_, central, atol=2e-6)
    assert model.history[-1]["train_loss"] < start


def test_linear_network_recovers_the_lifelines_cox_fit(mds: Cohort) -> None:
    formula = "age + hb + bm_blast"
    spec = parse_formula(formula)
    model = FederatedDeepSurv(hidden=(), dropout=0.0, lr=0.05, local_epochs=100, rounds=4,
                              optimizer="adam", batch_size=None, weight_bound=20.0)
    model.fit(LocalSumFederation([mds]), "os_time", "os_status", formula)
    beta_scaled = model.weights_[: spec.width]
    df = mds.patients[["age", "hb", "bm_blast", "os_time", "os_status"]].astype(float)
    cph = CoxPHFitter().fit(df, "os_time", "os_status")
    expected = cph.params_[["age", "hb", "bm_blast"]].to_numpy() * spec.half_width
    np.testing.assert_allclose(beta_scaled, expected, rtol=0.02, atol=2e-3)


def test_ten_site_fedavg_is_close_to_pooled_on_held_out_patients(mds: Cohort,
                                                                   holdout: Cohort) -> None:
    settings: dict[str, Any] = {"lr": 1e-2, "local_epochs": 2, "rounds": 6, "seed": 1}
    sites = split_sites(mds, 10, seed=3, size_skew=1.0)
    fed = FederatedDeepSurv(**settings).fit(LocalSumFederation(sites), "os_time", "os_status",
                                            FORMULA)
    pooled = FederatedDeepSurv(**settings).fit(LocalSumFederation([mds]), "os_time",
                                               "os_status", FORMULA)
    c_fed, c_pooled = _cindex(fed, holdout), _cindex(pooled, holdout)
    assert c_fed > 0.62
    assert abs(c_fed - c_pooled) < 0.03
    # the federated training C-index (binned, secure histograms) tracks the true one
    train_c = float(concordance_index(mds.patients["os_time"], -fed.predict_risk(mds),
                                      mds.patients["os_status"]))
    assert len(fed.history) == 6 and fed.history[-1]["n"] == len(mds)
    assert 0.6 < fed.history[-1]["c_index"] < train_c + 0.05


def test_fedprox_keeps_local_models_closer_to_the_global_one(mds: Cohort) -> None:
    sites = split_sites(mds, 4, seed=2)
    kw: dict[str, Any] = {"lr": 3e-2, "local_epochs": 3, "rounds": 1, "seed": 2}
    fedavg = FederatedDeepSurv(**kw).fit(LocalSumFederation(sites), "os_time", "os_status",
                                         FORMULA)
    fedprox = FederatedDeepSurv(mu=5.0, **kw).fit(LocalSumFederation(sites), "os_time",
                                                  "os_status", FORMULA)
    start = FederatedDeepSurv(**kw | {"lr": 1e-12}).fit(LocalSumFederation(sites), "os_time",
                                                         "os_status", FORMULA).weights_
    step_avg = np.linalg.norm(fedavg.weights_ - start)
    step_prox = np.linalg.norm(fedprox.weights_ - start)
    assert 0 < step_prox < step_avg


def test_training_is_deterministic_by_seed_and_serialises(mds: Cohort, holdout: Cohort) -> None:
    sites = split_sites(mds, 3, seed=4)
    kw: dict[str, Any] = {"rounds": 2, "lr": 1e-2, "dropout": 0.2}
    a = FederatedDeepSurv(seed=7, **kw).fit(LocalSumFederation(sites), "os_time", "os_status",
                                            FORMULA)
    b = FederatedDeepSurv(seed=7, **kw).fit(LocalSumFederation(sites), "os_time", "os_status",
                                            FORMULA)
    c = FederatedDeepSurv(seed=8, **kw).fit(LocalSumFederation(sites), "os_time", "os_status",
                                            FORMULA)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert not np.array_equal(a.weights_, c.weights_)
    text = a.to_json()
    assert isinstance(text, str) and "_federation" not in json.loads(text)["state"]
    again = FederatedDeepSurv.from_json(text)
    np.testing.assert_array_equal(again.weights_, a.weights_)
    np.testing.assert_array_equal(again.predict_risk(holdout), a.predict_risk(holdout))
    assert again.history == a.history and again.to_json() == text
    assert repr(again) == repr(a) == "<FederatedDeepSurv: fitted>"
    with pytest.warns(DeprecationWarning, match="from_json"):  # the former dict document
        former = FederatedDeepSurv.from_json(json.loads(text))
    np.testing.assert_array_equal(former.predict_risk(holdout), a.predict_risk(holdout))


class _NodeFederation:
    """A plain sum of SiteNode answers: each site checks policy, adds noise, charges its ledger."""

    def __init__(self, nodes: list[SiteNode]) -> None:
        self.nodes = nodes

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(n.site_id for n in self.nodes)

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        q = get_query(query)
        total: dict[str, np.ndarray] = {}
        for node in self.nodes:
            req = SiteRequest(uuid.uuid4().hex, study, SHA, q.name, q.version, dict(params),
                              "hub", dp, len(self.nodes), True)
            ans = node.answer(req, guaranteed_contributors=len(self.nodes))
            for k, v in ans.values.items():
                total[k] = total.get(k, 0.0) + v
        return AggregateResult(total, self.site_ids, dp=dp)


def _node(tmp_path: Path, site_id: str, cohort: Cohort, seed: int) -> SiteNode:
    policy = SitePolicy(site_id=site_id, allowed_queries=("neural_dp_gradient@1",),
                        study_budget=Budget(5.0, 1e-5), total_budget=Budget(10.0, 1e-5),
                        studies=(ApprovedStudy("NN1", SHA, dt.date(2026, 12, 31), "IRB 7"),),
                        require_plan=False)
    ledger = PrivacyLedger.from_policy(tmp_path / site_id / "ledger.jsonl", policy,
                                       clock=lambda: NOW)
    audit = AuditLog(tmp_path / site_id / "audit.log", clock=lambda: NOW)
    return SiteNode(cohort, policy, ledger, audit, clock=lambda: NOW,
                    rng=np.random.default_rng(seed))


def test_dp_training_charges_every_site_ledger_what_opacus_reports(tmp_path: Path,
                                                                   mds: Cohort) -> None:
    sites = split_sites(mds, 3, seed=5)
    nodes = [_node(tmp_path, sid, c, i) for i, (sid, c) in enumerate(sites.items())]
    dp = DPTraining(epsilon=2.0, delta=1e-5, max_grad_norm=1.0)
    model = FederatedDeepSurv(hidden=(8,), rounds=4, lr=1e-2, dp=dp)
    assert model.loss == "discrete"
    model.fit(_NodeFederation(nodes), "os_time", "os_status", FORMULA, study="NN1")
    assert model.epsilon_ is not None and model.noise_multiplier_ is not None
    assert 0.98 * dp.epsilon <= model.epsilon_ <= dp.epsilon * 1.001
    for node in nodes:
        charges = node.ledger.charges()
        assert len(charges) == 4
        assert {c.query for c in charges} == {"neural_dp_gradient@1"}
        assert all(math.isclose(c.noise_multiplier, model.noise_multiplier_) for c in charges)
        # the ledger composes with dp_accounting, the model reports Opacus: they must agree
        spent = node.ledger.spent("NN1").epsilon
        assert spent == pytest.approx(model.epsilon_, rel=0.03)
    assert [h["epsilon"] for h in model.history] == sorted(h["epsilon"] for h in model.history)
    assert np.isfinite(model.predict_risk(mds)).all()


def test_dp_with_infinite_epsilon_is_the_noiseless_baseline(mds: Cohort) -> None:
    # LocalSumFederation without dp_seed refuses any DP request: none may be made
    fed = LocalSumFederation(split_sites(mds, 2, seed=1))
    model = FederatedDeepSurv(hidden=(4,), loss="discrete", rounds=2,
                              dp=DPTraining(math.inf)).fit(fed, "os_time", "os_status", "age + hb")
    assert model.epsilon_ == math.inf and model.noise_multiplier_ == 0.0
    assert [name for name, _ in fed.calls] == ["neural_dp_gradient"] * 2


def test_dp_training_needs_a_per_patient_loss() -> None:
    with pytest.raises(InvalidInput, match="loss='discrete'"):
        FederatedDeepSurv(loss="cox", dp=DPTraining(1.0))
    with pytest.raises(InvalidInput, match="local_epochs=1"):
        FederatedDeepSurv(local_epochs=3, dp=DPTraining(1.0))


def test_bad_inputs_give_clear_errors(mds: Cohort) -> None:
    fed = LocalSumFederation(split_sites(mds, 2, seed=1))
    with pytest.raises(InvalidInput, match="'not_a_column' is not a cohort schema column"):
        FederatedDeepSurv(rounds=1).fit(fed, "os_time", "os_status", "age + not_a_column")
    with pytest.raises(InvalidInput, match="duration_col 'survival'"):
        FederatedDeepSurv(rounds=1).fit(fed, "survival", "os_status", "age")
    empty = Cohort(mds.patients.assign(os_time=np.nan).iloc[:20].reset_index(drop=True),
                   mds.mutations, mds.panels)
    fed_empty = LocalSumFederation({"a": mds, "b": empty})
    with pytest.raises(InvalidInput, match="no complete-case rows"):
        FederatedDeepSurv(rounds=1).fit(fed_empty, "os_time", "os_status", "age + hb")
    no_col = Cohort(mds.patients.drop(columns=["hb"]), mds.mutations, mds.panels)
    with pytest.raises(InvalidInput, match="'hb' is not in the site's cohort"):
        FederatedDeepSurv(rounds=1).fit(LocalSumFederation([no_col]), "os_time", "os_status",
                                        "age + hb")
    with pytest.raises(InvalidInput, match="not fitted"):
        FederatedDeepSurv().predict_risk(mds)
