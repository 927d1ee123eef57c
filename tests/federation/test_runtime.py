"""The runtime end to end: real site directories (policy, ledger, audit), secure aggregation,
and the study runner, over the in-process transport and Flower simulation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites, run_study_on
from hemafed.errors import PolicyRefused, ProtocolError
from hemafed.federation.api import DPRequest
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.queries import get_query
from hemafed.federation.runtime import SecureFederation
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.policy import SitePolicy
from hemafed.site.store import load_cohort
from hemafed.site.studies import store_spec
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

SPEC = {
    "study_id": "rt-test", "requester": "tester", "analyses": [
        {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
         "formula": "age + hb + bm_blast + gene:TP53"},
        {"id": "km", "kind": "km", "duration": "os_time", "event": "os_status",
         "group": "ipssm_category"},
    ]}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cohort = generate("MDS", 800, 11)
    sites = split_sites(cohort, 5, 11, size_skew=0.5)
    spec = StudySpec.from_mapping(SPEC)
    root = tmp_path_factory.mktemp("sites")
    return build_sites(root, sites, spec), spec


@pytest.fixture
def fresh_federation(tmp_path: Any) -> Any:
    """The same sites, with no release yet: a site lets a study's non-DP releases happen over
    one participant set only, so a test of a dropout needs a study no other test released."""
    sites = split_sites(generate("MDS", 800, 11), 5, 11, size_skew=0.5)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(tmp_path / "sites", sites, spec), spec


def _secure(federation: Any, spec: StudySpec, body: Any, **kw: Any) -> Any:
    fed, _ = federation, None

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        secure = SecureFederation(exchange, fed.manifest, site_ids=site_ids,
                                  spec_sha256=spec.sha256, requester="tester")
        return body(secure)

    return run_in_process(hub, site_handler, fed.site_configs(), {}, **kw)


def test_secure_study_equals_plain_sums_and_pooled_lifelines(federation: Any) -> None:
    from lifelines import CoxPHFitter

    fed, spec = federation
    results = run_study_on("inprocess", spec, fed)
    cox = next(a for a in results["analyses"] if a["id"] == "cox")
    assert cox["status"] == "ok", cox.get("error")
    # one round trip per sum (one-shot: nobody dropped), plus one if the study's
    # secure-aggregation session was set up during this analysis
    sums = cox["provenance"]["secure sums"]
    assert cox["provenance"]["round trips"] in (sums, sums + 1)
    table = pd.DataFrame(cox["tables"]["summary"]["data"], columns=cox["tables"]["summary"]["columns"])
    # pooled reference on the same (pseudonymised) site cohorts
    pooled = pd.concat([load_cohort(d).patients for d in fed.site_dirs.values()], ignore_index=True)
    cohorts = [load_cohort(d) for d in fed.site_dirs.values()]
    tp53 = pd.concat([c.gene_matrix(["TP53"])["TP53"].reset_index(drop=True) for c in cohorts],
                     ignore_index=True)
    frame = pd.DataFrame({"age": pooled["age"].astype(float), "hb": pooled["hb"].astype(float),
                          "bm_blast": pooled["bm_blast"].astype(float),
                          "TP53": tp53.astype(float),
                          "T": pooled["os_time"].astype(float),
                          "E": pooled["os_status"].astype(float)}).dropna()
    ref = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-14, "r_precision": 1e-15})
    np.testing.assert_allclose(table["coef"].to_numpy(dtype=float), ref.params_.to_numpy(),
                               rtol=1e-6)
    np.testing.assert_allclose(table["se(coef)"].to_numpy(dtype=float),
                               ref.standard_errors_.to_numpy(), rtol=1e-6)
    km = next(a for a in results["analyses"] if a["id"] == "km")
    assert km["status"] == "ok" and km["stats"]["logrank_p"] < 1e-6


def test_every_site_audits_and_nothing_else_leaves(federation: Any) -> None:
    fed, spec = federation
    n = _secure(fed, spec, lambda f: f.secure_sum("cohort_size", {}, study=spec.study_id)["n"][0])
    assert n == sum(len(load_cohort(d)) for d in fed.site_dirs.values())
    for d in fed.site_dirs.values():
        log = AuditLog(d / "audit.log")
        assert log.verify()
        last = log.entries()[-1]
        assert last["query"] == "cohort_size@1" and last["decision"] == "allowed"
        assert "patient" not in json.dumps(last["params"]).lower()


def test_unapproved_study_is_refused_by_the_site_and_audited(federation: Any) -> None:
    fed, spec = federation
    with pytest.raises(PolicyRefused, match=r"rule 'study_not_approved'"):
        _secure(fed, spec, lambda f: f.secure_sum("cohort_size", {}, study="other-study"),
                raise_errors=True)
    for d in fed.site_dirs.values():
        last = AuditLog(d / "audit.log").entries()[-1]
        assert last["decision"] == "refused" and last["study"] == "other-study"


def _charges(fed: Any) -> dict[str, int]:
    out = {}
    for site, d in fed.site_dirs.items():
        policy = SitePolicy.load(d / "policy.yaml")
        out[site] = len(PrivacyLedger.from_policy(d / "ledger.jsonl", policy).charges())
    return out


@pytest.mark.parametrize("shares", ["all", "threshold"])
def test_dp_release_is_charged_at_every_site_with_the_reported_noise(federation: Any,
                                                                     shares: str) -> None:
    fed, spec = federation
    dp = DPRequest(epsilon=0.5, delta=1e-6)
    before = _charges(fed)

    def body(f: Any) -> Any:
        f.noise_shares = shares
        return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in
                f.secure_sum("cohort_size", {}, study=spec.study_id, dp=dp).noise_std.items()}

    res = _secure(fed, spec, body)
    from hemafed.privacy.calibration import noise_multiplier_for

    sigma = noise_multiplier_for(0.5, 1e-6)  # sensitivity 1
    if shares == "all":
        # each of the 5 sites adds sigma^2 / 5: the released sum carries exactly sigma^2
        assert res["n"] == pytest.approx(sigma, rel=1e-9)
    else:
        # each adds sigma^2 / t (t = 4): 5/4 sigma^2, at least sigma^2 whenever >= t survive
        assert res["n"] == pytest.approx(sigma * np.sqrt(5 / fed.manifest.threshold), rel=1e-9)
    assert _charges(fed) == {s: n + 1 for s, n in before.items()}
    for d in fed.site_dirs.values():
        policy = SitePolicy.load(d / "policy.yaml")
        charges = PrivacyLedger.from_policy(d / "ledger.jsonl", policy).charges()
        assert charges[-1].epsilon == pytest.approx(0.5)


def test_dp_release_over_all_sites_is_retried_once_after_a_dropout(federation: Any) -> None:
    """With noise shares of sigma^2 / n the sites refuse to unmask a sum missing a site (it would
    carry too little noise); the hub retries once in a fresh session. The first attempt is
    charged at the sites that computed it: sites charge before they mask."""
    fed, spec = federation
    late = sorted(fed.site_dirs)[2]
    before = _charges(fed)
    dp = DPRequest(epsilon=0.5, delta=1e-6)
    res = _secure(fed, spec, lambda f: list(
        f.secure_sum("cohort_size", {}, study=spec.study_id, dp=dp).sites),
        drop=lambda i, s: i == 1 and s == late)  # exchange 1 = the first masked input
    assert res == sorted(fed.site_dirs)
    assert _charges(fed) == {s: n + (1 if s == late else 2) for s, n in before.items()}


def test_a_hub_asking_for_thinner_noise_shares_is_refused_and_audited(federation: Any) -> None:
    from hemafed.privacy.calibration import noisy_specs
    from hemafed.secure import SecureSumSession
    from hemafed.site.request import SiteRequest

    fed, spec = federation
    dp = DPRequest(epsilon=0.5, delta=1e-6)
    before = _charges(fed)

    def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
        # 5 sites, quorum t = 4, but each site is asked for 1/50 of the variance
        request = SiteRequest("thin-1", spec.study_id, spec.sha256, "cohort_size", "1", {},
                              "tester", dp, 50, True)
        specs = noisy_specs({"n": get_query("cohort_size").declare({})["n"]}, dp, 50)
        return SecureSumSession(exchange, fed.manifest, site_ids).secure_sum(
            b"0123456789abcdef", request.to_json(), specs)

    with pytest.raises(PolicyRefused, match="rule 'noise_share_divisor'"):
        run_in_process(hub, site_handler, fed.site_configs(), {}, raise_errors=True)
    assert _charges(fed) == before
    refused = [AuditLog(d / "audit.log").entries()[-1] for d in fed.site_dirs.values()]
    assert any(e["decision"] == "refused" and "1/50" in e["reason"] for e in refused)


def test_three_of_five_sites_answering_is_below_threshold_and_fails(federation: Any) -> None:
    fed, spec = federation
    from hemafed.errors import ProtocolError

    dropped = sorted(fed.site_dirs)[:2]
    assert fed.manifest.threshold == 4
    with pytest.raises(ProtocolError, match="threshold"):
        _secure(fed, spec, lambda f: f.secure_sum("cohort_size", {}, study=spec.study_id)["n"][0],
                drop=lambda i, s: i >= 1 and s in dropped)  # from the first sum on


def test_one_site_dropping_mid_aggregation_gives_the_survivors_exact_sum(fresh_federation: Any
                                                                          ) -> None:
    fed, spec = fresh_federation
    gone = sorted(fed.site_dirs)[0]
    n = _secure(fed, spec, lambda f: f.secure_sum("cohort_size", {}, study=spec.study_id)["n"][0],
                # exchanges: 0 set-up, 1 one-shot sum (gone is missing: repeated), 2 set-up,
                # 3 masked input (gone is missing again, after advertising its keys: its masks
                # with the survivors are recovered from their shares)
                drop=lambda i, s: i in (1, 3) and s == gone)
    expected = sum(len(load_cohort(d)) for s, d in fed.site_dirs.items() if s != gone)
    assert n == expected


@pytest.mark.slow
def test_simulation_and_in_process_give_identical_results(federation: Any) -> None:
    fed, spec = federation
    sim = run_study_on("sim", spec, fed)
    inproc = run_study_on("inprocess", spec, fed)
    for a, b in zip(sim["analyses"], inproc["analyses"], strict=True):
        assert a["status"] == b["status"] == "ok"
        assert a["tables"] == b["tables"]
        assert a.get("curves") == b.get("curves")


def test_local_sum_and_secure_runtime_agree_on_the_same_sites(federation: Any) -> None:
    fed, spec = federation
    from hemafed.study.derived import with_derived_scores
    from hemafed.study.runner import run_study

    local = LocalSumFederation({s: with_derived_scores(load_cohort(d))
                                for s, d in fed.site_dirs.items()})
    plain = run_study(spec, local)
    secure = run_study_on("inprocess", spec, fed)
    for a, b in zip(plain["analyses"], secure["analyses"], strict=True):
        if a["kind"] == "km":
            for ca, cb in zip(a["curves"], b["curves"], strict=True):
                np.testing.assert_allclose(ca["y"], cb["y"], atol=1e-12)
        else:
            np.testing.assert_allclose(
                np.array(a["tables"]["summary"]["data"], dtype=float),
                np.array(b["tables"]["summary"]["data"], dtype=float), rtol=1e-9)


def test_expired_study_is_refused(federation: Any, tmp_path: Path) -> None:
    fed, spec = federation
    _site, site_dir = next(iter(fed.site_dirs.items()))
    policy = yaml.safe_load((site_dir / "policy.yaml").read_text())
    original = (site_dir / "policy.yaml").read_text()
    policy["studies"][0]["expires"] = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    (site_dir / "policy.yaml").write_text(yaml.safe_dump(policy))
    try:
        with pytest.raises(PolicyRefused, match="expired"):
            _secure(fed, spec, lambda f: f.secure_sum("cohort_size", {}, study=spec.study_id),
                    raise_errors=True)
    finally:
        (site_dir / "policy.yaml").write_text(original)


@pytest.mark.deploy
def test_the_same_spec_runs_unchanged_on_a_localhost_deployment(federation: Any) -> None:
    """SuperLink + one SuperNode per site (TLS, node authentication), secure aggregation."""
    fed, _ = federation
    spec = StudySpec.from_mapping({
        "study_id": "rt-deploy", "requester": "tester", "analyses": [
            {"id": "size", "kind": "describe", "columns": ["sex"]}]})
    # the sites approved the module's spec; approve this one too (a new hash)
    for d in fed.site_dirs.values():
        policy = yaml.safe_load((d / "policy.yaml").read_text())
        if all(st["study_id"] != "rt-deploy" for st in policy["studies"]):
            policy["studies"].append({**policy["studies"][0], "spec_sha256": spec.sha256,
                                      "study_id": "rt-deploy"})
            (d / "policy.yaml").write_text(yaml.safe_dump(policy))
        store_spec(d, spec)  # the plan binds: the site derives it from the stored text
    deployed = run_study_on("deploy", spec, fed)
    inproc = run_study_on("inprocess", spec, fed)
    assert deployed["analyses"][0]["status"] == "ok", deployed["analyses"][0].get("error")
    assert deployed["analyses"][0]["tables"] == inproc["analyses"][0]["tables"]
    assert deployed["analyses"][0]["provenance"]["round trips"] == 2  # session set-up + 1


def test_a_dropout_in_a_one_shot_sum_is_repeated_with_dropout_recovery(fresh_federation: Any
                                                                        ) -> None:
    federation = fresh_federation
    """Sums are one-shot (one round trip) while every site answers. A site missing one makes
    it unrecoverable: the federation repeats it once in a fresh session with dropout recovery,
    which it keeps from then on, so a later dropout costs no repeat; but that later sum covers
    other sites than the first, so it raises SitesChanged with the survivors instead of
    returning (same sites, every round)."""
    from hemafed.errors import SitesChanged

    fed, spec = federation
    late = sorted(fed.site_dirs)[3]
    # requests of their own (the sites release one non-DP request over one set of sites only,
    # and other tests of this module sum cohort_size over other sets)
    levels = {"column": "ipssm_category", "levels": ["Very Low", "Low", "Moderate Low",
                                                     "Moderate High", "High", "Very High"]}
    size = {"max_patients": 1_000_000}

    def total(r: Any) -> float:
        return float(r["n"][0]) if "n" in r.values else float(
            r["counts"].sum() + r["missing"][0] + r["other"][0])

    # exchanges: 0 set-up, 1 one-shot sum (late is missing), 2 set-up, 3-4 recoverable sum;
    # then 5 masked input of the second sum (late is missing again), 6-7 check and unmasking

    def body(f: Any) -> Any:
        r = f.secure_sum("category_counts", levels, study=spec.study_id)
        exchanges = f._sums.exchanges
        try:
            f.secure_sum("cohort_size", size, study=spec.study_id)
        except SitesChanged as exc:  # with DP or refuse_differencing: false
            return [list(r.sites), r.round_trips, [total(r)]], [
                list(exc.survivors), f._sums.exchanges - exchanges]
        except ProtocolError:
            # the sites refuse to release this study's second non-DP sum over fewer sites
            # than its first (the participants rule, site-side); nothing is released
            return [list(r.sites), r.round_trips, [total(r)]], "refused by the sites"
        return None

    res = _secure(fed, spec, body, drop=lambda i, s: s == late and i in (1, 5))
    sizes = {s: len(load_cohort(d).patients) for s, d in fed.site_dirs.items()}
    first, second = res
    assert first == [sorted(fed.site_dirs), 5, [float(sum(sizes.values()))]]
    # the first request again without `late` would give its counts by difference: refused
    with pytest.raises(ProtocolError):
        _secure(fed, spec, lambda f: f.secure_sum("category_counts", levels,
                                                  study=spec.study_id),
                drop=lambda i, s: s == late and i >= 1)
    assert second == "refused by the sites"
