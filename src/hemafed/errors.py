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
    """A site's policy refused a request. ``site`` and ``reason`` say which and why.

    A refusal read from a secure sum names no site (``site`` is ``""``): ``who`` then says how
    many sites refused (``"1 of 3 sites"``).
    """

    def __init__(self, site: str, reason: str, *, who: str = "") -> None:
        self.site = site
        self.reason = reason
        self.who = who or f"site {site!r}"
        super().__init__(f"{self.who} refused: {reason}")


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


class DropoutRefused(ProtocolError):
    """A fit lost a site and the remaining sites refused a non-DP sum over fewer participants.

    Sites release a study's non-DP sums over one participant set only (rule ``participants``,
    their policy's ``refuse_differencing``, on by default): a re-run over the survivors would
    give the lost site's statistics by difference. The hub cannot read the sites' policies; it
    raises this when the survivors of a non-DP sum, fewer than the study's fixed set, do not
    confirm it (or refuse it under that rule), so the user is told what happened and what to do.
    """

    def __init__(self, query: str, study: str, fixed: Sequence[str],
                 survivors: Sequence[str]) -> None:
        self.query = query
        self.fixed = tuple(sorted(fixed))
        self.survivors = tuple(sorted(survivors))
        lost = sorted(set(self.fixed) - set(self.survivors))
        super().__init__(
            f"the fit lost site(s) {lost} after earlier non-DP sums of study {study!r} over "
            f"{list(self.fixed)}; the remaining sites refuse a non-DP re-run over fewer "
            f"participants under rule 'participants' (it would give the lost site's "
            f"statistics by difference), so nothing was released for {query!r}. To finish: "
            f"bring the site(s) back and run the study again; or have the sites' officers set "
            f"'refuse_differencing: false' (the fit then restarts on the survivors); or "
            f"request the analysis with DP (a 'dp' entry in the spec)")
