"""The one exception hierarchy of hemafed.

Every message names what was concerned (file, row, column, site, parameter) and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class HemafedError(Exception):
    """Base class of every error hemafed raises on purpose."""


class InvalidInput(HemafedError, ValueError):
    """Input data or parameters do not fit what was expected."""


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is and why it is a problem."""

    row: int | None
    column: str | None
    reason: str
    patient_id: str | None = None

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.patient_id is not None:
            where.append(f"patient {self.patient_id!r}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        prefix = ", ".join(where)
        return f"{prefix}: {self.reason}" if prefix else self.reason


class ValidationFailed(InvalidInput):
    """A cohort failed validation; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem], source: str = "cohort", shown: int = 20) -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"{source}: {len(self.problems)} problem(s); nothing was imported"]
        lines += [f"  - {p}" for p in self.problems[:shown]]
        if len(self.problems) > shown:
            lines.append(f"  ... and {len(self.problems) - shown} more")
        super().__init__("\n".join(lines))


class PolicyRefused(HemafedError):
    """A site's policy refused a request. ``site`` and ``reason`` say which and why."""

    def __init__(self, site: str, reason: str) -> None:
        self.site = site
        self.reason = reason
        super().__init__(f"site {site!r} refused: {reason}")


class BudgetExhausted(PolicyRefused):
    """A differentially private release would exceed a site's privacy budget."""


class ProtocolError(HemafedError):
    """A federation or secure-aggregation message was malformed, forged, replayed or out of order."""


class CryptoError(HemafedError):
    """A cryptographic operation failed (wrong key, corrupted or tampered file)."""


class ConvergenceError(HemafedError):
    """An iterative estimator did not converge, or its Hessian was singular."""


class SitesChanged(ProtocolError):
    """A later secure sum of one federation covered other sites than its first one did.

    An iterative analysis (Newton rounds, boosting, synthesis, FedAvg) must sum over one fixed
    contributor set; mixing rounds over different sites gives an answer that is no pooled fit.
    ``survivors`` are the sites the offending sum covered: restart the analysis over them (if
    they reach the quorum) or fail.
    """

    def __init__(self, query: str, fixed: Sequence[str], survivors: Sequence[str]) -> None:
        self.query = query
        self.fixed = tuple(sorted(fixed))
        self.survivors = tuple(sorted(survivors))
        lost = sorted(set(self.fixed) - set(self.survivors))
        joined = sorted(set(self.survivors) - set(self.fixed))
        change = "; ".join(part for part in (
            f"dropped {lost}" if lost else "", f"joined {joined}" if joined else "") if part)
        super().__init__(
            f"secure sum of {query!r} covered sites {list(self.survivors)}, not the federation's "
            f"fixed set {list(self.fixed)} ({change}); restart the analysis over the survivors")
