"""Several statistics of one step in one secure aggregation (one round trip): the wire shape.

A *batch* is a list of site requests that the hub sends in a single aggregation. Its payload is
the canonical JSON object ``{"batch": [request, ...]}`` (each element the plain-JSON form of one
:class:`~hemafed.federation.request.SiteRequest`); the declared statistics of part ``i`` travel under
the names ``part_name(i, name)``, so one fixed-point layout carries them all and every statistic
keeps its own encoding (the decoded sums are exactly those of the separate requests).

Each site answers every part through its ordinary single-request path, in order (plan check,
policy, disclosure rules, DP noise share and ledger charge, audit entry), and refuses the whole
batch at the first part it refuses, with that part's refusal code and name: the state it keeps
(audit log, ledger, plan counts, release register) is exactly what the same requests sent one
after another would have left, since the hub stops at the first refusal either way.

>>> payload = pack_batch([b'{"a":1}', b'{"b":2}'])
>>> payload
b'{"batch":[{"a":1},{"b":2}]}'
>>> unpack_batch(payload)
[b'{"a":1}', b'{"b":2}']
>>> unpack_batch(b'{"a":1}') is None
True
>>> split_parts({"000/n": 1, "001/n": 2, "001/d": 3}, 2)
[{'n': 1}, {'d': 3, 'n': 2}]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from hemafed.errors import InvalidInput

MAX_PARTS = 64
"""The most requests one batch may carry."""

_V = TypeVar("_V")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def part_name(index: int, name: str) -> str:
    """The name statistic ``name`` of part ``index`` travels under (name order = part order)."""
    return f"{index:03d}/{name}"


def pack_batch(requests: Sequence[bytes]) -> bytes:
    """The payload of a batch of (canonical JSON) requests."""
    if not 2 <= len(requests) <= MAX_PARTS:
        raise InvalidInput(f"a batch carries 2 to {MAX_PARTS} requests, got {len(requests)}")
    return _canonical({"batch": [json.loads(r) for r in requests]})


def unpack_batch(payload: bytes) -> list[bytes] | None:
    """The parts of a batch payload (canonical JSON each), or ``None`` for a single request.

    A payload shaped as a batch but malformed raises ``InvalidInput`` (the site refuses it)."""
    if not payload.startswith(b'{"batch":'):
        return None
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise InvalidInput(f"batch payload is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"batch"}:
        return None
    parts = doc["batch"]
    if (not isinstance(parts, list) or not 2 <= len(parts) <= MAX_PARTS
            or not all(isinstance(p, dict) for p in parts)):
        raise InvalidInput(f"a batch must list 2 to {MAX_PARTS} request objects")
    return [_canonical(p) for p in parts]


def merge_parts(parts: Sequence[Mapping[str, _V]]) -> dict[str, _V]:
    """One mapping from the per-part mappings (statistics or values), names prefixed."""
    return {part_name(i, k): v for i, part in enumerate(parts) for k, v in part.items()}


def split_parts(merged: Mapping[str, _V], n_parts: int) -> list[dict[str, _V]]:
    """Inverse of :func:`merge_parts` (keys in name order within each part)."""
    out: list[dict[str, _V]] = [{} for _ in range(n_parts)]
    for key in sorted(merged):
        head, _, name = key.partition("/")
        if not head.isdigit() or int(head) >= n_parts or not name:
            raise InvalidInput(f"batched statistic {key!r} names no part of the batch")
        out[int(head)][name] = merged[key]
    return out
