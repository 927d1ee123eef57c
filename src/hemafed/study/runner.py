"""Run a study specification over any federation and collect JSON-able results.

Each analysis kind's hub step (``AnalysisKind.run``) sits beside its federated estimator, in
the kinds modules of :data:`hemafed.study.kinds.CATALOGUE`; this module runs them in turn. A
result is a plain-JSON document: tables (pandas ``split`` orient), curves (x/y arrays) and
provenance (secure sums, round trips, seconds, epsilon asked per release), so the same document comes back from Flower simulation, from a
deployment's ServerApp process, or from an in-process run, and the report renders it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hemafed.documents import _plain as _plain
from hemafed.documents import frame_from_json as frame_from_json
from hemafed.documents import frame_json as frame_json
from hemafed.errors import HemafedError, SitesChanged
from hemafed.federation.api import AggregateResult, DPRequest, Federation, SumRequest, secure_sums
from hemafed.kinds import KindTable
from hemafed.study import kinds as _registrations  # noqa: F401  (registers the built-in kinds)
from hemafed.study.spec import Analysis, StudySpec

log = logging.getLogger(__name__)


@dataclass
class TrackingFederation:
    """Wraps a federation and records every secure sum an analysis asks for (provenance)."""

    inner: Federation
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def site_ids(self) -> tuple[str, ...]:
        return self.inner.site_ids

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: DPRequest | None = None) -> AggregateResult:
        return self._record(query, dp, self.inner.secure_sum(query, params, study=study, dp=dp))

    def secure_sums(self, parts: Sequence[SumRequest], *,
                    study: str = "default") -> list[AggregateResult]:
        """Several sums in one aggregation when the inner federation batches (one record each)."""
        results = secure_sums(self.inner, parts, study=study)
        return [self._record(q, dp, r) for (q, _, dp), r in zip(parts, results, strict=True)]

    def _record(self, query: str, dp: DPRequest | None, res: AggregateResult) -> AggregateResult:
        self.calls.append({"query": query, "round_trips": res.round_trips,
                           "seconds": res.seconds, "sites": len(res.sites),
                           "site_ids": sorted(res.sites),
                           "dropped": list(res.dropped),
                           "epsilon": None if dp is None else dp.epsilon,
                           "noise_multiplier": None if dp is None else dp.noise_multiplier})
        return res

    def take(self) -> list[dict[str, Any]]:
        out, self.calls = self.calls, []
        return out


RUNNERS: Mapping[str, Callable[[Federation, Analysis, StudySpec], dict[str, Any]]] = KindTable(
    lambda k: k.run)
"""kind -> hub step: a view of the registrations (:class:`hemafed.kinds.AnalysisKind`)."""


def _on_fixed_sites(tracker: TrackingFederation, a: Analysis, spec: StudySpec,
                    runner: Callable[[Federation, Analysis, StudySpec], dict[str, Any]]
                    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one analysis so that every one of its sums covers the same sites.

    When a sum covers other sites than the analysis's first (``SitesChanged``), the analysis
    restarts from scratch on a federation over the survivors (``restricted_to``, which fails
    clearly below the secure-aggregation quorum); the sums made before are discarded. Returns
    the analysis document and one record per restart.
    """
    restarts: list[dict[str, Any]] = []
    for _ in range(len(tracker.site_ids) + 1):
        try:
            return runner(tracker, a, spec), restarts
        except SitesChanged as exc:
            restrict = getattr(tracker.inner, "restricted_to", None)
            if restrict is None:
                raise
            discarded = tracker.take()
            log.warning("analysis %s: %s; restarting it over %s", a.id, exc,
                        list(exc.survivors))
            tracker.inner = restrict(exc.survivors)
            restarts.append({"after secure sums": len(discarded), "from sites": list(exc.fixed),
                             "to sites": list(exc.survivors)})
    raise HemafedError(f"analysis {a.id}: the sites kept changing; restarted {len(restarts)} "
                       "times without one complete run over a fixed set")


def run_study(spec: StudySpec, federation: Federation, *,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every analysis; a failing analysis is reported with its reason, the rest still run."""
    from hemafed.cohort.study_fields import register_variables

    register_variables(spec.variables)  # the spec's study variables, before any request
    tracker = TrackingFederation(federation)
    results: list[dict[str, Any]] = []
    for a in spec.analyses:
        if progress is not None:
            progress(a.title)
        start = time.perf_counter()
        doc: dict[str, Any] = {"id": a.id, "kind": a.kind, "title": a.title,
                               "options": dict(a.options)}
        runner = RUNNERS.get(a.kind)
        try:
            if runner is None:
                raise HemafedError(f"analysis kind {a.kind!r} is not available in this build")
            body, restarts = _on_fixed_sites(tracker, a, spec, runner)
            doc.update(body)
            doc["status"] = "ok"
            if restarts:
                doc["restarts"] = restarts
        except HemafedError as exc:
            log.warning("analysis %s failed: %s", a.id, exc)
            doc["status"] = "failed"
            doc["error"] = str(exc)
        calls = tracker.take()
        doc["provenance"] = {
            "secure sums": len(calls),
            "round trips": sum(c["round_trips"] for c in calls),
            "sites": max((c["sites"] for c in calls), default=0),
            "dropped sites": sorted({s for c in calls for s in c["dropped"]}),
            # every sum of a completed analysis covers the same sites (SecureFederation's rule)
            "sites covered": sorted({s for c in calls for s in c["site_ids"]}),
            "DP releases": sum(1 for c in calls if c["epsilon"] or c["noise_multiplier"]),
            "seconds": round(time.perf_counter() - start, 2),
        }
        results.append(doc)
    return {"study_id": spec.study_id, "title": spec.title, "spec_sha256": spec.sha256,
            "sites": list(federation.site_ids), "sites at the end": list(tracker.site_ids),
            "analyses": results}
