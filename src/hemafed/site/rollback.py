"""Cross-checks that catch a site's privacy ledger or audit log being rolled back.

Every differentially private release is recorded twice at the site: a charge in the ledger
(:mod:`hemafed.site.ledger`) and, with the same request id and epsilon, an ``allowed`` entry in
the hash-chained audit log (:mod:`hemafed.site.audit`). :func:`ledger_audit_problems` compares
the two: restoring an older ledger, or deleting it, leaves audit entries without their charge
(the budget would silently reset); cutting or replacing the audit log leaves charges without
their entry. The audit log's own chain, head and anchor copy catch truncation and deletion of
the log (:meth:`~hemafed.site.audit.AuditLog.verify`); what an attacker holding the site key
can still do is stated in docs/security.md, and the hub's record of the last head it saw
(:mod:`hemafed.privacy.anchors`) covers that case.
"""

from __future__ import annotations

import math

from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger


def ledger_audit_problems(audit: AuditLog, ledger: PrivacyLedger) -> list[str]:
    """Why the ledger and the audit log disagree (empty when they agree)."""
    released: dict[str, float] = {}
    seen: set[str] = set()
    for e in audit.entries():
        rid = str(e.get("request_id", ""))
        seen.add(rid)
        if e.get("decision") == "allowed" and float(e.get("epsilon", 0.0)) > 0 and rid:
            released[rid] = released.get(rid, 0.0) + float(e["epsilon"])
    charged: dict[str, float] = {}
    for c in ledger.charges():
        if c.request_id:
            charged[c.request_id] = charged.get(c.request_id, 0.0) + c.epsilon
    problems = []
    missing = sorted(set(released) - set(charged))
    if missing:
        where = "is missing" if not ledger.path.exists() else "lacks"
        problems.append(f"{ledger.path}: the ledger {where} {len(missing)} charge(s) the audit log "
                        f"records as released (e.g. request {missing[0]}): it was deleted or "
                        f"restored from an older copy, and the spent budget would be undercounted")
    unknown = sorted(r for r in set(charged) - seen)
    if unknown:
        problems.append(f"{audit.path}: {len(unknown)} ledger charge(s) have no audit entry "
                        f"(e.g. request {unknown[0]}): the audit log was cut, deleted or replaced")
    differ = [r for r in set(released) & set(charged)
              if not math.isclose(released[r], charged[r], rel_tol=1e-9, abs_tol=1e-12)]
    if differ:
        problems.append(f"{ledger.path}: {len(differ)} charge(s) differ from the epsilon the "
                        f"audit log records (e.g. request {sorted(differ)[0]})")
    return problems


def _ledger_state(ledger: PrivacyLedger) -> tuple[int, int] | None:
    try:
        st = ledger.path.stat()
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns)


class LedgerAuditGuard:
    """:func:`ledger_audit_problems` before every answer, cached by the audit head.

    The full comparison reads both files; it runs again only when the audit head or the ledger
    file (size, modification time) differs from the state this guard last verified or left
    behind (:meth:`settled`, after the site's own consistent charge and audit entry), so a
    restored or deleted ledger, or a cut audit log, is caught at the next request, not at the
    next ``site check``.
    """

    def __init__(self, audit: AuditLog, ledger: PrivacyLedger) -> None:
        self.audit = audit
        self.ledger = ledger
        self._verified: tuple[tuple[int, str], tuple[int, int] | None] | None = None

    def _state(self) -> tuple[tuple[int, str], tuple[int, int] | None]:
        return self.audit.head(), _ledger_state(self.ledger)

    def problems(self) -> list[str]:
        """Why the ledger and the audit log disagree now (empty when they agree)."""
        state = self._state()
        if state == self._verified:
            return []
        found = ledger_audit_problems(self.audit, self.ledger)
        self._verified = None if found else state
        return found

    def settled(self) -> None:
        """Record the current state as consistent (the site just wrote both, in agreement)."""
        if self._verified is not None:
            self._verified = self._state()
