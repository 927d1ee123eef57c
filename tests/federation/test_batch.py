"""Batched secure sums: several statistics of one step in one aggregation (one round trip).

Each part is answered at every site exactly as if sent alone: the sums equal the separate
requests' (and the plain pooled sums), the audit logs and ledgers after a batch equal those after
the same requests sent one after another (the DP part charged once), a refused part refuses the
batch naming the rule, a site dropping during a batch raises ``SitesChanged`` like a single sum,
and the Cox fit carries its concordance with its last Newton round (one exchange fewer, the same
numbers, lifelines' pooled fit).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.errors import HemafedError, PolicyRefused, SitesChanged
from hemafed.federation.api import DPRequest
from hemafed.federation.inprocess import InProcessSites
from hemafed.federation.local import LocalSumFederation
from hemafed.federation.runtime import SecureFederation
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger
from hemafed.site.policy import SitePolicy
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

FORMULA = ["age", "hb", "bm_blast"]
SPEC = {"study_id": "batch-test", "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": " + ".join(FORMULA)}]}
GRID = {"duration_col": "os_time", "event_col": "os_status", "steps_per_unit": 365.25,
        "max_time": 60.0}
DP = DPRequest(epsilon=0.5, delta=1e-6)


def _sites(root: Path, n: int = 5, **kw: Any) -> Any:
    cohorts = split_sites(generate("MDS", 600, 7), n, 7, size_skew=0.4)
    spec = StudySpec.from_mapping(SPEC)
    return build_sites(root, cohorts, spec, **kw), spec


def _open(fed: Any, spec: StudySpec, **kw: Any) -> tuple[InProcessSites, SecureFederation]:
    local = InProcessSites(site_handler, fed.site_configs(), **kw)
    secure = SecureFederation(local.exchange, fed.manifest, site_ids=local.site_ids,
                              spec_sha256=spec.sha256, requester="tester")
    return local, secure


def _state(fed: Any) -> dict[str, Any]:
    """Each site's audit entries (without ids, times, references, hashes) and ledger charges."""
    out = {}
    for site, d in fed.site_dirs.items():
        entries = [(e["query"], e["params"], e["decision"], e["epsilon"], e["delta"],
                    re.sub(r"ref [0-9a-f]+", "ref", e["reason"]))
                   for e in AuditLog(d / "audit.log").entries()]
        policy = SitePolicy.load(d / "policy.yaml")
        charges = [(c.query, c.epsilon, c.delta)
                   for c in PrivacyLedger.from_policy(d / "ledger.jsonl", policy).charges()]
        out[site] = (entries, charges)
    return out


def _plain(values: dict[str, np.ndarray]) -> dict[str, list[float]]:
    return {k: np.asarray(v).ravel().tolist() for k, v in values.items()}


def test_a_batch_returns_exactly_the_separate_sums_in_one_round_trip(tmp_path: Path) -> None:
    fed, spec = _sites(tmp_path / "a")
    local, secure = _open(fed, spec)
    parts: list[Any] = [("time_histogram", GRID, None), ("cohort_size", {}, None)]
    alone = [secure.secure_sum(q, p, study=spec.study_id) for q, p, _ in parts]
    before = local.count
    batch = secure.secure_sums(parts, study=spec.study_id)
    assert local.count - before == 1  # one exchange for both (the session was set up)
    assert [r.round_trips for r in batch] == [1, 0]
    assert [_plain(r.values) for r in batch] == [_plain(r.values) for r in alone]
    # and the plain pooled sums (which could disagree)
    plain = LocalSumFederation({s: load_cohort(d) for s, d in fed.site_dirs.items()})
    for (q, p, _), r in zip(parts, batch, strict=True):
        expect = plain.secure_sum(q, p).values
        for k, v in expect.items():
            np.testing.assert_allclose(r[k], v, rtol=0, atol=1e-9)
    assert batch[1]["n"][0] == 600
    assert all(r.sites == tuple(sorted(fed.site_dirs)) for r in batch)


def test_audit_and_ledger_after_a_batch_equal_the_separate_requests(tmp_path: Path) -> None:
    """Two identical site sets: one gets the requests one by one, the other one batch."""
    parts: list[Any] = [("cohort_size", {}, DP), ("time_histogram", GRID, None)]
    states, noise = [], []
    for name, batched in (("separate", False), ("batched", True)):
        fed, spec = _sites(tmp_path / name)
        _, secure = _open(fed, spec)
        start = _state(fed)
        res = (secure.secure_sums(parts, study=spec.study_id) if batched else
               [secure.secure_sum(q, p, study=spec.study_id, dp=dp) for q, p, dp in parts])
        noise.append(res[0].noise_std)
        after = _state(fed)
        # the DP part is charged once at every site, the non-DP part not at all
        for site in after:
            assert len(after[site][1]) == len(start[site][1]) + 1
            assert after[site][1][-1][1] == pytest.approx(0.5)
        states.append(after)
    assert states[0] == states[1]
    assert noise[0] == noise[1] and noise[0]["n"] > 0


def test_a_refused_part_refuses_the_batch_naming_the_rule(tmp_path: Path) -> None:
    """A part outside the approved plan: the batch is refused with the rule's name (no value;
    how many sites refused, not which) and the sites' state equals that after the same requests
    sent one by one (the hub stops at the first refusal either way), but for one "not
    answered" audit entry and one participants record per part after the refused one (so a
    site's audit log grows by the same number of entries, refusing or not); nothing is charged
    for the refused part."""
    # a valid request the plan does not imply (an unknown key such as a filter is already
    # refused by the hub's own typed check, before anything is sent)
    bad = ("cohort_size", {"max_patients": 12345}, None)
    parts: list[Any] = [("cohort_size", {}, DP), bad, ("time_histogram", GRID, None)]
    states, errors = [], []
    for name, batched in (("separate", False), ("batched", True)):
        fed, spec = _sites(tmp_path / name)
        _, secure = _open(fed, spec, raise_errors=True)
        start = _state(fed)
        with pytest.raises(HemafedError) as info:
            if batched:
                secure.secure_sums(parts, study=spec.study_id)
            else:
                for q, p, dp in parts:
                    secure.secure_sum(q, p, study=spec.study_id, dp=dp)
        errors.append(info.value)
        after = _state(fed)
        for site in after:  # the DP part before the refused one is charged once, as alone
            assert len(after[site][1]) == len(start[site][1]) + 1
            entries = after[site][0][len(start[site][0]):]
            unanswered = [e for e in entries if e[5].startswith("not answered")]
            assert len(unanswered) == (1 if batched else 0)  # the part after the refused one
            assert not unanswered or unanswered[0][5] == ("not answered: the batch was "
                                                          "refused at part 1")
            # and, before it, that part's participant list, as an answering site logs it
            unanswered += [e for e in entries if e[5].startswith("participants ")
                           and any(e[:2] == u[:2] for u in unanswered)]
            assert len(unanswered) == (2 if batched else 0)
            new = [e[2] for e in entries if e not in unanswered]
            assert new[0] == "allowed" and new[-1] == "refused" and new.count("refused") == 1
            after[site] = ([e for e in after[site][0] if e not in unanswered], after[site][1])
        states.append(after)
    assert states[0] == states[1]
    assert type(errors[0]) is type(errors[1])
    assert isinstance(errors[1], PolicyRefused)
    text = [re.sub(r"request [0-9a-f]+", "request ref", str(e)) for e in errors]
    assert text[0] == text[1]
    # the rule's name and how many sites, never a site, a count of patients or a value
    assert text[1] == ("5 of 5 sites refused: the request is outside the approved study plan "
                       "('max_patients') (the sites' audit logs hold the detail under request ref)")


def test_a_site_dropping_during_a_batch_raises_sites_changed_like_a_single_sum(
        tmp_path: Path) -> None:
    fed, spec = _sites(tmp_path / "s", policy_overrides={"refuse_differencing": False})
    gone = sorted(fed.site_dirs)[3]
    survivors = tuple(s for s in sorted(fed.site_dirs) if s != gone)
    outcomes = []
    for batched in (False, True):
        # exchange 0 sets the session up, 1 is the first sum over everyone; the site is away
        # from the second step (exchange 2) on, in both cases
        _, secure = _open(fed, spec, drop=lambda i, s: s == gone and i >= 2)
        secure.secure_sum("cohort_size", {}, study=spec.study_id)
        with pytest.raises(SitesChanged) as info:
            if batched:
                secure.secure_sums([("time_histogram", GRID, None), ("cohort_size", {}, None)],
                                   study=spec.study_id)
            else:
                secure.secure_sum("time_histogram", GRID, study=spec.study_id)
        outcomes.append((info.value.fixed, info.value.survivors))
        # the restart over the survivors: a batch sums over exactly them
        again = secure.restricted_to(info.value.survivors).secure_sums(
            [("cohort_size", {}, None), ("time_histogram", GRID, None)], study=spec.study_id)
        assert again[0].sites == survivors
        n = sum(len(load_cohort(fed.site_dirs[s]).patients) for s in survivors)
        assert again[0]["n"][0] == n < 600
    assert outcomes[0] == outcomes[1] == (tuple(sorted(fed.site_dirs)), survivors)


class _OneByOne:
    """A federation without ``secure_sums``: every statistic travels alone."""

    def __init__(self, inner: SecureFederation) -> None:
        self.inner = inner

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self.inner.site_ids

    def secure_sum(self, *a: Any, **kw: Any) -> Any:
        return self.inner.secure_sum(*a, **kw)


def test_the_cox_fit_carries_its_concordance_with_the_last_newton_round(tmp_path: Path) -> None:
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index

    from hemafed.analytics.cox import FederatedCoxPH

    fed, spec = _sites(tmp_path / "c", n=3)
    fits, counts = [], []
    for batched in (False, True):
        local, secure = _open(fed, spec)
        cph = FederatedCoxPH().fit(secure if batched else _OneByOne(secure), "os_time",
                                   "os_status", " + ".join(FORMULA), study=spec.study_id)
        fits.append(cph)
        counts.append(local.count)
    # set-up + time grid + Newton rounds + concordance, then the concordance in the last round
    assert counts[1] == counts[0] - 1
    assert counts[0] == 2 + fits[0].rounds + 1 and counts[1] == 2 + fits[1].rounds
    assert counts[1] <= 8
    np.testing.assert_array_equal(fits[0].params_.to_numpy(), fits[1].params_.to_numpy())
    assert fits[0].concordance_index_ == fits[1].concordance_index_
    frame = pd.concat([load_cohort(d).patients for d in fed.site_dirs.values()], ignore_index=True)
    data = frame[[*FORMULA, "os_time", "os_status"]].astype(float).dropna()
    pooled = CoxPHFitter().fit(data, "os_time", "os_status",
                               fit_options={"precision": 1e-14, "r_precision": 1e-15})
    np.testing.assert_allclose(fits[1].params_.to_numpy(), pooled.params_.to_numpy(), rtol=1e-6)
    c = concordance_index(data["os_time"], -pooled.predict_partial_hazard(data), data["os_status"])
    assert fits[1].concordance_index_ == pytest.approx(c, abs=2e-3)
