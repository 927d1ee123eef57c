"""Shared set-up of the attack-review tests: site directories under the shipped policy template,
and a hub that records, per site, whether and how each site refused.

The policy is the one ``hemafed site init`` writes (disclosure control, ``require_plan``,
``refuse_differencing``, its budget), with ``allowed_queries`` widened to the queries the
approved study needs (as ``hemafed study validate`` tells the operator to) and the study approved
with its stored specification, so each site derives and enforces the study's plan.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hemafed.demo import LocalSites, build_sites
from hemafed.federation.api import DPRequest
from hemafed.federation.queries import get_query
from hemafed.privacy.calibration import noisy_specs
from hemafed.secure.codec import unpack_map
from hemafed.site import policy as site_policy
from hemafed.study.spec import StudySpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "privacy"))
from hostile import HostileHub

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


def template_policy(**overrides: Any) -> dict[str, Any]:
    """The protective settings of the shipped ``site init`` template, plus ``overrides``."""
    text = site_policy._TEMPLATE.format(site_id="template")
    template = yaml.safe_load(text)
    return {**{k: template[k] for k in TEMPLATE_KEYS}, **overrides}


def make_sites(
    root: Path, cohorts: Mapping[str, Any], spec: StudySpec, **policy: Any
) -> LocalSites:
    return build_sites(root, cohorts, spec, policy_overrides=template_policy(**policy))


class Probe(HostileHub):
    """A hub sending one planned request at a time with the declarations the sites expect."""

    def send(
        self,
        query: str,
        params: Mapping[str, Any],
        *,
        dp: DPRequest | None = None,
        sites: list[str] | None = None,
    ) -> tuple[Any, dict[str, str | None]]:
        """The hub's outcome, and each site's refusal code (``None``: it answered)."""
        n = len(sites or self.fed.site_dirs)
        specs = noisy_specs(get_query(query).declare(params), dp, n)
        start = len(self.replies)
        outcome = self.ask(query, params, specs=specs, dp=dp, divisor=n if dp else 1, sites=sites)
        codes: dict[str, str | None] = {}
        for site, envelope in self.replies[start:]:
            body = unpack_map(unpack_map(envelope)["body"])
            if body.get("status") == b"refused":
                codes[site] = body["code"].decode()
            else:
                codes.setdefault(site, None)
        return outcome, codes
