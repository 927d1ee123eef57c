"""Shared builders of the attack-review tests: real site directories under the shipped policy
template (:func:`make_sites`), a hub probing them one request at a time (:class:`Probe`) and the
imaging-screen spec the reviews replay (:data:`SCREEN_SPEC_MAP`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hostile import HostileHub

from hemafed.demo import LocalSites, build_sites
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.calibration import noisy_specs
from hemafed.secure.codec import unpack_map
from hemafed.site import policy as site_policy
from hemafed.study.spec import StudySpec

__all__ = ["SCREEN_SPEC_MAP", "TEMPLATE_KEYS", "Probe", "make_sites"]

TEMPLATE_KEYS = (
    "min_cell_size",
    "enforce_min_cell",
    "min_subgroup_size",
    "max_cells",
    "require_dp",
    "refuse_differencing",
    "allow_non_secure",
    "privacy_budget",
    "require_plan",
)


def make_sites(
    root: Path, cohorts: Mapping[str, Any], spec: StudySpec, **policy: Any
) -> LocalSites:
    """Site directories under the protective settings of the shipped ``site init`` template."""
    template = yaml.safe_load(site_policy._TEMPLATE.format(site_id="template"))
    overrides = {**{k: template[k] for k in TEMPLATE_KEYS}, **policy}
    return build_sites(root, cohorts, spec, policy_overrides=overrides)


class Probe(HostileHub):
    """A hub sending one request at a time with the declarations the sites expect."""

    def send(
        self, query: str, params: Mapping[str, Any], *, dp: DPRequest | None = None,
        declared_as: Mapping[str, Any] | None = None,
    ) -> tuple[Any, set[str | None]]:
        """The hub's outcome, and the refusal codes it learned (``{None}``: every site
        answered). A refusal comes through the sum: the hub learns codes, not sites.

        ``declared_as``: declare the request as these parameters would be (a hostile hub
        declares what it likes; a typed query's own parse has no declaration for parameters
        it refuses)."""
        n = len(self.fed.site_dirs)
        specs = noisy_specs(get_query(query).declare(declared_as or params), dp, n)
        start = len(self.replies)
        outcome = self.ask(query, params, specs=specs, dp=dp, divisor=n if dp else 1)
        codes: set[str | None] = set()
        for _, envelope in self.replies[start:]:
            body = unpack_map(unpack_map(envelope)["body"])
            if body.get("status") == b"refused":
                codes.add(body["code"].decode())
        pooled = getattr(outcome, "pooled", None)
        if pooled is not None:
            codes |= {code for code, _ in pooled.codes}
        return outcome, codes or {None}


SCREEN_SPEC_MAP = {
    "study_id": "ar3-screen", "requester": "r",
    "imaging": {"modality": "MR", "settings": {"bin_width": 8.0, "aggregation": "averaged"},
                # a clinical column stands in for an imaging feature: the screen treats both
                # alike, and the standard site runtime needs no imaging store for it
                "harmonise": {"features": ["hb", "plt"], "covariates": []},
                "bounds": {"hb": [0, 25], "plt": [0, 2000], "age": [0, 120]}},
    "analyses": [{"id": "pfs", "kind": "imaging", "model": "cox", "duration": "os_time",
                  "event": "os_status", "covariates": ["age"], "horizon": 2.0, "top_k": 1}]}
