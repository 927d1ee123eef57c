"""Differencing over participant sets: a study's non-DP releases are over one set of sites.

The same non-DP request summed over two participant lists gives the sites in their difference
by subtraction (one site's exact statistics, if the lists differ by one), and so does an
equivalent rewrite of it (``110.0`` for ``110``, ``moments`` for ``numeric_summary``). A site
records, per study and request (query and canonical parameters), every set of sites over which
it let a request be released, and refuses to let any non-DP request **of that study** be
released over a set other than the one its first release used:

* a *recoverable* aggregation is released over the survivor list the site signs at the
  consistency step (the site then reveals its shares): the check and the record happen there;
* a *one-shot* aggregation is released over the live list the hub shows at the masked-input
  step (nothing is revealed later): checked and recorded there.

A one-shot attempt followed by a recoverable one of the same request over fewer sites is
allowed (that is how a dropout in a one-shot sum is retried), so a hub that falsely reports a
dropout can still take one such difference per study: the documented remaining gap
(docs/security.md). A site dropping in the middle of a study therefore stops the study's
later non-DP releases over the survivors (the study runner's restart fails clearly), unless
the policy sets ``refuse_differencing: false``. DP releases are not restricted here, as the
noise of each release is charged. The record lives in
``released.json`` in the site directory.

>>> import tempfile, pathlib
>>> reg = ReleaseRegister(pathlib.Path(tempfile.mkdtemp()) / "released.json")
>>> reg.conflict("S", "k", ["A", "B"], one_shot=False) is None
True
>>> reg.record("S", "k", ["A", "B"], one_shot=False)
True
>>> reg.conflict("S", "k", ["B"], one_shot=False)
['A', 'B']
>>> reg.conflict("S", "another request", ["B"], one_shot=True)
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
        """A set a non-DP request of ``study`` was released over that differs from ``sites``
        (else ``None``).

        Keyed on the study, not on the request's text: an equivalent rewrite of a request
        (``110`` for ``110.0``, another query computing the same statistic) over another set
        would give the difference. The one exception is the retry of the same request
        (``key``) with dropout recovery after its one-shot attempt, which may not have been
        released; such a superseded one-shot attempt does not pin the study's set.
        """
        want = sorted(set(sites))
        prefix = f"{study}\x1f"
        with self._lock:
            recs = [(k[len(prefix):], rec) for k, items in self._read().items()
                    if k.startswith(prefix) for rec in items]
        retried = {k for k, rec in recs if not rec.get("one_shot")}
        for k, rec in recs:
            prev = sorted(map(str, rec.get("sites", [])))  # type: ignore[call-overload]
            if prev == want:
                continue
            if rec.get("one_shot") and (k in retried or (k == key and not one_shot)):
                continue  # a one-shot attempt retried with dropout recovery
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
