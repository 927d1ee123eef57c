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
