"""The site node: answers one request from the hub, under the site's own policy and budget.

:meth:`SiteNode.answer` runs, in this order:

1. the policy check (query allowed, study approved, spec hash, expiry, secure aggregation);
2. the query look-up in :mod:`hemafed.federation.queries` (name and version; a query outside
   the study's plan is refused first) and its parameters, parsed once
   (:meth:`~hemafed.federation.queries.Query.check`; a hub-supplied value of the reserved
   site-id parameter, an unknown key or a bad value is refused here, before any data are
   read); the plan check (:meth:`~hemafed.study.plan.StudyPlan.check`), the declaration and
   the computation all take that one parsed object;
3. the query on the local cohort (values checked against the declared bounds); a ``site_aware``
   query gets this node's own id, added after the checks (the audit records the hub's
   parameters as received);
4. with DP: the noise is calibrated and **charged to the ledger before any noise is drawn**;
5. one audit entry with the final decision (allowed, or refused and why) and the epsilon/delta
   charged, written (fsynced) before anything is returned;
6. the site's Gaussian noise share is added.

A refusal raises :class:`~hemafed.errors.PolicyRefused` or
:class:`~hemafed.errors.BudgetExhausted` (invalid parameters: ``InvalidInput``); it is audited
first and nothing is released. A refusal after the plan check (step 3 onwards: the data do
not fit, a disclosure rule, an error) uses up one of the plan's distinct requests, as an answer
does, since whether a site refuses may depend on its data. Nothing patient-level is logged or
audited: only the request.

**Several statistics in one release.** A query's statistics are released together as *one*
Gaussian mechanism on their concatenated vector. Each :class:`~hemafed.federation.queries.Statistic`
declares the L2 change of its whole array when one patient is added or removed, so the
concatenation changes by at most ``sqrt(sum(s_i**2))`` in L2; the noise is calibrated to that norm
and the same ``sigma`` is added to every element (statistics of sensitivity 0 do not depend on
patients and get none). The release is charged once, as one Gaussian event.

**Noise level.** ``request.dp`` gives either ``epsilon`` (the noise multiplier is calibrated with
the ledger's accountant so this release is (epsilon, delta)-DP) or ``noise_multiplier`` directly
(as MST/AIM or DP-SGD choose it; the epsilon charged is that of the mechanism at ``delta``).
Either way ``sigma = noise_multiplier * sqrt(sum(s_i**2))``.

**Noise shares.** With secure aggregation, each site adds ``N(0, sigma**2 / d)`` with
``d = request.noise_share_divisor``, so that any ``>= d`` contributing sites together add at least
``sigma**2`` to the released sum; the site refuses a ``d`` larger than the number of contributors
the protocol guarantees (its quorum: all sites of the session, or the threshold ``t``). A non-secure answer (only when the policy allows it) is seen on
its own, so it always carries the full ``sigma``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import re
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hemafed.cohort.model import Cohort
from hemafed.errors import BudgetExhausted, HemafedError, InvalidInput, PolicyRefused
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import Params, Query, QueryParams, Statistic, get_query
from hemafed.federation.request import SiteRequest, canonical_json
from hemafed.privacy import calibration
from hemafed.privacy.calibration import release_sensitivity
from hemafed.privacy.disclosure import (
    cell_rule_statistics,
    declared_cells,
    small_cells,
    small_subgroups,
)
from hemafed.privacy.refusal import Refusal, new_audit_ref, parameter_name, public_rule
from hemafed.site.audit import AuditLog
from hemafed.site.ledger import PrivacyLedger, composed_epsilon
from hemafed.site.participants import ReleaseRegister
from hemafed.site.policy import SitePolicy
from hemafed.site.rollback import LedgerAuditGuard
from hemafed.studyplan.plans import ApprovedPlan

__all__ = ["NOISE_BOUND_STDS", "SiteAnswer", "SiteNode", "SiteRequest", "release_sensitivity"]

log = logging.getLogger(__name__)

PLAN_MARK = "params "
_PLAN_KEY = re.compile(r"; params ([0-9a-f]{16})$")

NOISE_BOUND_STDS = calibration.NOISE_BOUND_STDS
"""Declared bounds of a noisy answer are widened by this many noise-share standard deviations,
so the fixed-point encoder accepts it (a Gaussian exceeds 12 std with probability ~4e-33)."""


@dataclass(frozen=True)
class SiteAnswer:
    """One site's answer to one request, ready for fixed-point encoding and masking.

    ``values``: the (noisy, with DP) arrays; ``specs``: their declarations, bounds widened by
    :data:`NOISE_BOUND_STDS` noise-share std when noise was added; ``noise_std``: per statistic,
    the std of the noise in the *released sum* when at least ``noise_share_divisor`` sites take
    part (``sigma``; 0 without DP); ``noise_share_std``: what this site added.
    """

    request_id: str
    site_id: str
    query: str
    values: dict[str, np.ndarray]
    specs: dict[str, Statistic]
    min_cell_size: int
    noise_std: dict[str, float] = field(default_factory=dict)
    noise_share_std: dict[str, float] = field(default_factory=dict)
    dp: DPRequest | None = None
    epsilon_charged: float = 0.0
    delta_charged: float = 0.0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]


def _params_key(checked: Params | QueryParams) -> str:
    """The key under which the plan counts a request's distinct parameter sets: of a typed
    query, its parameters with the defaults filled in (a default spelt out is the same
    request, not a new round); of parameters the query refused to parse, the mapping as sent."""
    wire = checked.to_mapping() if isinstance(checked, QueryParams) else checked
    return hashlib.sha256(canonical_json(wire)).hexdigest()[:16]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _public_metadata(request: SiteRequest) -> bool:
    """A query every statistic of which has sensitivity 0 (no patient changes it: the site's
    public metadata, e.g. its genotype-store declaration): differencing it over two participant
    sets reveals nothing, so it does not pin a study's set of sites."""
    try:
        specs = get_query(request.query, request.version).declare(request.params)
    except Exception:
        return False
    return bool(specs) and all(s.sensitivity == 0 for s in specs.values())


class SiteNode:
    """A site: its cohort, policy, privacy ledger and audit log.

    ``clock`` returns the current UTC time (today's date decides study expiry); ``rng`` is the
    noise source (default: a generator seeded from OS entropy; pass a seeded one in tests).
    """

    def __init__(self, cohort: Cohort, policy: SitePolicy, ledger: PrivacyLedger, audit: AuditLog,
                 *, clock: Callable[[], dt.datetime] | None = None,
                 rng: np.random.Generator | None = None,
                 plans: Mapping[str, ApprovedPlan | None] | None = None,
                 releases: ReleaseRegister | None = None) -> None:
        if ledger.site_id != policy.site_id:
            raise InvalidInput(f"ledger of site {ledger.site_id!r} given to site {policy.site_id!r}")
        self.cohort = cohort
        self.policy = policy
        self.ledger = ledger
        self.audit = audit
        self._clock = clock or _utc_now
        self._rng = rng if rng is not None else np.random.default_rng()
        self.plans: dict[str, ApprovedPlan | None] = dict(plans or {})
        self.releases = releases
        self._distinct: dict[tuple[str, str], set[str]] = {}
        self._distinct_offset = 0  # the audit log's bytes folded into _distinct
        # request id -> parameter key of the requests being answered that passed the plan
        # check: a refusal from then on uses up a plan round as an answer does (see _refuse)
        self._past_plan: dict[str, str] = {}
        self._rollback = LedgerAuditGuard(audit, ledger)
        self.study_view: Callable[[Cohort, str], Cohort] | None = None
        """The cohort a study's queries run on, from :attr:`cohort` and the study id (the
        site runtime joins that study's own stored tables, e.g. its harmonised imaging
        features); ``None``: :attr:`cohort` for every study."""

    def cohort_for(self, study: str) -> Cohort:
        """The cohort ``study``'s requests are computed on (see :attr:`study_view`)."""
        return self.cohort if self.study_view is None else self.study_view(self.cohort, study)

    @property
    def site_id(self) -> str:
        return self.policy.site_id

    def _audit(self, request: SiteRequest, allowed: bool, reason: str,
               epsilon: float = 0.0, delta: float = 0.0) -> None:
        self.audit.append(requester=request.requester, study=request.study_id,
                          query=request.query_key, params=request.params, allowed=allowed,
                          reason=reason, epsilon=epsilon, delta=delta,
                          request_id=request.request_id)

    def _redact(self, text: str) -> str:
        """``text`` with any patient id of the cohort replaced: the audit keeps no identifiers."""
        try:
            ids = [pid for pid in self.cohort.ids if len(pid) >= 2 and pid in text]
        except Exception:  # a damaged cohort must not stop the refusal being audited
            return text
        for pid in sorted(ids, key=len, reverse=True):
            text = text.replace(pid, "<patient>")
        return text

    def _refuse(self, request: SiteRequest, reason: str, *, code: str = "policy",
                name: str = "", kind: type[HemafedError] = PolicyRefused,
                cause: BaseException | None = None) -> HemafedError:
        """Audit a refusal with its full ``reason``; return the exception to raise.

        The exception's ``refusal`` (code, name, a fresh audit reference) is all that reaches
        the hub; its text, with the detail, is for the site's own operator.
        """
        ref = new_audit_ref()
        refusal = Refusal(code, name, ref)
        text = f"[{code}:{name or '-'} ref {ref}] {self._redact(reason)}"[:1900]
        key = self._past_plan.get(request.request_id)
        if key is not None:
            # refused after the plan check (the data did not fit, a disclosure rule, an
            # error): whether a site refuses may depend on its data, so the refusal counts as
            # one of the plan's distinct requests, exactly as an answer does; the mark is in
            # the audit log, so a restart does not reset the count
            text += f"; {PLAN_MARK}{key}"
            self._seen(request.study_id, request.query).add(key)
        self._audit(request, False, text)
        log.info("site %s refused request %s (%s, ref %s): %s", self.site_id,
                 request.request_id, code, ref, reason)
        exc: HemafedError
        if kind is InvalidInput:
            exc = InvalidInput(f"site {self.site_id}: request {request.request_id}: {reason}")
        elif issubclass(kind, PolicyRefused):
            exc = kind(self.site_id, reason)
        else:
            exc = kind(reason)
        exc.refusal = refusal  # type: ignore[attr-defined]
        if cause is not None:
            exc.__cause__ = cause
        return exc

    def refuse_malformed(self, payload: bytes, exc: BaseException) -> HemafedError:
        """Audit a refusal outside :meth:`answer` (a request the site could not parse, or
        declared statistics that differ from the hub's); return the exception to raise."""
        from hemafed.privacy.refusal import refusal_of

        code, name = refusal_of(exc).code, refusal_of(exc).name
        if code == "internal_error" and isinstance(exc, InvalidInput | ValueError):
            code, name = "invalid_parameter", "request"
        ref = new_audit_ref()
        try:
            request = SiteRequest.from_json(payload)
            who: dict[str, Any] = {"requester": request.requester, "study": request.study_id,
                   "query": request.query_key, "params": request.params,
                   "request_id": request.request_id}
        except Exception:
            who = {"requester": "?", "study": "?", "query": "?",
                   "params": {"payload_sha256": hashlib.sha256(payload).hexdigest()}}
        self.audit.append(**who, allowed=False,
                          reason=f"[{code}:{name or '-'} ref {ref}] "
                                 f"{self._redact(f'{type(exc).__name__}: {exc}')}"[:1500])
        out: HemafedError = (PolicyRefused(self.site_id, str(exc)) if code == "rollback"
                             else InvalidInput(f"site {self.site_id}: {exc}"))
        out.refusal = Refusal(code, name, ref)  # type: ignore[attr-defined]
        return out

    def guard_participants(self, payload: bytes, sites: Sequence[str], *, one_shot: bool,
                           stage: str) -> None:
        """Log the participant list shown for a request and refuse (audited) to let a non-DP
        request be released over another set than the study's earlier non-DP releases
        (keyed on the study, so an equivalent rewrite is refused too;
        :mod:`hemafed.site.participants`).
        """
        if self.releases is None:
            return
        try:
            request = SiteRequest.from_json(payload)
        except Exception as exc:
            raise self.refuse_malformed(payload, exc) from exc
        log.info("site %s: request %s %s over participants %s", self.site_id,
                 request.request_id, stage, ",".join(sorted(sites)))
        if request.dp is not None or _public_metadata(request):
            return
        key = f"{request.query_key}:{hashlib.sha256(canonical_json(request.params)).hexdigest()}"
        prev = self.releases.conflict(request.study_id, key, sites, one_shot=one_shot)
        if prev is not None and self.policy.refuse_differencing:
            raise self._refuse(request, (
                f"non-DP releases of study {request.study_id!r} were made over sites {prev}; "
                f"releasing this request (or an equivalent rewrite) over {sorted(sites)} would "
                f"give the difference by subtraction (refuse_differencing)"),
                name="participants")
        if self.releases.record(request.study_id, key, sites, one_shot=one_shot):
            self._audit(request, True, f"participants {','.join(sorted(sites))} ({stage})")

    def check_anchor(self, payload: bytes, seq: int, head: str) -> None:
        """Refuse to answer when the audit log is behind the head the hub last saw
        (:mod:`hemafed.privacy.anchors`); the refusal is audited and says why."""
        from hemafed.privacy.anchors import Anchor

        try:
            seen = Anchor(seq, head)
        except ValueError as exc:
            raise self.refuse_malformed(payload, exc) from exc
        own_seq, own_head = self.audit.head()
        why = Anchor(own_seq, own_head).behind(seen)
        if why is None and own_seq > seen.seq and self.audit.hash_at(seen.seq) != seen.head:
            # grown again since a rollback: the entry the hub saw is not in this history
            why = (f"the audit log's entry {seen.seq} is not the one the hub last saw: the log "
                   f"was restored or rewritten and has grown since")
        if why is None:
            return
        behind = PolicyRefused(self.site_id, why)
        behind.refusal = Refusal("rollback", "audit_log")  # type: ignore[attr-defined]
        raise self.refuse_malformed(payload, behind)

    def answer_all(self, requests: Sequence[SiteRequest], *,
                   guaranteed_contributors: int | None = None,
                   before: Callable[[SiteRequest], None] | None = None,
                   after: Callable[[SiteRequest], None] | None = None) -> list[SiteAnswer]:
        """A batch: each request through :meth:`answer`, in order, as if sent one after
        another (``before``/``after`` run around each one); the first refusal raises, so the
        audit log, ledger and plan counts are those of the requests up to and including it."""
        answers = []
        for request in requests:
            if before is not None:
                before(request)
            answers.append(self.answer(request, guaranteed_contributors=guaranteed_contributors))
            if after is not None:
                after(request)
        return answers

    def audit_unanswered(self, requests: Sequence[SiteRequest], refused_part: int) -> None:
        """Audit the batch parts after a refused one as not answered (no plan mark, no charge):
        one entry each, as an answered part writes, so the audit log's length does not tell
        the hub which site refused the batch."""
        for request in requests:
            self._audit(request, False, f"not answered: the batch was refused at part "
                                        f"{refused_part}")

    def audit_effect(self, request: SiteRequest,
                     failure: BaseException | None) -> HemafedError | None:
        """Audit the site effect run after an answered request (e.g. ``combat_apply`` storing
        the harmonised features): one entry whether it succeeded or failed, so the audit log
        grows alike at every site and its head (in every reply) does not tell the hub which
        site's effect failed. A failure (which may depend on the site's data) is returned as a
        ``data_do_not_fit`` refusal to raise; it travels through the sum."""
        if failure is None:
            self._audit(request, True, "site effect applied")
            return None
        detail = "".join(traceback.format_exception_only(type(failure), failure)).strip()
        return self._refuse(request, f"site effect failed: {detail}"[:1500],
                            code="data_do_not_fit", kind=InvalidInput, cause=failure)

    def answer(self, request: SiteRequest, *,
               guaranteed_contributors: int | None = None) -> SiteAnswer:
        """Check, audit, compute, charge and noise one request (see the module docstring).

        ``guaranteed_contributors`` is the least number of sites whose inputs any sum released
        from this answer covers, as the secure-aggregation protocol enforces it (its quorum);
        ``None`` when there is no such guarantee. A DP request whose noise-share divisor
        exceeds it is refused: the released sum would carry less noise than it is charged for.

        Every exception raised while answering, whatever its type, is audited here with its
        full detail and re-raised carrying a :class:`~hemafed.privacy.refusal.Refusal` (the
        only part that may reach the hub): the site keeps running.
        """
        try:
            return self._answer(request, guaranteed_contributors)
        except Exception as exc:
            if isinstance(getattr(exc, "refusal", None), Refusal):
                raise
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise self._refuse(request, f"internal error: {detail}"[:1500],
                               code="internal_error", cause=exc) from exc
        finally:
            self._past_plan.pop(request.request_id, None)

    def _seen(self, study: str, query: str) -> set[str]:
        """Distinct parameter sets of ``query`` answered, or refused after the plan check, for
        ``study`` (from the audit log: entries whose reason ends with the plan mark).

        Read again from the log each time, as far as it grew since the last read: another
        process may answer for this site too (a second worker, a simulation's other actors),
        and a count kept only in memory would let the two together exceed the plan."""
        tail = self.audit.entries_from(self._distinct_offset)
        if tail is None:  # the log is shorter than what was read: count it from the start
            self._distinct, self._distinct_offset = {}, 0
            tail = self.audit.entries_from(0) or ([], 0)
        entries, self._distinct_offset = tail
        for e in entries:
            match = _PLAN_KEY.search(str(e.get("reason", "")))
            if match:
                name = str(e.get("query", "")).split("@")[0]
                self._distinct.setdefault((str(e.get("study")), name), set()).add(
                    match.group(1))
        return self._distinct.setdefault((study, query), set())

    def _plan(self, request: SiteRequest) -> ApprovedPlan | None:
        """The plan of the request's study (``None``: none stored and none required); refuse
        a study whose stored spec does not match, or one without a plan when required."""
        study = request.study_id
        if study in self.plans:
            plan = self.plans[study]
            if plan is None:
                raise self._refuse(request, f"study {study!r}: the stored specification does "
                                            f"not match the approved hash; approve it again",
                                   name="plan_mismatch")
            return plan
        if self.policy.require_plan:
            raise self._refuse(request, f"study {study!r} has no stored specification to derive "
                                        f"its plan from (require_plan is true); approve it with "
                                        f"`hemafed site approve DIR SPEC.yaml`", name="no_plan")
        return None

    def _parse(self, request: SiteRequest, plan: ApprovedPlan | None
               ) -> tuple[Query, QueryParams]:
        """The request's query and its parameters, checked once (:meth:`Query.check`): the
        one object the plan check, the declaration and the computation all take.

        Parameters the query refuses are checked against the plan as sent first, so a
        request outside the plan is refused as such (by its plan element), whatever else
        is wrong with it."""
        try:
            query: Query = get_query(request.query, request.version)
            return query, query.check(request.params)
        except Exception as exc:
            if plan is not None:
                self._check_plan(request, plan, request.params)
            raise self._invalid(request, exc) from exc

    def _invalid(self, request: SiteRequest, exc: Exception) -> HemafedError:
        """The ``invalid_parameter`` refusal of a request its query's checks refused (the
        parameters alone decide it: safe to name the key)."""
        return self._refuse(request, f"invalid request: {type(exc).__name__}: {exc}"[:1500],
                            code="invalid_parameter", kind=InvalidInput,
                            name=parameter_name(str(exc), request.params), cause=exc)

    def _check_plan(self, request: SiteRequest, plan: ApprovedPlan | None,
                    checked: Params | QueryParams) -> str:
        """Refuse a request outside its study's plan, comparing the parsed parameters
        (defaults filled in); return the request's parameter key."""
        params_key = _params_key(checked)
        if plan is not None:
            seen = self._seen(request.study_id, request.query)
            # the identical request again (a retry, a re-run) is not a new round
            problem = plan.check(request.query, checked, request.dp is not None,
                                 0 if params_key in seen else len(seen))
            if problem is not None:
                element, detail = problem
                raise self._refuse(request, f"outside the approved plan of study "
                                            f"{request.study_id!r}: {detail}"[:1500],
                                   code="outside_plan", name=element)
        return params_key

    def _check_release(self, request: SiteRequest, specs: Mapping[str, Statistic],
                       checked: Params | QueryParams) -> None:
        """Refuse, from the request alone, a non-DP release the policy forbids or one asking
        for more values than the policy's ``max_cells``."""
        study = self.policy.study(request.study_id)
        if request.dp is None and (self.policy.require_dp
                                   or (study is not None and study.require_dp)):
            where = "this site" if self.policy.require_dp else f"study {request.study_id!r}"
            raise self._refuse(request, f"{where} requires every release to be differentially "
                                        f"private (require_dp); the request has no DP",
                               name="require_dp")
        cells = declared_cells(s.size for s in specs.values())
        if self.policy.max_cells is not None and cells > self.policy.max_cells:
            raise self._refuse(request, f"the request asks for {cells} values; this site's "
                                        f"max_cells is {self.policy.max_cells}", name="max_cells")
        spu = self._plan_lattice(request, checked) if request.dp is None else None
        if spu is not None and spu > self.policy.max_lattice_steps_per_unit:
            raise self._refuse(request, f"the study's time lattice has {spu:g} steps per year; "
                                        f"this site's max_lattice_steps_per_unit is "
                                        f"{self.policy.max_lattice_steps_per_unit:g} and the "
                                        f"release is not DP", name="max_lattice_steps_per_unit")

    def _plan_lattice(self, request: SiteRequest, checked: Params | QueryParams
                      ) -> float | None:
        """``steps_per_unit`` of the study plan's lattice when it is the request's time grid
        (:meth:`~hemafed.study.plan.StudyPlan.on_plan_lattice`), else ``None``."""
        plan = self.plans.get(request.study_id)
        return None if plan is None else plan.on_plan_lattice(checked, request.query)

    def _check_disclosure(self, request: SiteRequest, query: Query,
                          specs: Mapping[str, Statistic], values: Mapping[str, np.ndarray],
                          changes: np.ndarray | None = None) -> None:
        """Refuse a non-DP answer whose own cells or subgroups are below the policy minimums
        (the detail, naming the statistic, stays in the audit log). ``changes``: the query's
        site-only cells of risk-set changes between grid points (attack M), under the same
        rule; never released."""
        if request.dp is not None:
            return
        if self.policy.enforce_min_cell:
            # per-time event counts too, on the plan's lattice as well (attack L)
            small = small_cells(values, cell_rule_statistics(specs), self.policy.min_cell_size)
            if changes is not None and small_cells({"risk-set changes": changes},
                                                   ["risk-set changes"],
                                                   self.policy.min_cell_size):
                # censorings, competing exits, entries between grid points (attack M)
                small.append("risk-set changes (not released)")
            if small:
                raise self._refuse(request, f"count table {', '.join(small)} has a non-zero cell "
                                            f"below min_cell_size {self.policy.min_cell_size} "
                                            f"and the release is not DP", name="min_cell_size")
        if small_subgroups(values, self.policy.min_subgroup_size or 0):
            raise self._refuse(request, f"a subgroup has fewer than min_subgroup_size "
                                        f"{self.policy.min_subgroup_size} patients and the "
                                        f"release is not DP", name="min_subgroup_size")

    def _answer(self, request: SiteRequest, guaranteed_contributors: int | None) -> SiteAnswer:
        decision = self.policy.check(request, self._clock().astimezone(dt.UTC).date())
        if not decision.allowed:
            raise self._refuse(request, decision.reason, name=decision.rule)
        if (request.dp is not None and request.secure
                and request.noise_share_divisor > (guaranteed_contributors or 1)):
            raise self._refuse(request, (
                f"the request asks each site for 1/{request.noise_share_divisor} of the DP noise "
                f"variance, but the secure aggregation guarantees only "
                f"{guaranteed_contributors or 1} contributing site(s): the released sum would "
                f"carry less noise than the ledger is charged for"), name="noise_share_divisor")

        plan = self._plan(request)
        query, checked = self._parse(request, plan)
        params_key = self._check_plan(request, plan, checked)
        self._past_plan[request.request_id] = params_key
        problems = self._rollback.problems()
        if problems:
            # a restored or deleted ledger would spend the budget again: refuse, audited
            raise self._refuse(request, "the privacy ledger and the audit log disagree: "
                                        + "; ".join(problems)[:1200],
                               code="rollback", name="ledger")

        try:
            specs = query.declare(checked)
        except Exception as exc:
            raise self._invalid(request, exc) from exc

        self._check_release(request, specs, checked)
        try:
            # the site's own class minimum (genotype queries): off when DP covers the release
            own_min = (self.policy.min_cell_size
                       if self.policy.enforce_min_cell and request.dp is None else 0)
            cohort = self.cohort_for(request.study_id)
            values = query.run_checked(cohort, checked, site_id=self.site_id,
                                       min_cell=own_min)
            # the site-only cells of risk-set changes (attack M): checked, never released
            changes = (query.risk_set_changes(cohort, request.params)
                       if own_min and query.risk_set_changes is not None else None)
        except Exception as exc:
            rule = getattr(exc, "site_rule", None)
            if isinstance(rule, str) and rule:
                # a named site rule (e.g. no_genotype_store): the hub gets the rule's name only
                raise self._refuse(request, f"query refused at the site: {exc}"[:1500],
                                   name=rule, cause=exc) from exc
            # the message may quote site data: it stays in the audit log, the hub gets the code
            raise self._refuse(request, f"query failed at the site: {type(exc).__name__}: "
                                        f"{exc}"[:1500],
                               code="data_do_not_fit", kind=InvalidInput, cause=exc,
                               name=public_rule(exc)) from exc

        self._check_disclosure(request, query, specs, values, changes)

        noise_std = dict.fromkeys(specs, 0.0)
        share_std = dict.fromkeys(specs, 0.0)
        eps_charged = delta_charged = 0.0
        if request.dp is not None:
            sensitivity = release_sensitivity(specs)
            if sensitivity > 0:
                dp = request.dp
                try:
                    if dp.noise_multiplier is not None:
                        nm = dp.noise_multiplier
                        # a very large multiplier can cost ~0; the ledger records a positive
                        # epsilon
                        epsilon = max(composed_epsilon([(nm, 1)], dp.delta,
                                                       self.ledger.accountant), 1e-12)
                    else:
                        assert dp.epsilon is not None  # DPRequest holds exactly one of the two
                        epsilon = dp.epsilon
                        # calibrated as the hub does (RDP), so both agree on the widened bounds
                        nm = calibration.noise_multiplier(dp)
                    sigma = nm * sensitivity
                    if not (math.isfinite(sigma) and math.isfinite(epsilon) and sigma > 0):
                        raise ValueError(f"noise multiplier {nm!r} x sensitivity "
                                         f"{sensitivity!r} gives no usable noise level")
                except Exception as exc:
                    raise self._refuse(request, f"DP settings unusable: {type(exc).__name__}: "
                                                f"{exc}"[:1500],
                                       code="invalid_parameter", name="dp", kind=InvalidInput,
                                       cause=exc) from exc
                divisor = request.noise_share_divisor if request.secure else 1
                try:
                    self.ledger.charge(request.study_id, request.query_key, epsilon, dp.delta,
                                       nm, request_id=request.request_id)
                except BudgetExhausted as exc:
                    scope = request.study_id if len(request.study_id) <= 64 else "study"
                    raise self._refuse(request, exc.reason, code="budget",
                                       name=scope, kind=BudgetExhausted,
                                       cause=exc) from exc
                eps_charged, delta_charged = epsilon, dp.delta
                for name, stat in specs.items():
                    if stat.sensitivity > 0:
                        noise_std[name] = sigma
                        share_std[name] = sigma / math.sqrt(divisor)

        self._audit(request, True, f"{decision.reason}; {PLAN_MARK}{params_key}",
                    eps_charged, delta_charged)
        self._rollback.settled()  # the charge and its audit entry agree
        self._seen(request.study_id, request.query).add(params_key)

        out_values: dict[str, np.ndarray] = {}
        out_specs: dict[str, Statistic] = {}
        for name, stat in specs.items():
            std = share_std[name]
            if std > 0:
                out_values[name] = values[name] + self._rng.normal(0.0, std, size=stat.shape)
                pad = NOISE_BOUND_STDS * std
                out_specs[name] = dataclasses.replace(stat, low=stat.low - pad,
                                                      high=stat.high + pad)
            else:
                out_values[name] = values[name]
                out_specs[name] = stat
        return SiteAnswer(request.request_id, self.site_id, request.query_key, out_values,
                          out_specs, self.policy.min_cell_size, noise_std, share_std, request.dp,
                          eps_charged, delta_charged)
