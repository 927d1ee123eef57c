"""The hemafed runtime: secure sums of registered site queries over any transport.

Hub side, :class:`SecureFederation` implements the :class:`~hemafed.federation.api.Federation`
interface on top of an ``exchange`` function (Flower simulation, Flower deployment or in-process:
:mod:`hemafed.federation.transport`). Each ``secure_sum`` is one secure aggregation
(:mod:`hemafed.secure`), whose first message carries the signed-off request; the aggregations
of one federation object share a secure-aggregation session (keys advertised once).

Site side, :func:`site_handler` is the handler factory every transport calls with a site's
configuration: it opens the site directory (cohort, policy, ledger, audit log, identity key and
the pinned federation manifest) and answers each protocol message; the site's policy check,
audit entry, DP noise share and ledger charge happen in :meth:`hemafed.site.node.SiteNode.answer`
before anything is masked and sent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemafed.atomic import write_text
from hemafed.errors import DropoutRefused, InvalidInput, PolicyRefused, ProtocolError, SitesChanged
from hemafed.federation.api import AggregateResult, DPRequest, SumRequest
from hemafed.federation.batch import merge_parts, pack_batch, split_parts, unpack_batch
from hemafed.federation.queries import Statistic, get_query
from hemafed.federation.transport import Exchange, SiteHandler
from hemafed.privacy.anchors import AnchorStore
from hemafed.privacy.calibration import noisy_specs, release_noise_std
from hemafed.secure import FederationManifest, SecureSumSession, SiteIdentity, site_step

log = logging.getLogger(__name__)

IDENTITY_FILE = Path("keys") / "identity.pem"
MANIFEST_FILE = Path("federation.json")


SITE_QUERY_MODULES = (
    "hemafed.analytics", "hemafed.analytics.describe", "hemafed.analytics.logistic",
    "hemafed.analytics.competing", "hemafed.learn.features", "hemafed.learn.gbdt",
    "hemafed.learn.metrics", "hemafed.learn.neural", "hemafed.learn.validation",
    "hemafed.synth.queries", "hemafed.genomics.queries",
    "hemafed.analytics.weighting_queries", "hemafed.analytics.multistate", "hemafed.analytics.mixed",
    "hemafed.imaging.combat", "hemafed.imaging.screen", "hemafed.analytics.quantile_query",
)
"""Modules whose import registers the site queries every site must be able to answer."""


def _load_analyses() -> None:
    """Import every module that registers site queries (idempotent)."""
    import importlib

    for name in SITE_QUERY_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # only the module (or its package) being absent is tolerated; a missing
            # dependency inside an existing module is a real error
            if not (exc.name and (name == exc.name or name.startswith(exc.name + "."))):
                raise
            log.debug("%s is not part of this build", name)


# --- site side ---------------------------------------------------------------------------------

def ensure_identity(site_dir: str | Path, site_id: str) -> SiteIdentity:
    """The site's long-term signing key (created on first use, file mode 0600)."""
    path = Path(site_dir) / IDENTITY_FILE
    if path.exists():
        return SiteIdentity.load(site_id, path)
    identity = SiteIdentity.generate(site_id)
    identity.save(path)
    os.chmod(path, 0o600)
    return identity


def install_manifest(site_dir: str | Path, manifest: FederationManifest, *,
                     approved_by: str = "site officer") -> None:
    """Pin the federation manifest at a site (the hospital checks its fingerprint out of band):
    the manifest and its approved fingerprint (:mod:`hemafed.site.membership`); the site runs
    on no other manifest."""
    from hemafed.site.membership import pin_manifest

    write_text(Path(site_dir) / MANIFEST_FILE, manifest.to_json())
    pin_manifest(site_dir, manifest, approved_by=approved_by)


SiteEffect = Callable[[Path, Any, Mapping[str, Any], str], None]
"""``effect(site_dir, node, params, study)``: what a site does with a request of ``study`` it
has just answered (what it stores is that study's own, never another study's)."""

SITE_EFFECTS: dict[str, SiteEffect] = {}
"""Queries whose accepted request also updates the site's own stored tables (for example
``combat_apply``: the pooled ComBat parameters, with which the site stores its harmonised
features). The effect runs after the node's policy and plan checks and audit, only on an
answered request, and changes nothing the hub sees but the query's secure-summed reply. It is
audited as one entry whether it succeeds or fails (:meth:`SiteNode.audit_effect`), so the audit
head in every reply does not tell the hub which site's effect failed."""


def register_site_effect(query: str, effect: SiteEffect) -> None:
    """Let a query module declare the site-side effect of an answered ``query`` request."""
    SITE_EFFECTS[query] = effect


@dataclass
class _SiteRuntime:
    node: Any
    identity: SiteIdentity
    manifest: FederationManifest
    stamp: tuple[float, ...]
    site_dir: Path | None = None
    deferred_guard: tuple[bytes, list[str]] | None = None
    """A batch's one-shot participants check, run part by part in :meth:`compute`."""

    def compute(self, payload: bytes, quorum: int
                ) -> tuple[dict[str, np.ndarray], dict[str, Statistic]]:
        from hemafed.site.request import SiteRequest

        # the secure-aggregation quorum is what this site can rely on: any released sum covers
        # at least that many sites, so it bounds the noise-share divisor the hub may ask for
        parts, deferred, self.deferred_guard = self._parts(payload), self.deferred_guard, None
        if parts is not None:
            return self._compute_batch(payload, parts, quorum, deferred)
        try:
            request = SiteRequest.from_json(payload)
        except Exception as exc:
            raise self.node.refuse_malformed(payload, exc) from exc
        answer = self.node.answer(request, guaranteed_contributors=quorum)
        self._effect(request)
        return answer.values, answer.specs

    __call__ = compute  # the runtime is the secure-aggregation compute (with its hooks)

    def _effect(self, request: Any) -> None:
        effect = SITE_EFFECTS.get(request.query)
        if effect is not None and self.site_dir is not None:
            try:
                effect(self.site_dir, self.node, request.params, request.study_id)
            except Exception as exc:  # one audit entry, as on success (the hub sees heads)
                raise self.node.audit_effect(request, exc) from exc
            self.node.audit_effect(request, None)
            self.stamp = _stamp(self.site_dir)

    def _parts(self, payload: bytes) -> list[bytes] | None:
        """The requests of a batch payload (None: a single request)."""
        try:
            return unpack_batch(payload)
        except InvalidInput as exc:
            raise self.node.refuse_malformed(payload, exc) from exc

    def _compute_batch(self, payload: bytes, parts: list[bytes], quorum: int,
                       deferred: tuple[bytes, list[str]] | None
                       ) -> tuple[dict[str, np.ndarray], dict[str, Statistic]]:
        """Each part through the single-request path, in order; the first refusal refuses
        the batch (:mod:`hemafed.federation.batch`)."""
        from hemafed.site.request import SiteRequest

        requests = []
        for part in parts:
            try:
                requests.append(SiteRequest.from_json(part))
            except Exception as exc:
                raise self.node.refuse_malformed(part, exc) from exc
        sites = deferred[1] if deferred is not None and deferred[0] == payload else None
        started: list[Any] = []

        def guard(request: Any) -> None:  # the one-shot participants check, part by part
            started.append(request)
            if sites is not None:
                self.node.guard_participants(request.to_json(), sites, one_shot=True,
                                             stage="one-shot")

        try:
            answers = self.node.answer_all(requests, guaranteed_contributors=quorum,
                                           before=guard, after=self._effect)
        except Exception as exc:
            # the refusal goes through the sum with its part; the parts after it get an audit
            # entry each, so this site's audit log grows as an answering site's does (the hub
            # sees every site's audit head)
            at = max(len(started) - 1, 0)
            exc.refusal_part = at  # type: ignore[attr-defined]
            rest = requests[at + 1:]
            if sites is not None:  # an answering site logs each later part's participants
                for request in rest:
                    with contextlib.suppress(Exception):  # a refusal here is audited already
                        self.node.guard_participants(request.to_json(), sites, one_shot=True,
                                                     stage="one-shot")
            self.node.audit_unanswered(rest, at)
            raise
        return (merge_parts([a.values for a in answers]),
                merge_parts([a.specs for a in answers]))

    def audit_head(self) -> tuple[int, str]:
        """The audit log's head, signed into every reply (the hub anchors it)."""
        return self.node.audit.head()

    def audit_hash_at(self, seq: int) -> str | None:
        """The hash of audit entry ``seq`` now (the hub compares it with what it saw)."""
        return self.node.audit.hash_at(seq)

    def guard_participants(self, payload: bytes, sites: list[str], one_shot: bool,
                           stage: str) -> None:
        """Refuse to let a non-DP request be released over a different set of sites.

        A batch's one-shot check runs part by part inside :meth:`compute`, each just before
        that part is answered, as for requests sent one after another."""
        parts = self._parts(payload)
        if parts is None:
            self.node.guard_participants(payload, sites, one_shot=one_shot, stage=stage)
        elif one_shot:
            self.deferred_guard = (payload, list(sites))
        else:
            for part in parts:
                self.node.guard_participants(part, sites, one_shot=one_shot, stage=stage)

    def check_anchor(self, payload: bytes, seq: int, head: str) -> None:
        """Refuse (audited) when this site's audit log is behind what the hub last saw."""
        parts = self._parts(payload)
        self.node.check_anchor(payload if parts is None else parts[0], seq, head)

    def audit_refusal(self, payload: bytes, exc: BaseException) -> BaseException:
        """Audit a refusal that arose after the node answered (e.g. the hub's declared
        statistics differ from the site's); return the exception carrying its reference."""
        try:
            parts = unpack_batch(payload)
        except InvalidInput:
            parts = None
        return self.node.refuse_malformed(payload if parts is None else parts[0], exc)


_RUNTIMES: dict[str, _SiteRuntime] = {}
_LOCK = threading.Lock()


SITE_TABLES = ("features.parquet", "findings.parquet")
"""The site's imaging tables (``<site>/imaging/``), joined to its cohort when present."""
STUDY_TABLES_DIR = "harmonised"
"""``<site>/imaging/harmonised/``: per-study tables (a study's harmonised features), joined to
the cohort for that study's requests only (:func:`register_study_tables`)."""


def _stamp(site_dir: Path) -> tuple[float, ...]:
    files = [site_dir / "cohort" / "patients.parquet", site_dir / "policy.yaml",
             site_dir / MANIFEST_FILE, site_dir / "federation.approved.json",
             *(site_dir / "imaging" / f for f in (*SITE_TABLES, STUDY_TABLES_DIR))]
    return tuple(f.stat().st_mtime if f.exists() else 0.0 for f in files)


SiteTablesHook = Callable[[Path, Any], Any]
_SITE_TABLE_HOOKS: list[SiteTablesHook] = []


def register_site_tables(hook: SiteTablesHook) -> None:
    """Let a module that registers site queries join the site's own stored per-patient tables
    to its cohort (``hook(site_dir, cohort) -> cohort``; imaging registers its features)."""
    if hook not in _SITE_TABLE_HOOKS:
        _SITE_TABLE_HOOKS.append(hook)


def with_site_tables(site_dir: Path, cohort: Any) -> Any:
    """``cohort`` with the site's own stored per-patient tables joined (imaging features,
    findings and harmonised features, by the hooks of :func:`register_site_tables`)."""
    if not any((site_dir / "imaging" / f).is_file() for f in SITE_TABLES):
        return cohort
    for hook in _SITE_TABLE_HOOKS:
        cohort = hook(site_dir, cohort)
    return cohort


StudyTablesHook = Callable[[Path, Any, str], Any]
_STUDY_TABLE_HOOKS: list[StudyTablesHook] = []


def register_study_tables(hook: StudyTablesHook) -> None:
    """Let a module join a study's own stored per-patient tables to the cohort that study's
    requests run on (``hook(site_dir, cohort, study) -> cohort``; imaging joins the study's
    harmonised features). Another study's tables never enter a study's view."""
    if hook not in _STUDY_TABLE_HOOKS:
        _STUDY_TABLE_HOOKS.append(hook)


def study_view(site_dir: Path) -> Callable[[Any, str], Any]:
    """The node's per-study cohort view at ``site_dir`` (:attr:`SiteNode.study_view`)."""
    def view(cohort: Any, study: str) -> Any:
        for hook in _STUDY_TABLE_HOOKS:
            cohort = hook(site_dir, cohort, study)
        return cohort

    return view


SiteOpenedHook = Callable[[str, Path], None]
_SITE_OPENED_HOOKS: list[SiteOpenedHook] = []


def register_site_opened(hook: SiteOpenedHook) -> None:
    """Let a module that registers site queries learn the directory of each site this process
    opens (``hook(site_id, site_dir)``, called in the site's own process each time its runtime
    is opened; genomics finds the site's genotype store so). Site-side only: the hub learns
    nothing through it."""
    if hook not in _SITE_OPENED_HOOKS:
        _SITE_OPENED_HOOKS.append(hook)


def _open_runtime(site_dir: Path) -> _SiteRuntime:
    rt = _open_cached_runtime(site_dir)
    for hook in _SITE_OPENED_HOOKS:
        hook(rt.node.site_id, site_dir)
    return rt


def _open_cached_runtime(site_dir: Path) -> _SiteRuntime:
    from hemafed.site.membership import require_pinned
    from hemafed.site.store import open_node, site_id_of
    from hemafed.study.derived import with_derived_scores

    _load_analyses()
    key = str(site_dir.resolve())
    stamp = _stamp(site_dir)
    with _LOCK:
        rt = _RUNTIMES.get(key)
        if rt is not None and rt.stamp == stamp:
            return rt
        site_id = site_id_of(site_dir)
        manifest_path = site_dir / MANIFEST_FILE
        if not manifest_path.exists():
            raise InvalidInput(f"site {site_id}: no federation manifest at {manifest_path}; "
                               "install the hub's manifest first (hemafed site join)")
        manifest = FederationManifest.load(manifest_path)
        require_pinned(site_dir, manifest)
        node = open_node(site_dir)
        node.cohort = with_site_tables(site_dir, with_derived_scores(node.cohort))
        node.study_view = study_view(site_dir)
        rt = _SiteRuntime(node, SiteIdentity.load(site_id, site_dir / IDENTITY_FILE),
                          manifest, stamp, site_dir)
        _RUNTIMES[key] = rt
        return rt


def site_handler(config: Mapping[str, Any]) -> SiteHandler:
    """Handler factory for every transport: ``config['site_dir']`` is the site directory."""
    site_dir = Path(str(config["site_dir"]))
    runtime = _open_runtime(site_dir)

    def handle(message: bytes, state: MutableMapping[str, bytes]) -> bytes:
        return site_step(message, state, runtime.identity, runtime.manifest, runtime)

    return handle


# --- hub side ----------------------------------------------------------------------------------

NOISE_SHARES = ("all", "threshold")


class SecureFederation:
    """A federation whose every result is a secure sum over the sites (Federation interface).

    ``noise_shares`` decides how a DP release's Gaussian noise (variance ``sigma**2``) is split
    among the sites, each adding its share before masking (the hub never sees a sum without it):

    * ``"all"`` (default): each of the ``n`` sites of the session adds ``sigma**2 / n`` and the
      aggregation's quorum is ``n``, so the released sum carries exactly ``sigma**2``, as the
      same mechanism run centrally. If a site drops, the sites refuse to unmask (too little
      noise would be left); the release is retried once in a fresh session over the sites that
      answer (every attempt is charged to the ledgers of the sites that computed it, since
      sites charge before they mask).
    * ``"threshold"``: each site adds ``sigma**2 / t`` (``t`` the manifest threshold), so any
      ``>= t`` survivors add at least ``sigma**2``: dropouts are tolerated, at the price of
      ``n / t`` times the variance when all ``n`` answer.

    Either way every site checks that the divisor it is asked for does not exceed the quorum
    the protocol enforces, so a hub cannot thin the noise.

    Sums are *one-shot* aggregations (one round trip, no secret revealed) while every site
    answers; after the first dropout the federation uses recoverable aggregations (dropout
    recovery, two or three round trips) and repeats the failed sum once. A repeated request runs
    again at the sites (a second audit entry; with DP, a second charge at the sites that had
    computed the first: sites charge before they mask).

    Same sites, every round: one federation object is one fixed contributor set, the sites its
    first sum covered (:attr:`contributors`). A later sum covering any other set raises
    :class:`~hemafed.errors.SitesChanged` (carrying the survivors) instead of returning, so
    rounds over different sites are never mixed; :meth:`restricted_to` gives the federation
    over the survivors on which the analysis restarts (the study runner does that).
    """

    def __init__(self, exchange: Exchange, manifest: FederationManifest, *,
                 site_ids: Sequence[str] | None = None, spec_sha256: str = "",
                 requester: str = "hub", noise_shares: str = "all",
                 anchors: AnchorStore | None = None) -> None:
        if noise_shares not in NOISE_SHARES:
            raise InvalidInput(f"noise_shares must be one of {list(NOISE_SHARES)}, got "
                               f"{noise_shares!r}")
        self.noise_shares = noise_shares
        self._exchange = exchange
        self.manifest = manifest
        ids = tuple(site_ids) if site_ids is not None else tuple(sorted(manifest.sites))
        unknown = sorted(set(ids) - set(manifest.sites))
        if unknown:
            raise InvalidInput(f"site(s) {unknown} are not in the federation manifest")
        self._site_ids = ids
        # one round trip per sum while every site answers; the first dropout switches this
        # federation to recoverable aggregations (Shamir dropout recovery) for good
        # anchors: the last audit head each site signed (privacy hook: a site whose log is
        # behind it refuses); pass a store shared across federations to anchor across studies
        self._sums = SecureSumSession(exchange, manifest, ids, one_shot=True, anchors=anchors)
        self.spec_sha256 = spec_sha256
        self.requester = requester
        self._contributors: tuple[str, ...] | None = None
        # the fixed set of the federation this one restarts (restricted_to), for the message
        # a refused restart gets
        self._restarts_from: tuple[str, ...] | None = None
        _load_analyses()

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self._site_ids

    @property
    def contributors(self) -> tuple[str, ...] | None:
        """The fixed contributor set: the sites of the first sum (None before it)."""
        return self._contributors

    def restricted_to(self, sites: Sequence[str]) -> SecureFederation:
        """A fresh federation (new session, no fixed set yet) over ``sites`` only.

        Raises :class:`~hemafed.errors.InvalidInput` when ``sites`` are fewer than the
        manifest's secure-aggregation threshold: no sum over them could be revealed.
        """
        ids = tuple(sorted(sites))
        if len(ids) < self.manifest.threshold:
            raise InvalidInput(
                f"only {len(ids)} site(s) {list(ids)} remain of {list(self._site_ids)}: below "
                f"the federation's secure-aggregation threshold of {self.manifest.threshold}; "
                "the analysis cannot restart on them (bring sites back online and run again)")
        # the audit heads the hub has seen carry over: a site restored to an older copy while
        # the analysis restarts is still caught
        fed = SecureFederation(self._exchange, self.manifest, site_ids=ids,
                               spec_sha256=self.spec_sha256, requester=self.requester,
                               noise_shares=self.noise_shares, anchors=self._sums.anchors)
        fed._restarts_from = self._contributors or self._site_ids
        return fed

    def _explain_dropout(self, exc: Exception, query: str, study: str) -> None:
        """Raise :class:`~hemafed.errors.DropoutRefused` when a failed non-DP sum is the sites'
        participants rule refusing a sum over fewer sites than the study's fixed set.

        The hub cannot read the sites' policies; it recognises the rule by what it gets: the
        survivors of a recoverable sum, fewer than the fixed set, do not confirm their list
        (a site refusing it sends nothing, so nothing is revealed), or a restart over the
        survivors is refused with the rule's name.
        """
        from hemafed.privacy.refusal import refusal_of
        from hemafed.secure.protocol import CONSISTENCY

        fixed = self._contributors or self._restarts_from or self._site_ids
        if isinstance(exc, PolicyRefused):
            if refusal_of(exc).name == "participants" and set(self._site_ids) < set(fixed):
                raise DropoutRefused(query, study, fixed, self._site_ids) from exc
            return
        survivors = getattr(exc, "survivors", None)
        if getattr(exc, "step", None) == CONSISTENCY and survivors is not None \
                and set(survivors) < set(fixed):
            raise DropoutRefused(query, study, fixed, survivors) from exc

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        return self._aggregate([(query, params, dp)], study, batch=False)[0]

    def secure_sums(self, parts: Sequence[SumRequest], *,
                    study: str = "default") -> list[AggregateResult]:
        """The secure sums of several ``(query, params, dp)`` parts in ONE aggregation.

        Every site answers each part exactly as if it were sent alone (plan check, policy,
        min-cell rule, DP noise share and ledger charge, audit entry, in order) and refuses the
        whole batch at the first part it refuses (:mod:`hemafed.federation.batch`). The fixed
        contributor set applies to the batch as to one sum (:class:`SitesChanged`). The first
        result carries the batch's round trips and seconds, the others none.
        """
        return self._aggregate(list(parts), study, batch=len(parts) > 1)

    def _aggregate(self, parts: list[SumRequest], study: str, *,
                   batch: bool) -> list[AggregateResult]:
        from hemafed.site.request import SiteRequest

        start = time.perf_counter()
        if not parts:
            raise InvalidInput("secure_sums needs at least one (query, params, dp) part")
        queries = [get_query(query) for query, _, _ in parts]
        for q, (_, params, _) in zip(queries, parts, strict=True):
            q.check_params(params)
        base = [q.declare(params) for q, (_, params, _) in zip(queries, parts, strict=True)]
        key = "+".join(q.key for q in queries)
        any_dp = any(dp is not None for _, _, dp in parts)
        exchanges = self._sums.exchanges
        for attempt in range(2):
            one_shot = self._sums.one_shot
            divisors = [len(self._sums.members())
                        if dp is not None and self.noise_shares == "all"
                        else self.manifest.threshold for _, _, dp in parts]
            quorum = max(divisors)
            part_specs = [noisy_specs(b, dp, d)
                          for b, (_, _, dp), d in zip(base, parts, divisors, strict=True)]
            requests = [SiteRequest(uuid.uuid4().hex, study, self.spec_sha256, q.name, q.version,
                                    dict(params), self.requester, dp, d, True)
                        for q, (_, params, dp), d in zip(queries, parts, divisors, strict=True)]
            if batch:
                payload = pack_batch([r.to_json() for r in requests])
                specs = merge_parts(part_specs)
            else:
                payload, specs = requests[0].to_json(), part_specs[0]
            try:
                outcome = self._sums.secure_sum(  # members >= t: a session needs t
                    os.urandom(16), payload, specs, quorum=quorum,
                    references=[r.request_id for r in requests])
                break
            except (ProtocolError, PolicyRefused) as exc:
                if not any_dp:
                    self._explain_dropout(exc, key, study)
                if isinstance(exc, PolicyRefused):
                    raise
                # a site did not answer a one-shot sum, or a DP release over every site of the
                # session lost one: nothing was revealed; repeat once, in a fresh session
                if attempt or not (one_shot or (any_dp and self.noise_shares == "all")):
                    raise
                self._sums.one_shot = False
                log.warning("query %s: the secure sum did not complete (%s); retrying once in "
                            "a fresh session, with dropout recovery", key, exc)
        covered = tuple(sorted(outcome.contributors))
        if self._contributors is None:
            self._contributors = covered
            if list(covered) != self._sums.participants:
                # a site dropped from the first sum stays out of this federation's later sums
                # (its study's participants are fixed): a fresh session over the contributors
                self._sums.participants = list(covered)
                self._sums.reset()
        elif covered != self._contributors:
            log.warning("query %s: covered %s, not the fixed set %s", key, list(covered),
                        list(self._contributors))
            raise SitesChanged(key, self._contributors, covered)
        values = split_parts(outcome.values, len(parts)) if batch else [dict(outcome.values)]
        seconds = time.perf_counter() - start
        results = []
        for i, ((_, _, dp), b, d) in enumerate(zip(parts, base, divisors, strict=True)):
            noise_std: dict[str, float] = {}
            if dp is not None:
                scale = math.sqrt(len(outcome.contributors) / d)
                noise_std = {k: v * scale for k, v in release_noise_std(b, dp).items()}
            results.append(AggregateResult(
                values[i], tuple(outcome.contributors), tuple(outcome.dropped),
                self._sums.exchanges - exchanges if i == 0 else 0, seconds if i == 0 else 0.0,
                dp, noise_std))
        return results
