"""Differencing over participant sets: the same request is released over one set of sites.

The same non-DP request summed over two participant lists gives the sites in their difference
by subtraction (one site's exact statistics, if the lists differ by one). A site records, per
study and request (query and canonical parameters), every set of sites over which it let that
request be released, and refuses to let it be released over a different set:

* a *recoverable* aggregation is released over the survivor list the site signs at the
  consistency step (the site then reveals its shares): the check and the record happen there;
* a *one-shot* aggregation is released over the live list the hub shows at the masked-input
  step (nothing is revealed later): checked and recorded there.

A one-shot attempt followed by a recoverable one over fewer sites is allowed (that is how a
dropout in a one-shot sum is retried), so a hub that falsely reports a dropout can still take
one such difference: the documented remaining gap (docs/security.md); DP releases are not
restricted here, as the noise of each release is charged. The record lives in
``released.json`` in the site directory.

>>> import tempfile, pathlib
>>> reg = ReleaseRegister(pathlib.Path(tempfile.mkdtemp()) / "released.json")
>>> reg.conflict("S", "k", ["A", "B"], one_shot=False) is None
True
>>> reg.record("S", "k", ["A", "B"], one_shot=False)
True
>>> reg.conflict("S", "k", ["B"], one_shot=False)
['A', 'B']
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from hemafed.atomic import write_text
from hemafed.errors import InvalidInput


class ReleaseRegister:
    """Per study and request key, the participant sets a request was released over."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, list[dict[str, object]]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{self.path}: the release register is damaged ({exc})") from exc
        return data if isinstance(data, dict) else {}

    def conflict(self, study: str, key: str, sites: Sequence[str], *,
                 one_shot: bool) -> list[str] | None:
        """A set this request was released over that differs from ``sites`` (else ``None``).

        A recoverable release conflicts with any other set; a one-shot one with any other set
        of a one-shot release (a one-shot attempt may be retried with dropout recovery).
        """
        want = sorted(set(sites))
        with self._lock:
            for rec in self._read().get(f"{study}\x1f{key}", []):
                prev = sorted(map(str, rec.get("sites", [])))  # type: ignore[call-overload]
                if prev != want and (not rec.get("one_shot") or one_shot):
                    return prev
        return None

    def record(self, study: str, key: str, sites: Sequence[str], *, one_shot: bool) -> bool:
        """Record that the request was (or may have been) released over ``sites``; whether
        that set was new for it."""
        with self._lock:
            data = self._read()
            recs = data.setdefault(f"{study}\x1f{key}", [])
            entry = {"sites": sorted(set(sites)), "one_shot": bool(one_shot)}
            if entry in recs:
                return False
            recs.append(entry)
            write_text(self.path, json.dumps(data, sort_keys=True) + "\n")
            return True
