"""The site's privacy ledger: every differentially private release, composed and charged first.

Each release is one Gaussian mechanism (``noise_multiplier = sigma / L2 sensitivity``, possibly
repeated ``count`` times). Before anything is released, :meth:`PrivacyLedger.charge` composes
every past event of the study, plus the new one, with Google's ``dp_accounting`` (Renyi-DP by
default, PLD on request) and refuses with :class:`~hemafed.errors.BudgetExhausted` if the composed
epsilon at the budget's delta would exceed the study's budget or the site's total budget.

Spent epsilon is always reported at the budget's own delta: a scope (a study, or the whole site)
with budget ``(eps_B, delta_B)`` is within budget while the composed mechanism is
``(eps, delta_B)``-DP with ``eps <= eps_B``.

The ledger is a JSON-lines file in the site directory, rewritten atomically under a file lock on
each charge (so two processes of one site never both spend the last of a budget).

:func:`gaussian_sigma` calibrates the noise for one release with the same accountant, so a
single release at exactly the study budget fits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from hemafed import atomic
from hemafed.errors import BudgetExhausted, InvalidInput
from hemafed.privacy.accounting import _REL_TOL, _fresh_accountant
from hemafed.privacy.accounting import Accountant as Accountant
from hemafed.privacy.accounting import composed_epsilon as composed_epsilon
from hemafed.privacy.accounting import gaussian_sigma as gaussian_sigma
from hemafed.privacy.accounting import noise_multiplier_for as noise_multiplier_for
from hemafed.site.policy import Budget, SitePolicy


@dataclass(frozen=True)
class Charge:
    """One line of the ledger: a Gaussian release charged to a study."""

    seq: int
    time: str
    study: str
    query: str
    epsilon: float
    delta: float
    noise_multiplier: float
    count: int = 1
    request_id: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise InvalidInput(f"noise_multiplier must be a finite number > 0, "
                               f"got {self.noise_multiplier}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise InvalidInput(f"count must be an int >= 1, got {self.count!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon > 0 and 0 < self.delta < 1):
            raise InvalidInput(f"epsilon must be > 0 and delta in (0, 1), got "
                               f"({self.epsilon}, {self.delta})")


@dataclass(frozen=True)
class Spent:
    """Composed privacy loss of one scope (a study, or ``"*total*"`` for the site)."""

    scope: str
    epsilon: float
    budget: Budget
    releases: int

    @property
    def remaining(self) -> float:
        """Epsilon left at the budget's delta (never negative)."""
        return max(0.0, self.budget.epsilon - self.epsilon)


@dataclass(frozen=True)
class BudgetStatus:
    """What a study may still spend: its own budget and the site's total, whichever is tighter."""

    study: Spent
    total: Spent

    @property
    def epsilon(self) -> float:
        return min(self.study.remaining, self.total.remaining)


TOTAL = "*total*"


class PrivacyLedger:
    """A site's privacy ledger backed by ``path`` (JSON lines).

    ``study_budget`` maps a study to its budget (e.g. ``policy.budget_for``) or is one budget for
    every study. ``clock`` returns the current UTC time (passed in for tests).
    """

    def __init__(self, path: str | Path, site_id: str, total: Budget,
                 study_budget: Budget | Callable[[str], Budget], *,
                 accountant: Accountant = "rdp",
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.path = Path(path)
        self.site_id = site_id
        self.total_budget = total
        self._study_budget = study_budget
        self.accountant: Accountant = accountant
        _fresh_accountant(accountant)  # fail early on an unknown name
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    @classmethod
    def from_policy(cls, path: str | Path, policy: SitePolicy, *, accountant: Accountant = "rdp",
                    clock: Callable[[], dt.datetime] | None = None) -> PrivacyLedger:
        """A ledger with the policy's total and per-study budgets."""
        return cls(path, policy.site_id, policy.total_budget, policy.budget_for,
                   accountant=accountant, clock=clock)

    def budget_for(self, study: str) -> Budget:
        b = self._study_budget
        return b if isinstance(b, Budget) else b(study)

    # --- reading --------------------------------------------------------------------------

    def charges(self) -> list[Charge]:
        """Every charge so far, in order; ``InvalidInput`` names a corrupt line."""
        if not self.path.exists():
            return []
        out: list[Charge] = []
        for lineno, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                out.append(Charge(**obj))
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"{self.path}: line {lineno} is not a valid ledger entry: {exc}; "
                                   f"restore the ledger from backup, never delete lines") from exc
        return out

    def _spent(self, scope: str, events: list[tuple[float, int]], budget: Budget) -> Spent:
        eps = composed_epsilon(events, budget.delta, self.accountant)
        return Spent(scope, eps, budget, len(events))

    def spent(self, study: str) -> Spent:
        """Composed epsilon of ``study`` so far (at its budget's delta)."""
        charges = [c for c in self.charges() if c.study == study]
        return self._spent(study, [(c.noise_multiplier, c.count) for c in charges],
                           self.budget_for(study))

    def spent_total(self) -> Spent:
        """Composed epsilon of every release of the site (at the total budget's delta)."""
        return self._spent(TOTAL, [(c.noise_multiplier, c.count) for c in self.charges()],
                           self.total_budget)

    def remaining(self, study: str) -> BudgetStatus:
        """What ``study`` may still spend, by its own budget and by the site's total."""
        return BudgetStatus(self.spent(study), self.spent_total())

    # --- charging -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def charge(self, study: str, query: str, epsilon: float, delta: float,
               noise_multiplier: float, *, count: int = 1, request_id: str = "") -> Charge:
        """Record a release BEFORE it happens; ``BudgetExhausted`` (nothing recorded) if over budget.

        ``epsilon``/``delta`` are what the release was calibrated for; ``noise_multiplier`` must
        deliver them (checked with the accountant, else ``InvalidInput``).
        """
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise InvalidInput(f"noise_multiplier must be a finite number > 0, got {noise_multiplier}")
        if not (math.isfinite(epsilon) and epsilon > 0 and 0 < delta < 1):
            raise InvalidInput(f"epsilon must be > 0 and delta in (0, 1), got ({epsilon}, {delta})")
        single = composed_epsilon([(noise_multiplier, count)], delta, self.accountant)
        if single > epsilon * (1 + _REL_TOL) + 1e-12:
            raise InvalidInput(
                f"site {self.site_id}: noise multiplier {noise_multiplier:.6g} (x{count}) gives "
                f"epsilon {single:.6g} at delta {delta:g}, more than the {epsilon:g} declared; "
                f"calibrate with gaussian_sigma()")
        with self._locked():
            past = self.charges()
            new = [(noise_multiplier, count)]
            study_budget = self.budget_for(study)
            checks = [
                (f"study {study!r}", [(c.noise_multiplier, c.count) for c in past
                                       if c.study == study], study_budget),
                ("site total", [(c.noise_multiplier, c.count) for c in past], self.total_budget),
            ]
            for label, events, budget in checks:
                before = composed_epsilon(events, budget.delta, self.accountant)
                after = composed_epsilon(events + new, budget.delta, self.accountant)
                if after > budget.epsilon * (1 + _REL_TOL):
                    raise BudgetExhausted(
                        self.site_id,
                        f"privacy budget exhausted for {label} (study {study!r}, query {query}): "
                        f"spent epsilon {before:.4g}, this release (epsilon {epsilon:g}, "
                        f"delta {delta:g}) would bring it to {after:.4g} at delta "
                        f"{budget.delta:g}, over the budget epsilon {budget.epsilon:g}")
            entry = Charge(seq=len(past) + 1, time=self._clock().isoformat(), study=study,
                           query=query, epsilon=float(epsilon), delta=float(delta),
                           noise_multiplier=float(noise_multiplier), count=count,
                           request_id=request_id)
            old = self.path.read_bytes() if self.path.exists() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            line = json.dumps(asdict(entry), sort_keys=True, separators=(",", ":")) + "\n"
            atomic.write_bytes(self.path, old + line.encode("utf-8"))
            os.chmod(self.path, 0o600)
            return entry

    def summary(self) -> Mapping[str, object]:
        """Per-study and total spending, for operators (no patient data is ever in the ledger)."""
        studies = sorted({c.study for c in self.charges()})
        return {
            "total": asdict(self.spent_total()),
            "studies": {s: asdict(self.spent(s)) for s in studies},
        }
