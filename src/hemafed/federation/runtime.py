"""The hub runtime: secure sums of registered site queries over any transport.

:class:`SecureFederation` implements the :class:`~hemafed.federation.api.Federation` interface
on top of an ``exchange`` function (Flower simulation, Flower deployment or in-process:
:mod:`hemafed.federation.transport`). Each ``secure_sum`` is one secure aggregation
(:mod:`hemafed.secure`), whose first message carries the signed-off request; the aggregations
of one federation object share a secure-aggregation session (keys advertised once).

The queries it can send are those registered in this process (:mod:`hemafed.study.catalogue`
registers every site query; the study hub imports it). The site side, which answers them, is
:mod:`hemafed.site.runtime`.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from hemafed.errors import DropoutRefused, InvalidInput, PolicyRefused, ProtocolError, SitesChanged
from hemafed.federation.api import AggregateResult, DPRequest, SumRequest
from hemafed.federation.batch import merge_parts, pack_batch, split_parts
from hemafed.federation.queries import get_query
from hemafed.federation.transport import Exchange
from hemafed.privacy.anchors import AnchorStore
from hemafed.privacy.calibration import noisy_specs, release_noise_std
from hemafed.secure import FederationManifest, SecureSumSession

log = logging.getLogger(__name__)

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
        from hemafed.federation.request import SiteRequest

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
