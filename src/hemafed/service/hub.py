"""The hub service's logic over its database: accounts, sites, studies, decisions, runs, registry.

The web layer (:mod:`hemafed.service.app`) only parses requests and renders answers; every rule
(who may see or do what, rate limits, signature checks, run states) lives here, and every action
is written to the hub's own hash-chained audit log (:class:`hemafed.site.audit.AuditLog`, the
same chain the sites keep). On start, a run the database still calls queued or running cannot be
running any more (runs live in this process): it is marked ``interrupted`` with the reason; a
catalogue refresh a killed process had claimed is released, and a due one runs once.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import CursorResult

from hemafed.errors import HemafedError, InvalidInput, PolicyRefused
from hemafed.secure.identity import check_site_id
from hemafed.service import security
from hemafed.service.approval import SignedDecision, verify_decision
from hemafed.service.db import Database, aware
from hemafed.service.models import (
    ROLES,
    ApiToken,
    Approval,
    BrowserSession,
    CatalogueApproval,
    CataloguePlanRow,
    CatalogueRelease,
    CatalogueSchedule,
    LoginFailure,
    ModelVersion,
    Result,
    Run,
    Site,
    Study,
    StudyVersion,
    User,
)
from hemafed.service.runs import FederationBackend
from hemafed.site.audit import AuditLog
from hemafed.study.spec import StudySpec

log = logging.getLogger(__name__)

SESSION_TTL = dt.timedelta(hours=8)
MODEL_KINDS = ("cox", "logistic", "gbdt")


class AccessDenied(HemafedError):
    """The account may not see or do this (HTTP 403)."""


class NotFound(HemafedError):
    """No such object, or not one this account may see (HTTP 404)."""


class CatalogueRefused(PolicyRefused):
    """A catalogue refresh a site refused: the message names the rule, never the site."""

    def __init__(self, rule: str) -> None:
        HemafedError.__init__(self, f"catalogue refresh refused: {rule}")
        self.site, self.reason = "", rule


class TooManyAttempts(HemafedError):
    """Login slowed down after repeated wrong passwords (HTTP 429)."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"too many wrong passwords; try again in {wait:.0f} s")
        self.wait = wait


def parse_spec(text: str, source: str = "study spec") -> StudySpec:
    """A spec from YAML text; ``InvalidInput`` lists every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}") from exc
    return StudySpec.from_mapping(raw, source=source)


class HubService:
    """Everything the hub does, on ``db``, with runs on ``federation`` and audit in ``data_dir``."""

    def __init__(self, db: Database, data_dir: str | Path, *,
                 federation: FederationBackend | None = None,
                 clock: Callable[[], dt.datetime] | None = None,
                 session_ttl: dt.timedelta = SESSION_TTL) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.federation = federation
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.session_ttl = session_ttl
        self.audit_log = AuditLog(self.data_dir / "hub-audit.jsonl", clock=self.clock)
        self._workers: dict[int, threading.Thread] = {}
        self.instance = security.new_token()[:32]  # this process, for refresh claims
        self._stop = threading.Event()
        self._wake = threading.Event()  # a new plan: look at its due time now
        self._scheduler: threading.Thread | None = None
        self._interrupt_stale_runs()
        self._release_stale_refresh()

    # --- audit ----------------------------------------------------------------------------

    def audit(self, actor: str, action: str, target: str = "", params: dict[str, Any] | None = None,
              *, allowed: bool = True, reason: str = "") -> None:
        self.audit_log.append(requester=actor, study=target, query=action, params=params or {},
                              allowed=allowed, reason=reason)

    # --- accounts -------------------------------------------------------------------------

    def create_user(self, username: str, password: str, role: str, *,
                    site_id: str | None = None, actor: str = "system") -> User:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        if not username or len(username) > 64 or not username.replace("-", "").replace(
                "_", "").replace(".", "").isalnum():
            raise InvalidInput(f"user name {username!r}: 1-64 letters, digits, '-', '_' or '.'")
        if (role == "officer") != (site_id is not None):
            raise InvalidInput("a site officer belongs to exactly one site; other roles to none")
        try:
            pw_hash = security.hash_password(password)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        with self.db.session() as s:
            if s.scalar(select(User).where(User.username == username)) is not None:
                raise InvalidInput(f"user {username!r} exists already")
            if site_id is not None and s.get(Site, site_id) is None:
                raise InvalidInput(f"no site {site_id!r}; onboard it first")
            user = User(username=username, password_hash=pw_hash, role=role, site_id=site_id,
                        created=self.clock())
            s.add(user)
            s.commit()
        self.audit(actor, "create_user", username, {"role": role, "site": site_id or ""})
        return user

    def ensure_admin(self, username: str, password: str) -> None:
        with self.db.session() as s:
            if s.scalar(select(User).where(User.role == "admin")) is not None:
                return
        self.create_user(username, password, "admin")

    def login(self, username: str, password: str) -> tuple[str, str]:
        """A new browser session ``(cookie token, csrf token)``; slowed after wrong passwords."""
        now = self.clock()
        with self.db.session() as s:
            failures = [aware(t) for t in s.scalars(
                select(LoginFailure.time).where(LoginFailure.username == username))]
            wait = security.wait_seconds(failures, now)
            if wait > 0:
                self.audit(username, "login", "", allowed=False, reason="rate limited")
                raise TooManyAttempts(wait)
            user = s.scalar(select(User).where(User.username == username))
            if user is None or not security.check_password(user.password_hash, password):
                s.add(LoginFailure(username=username[:64], time=now))
                s.commit()
                self.audit(username, "login", "", allowed=False, reason="wrong user or password")
                raise AccessDenied("wrong user name or password")
            s.execute(delete(LoginFailure).where(LoginFailure.username == username))
            token, csrf = security.new_token(), security.new_token()
            s.add(BrowserSession(token_sha256=security.token_digest(token), user_id=user.id,
                                 csrf=csrf, expires=now + self.session_ttl))
            s.commit()
        self.audit(username, "login", "")
        return token, csrf

    def logout(self, token: str) -> None:
        with self.db.session() as s:
            s.execute(delete(BrowserSession).where(
                BrowserSession.token_sha256 == security.token_digest(token)))
            s.commit()

    def session_user(self, token: str) -> tuple[User, str] | None:
        """The user and CSRF token of a live session; ``None`` when unknown or expired."""
        with self.db.session() as s:
            sess = s.get(BrowserSession, security.token_digest(token))
            if sess is None:
                return None
            if aware(sess.expires) <= self.clock():
                s.delete(sess)
                s.commit()
                return None
            return sess.user, sess.csrf

    def issue_token(self, user: User, name: str = "script") -> str:
        token = security.new_token()
        with self.db.session() as s:
            s.add(ApiToken(token_sha256=security.token_digest(token), user_id=user.id,
                           name=name[:64], created=self.clock()))
            s.commit()
        self.audit(user.username, "issue_token", name)
        return token

    def token_user(self, token: str) -> User | None:
        with self.db.session() as s:
            row = s.get(ApiToken, security.token_digest(token))
            return None if row is None else row.user

    def users(self) -> list[User]:
        with self.db.session() as s:
            return list(s.scalars(select(User).order_by(User.id)))

    # --- sites ----------------------------------------------------------------------------

    def onboard_site(self, admin: User, site_id: str, name: str, identity_key: str,
                     node_key: str | None = None) -> Site:
        self._require(admin, "admin")
        check_site_id(site_id)
        try:
            raw = base64.b64decode(identity_key.strip(), validate=True)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise InvalidInput("identity key: expected the site's Ed25519 public key, base64 "
                               "(shown in the site console and by `hemafed site identity`)")
        with self.db.session() as s:
            if s.get(Site, site_id) is not None:
                raise InvalidInput(f"site {site_id!r} is onboarded already")
            site = Site(site_id=site_id, name=name or site_id, identity_key=identity_key.strip(),
                        node_key=node_key or None, created=self.clock())
            s.add(site)
            s.commit()
        self.audit(admin.username, "onboard_site", site_id, {"name": name})
        return site

    def sites(self, user: User) -> list[Site]:
        with self.db.session() as s:
            q = select(Site).order_by(Site.site_id)
            if user.role == "officer":
                q = q.where(Site.site_id == user.site_id)
            return list(s.scalars(q))

    def site(self, user: User, site_id: str) -> Site:
        if user.role == "researcher" or (user.role == "officer" and user.site_id != site_id):
            self.audit(user.username, "read_site", site_id, allowed=False, reason="not your site")
            raise AccessDenied(f"{user.username} may not see site {site_id}'s records")
        with self.db.session() as s:
            site = s.get(Site, site_id)
            if site is None:
                raise NotFound(f"no site {site_id!r}")
            return site

    def heartbeat(self, officer: User, audit_seq: int, audit_hash: str, audit_ok: bool) -> None:
        """The site's console reports in: last seen now, its audit head and verification."""
        self._require(officer, "officer")
        with self.db.session() as s:
            site = s.get(Site, officer.site_id)
            assert site is not None
            site.last_seen = self.clock()
            site.audit_seq, site.audit_hash, site.audit_ok = int(audit_seq), audit_hash[:64], \
                bool(audit_ok)
            s.commit()

    # --- catalogue (hemafed.service.catalogue) ---------------------------------------------

    def set_catalogue_plan(self, admin: User, spec_text: str) -> CataloguePlanRow:
        """The network's standing catalogue plan; every site approves its hash once."""
        from hemafed.service.catalogue import parse_plan

        self._require(admin, "admin")
        plan = parse_plan(spec_text)
        with self.db.session() as s:
            now = self.clock()
            row = CataloguePlanRow(spec_yaml=spec_text, spec_sha256=plan.spec.sha256,
                                   created=now)
            s.add(row)
            sched = s.get(CatalogueSchedule, 1)
            if sched is None:
                sched = CatalogueSchedule(id=1, spec_sha256=plan.spec.sha256)
                s.add(sched)
            # a new plan starts its own schedule (a refresh in flight keeps its claim)
            sched.spec_sha256 = plan.spec.sha256
            sched.next_due = None if plan.interval is None else now + plan.interval
            sched.last_attempt = sched.last_trigger = sched.last_outcome = None
            sched.last_reason = None
            s.commit()
        self.audit(admin.username, "set_catalogue_plan", "catalogue",
                   {"sha256": plan.spec.sha256})
        self._wake.set()
        return row

    def catalogue_plan(self) -> CataloguePlanRow | None:
        with self.db.session() as s:
            return s.scalar(select(CataloguePlanRow).order_by(CataloguePlanRow.id.desc())
                            .limit(1))

    def _current_plan(self) -> CataloguePlanRow:
        row = self.catalogue_plan()
        if row is None:
            raise InvalidInput("the network has no catalogue plan yet (the admin sets one)")
        return row

    def record_catalogue_approval(self, officer: User, signed: SignedDecision) -> None:
        """File the officer's site's signed approval of the current catalogue plan."""
        from hemafed.service.catalogue import CATALOGUE_ID

        self._require(officer, "officer")
        plan = self._current_plan()
        site_id = str(officer.site_id)
        with self.db.session() as s:
            site = s.get(Site, site_id)
            assert site is not None
            try:
                doc = verify_decision(signed, site_id=site_id, identity_key_b64=site.identity_key,
                                      study_id=CATALOGUE_ID, spec_sha256=plan.spec_sha256)
            except PolicyRefused as exc:
                self.audit(officer.username, "approve_catalogue", site_id, allowed=False,
                           reason=str(exc))
                raise
            if doc["decision"] != "approved":
                raise InvalidInput("a catalogue decision filed here is an approval")
            s.execute(delete(CatalogueApproval).where(
                CatalogueApproval.site_id == site_id,
                CatalogueApproval.spec_sha256 == plan.spec_sha256))
            s.add(CatalogueApproval(site_id=site_id, spec_sha256=plan.spec_sha256,
                                    officer=str(doc.get("officer", officer.username))[:64],
                                    signed_payload=signed.payload, signature=signed.signature,
                                    time=self.clock()))
            s.commit()
        self.audit(officer.username, "approve_catalogue", site_id,
                   {"sha256": plan.spec_sha256})

    def publish_description(self, officer: User, doc: dict[str, Any]) -> None:
        """The site's public description: disease areas and fields held (names only)."""
        from hemafed.service.catalogue import check_description

        self._require(officer, "officer")
        clean = check_description(doc)
        with self.db.session() as s:
            site = s.get(Site, officer.site_id)
            assert site is not None
            site.description, site.description_time = clean, self.clock()
            s.commit()
        self.audit(officer.username, "publish_description", str(officer.site_id))

    def catalogue_sites(self) -> list[str]:
        """The sites that approved the current catalogue plan (in site order)."""
        plan = self._current_plan()
        with self.db.session() as s:
            approved = set(s.scalars(select(CatalogueApproval.site_id).where(
                CatalogueApproval.spec_sha256 == plan.spec_sha256)))
        ids = self.federation.site_ids if self.federation is not None else ()
        return [sid for sid in sorted(ids) if sid in approved]

    def refresh_catalogue(self, admin: User) -> dict[str, Any]:
        """One refresh at the admin's request (:meth:`_refresh`)."""
        self._require(admin, "admin")
        return self._refresh(admin.username, "admin")

    def _refresh(self, actor: str, trigger: str) -> dict[str, Any]:
        """One refresh through the secure path over the approving sites; stores only the
        rounded, suppressed releases. A site's refusal (e.g. its catalogue budget is spent)
        refuses the refresh naming the rule, not the site.

        Restart-safe: the refresh is claimed in the schedule row first (one at a time, by this
        process); the releases and the next due time are committed in one transaction, so a
        hub killed at any point either published the refresh and moved the schedule on, or
        did neither (its claim is released on the next start and the due refresh runs once).
        An attempt that fails is recorded with its reason and rescheduled one interval on.
        """
        from hemafed.privacy.refusal import CODES, Refusal
        from hemafed.service.catalogue import parse_plan, release

        row = self._current_plan()
        plan = parse_plan(row.spec_yaml)
        if not self._claim_refresh(due_only=trigger == "schedule"):
            if trigger == "schedule":
                return {}
            raise InvalidInput("a catalogue refresh is in progress; reload the page in a moment")
        try:
            if self.federation is None or not hasattr(self.federation, "run_catalogue"):
                raise InvalidInput("this hub has no federation configured to count the "
                                   "catalogue")
            sites = self.catalogue_sites()
            if not sites:
                raise InvalidInput("no site has approved the current catalogue plan")
            if plan.epsilon == 0:
                sites = self._exact_refresh_sites(sites)
            try:
                raw = self.federation.run_catalogue(row.spec_yaml, sites)
            except HemafedError as exc:
                ref = getattr(exc, "refusal", None)
                why = (CODES[ref.code].format(name=ref.name or "-") if isinstance(ref, Refusal)
                       else "the secure sum did not complete")
                self.audit(actor, "refresh_catalogue", "catalogue", allowed=False, reason=why)
                raise CatalogueRefused(why) from None
        except HemafedError as exc:
            self._end_refresh(plan, trigger, "failed", str(exc), moved_on=trigger == "schedule")
            raise
        except BaseException:
            self._end_refresh(plan, trigger, "failed", "the refresh stopped unexpectedly",
                              moved_on=trigger == "schedule")
            raise
        released = release(plan, raw)
        now = self.clock()
        with self.db.session() as s:
            refresh = (s.scalar(select(func.max(CatalogueRelease.refresh))) or 0) + 1
            for sid, counts in released.items():
                s.add(CatalogueRelease(refresh=refresh, site_id=sid or None,
                                       spec_sha256=row.spec_sha256, epsilon=plan.epsilon,
                                       delta=plan.delta, counts=counts, time=now))
            self._schedule_outcome(s, plan, trigger, "ok", "", moved_on=True)
            s.commit()
        self.audit(actor, "refresh_catalogue", "catalogue",
                   {"refresh": refresh, "sites": len(sites), "epsilon": plan.epsilon,
                    "trigger": trigger})
        return {"refresh": refresh, "sites": list(raw.get("contributors", sites)),
                "epsilon": plan.epsilon}

    def exact_catalogue_sites(self) -> list[str] | None:
        """The sites of the first no-noise (epsilon 0) release of the catalogue, under any
        plan (``None``: there was none). Every later no-noise release is over this set."""
        with self.db.session() as s:
            first = s.scalar(select(CatalogueRelease).where(
                CatalogueRelease.epsilon == 0, CatalogueRelease.site_id.is_(None))
                .order_by(CatalogueRelease.refresh).limit(1))
        return None if first is None else list(first.counts.get("sites", []))

    def _exact_refresh_sites(self, approving: list[str]) -> list[str]:
        """The sites a no-noise refresh asks: the set of the catalogue's first no-noise
        release, whatever joined since.

        Two exact releases of the study ``catalogue`` over different site sets give the
        sites in their difference by subtraction; every site's ``refuse_differencing``
        (on by default) refuses that, keyed on the study, not the plan, so the hub keeps an
        exact catalogue over its first set: a site that approves later is not asked (not
        published until a plan with epsilon > 0), and a refresh that would drop a site of the
        set is refused here, naming the rule, before any site is asked. DP releases are not
        restricted (each is charged), so a DP plan follows the network.
        """
        pinned = self.exact_catalogue_sites()
        if pinned is None:
            return approving
        if not set(pinned) <= set(approving):
            self.audit("hub", "refresh_catalogue", "catalogue", allowed=False,
                       reason="refuse_differencing: exact catalogue site set")
            raise CatalogueRefused(
                "refuse_differencing: an exact (epsilon 0) catalogue is released over the "
                "sites of its first release, and not all of them approved the current plan; "
                "an exact release over another set would give the difference by subtraction. "
                "Ways on: those sites approve the current plan, or the admin sets a plan with "
                "epsilon > 0 (DP releases follow the network)")
        return [sid for sid in approving if sid in set(pinned)]

    def _claim_refresh(self, *, due_only: bool) -> bool:
        """Take the schedule row for this process (atomic on SQLite and PostgreSQL); with
        ``due_only``, only when the next refresh is due."""
        now = self.clock()
        with self.db.session() as s:
            if s.get(CatalogueSchedule, 1) is None:
                if due_only:
                    return False
                plan = self._current_plan()
                s.add(CatalogueSchedule(id=1, spec_sha256=plan.spec_sha256))
                s.flush()
            q = update(CatalogueSchedule).where(CatalogueSchedule.id == 1,
                                                CatalogueSchedule.claimed_by.is_(None))
            if due_only:
                q = q.where(CatalogueSchedule.next_due.is_not(None),
                            CatalogueSchedule.next_due <= now)
            done = cast("CursorResult[Any]", s.execute(q.values(claimed_by=self.instance,
                                                                 claimed_at=now)))
            got = done.rowcount
            s.commit()
        return bool(got)

    def _schedule_outcome(self, s: Any, plan: Any, trigger: str, outcome: str, reason: str, *,
                          moved_on: bool) -> None:
        sched = s.get(CatalogueSchedule, 1)
        if sched is None or sched.claimed_by != self.instance:
            return
        now = self.clock()
        sched.claimed_by = sched.claimed_at = None
        sched.last_attempt, sched.last_trigger = now, trigger
        sched.last_outcome, sched.last_reason = outcome, reason[:2000] or None
        if moved_on and sched.spec_sha256 == plan.spec.sha256:
            sched.next_due = None if plan.interval is None else now + plan.interval

    def _end_refresh(self, plan: Any, trigger: str, outcome: str, reason: str, *,
                     moved_on: bool) -> None:
        with self.db.session() as s:
            self._schedule_outcome(s, plan, trigger, outcome, reason, moved_on=moved_on)
            s.commit()
        if trigger == "schedule":
            log.warning("scheduled catalogue refresh %s: %s", outcome, reason)

    def _release_stale_refresh(self) -> None:
        """A refresh claimed by an earlier hub process (killed mid-refresh) published nothing
        (the releases commit with the schedule): release the claim and record it; a due
        refresh stays due and runs once."""
        with self.db.session() as s:
            sched = s.get(CatalogueSchedule, 1)
            if sched is None or sched.claimed_by is None or sched.claimed_by == self.instance:
                return
            sched.claimed_by, sched.claimed_at = None, None
            sched.last_attempt, sched.last_outcome = self.clock(), "interrupted"
            sched.last_reason = ("the hub stopped during this refresh; nothing was published "
                                 "(a due refresh runs again)")
            s.commit()
        self.audit("hub", "refresh_catalogue", "catalogue", allowed=False,
                   reason="hub restarted during a refresh")

    def catalogue_schedule(self) -> dict[str, Any] | None:
        """The schedule of the current plan: next due time, last attempt and its reason."""
        row = self.catalogue_plan()
        with self.db.session() as s:
            sched = s.get(CatalogueSchedule, 1)
        if row is None or sched is None or sched.spec_sha256 != row.spec_sha256:
            return None
        return {"next_due": None if sched.next_due is None else aware(sched.next_due),
                "running": sched.claimed_by is not None,
                "last_attempt": None if sched.last_attempt is None else aware(sched.last_attempt),
                "last_trigger": sched.last_trigger, "last_outcome": sched.last_outcome,
                "last_reason": sched.last_reason}

    def stop_scheduler(self, timeout: float = 5.0) -> None:
        """Stop the scheduler thread (a refresh in flight past ``timeout`` is left to the
        daemon thread; if the process then ends, the next start releases its claim)."""
        self._stop.set()
        self._wake.set()
        if self._scheduler is not None:
            self._scheduler.join(timeout)

    def run_due_refresh(self) -> dict[str, Any] | None:
        """The scheduler's step: run the refresh if it is due (``None`` when none was);
        a refused refresh is recorded and rescheduled, not raised."""
        sched = self.catalogue_schedule()
        if sched is None or sched["next_due"] is None or sched["running"] \
                or sched["next_due"] > self.clock():
            return None
        try:
            return self._refresh("hub-scheduler", "schedule") or None
        except HemafedError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # recorded by _refresh; the scheduler keeps going
            log.exception("scheduled catalogue refresh")
            return {"error": f"{type(exc).__name__}"}

    def start_scheduler(self, poll: float = 30.0) -> None:
        """Run due refreshes in a background thread until :meth:`dispose` (checks at least
        every ``poll`` seconds, and at the due time when it is sooner)."""
        if self._scheduler is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_due_refresh()
                    sched = self.catalogue_schedule()
                except Exception:  # a database hiccup must not end the schedule
                    log.exception("catalogue scheduler")
                    sched = None
                wait = poll
                if sched is not None and sched["next_due"] is not None:
                    left = (sched["next_due"] - self.clock()).total_seconds()
                    wait = min(poll, max(0.2, left))
                self._wake.wait(wait)
                self._wake.clear()

        self._scheduler = threading.Thread(target=loop, name="hemafed-catalogue-scheduler",
                                           daemon=True)
        self._scheduler.start()

    def catalogue(self, user: User) -> dict[str, Any]:
        """What any account sees for feasibility: the plan, each site's latest release under
        it (or "not published"), its public description, and the network totals."""
        from hemafed.service.catalogue import describe_plan, parse_plan

        row = self.catalogue_plan()
        with self.db.session() as s:
            sites = list(s.scalars(select(Site).order_by(Site.site_id)))
            releases = [] if row is None else list(s.scalars(
                select(CatalogueRelease).where(CatalogueRelease.spec_sha256 == row.spec_sha256)
                .order_by(CatalogueRelease.refresh)))
        latest: dict[str | None, CatalogueRelease] = {}
        spent: dict[str | None, float] = {}
        for r in releases:
            latest[r.site_id] = r
            spent[r.site_id] = spent.get(r.site_id, 0.0) + r.epsilon

        def rel(key: str | None) -> dict[str, Any] | None:
            r = latest.get(key)
            return None if r is None else {"refresh": r.refresh, "time": aware(r.time),
                                           "epsilon": r.epsilon, "delta": r.delta,
                                           "epsilon_spent": spent[key], **r.counts}
        return {"plan": None if row is None else {
                    "sha256": row.spec_sha256, "text": describe_plan(parse_plan(row.spec_yaml))},
                "sites": [{"site_id": x.site_id, "name": x.name, "description": x.description,
                           "release": rel(x.site_id)} for x in sites],
                "network": rel(None), "schedule": self.catalogue_schedule(),
                "exact_sites": self.exact_catalogue_sites() if row is not None and parse_plan(
                    row.spec_yaml).epsilon == 0 else None}

    # --- studies --------------------------------------------------------------------------

    def submit_study(self, owner: User, spec_text: str) -> Study:
        self._require(owner, "researcher")
        spec = parse_spec(spec_text)
        now = self.clock()
        with self.db.session() as s:
            if s.scalar(select(Study).where(Study.study_id == spec.study_id)) is not None:
                raise InvalidInput(f"study_id {spec.study_id!r} is taken; choose another or "
                                   f"amend your study")
            study = Study(study_id=spec.study_id, owner_id=owner.id,
                          title=spec.title or spec.study_id, spec_yaml=spec_text,
                          spec_sha256=spec.sha256, version=1, created=now, updated=now)
            s.add(study)
            s.flush()
            s.add(StudyVersion(study_pk=study.id, version=1, spec_yaml=spec_text,
                               spec_sha256=spec.sha256, note="submitted", created=now))
            s.commit()
        self.audit(owner.username, "submit_study", spec.study_id, {"sha256": spec.sha256})
        return study

    def amend_study(self, owner: User, study_pk: int, spec_text: str, note: str = "") -> Study:
        study = self.study(owner, study_pk)
        if study.owner_id != owner.id:
            raise AccessDenied("only the study's owner amends it")
        spec = parse_spec(spec_text)
        if spec.study_id != study.study_id:
            raise InvalidInput(f"an amendment keeps study_id {study.study_id!r}")
        now = self.clock()
        with self.db.session() as s:
            row = s.get(Study, study_pk)
            assert row is not None
            row.version += 1
            row.spec_yaml, row.spec_sha256 = spec_text, spec.sha256
            row.title, row.updated = spec.title or spec.study_id, now
            s.add(StudyVersion(study_pk=row.id, version=row.version, spec_yaml=spec_text,
                               spec_sha256=spec.sha256, note=note or "amended", created=now))
            s.commit()
            study = row
        self.audit(owner.username, "amend_study", study.study_id, {"sha256": spec.sha256})
        return study

    def studies(self, user: User) -> list[Study]:
        with self.db.session() as s:
            q = select(Study).order_by(Study.id.desc())
            if user.role == "researcher":
                q = q.where(Study.owner_id == user.id)
            return list(s.scalars(q))

    def study(self, user: User, study_pk: int) -> Study:
        """A study this user may see (owner, any site officer, admin)."""
        with self.db.session() as s:
            study = s.get(Study, study_pk)
            if study is None:
                raise NotFound(f"no study {study_pk}")
            if user.role == "researcher" and study.owner_id != user.id:
                self.audit(user.username, "read_study", study.study_id, allowed=False,
                           reason="not the owner")
                raise NotFound(f"no study {study_pk}")
            return study

    def versions(self, user: User, study_pk: int) -> list[StudyVersion]:
        self.study(user, study_pk)
        with self.db.session() as s:
            return list(s.scalars(select(StudyVersion).where(StudyVersion.study_pk == study_pk)
                                  .order_by(StudyVersion.version)))

    def approvals(self, user: User, study_pk: int) -> dict[str, Approval | None]:
        """Each site's decision on the study's current spec hash (``None``: pending)."""
        study = self.study(user, study_pk)
        with self.db.session() as s:
            rows = {a.site_id: a for a in s.scalars(select(Approval).where(
                Approval.study_pk == study_pk, Approval.spec_sha256 == study.spec_sha256))}
            return {site.site_id: rows.get(site.site_id)
                    for site in s.scalars(select(Site).order_by(Site.site_id))}

    def pending_for_site(self, officer: User) -> list[Study]:
        self._require(officer, "officer")
        with self.db.session() as s:
            decided = select(Approval.study_pk).where(
                Approval.site_id == officer.site_id, Approval.spec_sha256 == Study.spec_sha256)
            return list(s.scalars(select(Study).where(~Study.id.in_(decided))
                                  .order_by(Study.id)))

    def record_decision(self, officer: User, study_pk: int, site_id: str,
                        signed: SignedDecision) -> Approval:
        """File a site's signed decision; refused unless the officer's own site signed it."""
        if officer.role != "officer" or officer.site_id != site_id:
            self.audit(officer.username, "decide", str(study_pk), {"site": site_id},
                       allowed=False, reason="not an officer of this site")
            raise AccessDenied(f"{officer.username} may not decide for site {site_id}")
        study = self.study(officer, study_pk)
        with self.db.session() as s:
            site = s.get(Site, site_id)
            if site is None:
                raise NotFound(f"no site {site_id!r}")
            try:
                doc = verify_decision(signed, site_id=site_id, identity_key_b64=site.identity_key,
                                      study_id=study.study_id, spec_sha256=study.spec_sha256)
            except PolicyRefused as exc:
                self.audit(officer.username, "decide", study.study_id, {"site": site_id},
                           allowed=False, reason=str(exc))
                raise
            existing = s.scalar(select(Approval).where(
                Approval.study_pk == study_pk, Approval.site_id == site_id,
                Approval.spec_sha256 == study.spec_sha256))
            if existing is not None:
                s.delete(existing)
                s.flush()
            row = Approval(study_pk=study_pk, site_id=site_id, spec_sha256=study.spec_sha256,
                           decision=doc["decision"], reason=str(doc.get("reason", "")),
                           officer=str(doc.get("officer", officer.username)),
                           signed_payload=signed.payload, signature=signed.signature,
                           time=self.clock())
            s.add(row)
            s.commit()
        self.audit(officer.username, "decide", study.study_id,
                   {"site": site_id, "decision": doc["decision"], "sha256": study.spec_sha256})
        return row

    # --- runs -----------------------------------------------------------------------------

    def _interrupt_stale_runs(self) -> None:
        with self.db.session() as s:
            stale = list(s.scalars(select(Run).where(Run.state.in_(("queued", "running")))))
            for run in stale:
                run.state = "interrupted"
                run.error = ("the hub stopped while this run was in progress; no result was "
                             "released. Start the run again.")
                run.finished = self.clock()
            s.commit()
        for run in stale:
            self.audit("hub", "interrupt_run", str(run.id), reason="hub restarted")

    def start_run(self, user: User, study_pk: int, *, background: bool = True) -> Run:
        study = self.study(user, study_pk)
        if user.role != "admin" and study.owner_id != user.id:
            raise AccessDenied("only the study's owner starts its runs")
        if self.federation is None:
            raise InvalidInput("this hub has no federation configured (start it with --site "
                               "DIR for local sites)")
        decisions = self.approvals(user, study_pk)
        missing = [sid for sid in self.federation.site_ids
                   if decisions.get(sid) is None or decisions[sid].decision != "approved"]  # type: ignore[union-attr]
        if missing:
            raise PolicyRefused(", ".join(missing), "these sites have not approved the current "
                                                    "version of the study")
        with self.db.session() as s:
            run = Run(study_pk=study_pk, spec_sha256=study.spec_sha256, state="queued",
                      transport=getattr(self.federation, "transport", "deploy"), progress={},
                      contributors=[], dropouts=[], started=self.clock())
            s.add(run)
            s.commit()
        self.audit(user.username, "start_run", study.study_id, {"run": run.id})
        spec = parse_spec(study.spec_yaml)
        if background:
            worker = threading.Thread(target=self._execute, args=(run.id, spec),
                                      name=f"hemafed-run-{run.id}", daemon=True)
            self._workers[run.id] = worker
            worker.start()
        else:
            self._execute(run.id, spec)
        return run

    def wait_for_workers(self, timeout: float = 600.0) -> None:
        for worker in list(self._workers.values()):
            worker.join(timeout)

    def dispose(self) -> None:
        """Stop the scheduler, wait for runs in flight, then close the database connections."""
        self.stop_scheduler(600.0)
        self.wait_for_workers()
        self.db.dispose()

    def _update_run(self, run_id: int, *, only_from: str | None = None, **fields: Any) -> bool:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            if only_from is not None and run.state != only_from:
                return False  # another hub process marked it (e.g. interrupted on restart)
            for k, v in fields.items():
                setattr(run, k, v)
            s.commit()
            return True

    def _execute(self, run_id: int, spec: StudySpec) -> None:
        from hemafed.study.report import build_report

        assert self.federation is not None
        if not self._update_run(run_id, only_from="queued", state="running"):
            return

        def progress(doc: dict[str, Any]) -> None:
            with self.db.session() as s:
                run = s.get(Run, run_id)
                if run is not None:
                    run.progress = {**(run.progress or {}), **doc}
                    s.commit()
        try:
            results = self.federation.run(spec, progress, key=f"run-{run_id}")
            html = build_report(results, subtitle=f"hub run {run_id}").render()
        except Exception as exc:  # the run fails with its reason; the hub keeps serving
            reason = str(exc) if isinstance(exc, HemafedError) else f"{type(exc).__name__}: {exc}"
            log.warning("run %s failed: %s", run_id, reason)
            self._update_run(run_id, only_from="running", state="failed", error=reason[:2000],
                             finished=self.clock())
            self.audit("hub", "run_failed", str(run_id), reason=reason[:200])
            return
        dropped = sorted({s for a in results["analyses"]
                          for s in a.get("provenance", {}).get("dropped sites", [])})
        failed = [a["id"] for a in results["analyses"] if a.get("status") != "ok"]
        with self.db.session() as s:
            run = s.get(Run, run_id)
            assert run is not None
            if run.state != "running":
                log.warning("run %s finished but is %s; its result is not recorded", run_id,
                            run.state)
                return
            s.add(Result(run_id=run_id, document=results, report_html=html))
            run.state = "succeeded"
            run.contributors = list(results.get("sites", []))
            run.dropouts = dropped
            run.error = f"analyses that did not complete: {', '.join(failed)}" if failed else None
            run.finished = self.clock()
            run.progress = {**(run.progress or {}), "done": True}
            for doc in results["analyses"]:
                if doc["kind"] in MODEL_KINDS and doc.get("status") == "ok":
                    name = f"{results['study_id']}.{doc['id']}"
                    last = s.scalar(select(func.max(ModelVersion.version))
                                    .where(ModelVersion.name == name)) or 0
                    s.add(ModelVersion(name=name, version=last + 1, kind=doc["kind"],
                                       spec_sha256=run.spec_sha256, run_id=run_id,
                                       payload={k: doc.get(k) for k in ("tables", "stats",
                                                                        "options", "title")},
                                       created=self.clock()))
            s.commit()
        self.audit("hub", "run_succeeded", str(run_id), {"sites": len(run.contributors)})

    def runs(self, user: User, study_pk: int | None = None) -> list[Run]:
        with self.db.session() as s:
            q = select(Run).join(Study).order_by(Run.id.desc())
            if study_pk is not None:
                q = q.where(Run.study_pk == study_pk)
            if user.role == "researcher":
                q = q.where(Study.owner_id == user.id)
            runs = list(s.scalars(q))
            if user.role == "officer":
                runs = [r for r in runs if user.site_id in (r.contributors or [])
                        or r.state in ("queued", "running")]
            return runs

    def run(self, user: User, run_id: int) -> Run:
        with self.db.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise NotFound(f"no run {run_id}")
            study_pk = run.study_pk
        self.study(user, study_pk)
        return run

    def result(self, user: User, run_id: int) -> Result:
        run = self.run(user, run_id)
        if user.role == "officer":
            raise AccessDenied("results go to the researcher; the site sees its audit log")
        with self.db.session() as s:
            res = s.get(Result, run.id)
            if res is None:
                raise NotFound(f"run {run_id} has no result ({run.state})")
            return res

    # --- registry -------------------------------------------------------------------------

    def models(self, user: User) -> list[ModelVersion]:
        with self.db.session() as s:
            q = select(ModelVersion).join(Run).join(Study).order_by(ModelVersion.name,
                                                                   ModelVersion.version)
            if user.role == "researcher":
                q = q.where(Study.owner_id == user.id)
            return list(s.scalars(q))

    def model(self, user: User, name: str, version: int | None = None) -> ModelVersion:
        found = [m for m in self.models(user) if m.name == name
                 and (version is None or m.version == version)]
        if not found:
            raise NotFound(f"no model {name!r}" + (f" version {version}" if version else ""))
        return found[-1]

    # --- helpers --------------------------------------------------------------------------

    def _require(self, user: User, role: str) -> None:
        if user.role != role:
            self.audit(user.username, f"requires_{role}", allowed=False, reason=f"not {role}")
            raise AccessDenied(f"this needs the {role} role; {user.username} is {user.role}")

