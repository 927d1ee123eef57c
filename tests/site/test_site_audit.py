"""Tests of the hash-chained audit log: every kind of tampering is caught and located."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from hemafed.errors import InvalidInput
from hemafed.site.audit import GENESIS, AuditLog, sanitise_params

CET = dt.timezone(dt.timedelta(hours=1))


def _clock() -> dt.datetime:
    return dt.datetime(2026, 6, 1, 13, 30, tzinfo=CET)


def _log(tmp_path: Path, n: int = 5, key: bytes | None = None) -> AuditLog:
    log = AuditLog(tmp_path / "audit.log", key=key, clock=_clock)
    for i in range(n):
        log.append(requester="alice", study="S1", query="cohort_size@1", params={"i": i},
                   allowed=i % 2 == 0, reason=f"reason {i}", epsilon=0.1 * i, delta=1e-6,
                   request_id=f"r{i}")
    return log


def _lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def _write(log: AuditLog, lines: list[str]) -> None:
    log.path.write_text("".join(lines))


def test_entries_are_chained_by_hand_computed_sha256(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    first, second = log.entries()
    assert first["seq"] == 1 and first["prev_hash"] == GENESIS
    assert first["time"] == "2026-06-01T12:30:00+00:00"  # converted to UTC
    assert first["decision"] == "allowed" and second["decision"] == "refused"
    body = {k: v for k, v in first.items() if k != "hash"}
    by_hand = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                             .encode()).hexdigest()
    assert first["hash"] == by_hand
    assert second["prev_hash"] == first["hash"]
    report = log.verify()
    assert report.ok and report.entries == 2 and "intact" in str(report)


def test_appends_never_rewrite_earlier_bytes(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    before = log.path.read_bytes()
    _log(tmp_path, 1)
    after = log.path.read_bytes()
    assert after.startswith(before) and after.count(b"\n") == 3
    assert oct(log.path.stat().st_mode & 0o777) == "0o600"


def test_edit_is_caught(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    lines[2] = lines[2].replace("reason 2", "reason X")
    _write(log, lines)
    report = log.verify()
    assert not report.ok and report.bad_line == 3 and "edited" in report.reason


def test_edit_with_recomputed_hash_breaks_the_next_link(tmp_path: Path) -> None:
    log = _log(tmp_path)
    lines = _lines(log)
    entry = json.loads(lines[2])
    assert entry["decision"] == "allowed"
    entry["decision"] = "refused"
    body = {k: v for k, v in entry.items() if k != "hash"}
    entry["hash"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                                   .encode()).hexdigest()
    lines[2] = json.dumps(entry) + "\n"
    _write(log, lines)
    report = log.verify()
    assert not report.ok and report.bad_line == 4 and "prev_hash" in report.reason


def test_hmac_catches_a_fully_recomputed_chain(tmp_path: Path) -> None:
    key = b"k" * 32
    log = _log(tmp_path, 3, key=key)
    assert log.verify().ok
    # rebuild the whole chain without the key after editing entry 2
    lines, prev = [], GENESIS
    for i, entry in enumerate(log.entries()):
        if i == 1:
            entry["reason"] = "nothing happened"
        entry["prev_hash"] = prev
        body = {k: v for k, v in entry.items() if k not in ("hash", "hmac")}
        entry["hash"] = prev = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        lines.append(json.dumps(entry) + "\n")
    _write(log, lines)
    log.head_path.write_text(json.dumps({"seq": 3, "hash": prev}))
    assert AuditLog(log.path).verify().ok  # without the key the chain looks fine...
    report = log.verify()  # ...with the key it does not
    assert not report.ok and report.bad_line == 2 and "HMAC" in report.reason


@pytest.mark.parametrize(("mutate", "bad_line", "needle"), [
    (lambda ls: ls[:1] + ls[2:], 2, "sequence number 3 where 2"),       # deletion in the middle
    (lambda ls: ls[:2] + ls[1:], 3, "sequence number 2 where 3"),       # insertion (replay)
    (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], 2, "sequence number 3"),  # reordering
    (lambda ls: ls[:-1], 5, "cut from the end"),                         # deletion at the end
    (lambda ls: [ls[0], "{oops\n", *ls[2:]], 2, "not valid JSON"),
])
def test_deletion_insertion_reordering_are_caught(tmp_path: Path, mutate, bad_line: int,  # type: ignore[no-untyped-def]
                                                  needle: str) -> None:
    log = _log(tmp_path)
    _write(log, mutate(_lines(log)))
    report = log.verify()
    assert not report.ok and report.bad_line == bad_line and needle in report.reason
    assert f"line {bad_line}" in str(report)


def test_head_lagging_one_entry_after_a_crash_is_tolerated(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    head = log.head_path.read_text()
    log.append(requester="a", study="S", query="q@1", params={}, allowed=False, reason="r")
    log.head_path.write_text(head)  # as if the process died before the head was rewritten
    assert log.verify().ok


def test_damaged_tail_blocks_further_appends(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    with open(log.path, "a") as fh:
        fh.write('{"seq": 3, "ha')
    assert not log.verify().ok
    with pytest.raises(InvalidInput, match="incomplete"):
        log.append(requester="a", study="S", query="q@1", params={}, allowed=True, reason="r")


def test_params_are_sanitised() -> None:
    clean = sanitise_params({"column": "hb", "note": "x" * 500, "levels": list(range(100)),
                             "obj": object(), "nan": float("nan")})
    assert clean["column"] == "hb"
    assert len(clean["note"]) < 220 and clean["note"].endswith("[cut]")
    assert len(clean["levels"]) == 65 and "36 more items cut" in clean["levels"][-1]
    assert clean["obj"] == "<object>" and clean["nan"] == "nan"
