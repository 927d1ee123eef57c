"""The site runtime: what every transport runs at a site to answer the hub's secure sums.

:func:`site_handler` is the handler factory a transport calls with a site's configuration: it
opens the site directory (cohort, policy, ledger, audit log, identity key and the pinned
federation manifest) and answers each protocol message; the site's policy check, audit entry,
DP noise share and ledger charge happen in :meth:`hemafed.site.node.SiteNode.answer` before
anything is masked and sent. The hub side is :mod:`hemafed.federation.runtime`.

The runtime answers the site queries that are registered in this process, and enriches the
site's cohort only through the hooks it is given: ``enrich`` (a ``cohort -> cohort`` function;
the study layer passes its derived clinical scores, :func:`hemafed.study.derived.with_derived_scores`)
and the table hooks of the query modules (:func:`register_site_tables`). The standard handler,
with every catalogued query and the derived scores, is
:func:`hemafed.study.site_runtime.site_handler`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hemafed.atomic import write_text
from hemafed.cohort.model import Cohort
from hemafed.errors import InvalidInput
from hemafed.federation.batch import merge_parts, unpack_batch
from hemafed.federation.queries import Statistic
from hemafed.federation.transport import SiteHandler
from hemafed.secure import FederationManifest, SiteIdentity, site_step

__all__ = ["IDENTITY_FILE", "MANIFEST_FILE", "SITE_EFFECTS", "SITE_TABLES", "STUDY_TABLES_DIR",
           "Enrich", "ensure_identity", "install_manifest", "register_site_effect",
           "register_site_opened", "register_site_tables", "register_study_tables",
           "site_handler", "study_view", "with_site_tables"]

IDENTITY_FILE = Path("keys") / "identity.pem"
MANIFEST_FILE = Path("federation.json")

Enrich = Callable[[Cohort], Cohort]
"""``enrich(cohort) -> cohort``: columns a site computes locally from its own cohort before
answering (the study layer's derived scores); patients keep their order."""


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
    enrich: Enrich | None = None
    """The cohort enrichment the node's cohort was opened with."""

    def compute(self, payload: bytes, quorum: int
                ) -> tuple[dict[str, np.ndarray], dict[str, Statistic]]:
        from hemafed.federation.request import SiteRequest

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
        from hemafed.federation.request import SiteRequest

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


def open_runtime(site_dir: Path, enrich: Enrich | None = None) -> _SiteRuntime:
    """The site's runtime (opened once per process and site directory, reopened when the
    site's files or ``enrich`` change): what :func:`site_handler` answers with."""
    rt = _open_cached_runtime(site_dir, enrich)
    for hook in _SITE_OPENED_HOOKS:
        hook(rt.node.site_id, site_dir)
    return rt


def _open_cached_runtime(site_dir: Path, enrich: Enrich | None) -> _SiteRuntime:
    from hemafed.site.membership import require_pinned
    from hemafed.site.store import open_node, site_id_of

    key = str(site_dir.resolve())
    stamp = _stamp(site_dir)
    with _LOCK:
        rt = _RUNTIMES.get(key)
        if rt is not None and rt.stamp == stamp and rt.enrich is enrich:
            return rt
        site_id = site_id_of(site_dir)
        manifest_path = site_dir / MANIFEST_FILE
        if not manifest_path.exists():
            raise InvalidInput(f"site {site_id}: no federation manifest at {manifest_path}; "
                               "install the hub's manifest first (hemafed site join)")
        manifest = FederationManifest.load(manifest_path)
        require_pinned(site_dir, manifest)
        node = open_node(site_dir)
        cohort = node.cohort if enrich is None else enrich(node.cohort)
        node.cohort = with_site_tables(site_dir, cohort)
        node.study_view = study_view(site_dir)
        rt = _SiteRuntime(node, SiteIdentity.load(site_id, site_dir / IDENTITY_FILE),
                          manifest, stamp, site_dir, enrich=enrich)
        _RUNTIMES[key] = rt
        return rt


def site_handler(config: Mapping[str, Any], *, enrich: Enrich | None = None) -> SiteHandler:
    """Handler factory for every transport: ``config['site_dir']`` is the site directory.

    ``enrich``: the site-local cohort enrichment (``None``: the cohort as stored, with the
    query modules' table hooks). The queries answered are those registered in this process;
    :func:`hemafed.study.site_runtime.site_handler` is this with every catalogued query and the
    derived scores."""
    site_dir = Path(str(config["site_dir"]))
    runtime = open_runtime(site_dir, enrich)

    def handle(message: bytes, state: MutableMapping[str, bytes]) -> bytes:
        return site_step(message, state, runtime.identity, runtime.manifest, runtime)

    return handle
