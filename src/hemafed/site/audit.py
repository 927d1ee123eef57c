"""The site's audit log: append-only, hash-chained JSON lines of every request and decision.

Each line is one entry: ``seq`` (1, 2, ...), ``time`` (ISO 8601 UTC, from a clock passed in),
``request_id``, ``requester``, ``study``, ``query`` (``name@version``), ``params`` (sanitised:
only request parameters, never patient data, long values cut), ``decision`` (``allowed`` or
``refused``), ``reason``, the ``epsilon``/``delta`` charged, ``prev_hash`` (the previous entry's
hash; 64 zeros for the first) and ``hash`` = SHA-256 of the canonical JSON of every other field.
With a site key, ``hmac`` = HMAC-SHA256 of the same bytes, so that someone who can write the file
but does not hold the key cannot recompute a consistent chain after an edit.

A head file (``<log>.head``) records the last ``seq`` and ``hash`` after every append (HMAC'd with
the site key), so cutting entries off the end is detected too, unless the head is rewritten with
the key; an optional second copy (``anchor_path``, kept with the site's keys) still detects the
deletion of the log and its head. Neither is proof against someone holding the site key: for that
every signed reply also carries ``(seq, hash)`` to the hub, which keeps the last one it saw
(:mod:`hemafed.privacy.anchors`). :meth:`AuditLog.verify` names the first bad line and why.

Appends open the file in append mode, write one line, flush and fsync: earlier lines are never
rewritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hemafed import atomic
from hemafed.errors import InvalidInput
from hemafed.federation.request import canonical_json

GENESIS = "0" * 64
_FIELDS = ("seq", "time", "request_id", "requester", "study", "query", "params", "decision",
           "reason", "epsilon", "delta", "prev_hash")
_MAX_STR = 200
_MAX_ITEMS = 64
_MAX_DEPTH = 4


def sanitise_params(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, size-bounded copy of request parameters for the log.

    Scalars are kept (strings cut to 200 characters), lists and mappings to 64 items and depth 4;
    anything else is replaced by its type name. Request parameters never hold patient data (they
    come from the hub); the bounds keep a malicious request from filling the log.
    """
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        return value if len(value) <= _MAX_STR else value[:_MAX_STR] + "...[cut]"
    if depth >= _MAX_DEPTH:
        return f"<{type(value).__name__} nested too deep>"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k)[:_MAX_STR]: sanitise_params(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["..."] = f"{len(items) - _MAX_ITEMS} more keys cut"
        return out
    if isinstance(value, list | tuple):
        out_list = [sanitise_params(v, depth + 1) for v in value[:_MAX_ITEMS]]
        if len(value) > _MAX_ITEMS:
            out_list.append(f"... {len(value) - _MAX_ITEMS} more items cut")
        return out_list
    return f"<{type(value).__name__}>"


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of an entry's chained fields (incl. ``prev_hash``)."""
    return hashlib.sha256(canonical_json({k: entry[k] for k in _FIELDS})).hexdigest()


def _entry_hmac(key: bytes, entry: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_json({k: entry[k] for k in _FIELDS}), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class VerifyReport:
    """Result of :meth:`AuditLog.verify`: ``ok``, entries read, and the first bad line and why."""

    ok: bool
    entries: int
    bad_line: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"audit log intact: {self.entries} entries, hash chain verified"
        where = f"line {self.bad_line}: " if self.bad_line is not None else ""
        return f"audit log TAMPERED or damaged: {where}{self.reason}"


class AuditLog:
    """The append-only audit log at ``path``. ``key``: optional site secret for HMACs."""

    def __init__(self, path: str | Path, *, key: bytes | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 anchor_path: str | Path | None = None) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.anchor_path = None if anchor_path is None else Path(anchor_path)
        self._key = key
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def _head_doc(self, seq: int, hash_: str) -> str:
        doc: dict[str, Any] = {"seq": seq, "hash": hash_}
        if self._key is not None:
            doc["hmac"] = hmac.new(self._key, canonical_json(doc), hashlib.sha256).hexdigest()
        return json.dumps(doc) + "\n"

    def head(self) -> tuple[int, str]:
        """``(seq, hash)`` of the last entry (``(0, GENESIS)`` for an empty log)."""
        last = self._last_entry()
        return (0, GENESIS) if last is None else (int(last["seq"]), str(last["hash"]))

    def hash_at(self, seq: int) -> str | None:
        """The hash of entry ``seq`` (``None`` if the log has no such entry)."""
        for e in self.entries():
            if e.get("seq") == seq:
                return str(e.get("hash"))
        return None

    def _read_head(self, path: Path) -> tuple[int, str] | str:
        """A head file's ``(seq, hash)``, or why it cannot be trusted."""
        try:
            head = json.loads(path.read_text(encoding="utf-8"))
            head_seq, head_hash = int(head["seq"]), str(head["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"{path.name} is damaged"
        if self._key is not None and "hmac" in head:
            want = hmac.new(self._key, canonical_json({"seq": head_seq, "hash": head_hash}),
                            hashlib.sha256).hexdigest()
            if not hmac.compare_digest(str(head["hmac"]), want):
                return f"{path.name}: HMAC does not match with the site key (head rewritten)"
        return head_seq, head_hash

    # --- writing --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _last_entry(self) -> dict[str, Any] | None:
        """The last entry, read from the end of the file; ``InvalidInput`` if it is damaged."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            chunk = 4096
            data = b""
            while True:
                start = max(0, size - chunk)
                fh.seek(start)
                data = fh.read(size - start)
                body = data.rstrip(b"\n")
                if b"\n" in body or start == 0:
                    break
                chunk *= 2
        if not data.endswith(b"\n"):
            raise InvalidInput(f"{self.path}: the last line is incomplete (a crash mid-write?); "
                               f"run `hemafed site audit DIR --verify` and restore from backup")
        last = body.rsplit(b"\n", 1)[-1]
        try:
            entry = json.loads(last)
        except ValueError as exc:
            raise InvalidInput(f"{self.path}: the last line is not JSON; run "
                               f"`hemafed site audit DIR --verify`") from exc
        if not isinstance(entry, dict) or "hash" not in entry or "seq" not in entry:
            raise InvalidInput(f"{self.path}: the last line is not an audit entry")
        return entry

    def append(self, *, requester: str, study: str, query: str, params: Mapping[str, Any],
               allowed: bool, reason: str, epsilon: float = 0.0, delta: float = 0.0,
               request_id: str = "") -> dict[str, Any]:
        """Append one entry (durably: write, flush, fsync) and return it."""
        with self._locked():
            last = self._last_entry()
            now = self._clock().astimezone(dt.UTC).isoformat()
            entry: dict[str, Any] = {
                "seq": 1 if last is None else int(last["seq"]) + 1,
                "time": now, "request_id": sanitise_params(str(request_id)),
                "requester": sanitise_params(str(requester)), "study": sanitise_params(str(study)),
                "query": sanitise_params(str(query)), "params": sanitise_params(dict(params)),
                "decision": "allowed" if allowed else "refused", "reason": str(reason)[:2000],
                "epsilon": float(epsilon), "delta": float(delta),
                "prev_hash": GENESIS if last is None else str(last["hash"]),
            }
            entry["hash"] = entry_hash(entry)
            if self._key is not None:
                entry["hmac"] = _entry_hmac(self._key, entry)
            line = canonical_json(entry) + b"\n"
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            head = self._head_doc(entry["seq"], entry["hash"])
            atomic.write_text(self.head_path, head)
            if self.anchor_path is not None:
                # a second copy of the head, kept with the keys: deleting or cutting the log
                # (and its head) beside it is still detected
                atomic.write_text(self.anchor_path, head)
            return entry

    # --- reading --------------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """Every entry (no verification; use :meth:`verify`)."""
        if not self.path.exists():
            return []
        # split on newlines only: str.splitlines() would also split on the Unicode line
        # separators a request's parameters may hold inside a JSON string
        return [json.loads(line) for line in self.path.read_bytes().split(b"\n")
                if line.strip()]

    def entries_from(self, offset: int) -> tuple[list[dict[str, Any]], int] | None:
        """The complete entries from byte ``offset`` on, and the offset after the last of them;
        ``None`` when the log is now shorter than ``offset`` (it was cut or replaced).

        A reader that keeps what it has folded in (the site's plan counts) reads only what
        another process appended since, not the whole log; a line still being written is left
        for the next read."""
        if offset < 0:
            raise InvalidInput(f"audit log offset must be >= 0, got {offset}")
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() < offset:
                    return None
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return None if offset else ([], 0)
        complete = data[:data.rfind(b"\n") + 1]
        return ([json.loads(line) for line in complete.split(b"\n") if line.strip()],
                offset + len(complete))

    def verify(self) -> VerifyReport:
        """Check the whole chain; the report names the first bad line and why."""
        if not self.path.exists():
            if self.head_path.exists():
                return VerifyReport(False, 0, None, "the log file is missing but its head exists")
            if self.anchor_path is not None and self.anchor_path.exists():
                return VerifyReport(False, 0, None, f"the log file is missing but "
                                                    f"{self.anchor_path.name} records entries "
                                                    f"(the log was deleted)")
            return VerifyReport(True, 0)
        before_last, prev, seq = GENESIS, GENESIS, 0
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            lines = raw.split(b"\n")
            return VerifyReport(False, len(lines) - 1, len(lines), "the last line is incomplete")
        for lineno, line in enumerate(raw.split(b"\n")[:-1] if raw else [], 1):
            def bad(reason: str, n: int = lineno) -> VerifyReport:
                return VerifyReport(False, n - 1, n, reason)
            try:
                entry = json.loads(line)
            except ValueError:
                return bad("not valid JSON")
            if not isinstance(entry, dict):
                return bad("not a JSON object")
            missing = [k for k in (*_FIELDS, "hash") if k not in entry]
            if missing:
                return bad(f"missing field(s) {', '.join(missing)}")
            extra = set(entry) - {*_FIELDS, "hash", "hmac"}
            if extra:
                return bad(f"unexpected field(s) {', '.join(sorted(extra))}")
            if entry["seq"] != seq + 1:
                return bad(f"sequence number {entry['seq']!r} where {seq + 1} was expected "
                           f"(an entry was deleted, inserted or moved)")
            if entry["prev_hash"] != prev:
                return bad("prev_hash does not match the previous entry's hash "
                           "(an entry was deleted, inserted or moved)")
            if entry_hash(entry) != entry["hash"]:
                return bad("hash does not match the entry's content (the entry was edited)")
            if self._key is not None:
                tag = entry.get("hmac")
                if not isinstance(tag, str) or not hmac.compare_digest(tag, _entry_hmac(self._key, entry)):
                    return bad("HMAC does not match with the site key (entry forged or edited)")
            before_last, prev, seq = prev, entry["hash"], entry["seq"]
        known = {seq: prev, seq - 1: before_last}
        for path, required in ((self.head_path, True), (self.anchor_path, False)):
            if path is None:
                continue
            if not path.exists():
                if required and seq:
                    return VerifyReport(False, seq, None, f"{path.name} is missing")
                continue
            read = self._read_head(path)
            if isinstance(read, str):
                return VerifyReport(False, seq, None, read)
            head_seq, head_hash = read
            # The head may lag by one entry (a crash between the append and the head write).
            if known.get(head_seq) != head_hash:
                if head_seq > seq:
                    return VerifyReport(False, seq, seq + 1,
                                        f"the log ends at entry {seq} but {path.name} records "
                                        f"entry {head_seq} (entries were cut from the end, or "
                                        f"the log was deleted or restored from an older copy)")
                return VerifyReport(False, seq, seq or None,
                                    f"{path.name} records entry {head_seq} with a hash that is "
                                    f"not in the log (the log or its head was rewritten)")
        return VerifyReport(True, seq)
