"""Which site refused never reaches the hub: a refusal travels through the secure sum.

Two real site directories (policy, ledger, audit log, the site node) over the in-process
transport; one site's own histogram has a cell below its ``min_cell_size``, the other's has none.
The hub is told that one of the two sites refused under ``min_cell_size``, never which one; every
reply is a masked vector (no refusal envelope); the unmasked value sum is uniformly random (not
the answering site's values); and each site's audit log holds its decision under the request id
the hub's message names.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from refusal_world import HIST, SPEC, _subset
from scipy import stats

from hemafed.cohort.demo import generate
from hemafed.cohort.model import Cohort
from hemafed.demo import build_sites
from hemafed.errors import PolicyRefused
from hemafed.federation.inprocess import InProcessSites
from hemafed.federation.queries import get_query
from hemafed.federation.runtime import SecureFederation
from hemafed.secure.codec import unpack_map
from hemafed.secure.encoding import FixedPointLayout
from hemafed.site.audit import AuditLog
from hemafed.site.store import load_cohort
from hemafed.study.site_runtime import site_handler
from hemafed.study.spec import StudySpec

ROUNDS = 12


def _cohorts() -> dict[str, Cohort]:
    """site01: 150 patients of 55 or older and 20 younger; site02: 150 and 2 (below 5)."""
    full = generate("MDS", 400, 11)
    p = full.patients
    young = list(p.loc[p["age"] < 55, "patient_id"])
    old = list(p.loc[p["age"] >= 55, "patient_id"])
    return {"site01": _subset(full, old[:150] + young[:20]),
            "site02": _subset(full, old[150:300] + young[20:22])}


class Recording:
    """The in-process transport, keeping every reply the hub got."""

    def __init__(self, sites: InProcessSites) -> None:
        self.sites = sites
        self.replies: list[tuple[str, bytes]] = []

    def exchange(self, messages: dict[str, bytes]) -> dict[str, bytes]:
        out = self.sites.exchange(messages)
        self.replies.extend(out.items())
        return out


def _body(envelope: bytes) -> dict[str, bytes]:
    return unpack_map(unpack_map(envelope)["body"])


def _federation(root: Any, cohorts: dict[str, Cohort], spec: StudySpec
                ) -> tuple[Any, Recording, SecureFederation]:
    fed = build_sites(root, cohorts, spec, store_plan=False,
                      policy_overrides={"enforce_min_cell": True})
    transport = Recording(InProcessSites(site_handler, fed.site_configs()))
    hub = SecureFederation(transport.exchange, fed.manifest, spec_sha256=spec.sha256,
                           requester="tester")
    return fed, transport, hub


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Any:
    spec = StudySpec.from_mapping(SPEC)
    cohorts = _cohorts()
    young = {s: int((c.patients["age"] < 55).sum()) for s, c in cohorts.items()}
    assert young == {"site01": 20, "site02": 2}
    fed, transport, hub = _federation(tmp_path_factory.mktemp("refusal-sum"), cohorts, spec)
    errors = []
    for _ in range(ROUNDS):
        with pytest.raises(PolicyRefused) as info:
            hub.secure_sum("numeric_summary", HIST, study=spec.study_id)
        errors.append(info.value)
    return fed, transport, errors


def test_the_hub_learns_how_many_sites_refused_and_the_rule_not_which(refused: Any) -> None:
    fed, transport, errors = refused
    for err in errors:
        text = str(err)
        assert re.fullmatch(r"1 of 2 sites refused: the site policy refused it \(rule "
                            r"'min_cell_size'\) \(the sites' audit logs hold the detail under "
                            r"request [0-9a-f]{32}\)", text), text
        assert not any(site in text for site in fed.site_dirs)
        assert getattr(err, "site", None) == ""
    # every reply the hub got is a masked vector: no refusal envelope from either site
    masked = [(s, _body(e)) for s, e in transport.replies if "vector" in _body(e)]
    assert all(_body(e).get("status") != b"refused" for _, e in transport.replies)
    assert sorted({s for s, _ in masked}) == ["site01", "site02"]
    assert len(masked) == 2 * ROUNDS


def test_the_unmasked_value_sum_is_uniformly_random(refused: Any) -> None:
    from hemafed.privacy.refusal import FLAG_SLOTS  # here: the module imports on main, too

    fed, transport, _ = refused
    query = get_query("numeric_summary")
    layout = FixedPointLayout.from_specs(query.declare(HIST), 2)
    answering = layout.encode(query.run(load_cohort(fed.site_dirs["site01"]), HIST,
                                        site_id="site01"))
    masked = [np.frombuffer(_body(e)["vector"], dtype="<u8") for _, e in transport.replies
              if "vector" in _body(e)]
    vectors: dict[int, list[np.ndarray]] = {}
    for i, vector in enumerate(masked):  # one-shot sums: two replies each
        vectors.setdefault(i // 2, []).append(vector)
    totals = []
    for pair in vectors.values():
        total = pair[0] + pair[1]  # the pairwise masks cancel: this is what the hub unmasks
        assert total.size == layout.size + FLAG_SLOTS
        assert int(total[layout.size:].max()) > 0  # the flag block is set
        values = total[:layout.size]
        assert not np.any(values == answering)  # not the answering site's sum
        totals.append(values)
    # uniform on [0, 2**64): not some fixed function of the answering site's values
    flat = np.concatenate(totals).astype(np.float64) / 2.0**64
    assert stats.kstest(flat, "uniform").pvalue > 1e-4
    assert len({t.tobytes() for t in totals}) == ROUNDS


def test_each_site_audits_its_decision_under_the_named_request(refused: Any) -> None:
    fed, _, errors = refused
    named = re.search(r"request ([0-9a-f]{32})", str(errors[-1]))
    assert named is not None
    entries = {s: [e for e in AuditLog(d / "audit.log").entries()
                   if e["request_id"] == named.group(1)] for s, d in fed.site_dirs.items()}
    assert [e["decision"] for e in entries["site01"]] == ["allowed"]
    assert [e["decision"] for e in entries["site02"]] == ["refused"]
    assert "below min_cell_size 5" in entries["site02"][0]["reason"]
    assert AuditLog(fed.site_dirs["site02"] / "audit.log").verify()
    # both logs grew by the same number of entries: their heads do not tell who refused
    lengths = [len(AuditLog(d / "audit.log").entries()) for d in fed.site_dirs.values()]
    assert lengths[0] == lengths[1]


def test_a_batch_refused_by_one_site_leaves_audit_logs_of_equal_length(tmp_path: Any) -> None:
    """A one-shot batch whose first part one site refuses: the hub reads "1 of 2 sites" and the
    part; the refusing site logs the later part (its participant list and "not answered") so
    both audit heads move by the same number of entries and the next reply tells nothing."""
    spec = StudySpec.from_mapping(SPEC)
    fed, _, hub = _federation(tmp_path, _cohorts(), spec)
    start = {s: len(AuditLog(d / "audit.log").entries()) for s, d in fed.site_dirs.items()}
    with pytest.raises(PolicyRefused) as info:
        hub.secure_sums([("numeric_summary", HIST, None), ("cohort_size", {}, None)],
                        study=spec.study_id)
    assert str(info.value).startswith("1 of 2 sites refused: the site policy refused it (rule "
                                      "'min_cell_size')"), str(info.value)
    grown = {s: len(AuditLog(d / "audit.log").entries()) - start[s]
             for s, d in fed.site_dirs.items()}
    assert grown["site01"] == grown["site02"] > 2, grown
    later = [e for e in AuditLog(fed.site_dirs["site02"] / "audit.log").entries()[start["site02"]:]
             if e["query"].startswith("cohort_size")]
    assert [e["decision"] for e in later] == ["allowed", "refused"]  # participants, not answered
    assert later[-1]["reason"] == "not answered: the batch was refused at part 0"


# --- the flag block alone: what sums of refusing and answering sites read as -----------------


def _summed(*blocks: np.ndarray) -> np.ndarray:
    total = np.zeros_like(blocks[0])
    for block in blocks:
        total += block  # uint64: wraps mod 2**64, as the masked sum does
    return total


def test_flag_blocks_of_different_rules_give_the_codes_and_counts_but_no_name() -> None:
    from hemafed.privacy.refusal import Refusal, flag_block, read_flag_block

    cell, budget = Refusal("policy", "min_cell_size"), Refusal("budget", "s1")
    mixed = read_flag_block(_summed(flag_block(cell), flag_block(budget), flag_block(None),
                                    flag_block(cell)), 4)
    assert mixed is not None
    assert (mixed.refused, mixed.sites, dict(mixed.codes)) == (3, 4, {"policy": 2, "budget": 1})
    assert mixed.name == "" and mixed.part is None
    assert mixed.text() == ("3 of 4 sites refused: for different reasons (codes: policy x2, "
                            "budget x1)")
    # one code, two names: the name is not readable (the sum of two names is no name)
    names = read_flag_block(_summed(flag_block(cell), flag_block(Refusal("policy", "max_n"))), 2)
    assert names is not None and names.codes == (("policy", 2),) and names.part is None
    assert names.refusal == Refusal("policy", "")
    # one code and name, two parts: the check word tells them apart
    parts = read_flag_block(_summed(flag_block(cell, 0), flag_block(cell, 2)), 2)
    assert parts is not None and parts.part is None
    # all agree: name and part are read
    agreed = read_flag_block(_summed(flag_block(cell, 1), flag_block(cell, 1)), 3)
    assert agreed is not None and (agreed.name, agreed.part) == ("min_cell_size", 1)
    assert read_flag_block(_summed(flag_block(None), flag_block(None)), 2) is None


def test_a_flag_block_no_honest_sites_can_sum_to_is_rejected() -> None:
    from hemafed.privacy.refusal import FLAG_SLOTS, Refusal, flag_block, read_flag_block

    cell = flag_block(Refusal("policy", "min_cell_size"))
    with pytest.raises(ValueError, match="counts 3 refusing sites of 2"):
        read_flag_block(_summed(cell, cell, cell), 2)
    named = np.zeros(FLAG_SLOTS, dtype=np.uint64)
    named[-1] = 7  # a check word without any refusing site
    with pytest.raises(ValueError, match="counts no refusing site"):
        read_flag_block(named, 2)
    with pytest.raises(ValueError, match="shape"):
        read_flag_block(cell[:-1], 2)
