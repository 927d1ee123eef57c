"""The site node: what a hospital runs and controls.

Its cohort store (pseudonymised), policy (which analyses, studies, budgets), privacy ledger,
hash-chained audit log and Crypt4GH vault. Every request from the hub is checked, audited, charged
and answered here; see :class:`~hemafed.site.node.SiteNode`.
"""

from hemafed.federation.request import SiteRequest
from hemafed.site.audit import AuditLog, VerifyReport
from hemafed.site.ledger import PrivacyLedger, gaussian_sigma
from hemafed.site.node import SiteAnswer, SiteNode
from hemafed.site.policy import Budget, Decision, SitePolicy, write_default_policy

__all__ = ["AuditLog", "Budget", "Decision", "PrivacyLedger", "SiteAnswer", "SiteNode",
           "SitePolicy", "SiteRequest", "VerifyReport", "gaussian_sigma", "write_default_policy"]
