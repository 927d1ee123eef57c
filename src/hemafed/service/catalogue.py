"""The network catalogue, counted through the secure, policy-checked path.

**The standing catalogue plan.** The network's catalogue is a study spec of one analysis of kind
``catalogue`` (:func:`catalogue_spec_text`): the disease areas counted (``levels`` of the
``group`` column), the fields whose values are counted (``columns``), the epsilon of one
refresh (0: no noise, only where every site's policy allows it), its delta, the rounding base and
the network's minimum cell. Each site's officer approves it once (:func:`approve_catalogue`, in
the site console or ``hemafed site catalogue-approve``) with a **total catalogue budget** that
the site's ledger keeps for the study ``catalogue``; the approval pins the spec hash, allows the
one query ``catalogue_counts@1`` for it (and nothing else), and is signed like any study
decision.

**A refresh** (:func:`catalogue_hub_main`) is one request of ``catalogue_counts`` answered by every
approving site through :meth:`hemafed.site.node.SiteNode.answer`: policy and plan check, the
charge to the ledger *before* any noise is drawn, the audit entry, then the site's Gaussian
noise share, and a secure sum. Each site writes its own counts into its own row of the summed
arrays (the query is ``site_aware``), so the sum gives every site's counts, each carrying the
full DP noise of the release (the shares of all sites, added at the sites before masking; the
hub adds none), and the network totals are the sum of the rows. A site past its catalogue
budget refuses (``budget``) and the refresh is refused naming that rule, not the site.

**What the hub stores** (:func:`release`): per site and for the network, the noisy counts
rounded to the plan's base and suppressed (``None``) under its minimum cell, the epsilon of the
release, its noise standard deviation and the date. Nothing unrounded is written. A site that has
not approved the current plan has no release: the portal shows it as "not published". The
site's field list and disease areas are public metadata from its published description
(:func:`check_description`), not counts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hemafed.errors import InvalidInput
from hemafed.study.plan import MAX_PATIENTS
from hemafed.study.spec import StudySpec

CATALOGUE_ID = "catalogue"
QUERY = "catalogue_counts"
QUERY_KEY = f"{QUERY}@1"
ROUND_TO = 10
MIN_CELL = 10
EPSILON = 1.0
DELTA = 1e-6
TOTAL_BUDGET = 3.0
BOUND_STDS = 5.0
"""The stated bound of a released count: within this many noise standard deviations of the
noisy value before rounding (a Gaussian leaves it with probability 6e-7), plus half the base."""

DISEASES = ("MDS", "AML", "MM", "SCD")
FIELDS = ("sex", "age", "hb", "plt", "bm_blast", "os_time")
"""The default fields counted: few, since the noise grows with the square root of their number
(one patient adds 1 to each field it has a value of)."""
HUB_MAIN = "hemafed.service.catalogue:catalogue_hub_main"


@dataclasses.dataclass(frozen=True)
class CataloguePlan:
    """The parameters of a catalogue spec (what every refresh asks every site)."""

    spec: StudySpec
    group: str
    diseases: tuple[str, ...]
    fields: tuple[str, ...]
    epsilon: float
    delta: float
    round_to: int
    min_cell: int

    @classmethod
    def from_spec(cls, spec: StudySpec) -> CataloguePlan:
        kinds = [a.kind for a in spec.analyses]
        if spec.study_id != CATALOGUE_ID or kinds != ["catalogue"]:
            raise InvalidInput(f"a catalogue plan is a spec with study_id {CATALOGUE_ID!r} and "
                               f"one analysis of kind 'catalogue'")
        a = spec.analyses[0]
        group = str(a.get("group"))
        levels = a.get("levels")
        diseases = levels.get(group) if isinstance(levels, Mapping) else None
        if not isinstance(diseases, list) or not diseases:
            raise InvalidInput(f"catalogue plan: levels must map {group!r} to the disease areas")
        try:
            eps, delta = float(a.get("epsilon", EPSILON)), float(a.get("delta", DELTA))
            round_to, min_cell = int(a.get("round_to", ROUND_TO)), int(a.get("min_cell",
                                                                             MIN_CELL))
        except (TypeError, ValueError):
            raise InvalidInput("catalogue plan: epsilon, delta, round_to and min_cell must be "
                               "numbers") from None
        if not (math.isfinite(eps) and eps >= 0) or not 0 < delta < 1 or round_to < 1 \
                or min_cell < 0:
            raise InvalidInput("catalogue plan: epsilon >= 0, 0 < delta < 1, round_to >= 1 and "
                               "min_cell >= 0")
        return cls(spec, group, tuple(str(d) for d in diseases),
                   tuple(str(c) for c in a.get("columns") or ()), eps, delta, round_to, min_cell)

    def params(self, sites: Sequence[str]) -> dict[str, Any]:
        """The one request of a refresh over ``sites`` (in this order)."""
        return {"column": self.group, "levels": list(self.diseases),
                "features": list(self.fields), "sites": list(sites),
                "max_patients": MAX_PATIENTS}


def catalogue_spec_text(*, diseases: Sequence[str] = DISEASES, fields: Sequence[str] = FIELDS,
                        epsilon: float = EPSILON, delta: float = DELTA,
                        round_to: int = ROUND_TO, min_cell: int = MIN_CELL) -> str:
    """The YAML of a catalogue plan (the network admin sets it at the hub)."""
    doc = {"study_id": CATALOGUE_ID, "title": "Network catalogue (feasibility counts)",
           "requester": "hub", "analyses": [{
               "id": "catalogue", "kind": "catalogue", "group": "disease",
               "levels": {"disease": list(diseases)}, "columns": list(fields),
               "epsilon": float(epsilon), "delta": float(delta), "round_to": int(round_to),
               "min_cell": int(min_cell)}]}
    return yaml.safe_dump(doc, sort_keys=False)


def parse_plan(text: str) -> CataloguePlan:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"catalogue plan: not valid YAML: {exc}") from None
    return CataloguePlan.from_spec(StudySpec.from_mapping(raw, source="catalogue plan"))


def describe_plan(plan: CataloguePlan) -> str:
    """The plan in plain language (site console, portal)."""
    noise = (f"a differentially private release of epsilon {plan.epsilon:g} (delta "
             f"{plan.delta:g}) per refresh" if plan.epsilon > 0 else "exact counts (no noise)")
    return (f"patients, patients per disease area ({', '.join(plan.diseases)}) and patients "
            f"with a value of each of {', '.join(plan.fields)}; {noise}, through secure "
            f"aggregation; the hub keeps only counts rounded to {plan.round_to} and suppressed "
            f"under {plan.min_cell}")


# --- at the site ---------------------------------------------------------------------------

def approve_catalogue(site_dir: str | Path, spec: StudySpec, *, budget: float, officer: str,
                      now: dt.datetime | None = None) -> Any:
    """Approve the catalogue plan at the site with a total catalogue ``budget`` (epsilon);
    returns the signed decision for the hub (:class:`hemafed.service.approval.SignedDecision`)."""
    from hemafed.service.approval import decide
    from hemafed.site.policy import Budget

    plan = CataloguePlan.from_spec(spec)
    if not (math.isfinite(budget) and budget > 0):
        raise InvalidInput(f"the catalogue budget must be an epsilon > 0, got {budget!r}")
    if plan.epsilon > budget:
        raise InvalidInput(f"the catalogue budget {budget:g} is smaller than one refresh "
                           f"(epsilon {plan.epsilon:g})")
    return decide(site_dir, spec, "approved", officer=officer, now=now,
                  budget=Budget(float(budget), plan.delta),
                  only_queries=(QUERY_KEY,), require_dp=plan.epsilon > 0)


# --- at the hub ----------------------------------------------------------------------------

def catalogue_hub_main(exchange: Any, site_ids: list[str], config: dict[str, Any]) -> Any:
    """One refresh: the catalogue request over the approving sites, securely summed."""
    from hemafed.federation.api import DPRequest
    from hemafed.federation.runtime import SecureFederation
    from hemafed.secure import FederationManifest

    plan = parse_plan(str(config["plan"]))
    sites = [s for s in config["sites"] if s in set(site_ids)]
    if sites != list(config["sites"]):
        raise InvalidInput("not every approving site is connected; refresh again later")
    manifest = FederationManifest.from_json(config["manifest"])
    fed = SecureFederation(exchange, manifest, site_ids=sites, spec_sha256=plan.spec.sha256,
                           requester="hub-catalogue")
    dp = DPRequest(epsilon=plan.epsilon, delta=plan.delta) if plan.epsilon > 0 else None
    res = fed.secure_sum(QUERY, plan.params(sites), study=CATALOGUE_ID, dp=dp)
    return {"sites": sites, "contributors": list(res.sites),
            "values": {k: np.asarray(v, dtype=float).tolist() for k, v in res.values.items()},
            "noise_std": {k: float(v) for k, v in res.noise_std.items()}}


def rounded(value: float, base: int, min_cell: int) -> int | None:
    """A released count: ``None`` (suppressed) under ``min_cell``, else rounded half up to
    ``base`` (at least ``base``)."""
    if not math.isfinite(value) or value < min_cell:
        return None
    return max(base, math.floor(value / base + 0.5) * base)


def release(plan: CataloguePlan, raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per site and for the network (key ``""``): the counts the hub may store."""
    sites = list(raw["sites"])
    v = {k: np.asarray(x, dtype=float) for k, x in raw["values"].items()}
    std = {k: float(raw.get("noise_std", {}).get(k, 0.0)) for k in ("patients", "areas",
                                                                  "fields")}

    def entry(patients: float, areas: np.ndarray, fields: np.ndarray, scale: float
              ) -> dict[str, Any]:
        def r(x: float) -> int | None:
            return rounded(float(x), plan.round_to, plan.min_cell)

        return {"patients": r(patients),
                "diseases": {d: r(n) for d, n in zip(plan.diseases, areas, strict=True)},
                "fields": {f: r(n) for f, n in zip(plan.fields, fields, strict=True)},
                "noise_std": {k: s * scale for k, s in std.items()},
                "rounded_to": plan.round_to, "min_cell": plan.min_cell,
                "bound": BOUND_STDS}

    out = {s: entry(v["patients"][i], v["areas"][i], v["fields"][i], 1.0)
           for i, s in enumerate(sites)}
    out[""] = entry(v["patients"].sum(), v["areas"].sum(axis=0), v["fields"].sum(axis=0),
                    math.sqrt(len(sites)))
    out[""]["sites"] = sites  # the totals state which sites they cover
    return out


def check_description(doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """A site's published description: the disease areas and fields it holds (public names,
    no counts)."""
    out = {}
    for key in ("diseases", "fields"):
        v = doc.get(key)
        if not isinstance(v, list) or not all(isinstance(x, str) and 0 < len(x) <= 64
                                              for x in v) or len(v) > 500:
            raise InvalidInput(f"site description: {key!r} must be a list of names (no counts)")
        out[key] = [str(x) for x in v]
    extra = sorted(set(doc) - {"diseases", "fields"})
    if extra:
        raise InvalidInput(f"site description: unknown key(s) {extra}; it holds names only")
    return out
