"""What a hub asks a site: one request for one site query, in canonical JSON on the wire.

A :class:`SiteRequest` names the study it belongs to (and the SHA-256 of the study specification
the site approved), the registered query and its version, the query parameters, who asks, and
whether a differentially private release is wanted. ``to_json`` gives canonical bytes (sorted
keys, no spaces), so the same request always hashes to the same value.

>>> r = SiteRequest("r1", "S1", "a" * 64, "cohort_size", "1", {}, "alice")
>>> SiteRequest.from_json(r.to_json()) == r
True
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hemafed.errors import InvalidInput
from hemafed.federation.api import DPRequest


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, compact separators, UTF-8, finite numbers only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def _freeze_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-round-tripped copy of ``params``; raises ``InvalidInput`` when it is not JSON."""
    try:
        return dict(json.loads(canonical_json(dict(params))))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"request parameters must be plain JSON values: {exc}") from exc


@dataclass(frozen=True)
class SiteRequest:
    """One request to a site.

    ``noise_share_divisor`` *d*: with DP, each site adds Gaussian noise of variance
    ``sigma**2 / d``, so any ``>= d`` contributing sites together add at least ``sigma**2`` to the
    released sum (the site refuses a *d* above the quorum its secure aggregation enforces). ``secure`` says whether the answer goes into a secure
    sum (``False`` means the hub would see this site's value in the clear).
    """

    request_id: str
    study_id: str
    spec_sha256: str
    query: str
    version: str
    params: Mapping[str, Any] = field(default_factory=dict)
    requester: str = ""
    dp: DPRequest | None = None
    noise_share_divisor: int = 1
    secure: bool = True

    def __post_init__(self) -> None:
        for name in ("request_id", "study_id", "query", "version", "requester", "spec_sha256"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput(f"request field {name!r} must be a string, "
                                   f"got {type(getattr(self, name)).__name__}")
        for name in ("request_id", "study_id", "query", "version"):
            if not getattr(self, name):
                raise InvalidInput(f"request field {name!r} must not be empty")
        if (not isinstance(self.noise_share_divisor, int) or isinstance(self.noise_share_divisor, bool)
                or self.noise_share_divisor < 1):
            raise InvalidInput(f"request field 'noise_share_divisor' must be an int >= 1, "
                               f"got {self.noise_share_divisor!r}")
        if not isinstance(self.secure, bool):
            raise InvalidInput(f"request field 'secure' must be true or false, got {self.secure!r}")
        if self.dp is not None and not isinstance(self.dp, DPRequest):
            raise InvalidInput("request field 'dp' must be a DPRequest or None")
        object.__setattr__(self, "params", _freeze_params(self.params))

    @property
    def query_key(self) -> str:
        """``name@version`` of the query asked for."""
        return f"{self.query}@{self.version}"

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the canonical JSON: binds an answer or a log entry to this request."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form of the request."""
        return {
            "request_id": self.request_id, "study_id": self.study_id,
            "spec_sha256": self.spec_sha256, "query": self.query, "version": self.version,
            "params": dict(self.params), "requester": self.requester,
            "dp": None if self.dp is None else {"epsilon": self.dp.epsilon, "delta": self.dp.delta,
                                                "noise_multiplier": self.dp.noise_multiplier},
            "noise_share_divisor": self.noise_share_divisor, "secure": self.secure,
        }

    def to_json(self) -> bytes:
        """Canonical JSON bytes of the request."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes | str) -> SiteRequest:
        """Parse canonical (or any) JSON produced by :meth:`to_json`; ``InvalidInput`` if malformed."""
        try:
            obj = json.loads(data)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"site request is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise InvalidInput("site request must be a JSON object")
        expected = {"request_id", "study_id", "spec_sha256", "query", "version", "params",
                    "requester", "dp", "noise_share_divisor", "secure"}
        if set(obj) != expected:
            raise InvalidInput(f"site request keys: missing {sorted(expected - set(obj))}, "
                               f"unexpected {sorted(set(obj) - expected)}")
        dp_obj = obj["dp"]
        dp = None
        if dp_obj is not None:
            try:
                if not isinstance(dp_obj, dict) or not set(dp_obj) <= {"epsilon", "delta",
                                                                       "noise_multiplier"}:
                    raise ValueError("expected an object with epsilon, delta, noise_multiplier")
                eps, nm = dp_obj.get("epsilon"), dp_obj.get("noise_multiplier")
                numbers = [float(v) for v in (eps, dp_obj["delta"], nm) if v is not None]
                if not all(math.isfinite(v) for v in numbers):
                    raise ValueError("non-finite number")
                dp = DPRequest(None if eps is None else float(eps), float(dp_obj["delta"]),
                               None if nm is None else float(nm))
            except (TypeError, KeyError, ValueError) as exc:
                raise InvalidInput(f"site request field 'dp' is malformed: {exc}") from exc
        if not isinstance(obj["params"], dict):
            raise InvalidInput("site request field 'params' must be an object")
        return cls(obj["request_id"], obj["study_id"], obj["spec_sha256"], obj["query"],
                   obj["version"], obj["params"], obj["requester"], dp,
                   obj["noise_share_divisor"], obj["secure"])
