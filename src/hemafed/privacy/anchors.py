"""The hub's record of each site's audit-log head: a site's history anchored off its own disk.

Every signed reply of a site carries its audit log's current head ``(seq, hash)``
(:class:`Anchor`). The hub keeps the last one it saw per site in an :class:`AnchorStore`
(in memory for one process, :class:`JsonAnchorStore` in a file the hub service can keep) and
sends it with the next request; a site whose log is *behind* what the hub last saw (restored
from an older copy, cut, or deleted, even with the head rewritten using the site key), or at
the same sequence number with another hash (a forked log), refuses to answer and says why
(refusal code ``rollback``). What it does not detect is in docs/security.md.

>>> store = MemoryAnchorStore()
>>> store.put("A", Anchor(3, "ab" * 32))
>>> store.get("A").seq, store.get("B")
(3, None)
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hemafed.atomic import write_text
from hemafed.errors import InvalidInput

_HASH = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Anchor:
    """An audit-log head: the last entry's sequence number and hash."""

    seq: int
    head: str

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 0:
            raise ValueError(f"anchor seq must be an int >= 0, got {self.seq!r}")
        if not _HASH.match(self.head):
            raise ValueError("anchor head must be 64 lowercase hex digits")

    def behind(self, seen: Anchor) -> str | None:
        """Why this (the site's own) head is behind ``seen`` (the hub's), else ``None``."""
        if self.seq < seen.seq:
            return (f"the audit log ends at entry {self.seq} but the hub last saw entry "
                    f"{seen.seq}: the log (or the ledger beside it) was cut, deleted or "
                    f"restored from an older copy")
        if self.seq == seen.seq and self.head != seen.head:
            return (f"the audit log's entry {self.seq} is not the one the hub last saw: the "
                    f"log was rewritten")
        return None


class AnchorStore(Protocol):
    """Where the hub keeps the last anchor each site reported."""

    def get(self, site: str) -> Anchor | None: ...
    def put(self, site: str, anchor: Anchor) -> None: ...


class MemoryAnchorStore:
    """Anchors in memory (one hub process)."""

    def __init__(self) -> None:
        self._anchors: dict[str, Anchor] = {}
        self._lock = threading.Lock()

    def get(self, site: str) -> Anchor | None:
        with self._lock:
            return self._anchors.get(site)

    def put(self, site: str, anchor: Anchor) -> None:
        with self._lock:
            self._anchors[site] = anchor


class JsonAnchorStore:
    """Anchors in a JSON file (rewritten atomically on each change)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, Anchor]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(s): Anchor(int(a["seq"]), str(a["head"])) for s, a in raw.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidInput(f"{self.path}: the hub's anchor store is damaged ({exc}); "
                               f"restore it from backup") from exc

    def get(self, site: str) -> Anchor | None:
        with self._lock:
            return self._read().get(site)

    def put(self, site: str, anchor: Anchor) -> None:
        with self._lock:
            anchors = self._read()
            anchors[site] = anchor
            write_text(self.path, json.dumps(
                {s: {"seq": a.seq, "head": a.head} for s, a in sorted(anchors.items())},
                indent=1) + "\n")
