"""End-to-end secure aggregation through in-process sites running the real ``site_step``.

References are numpy sums of the sites' plain inputs, computed here independently.
"""

from __future__ import annotations

import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from secagg_helpers import build_sites, constant_compute

from hemafed.errors import BudgetExhausted, InvalidInput, PolicyRefused, ProtocolError
from hemafed.federation.queries import Statistic
from hemafed.secure import (
    FederationManifest,
    HubAggregation,
    HubSession,
    InProcessSites,
    SecureSumSession,
    SiteIdentity,
    encoding,
    run_secure_sum,
    site_step,
)
from hemafed.secure.codec import unpack_map
from hemafed.secure.encoding import FixedPointLayout
from hemafed.secure.protocol import CONSISTENCY, MASKED_INPUT, SETUP, UNMASK


def _agg_id() -> bytes:
    return os.urandom(16)


def _reference(values, sites, name):
    return np.sum([values[s][name] for s in sites], axis=0)


def test_exact_sum_of_ten_sites(mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=7, identities=ten_identities)
    out = sites.secure_sum(_agg_id(), b"request", specs)
    assert out.contributors == tuple(sorted(values)) and out.dropped == ()
    assert out.round_trips == 3  # the session set-up, then two (nobody dropped)
    np.testing.assert_array_equal(out.values["counts"], _reference(values, values, "counts"))
    # each site rounds to 1e-4 exactly representable steps: error at most float rounding
    np.testing.assert_allclose(out.values["score"], _reference(values, values, "score"),
                               rtol=0, atol=1e-9)


def test_payload_reaches_every_site_in_the_first_message(ten_identities) -> None:
    specs = {"n": Statistic((1,), 0, 100)}
    seen: dict[str, bytes] = {}

    def compute_for(site: str):
        def compute(payload: bytes, quorum: int):
            seen[site] = payload
            return {"n": np.array([len(payload)], dtype=float)}, specs
        return compute

    ids = list(ten_identities.values())[:4]
    from hemafed.secure import FederationManifest
    manifest = FederationManifest.build("t", ids, threshold=3)
    sites = InProcessSites(ids, manifest, {i.site_id: compute_for(i.site_id) for i in ids})
    out = sites.secure_sum(_agg_id(), b"query=cohort_size", specs)
    assert set(seen.values()) == {b"query=cohort_size"} and len(seen) == 4
    assert out.values["n"].tolist() == [4 * len(b"query=cohort_size")]


def test_three_of_ten_drop_before_masked_input_and_one_during_unmasking(
        mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    drop = {MASKED_INPUT: {"site01", "site04", "site07"}, UNMASK: {"site09"}}
    sites = build_sites(values, specs, threshold=6, identities=ten_identities, drop_at=drop)
    out = sites.secure_sum(_agg_id(), b"", specs)
    survivors = sorted(set(values) - drop[MASKED_INPUT])
    assert out.contributors == tuple(survivors)
    assert out.dropped == ("site01", "site04", "site07")
    np.testing.assert_array_equal(out.values["counts"], _reference(values, survivors, "counts"))
    np.testing.assert_allclose(out.values["score"], _reference(values, survivors, "score"),
                               atol=1e-9)


def test_a_drop_at_every_step(mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=6, identities=ten_identities,
                        drop_at={SETUP: {"site08"}, MASKED_INPUT: {"site00"},
                                 CONSISTENCY: {"site05"}, UNMASK: {"site06"}})
    out = sites.secure_sum(_agg_id(), b"", specs)
    survivors = sorted(set(values) - {"site08", "site00"})
    # site05 and site06 sent their inputs, then dropped: their masks are removed from shares
    assert out.contributors == tuple(survivors)
    assert out.dropped == ("site00", "site08")
    np.testing.assert_array_equal(out.values["counts"], _reference(values, survivors, "counts"))


def test_too_many_dropping_gives_a_clear_error(mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=7, identities=ten_identities,
                        drop_at={MASKED_INPUT: {f"site0{i}" for i in range(8)}})
    with pytest.raises(ProtocolError, match=r"only 2 of 10 sites answered the 'masked input' "
                                            r"step; the threshold is 7"):
        sites.secure_sum(_agg_id(), b"", specs)


def test_too_few_sites_at_the_first_step(mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=7, identities=ten_identities,
                        drop_at={0: {f"site0{i}" for i in range(2, 10)}})
    with pytest.raises(ProtocolError, match=r"only 2 of 10 sites answered the 'session keys' "
                                            r"step; the threshold is 7"):
        sites.secure_sum(_agg_id(), b"", specs)


def test_hub_checks_modulus_capacity_before_starting() -> None:
    from hemafed.secure import FederationManifest
    ids = [SiteIdentity.generate(f"s{i:04d}") for i in range(2048)]
    manifest = FederationManifest.build("big", ids, threshold=2)
    at_most = {"x": Statistic((1,), 0, 2.0**47 - 1)}  # 2048 * 2**47 = 2**58
    def no_exchange(messages):
        raise AssertionError("no message may be sent")

    with mock.patch.object(encoding, "MODULUS", 2**58), \
            pytest.raises(InvalidInput, match=r"sum of 2048 sites .* does not fit"):
        SecureSumSession(no_exchange, manifest, [i.site_id for i in ids]).secure_sum(
            _agg_id(), b"", at_most)
    with mock.patch.object(encoding, "MODULUS", 2**58), pytest.raises(AssertionError):
        SecureSumSession(no_exchange, manifest, [i.site_id for i in ids[:2047]]).secure_sum(
            _agg_id(), b"", at_most)


def test_policy_refusal_ends_the_aggregation(ten_identities) -> None:
    specs = {"n": Statistic((1,), 0, 10)}
    ids = list(ten_identities.values())[:3]

    def refuse(payload: bytes, quorum: int):
        raise PolicyRefused("site01", "study 'x' is not approved at this site")

    def broke(payload: bytes, quorum: int):
        raise BudgetExhausted("site02", "epsilon budget spent")

    from hemafed.secure import FederationManifest
    manifest = FederationManifest.build("t", ids, threshold=2)
    ok = constant_compute({"n": np.array([1.0])}, specs)
    sites = InProcessSites(ids, manifest, {"site00": ok, "site01": refuse, "site02": ok})
    with pytest.raises(PolicyRefused) as err:
        sites.secure_sum(_agg_id(), b"", specs)
    # an exception without the site node's refusal code travels as a bare internal error:
    # its text (which may quote data) never leaves the site; the refusal goes through the sum,
    # so the hub says how many sites refused, not which
    assert str(err.value).startswith("1 of 3 sites refused: ") and err.value.site == ""
    assert "internal error" in err.value.reason and "site01" not in str(err.value)
    assert "not approved" not in err.value.reason
    refusal = [r for r in sites.received if r.site == "site01" and r.round_no == MASKED_INPUT]
    # the refusing site answered with a masked vector like every other site
    assert b"refused" not in refusal[0].reply and b"vector" in refusal[0].reply
    assert b"not approved" not in refusal[0].reply
    sites = InProcessSites(ids, manifest, {"site00": ok, "site01": ok, "site02": broke})
    with pytest.raises(PolicyRefused, match="1 of 3 sites refused") as err:
        sites.secure_sum(_agg_id(), b"", specs)
    assert "epsilon budget spent" not in str(err.value) and "site02" not in str(err.value)


def test_out_of_bound_value_is_refused_through_the_sum_naming_no_site(ten_identities) -> None:
    specs = {"n": Statistic((2,), 0, 10)}
    values = {s: {"n": np.array([1.0, 2.0])} for s in list(ten_identities)[:3]}
    values["site02"] = {"n": np.array([1.0, 10.5])}
    sites = build_sites(values, specs, threshold=2,
                        identities={s: ten_identities[s] for s in values})
    with pytest.raises(PolicyRefused, match=r"^1 of 3 sites refused: .*data do not fit") as err:
        sites.secure_sum(_agg_id(), b"", specs)
    assert "10.5" not in str(err.value) and "site02" not in str(err.value)


def test_site_rejects_specs_that_differ_from_the_hubs(ten_identities) -> None:
    hub_specs = {"n": Statistic((1,), 0, 10)}
    site_specs = {"n": Statistic((1,), 0, 11)}
    values = {s: {"n": np.array([1.0])} for s in list(ten_identities)[:3]}
    sites = build_sites(values, site_specs, threshold=2,
                        identities={s: ten_identities[s] for s in values})
    with pytest.raises(InvalidInput, match="parameter 'specs' is invalid"):
        sites.secure_sum(_agg_id(), b"", hub_specs)


def test_masked_inputs_look_uniform_and_reveal_no_single_input(ten_identities) -> None:
    specs = {"x": Statistic((20_000,), 0, 1000)}
    rng = np.random.default_rng(5)
    names = list(ten_identities)[:5]
    # very non-uniform inputs: site 0 all zeros, the others small integers
    values = {s: {"x": (rng.integers(0, 3, 20_000) if i else np.zeros(20_000)).astype(float)}
              for i, s in enumerate(names)}
    sites = build_sites(values, specs, threshold=3,
                        identities={s: ten_identities[s] for s in names})
    out = sites.secure_sum(_agg_id(), b"", specs)
    np.testing.assert_array_equal(out.values["x"], _reference(values, names, "x"))
    layout = FixedPointLayout.from_specs(specs, len(names))
    masked = {r.site: np.frombuffer(unpack_map(unpack_map(r.reply)["body"])
                                    ["vector"], dtype="<u8")[:layout.size]
              for r in sites.received if r.round_no == MASKED_INPUT}
    for site, y in masked.items():
        plain = layout.encode(values[site])
        assert np.all(y != plain), site
        # uniform on [0, 2**64): Kolmogorov-Smirnov on y / 2**64, chi-square on the top byte
        assert stats.kstest(y.astype(np.float64) / 2.0**64, "uniform").pvalue > 1e-6
        counts = np.bincount((y >> np.uint64(56)).astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-6
    # even the sum of every masked vector is not the sum: self masks remain until unmasking
    full = np.zeros(20_000, dtype=np.uint64)
    for y in masked.values():
        full += y
    assert np.mean(full == layout.encode(out.values)) < 1e-3  # low = 0: encoded sum
    # unmasking revealed only self-mask shares (every site survived): no pairwise seed at all
    for r in sites.received:
        if r.round_no == UNMASK:
            body = unpack_map(unpack_map(r.reply)["body"])
            assert all(unpack_map(unpack_map(item)["s"]) == {} for item in body.values())


def test_fifty_sites_on_a_sparse_regular_graph() -> None:
    n, k = 50, 8
    rng = np.random.default_rng(7)
    specs = {"v": Statistic((300,), -50, 50, 0.01)}
    values = {f"h{i:02d}": {"v": np.round(rng.uniform(-50, 50, 300), 2)} for i in range(n)}
    sites = build_sites(values, specs, threshold=30, degree=k,
                        drop_at={MASKED_INPUT: {"h03", "h31"}, UNMASK: {"h17"}})
    session = HubSession(sites.manifest, list(values))
    assert all(len(nb) == k for nb in session.graph.values())
    session.receive(sites(session.start()))
    hub = HubAggregation(session, _agg_id(), b"", specs)
    messages = hub.start()
    while messages is not None:
        messages = hub.receive(sites(messages))
    out = hub.result()
    survivors = sorted(set(values) - {"h03", "h31"})
    assert out.contributors == tuple(survivors)
    np.testing.assert_allclose(out.values["v"], _reference(values, survivors, "v"), atol=1e-8)
    # SecAgg+: every site shared secrets with its k neighbours only, not all 49
    masked = [r for r in sites.received if r.round_no == MASKED_INPUT]
    assert len(masked) == n - 2
    assert all(len(unpack_map(unpack_map(unpack_map(r.reply)["body"])
                              ["shares"])) == k for r in masked)


def test_run_secure_sum_with_a_subset_of_the_manifest(mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=3, identities=ten_identities)
    chosen = ["site02", "site03", "site08", "site09"]
    out = run_secure_sum(sites, sites.manifest, _agg_id(), b"", specs, chosen)
    assert out.contributors == tuple(chosen)
    np.testing.assert_array_equal(out.values["counts"], _reference(values, chosen, "counts"))


def test_identity_not_matching_the_manifest_is_refused(ten_identities) -> None:
    specs = {"n": Statistic((1,), 0, 10)}
    values = {s: {"n": np.array([1.0])} for s in list(ten_identities)[:3]}
    sites = build_sites(values, specs, threshold=2,
                        identities={s: ten_identities[s] for s in values})
    sites.identities["site01"] = SiteIdentity.generate("site01")
    with pytest.raises(InvalidInput, match="does not match the one pinned"):
        sites.secure_sum(_agg_id(), b"", specs)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([f"p{i}" for i in range(6)]),
                          st.integers(min_value=0, max_value=4)),
                max_size=3, unique_by=lambda d: d[0]))
def test_any_dropout_pattern_within_the_threshold_gives_the_survivors_sum(drops) -> None:
    names = [f"p{i}" for i in range(6)]
    specs = {"x": Statistic((7,), -5, 10)}
    values = {s: {"x": np.arange(7, dtype=float) - i % 5} for i, s in enumerate(names)}
    drop_at: dict[int, set[str]] = {}
    for site, round_no in drops:
        drop_at.setdefault(round_no, set()).add(site)
    sites = build_sites(values, specs, threshold=3, drop_at=drop_at)
    out = sites.secure_sum(_agg_id(), b"", specs)
    contributors = sorted(s for s in names if s not in sites.dropped_by(MASKED_INPUT))
    assert out.contributors == tuple(contributors)
    np.testing.assert_array_equal(out.values["x"], _reference(values, contributors, "x"))


def test_a_session_serves_many_aggregations_in_two_round_trips_each(mixed_values,
                                                                  ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=7, identities=ten_identities)
    trips = [sites.secure_sum(_agg_id(), b"", specs).round_trips for _ in range(4)]
    assert trips == [3, 2, 2, 2]
    assert not any(r.round_no == UNMASK for r in sites.received)  # nobody dropped
    setups = [r for r in sites.received if r.round_no == SETUP]
    assert len(setups) == 10  # one session: each site advertised its keys once


def test_sessions_survive_a_dropout_and_the_next_sum_reinvites_the_site(
        mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=6, identities=ten_identities,
                        drop_at={MASKED_INPUT: {"site03"}, UNMASK: {"site04"}})
    first = sites.secure_sum(_agg_id(), b"", specs)
    assert first.dropped == ("site03",)
    survivors = sorted(set(values) - {"site03"})
    np.testing.assert_array_equal(first.values["counts"], _reference(values, survivors, "counts"))
    sites.drop_at = {}  # site03 is back
    second = sites.secure_sum(_agg_id(), b"", specs)
    assert first.round_trips == 4  # set-up + 3: a dropout needs the consistency check
    assert second.round_trips == 3 and second.dropped == ()  # a fresh session re-invited it
    np.testing.assert_array_equal(second.values["counts"], _reference(values, values, "counts"))


def test_a_site_that_lost_its_session_refuses_and_the_next_sum_recovers(
        mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    sites = build_sites(values, specs, threshold=6, identities=ten_identities)
    sites.secure_sum(_agg_id(), b"", specs)
    sites.states["site02"].clear()  # e.g. the SuperNode restarted
    with pytest.raises(ProtocolError, match="session this site does not hold"):
        sites.secure_sum(_agg_id(), b"", specs)
    out = sites.secure_sum(_agg_id(), b"", specs)
    assert out.round_trips == 3 and out.dropped == ()


def test_semi_honest_federations_skip_the_consistency_check(mixed_values, ten_identities) -> None:
    values, specs = mixed_values
    ids = ten_identities
    manifest = FederationManifest.build("t", ids.values(), threshold=6, hub_model="semi-honest")
    assert FederationManifest.from_json(manifest.to_json()) == manifest
    sites = InProcessSites(ids.values(), manifest,
                           {s: constant_compute(v, specs) for s, v in values.items()},
                           drop_at={MASKED_INPUT: {"site03"}, CONSISTENCY: {"site07"}})
    first = sites.secure_sum(_agg_id(), b"", specs)
    survivors = sorted(set(values) - {"site03"})
    assert first.contributors == tuple(survivors) and first.round_trips == 3  # set-up + 2
    np.testing.assert_array_equal(first.values["counts"], _reference(values, survivors, "counts"))
    sites.drop_at = {}
    trips = [sites.secure_sum(_agg_id(), b"", specs).round_trips for _ in range(3)]
    assert trips == [3, 2, 2]  # a fresh session after the dropout, then two per sum
    assert not any(r.round_no == UNMASK for r in sites.received)


def test_manifests_that_differ_in_hub_model_do_not_interoperate(ten_identities) -> None:
    ids = list(ten_identities.values())[:3]
    strict = FederationManifest.build("t", ids, threshold=2)
    lax = FederationManifest.build("t", ids, threshold=2, hub_model="semi-honest")
    assert strict.hub_model == "malicious" and strict.fingerprint != lax.fingerprint
    message = HubSession(lax, [i.site_id for i in ids]).start()["site00"]
    with pytest.raises(ProtocolError, match="another federation manifest"):
        site_step(message, {}, ids[0], strict, constant_compute({}, {}))
    with pytest.raises(InvalidInput, match="hub_model must be one of"):
        FederationManifest.build("t", ids, threshold=2, hub_model="trusting")
