"""A hostile hub for the privacy tests: sends any request through real site directories and
keeps exactly the bytes every site replied, so a test can inspect what a hub would learn.

A refusal reaches the hub through the secure sum (the flag block: how many sites refused, the
code and name), or, for the few codes a site still refuses visibly, as a signed refusal body."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hemafed.demo import LocalSites
from hemafed.federation.api import DPRequest
from hemafed.federation.inprocess import run_in_process
from hemafed.federation.queries import Statistic
from hemafed.privacy.anchors import MemoryAnchorStore
from hemafed.privacy.refusal import PooledRefusal
from hemafed.secure import SecureSumSession
from hemafed.secure.codec import unpack_map
from hemafed.site.audit import AuditLog
from hemafed.site.request import SiteRequest
from hemafed.study.site_runtime import site_handler

DUMMY_SPECS = {"n": Statistic((1,), 0, 1)}


@dataclass
class HostileHub:
    """Runs one aggregation per :meth:`ask` and records every reply of every site."""

    fed: LocalSites
    study_id: str
    spec_sha256: str
    replies: list[tuple[str, bytes]] = field(default_factory=list)
    anchors: MemoryAnchorStore = field(default_factory=MemoryAnchorStore)
    pooled: list[PooledRefusal] = field(default_factory=list)

    def ask(self, query: str, params: Mapping[str, Any], *, version: str = "1",
            specs: Mapping[str, Statistic] | None = None, dp: DPRequest | None = None,
            divisor: int = 1, study: str | None = None, sites: list[str] | None = None) -> Any:
        """Send the request; return the sum outcome or the exception the hub raised."""
        request = SiteRequest(uuid.uuid4().hex, study or self.study_id, self.spec_sha256, query,
                              version, dict(params), "hostile-hub", dp, divisor, True)
        configs = [c for c in self.fed.site_configs() if sites is None or c["site_id"] in sites]

        def hub(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
            def recording(messages: dict[str, bytes]) -> dict[str, bytes]:
                out = exchange(messages)
                self.replies.extend(out.items())
                return out

            session = SecureSumSession(recording, self.fed.manifest, site_ids,
                                       anchors=self.anchors)
            try:
                outcome.append(session.secure_sum(os.urandom(16), request.to_json(),
                                                  dict(specs or DUMMY_SPECS),
                                                  quorum=len(site_ids),
                                                  references=[request.request_id]))
            except Exception as exc:  # the hub's view of a refusal
                outcome.append(exc)
                if isinstance(getattr(exc, "pooled", None), PooledRefusal):
                    self.pooled.append(exc.pooled)

        outcome: list[Any] = []
        run_in_process(hub, site_handler, configs, {}, raise_errors=True)
        return outcome[0]

    def refusal_bodies(self) -> list[dict[str, bytes]]:
        """Every refusal the hub learned: the signed refusal bodies sites sent (the
        status/code/name/ref map, and the audit head every reply carries), then one body per
        refusal read from a sum's flag block (status, code, name and how many sites)."""
        out = [{"status": b"refused", "code": p.refusal.code.encode(),
                "name": p.refusal.name.encode(), "sites": str(p.refused).encode()}
               for p in self.pooled]
        for _, envelope in self.replies:
            body = unpack_map(unpack_map(envelope)["body"])
            if body.get("status") == b"refused":
                out.append(body)
        return out


def decision_entry(log: Path) -> dict[str, Any]:
    """The site's last decision on a request (allowed or refused) in its audit log ``log``.

    A site that refuses still takes part in the sum, so after its decision it may log the
    participant list it confirmed (``participants ...``), as an answering site does: that
    record follows the decision and is skipped here."""
    entries = [e for e in AuditLog(log).entries()
               if not str(e["reason"]).startswith("participants ")]
    return entries[-1]
