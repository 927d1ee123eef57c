"""A connectivity probe: a tiny multi-round protocol that checks a federation end to end.

Each round the hub sends ``{"round": r}``; every site answers with a site-specific integer vector
(:func:`probe_vector`) and a counter kept in its persistent state, so the probe shows that messages
reach every site, that replies come back to the right site, and that site state survives between
messages. ``hemafed hub run`` uses it by default; the transport tests use it too (it must be
importable by Flower's worker processes, which is why it lives in the package).

A site config may ask the probe to misbehave, to test dropping: ``probe_delay`` (seconds to sleep
before answering; only in the rounds listed in ``probe_delay_rounds`` if given) and ``probe_fail``
(raise instead of answering).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import MutableMapping
from typing import Any

from hemafed.errors import ProtocolError
from hemafed.federation.transport import Exchange, SiteHandler

VECTOR_LENGTH = 3


def probe_vector(site_id: str, round_index: int) -> list[int]:
    """The integer vector ``site_id`` sends in round ``round_index`` (hash-derived, 0..999)."""
    digest = hashlib.sha256(f"{site_id}/{round_index}".encode()).digest()
    return [int.from_bytes(digest[2 * i:2 * i + 2], "big") % 1000 for i in range(VECTOR_LENGTH)]


def probe_handler(site: dict[str, Any]) -> SiteHandler:
    """Site handler factory of the probe."""
    site_id = str(site["site_id"])
    delay = float(site.get("probe_delay", 0.0))
    fail = bool(site.get("probe_fail", False))
    delay_rounds = site.get("probe_delay_rounds")

    def handle(message: bytes, state: MutableMapping[str, bytes]) -> bytes:
        request = json.loads(message)
        if fail:
            raise ProtocolError(f"site {site_id!r}: probe asked to fail")
        round_index = int(request["round"])
        if delay > 0 and (delay_rounds is None or round_index in delay_rounds):
            time.sleep(delay)
        count = int(state.get("count", b"0")) + 1
        state["count"] = str(count).encode()
        reply = {"site_id": site_id, "count": count,
                 "vector": probe_vector(site_id, round_index)}
        return json.dumps(reply).encode()

    return handle


def probe_hub(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """Hub of the probe: ``config["rounds"]`` rounds (default 3); sums the vectors per round."""
    rounds = int(config.get("rounds", 3))
    out: dict[str, Any] = {"sites": list(site_ids), "rounds": []}
    counts: dict[str, int] = {}
    for r in range(rounds):
        replies = exchange({sid: json.dumps({"round": r}).encode() for sid in site_ids})
        total = [0] * VECTOR_LENGTH
        for sid, raw in replies.items():
            reply = json.loads(raw)
            if reply["site_id"] != sid:
                raise ProtocolError(f"round {r}: reply routed to {sid!r} came from "
                                    f"{reply['site_id']!r}")
            total = [a + b for a, b in zip(total, reply["vector"], strict=True)]
            counts[sid] = int(reply["count"])
        out["rounds"].append({"answered": sorted(replies), "sum": total})
    out["counts"] = counts
    return out
