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

**Schedule and defaults.** A plan may state ``refresh_every_days``; the hub's scheduler
(:meth:`hemafed.service.hub.HubService.start_scheduler`) refreshes when due, restart-safe. The
default plan (epsilon 2 per refresh, every 182 days) and its numbers are argued in
docs/service.md (:data:`EPSILON`). An exact (epsilon 0) catalogue stays over the sites of its
first release, as the sites' ``refuse_differencing`` requires
(:meth:`hemafed.service.hub.HubService._exact_refresh_sites`).
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
EPSILON = 2.0
"""The default epsilon of one refresh: per-site noise s.d. 6.7 with the default six fields
(:func:`noise_std`; 12.8 at epsilon 1, large next to a 100-patient site), two refreshes a year
(:data:`REFRESH_EVERY_DAYS`) compose (RDP) to epsilon 2.92 at delta 1e-6, within
:data:`TOTAL_BUDGET`: the officer's default approval lasts one year (docs/service.md)."""
DELTA = 1e-6
TOTAL_BUDGET = 3.0
REFRESH_EVERY_DAYS = 182.0
"""The default schedule: a refresh every half year (0 in a plan: refreshed by hand only)."""
MAX_REFRESH_DAYS = 3660.0
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
    refresh_every_days: float = 0.0

    @property
    def interval(self) -> dt.timedelta | None:
        """The time between scheduled refreshes (``None``: refreshed by hand only)."""
        return dt.timedelta(days=self.refresh_every_days) if self.refresh_every_days else None

    @property
    def noise_std(self) -> float:
        """Each site's noise standard deviation per released count of one refresh."""
        return noise_std(self.epsilon, self.delta, len(self.fields))

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
            every = float(a.get("refresh_every_days", 0.0))
        except (TypeError, ValueError):
            raise InvalidInput("catalogue plan: epsilon, delta, round_to, min_cell and "
                               "refresh_every_days must be numbers") from None
        if not (math.isfinite(eps) and eps >= 0) or not 0 < delta < 1 or round_to < 1 \
                or min_cell < 0:
            raise InvalidInput("catalogue plan: epsilon >= 0, 0 < delta < 1, round_to >= 1 and "
                               "min_cell >= 0")
        if not (math.isfinite(every) and 0 <= every <= MAX_REFRESH_DAYS):
            raise InvalidInput(f"catalogue plan: refresh_every_days must be between 0 (by hand "
                               f"only) and {MAX_REFRESH_DAYS:g}")
        return cls(spec, group, tuple(str(d) for d in diseases),
                   tuple(str(c) for c in a.get("columns") or ()), eps, delta, round_to, min_cell,
                   every)

    def params(self, sites: Sequence[str]) -> dict[str, Any]:
        """The one request of a refresh over ``sites`` (in this order)."""
        return {"column": self.group, "levels": list(self.diseases),
                "features": list(self.fields), "sites": list(sites),
                "max_patients": MAX_PATIENTS}


def noise_std(epsilon: float, delta: float, n_fields: int) -> float:
    """The noise standard deviation of each released count of one site in one refresh.

    One patient adds 1 to its site's patient count, to at most one disease area and to each of
    the ``n_fields`` fields it has a value of: L2 sensitivity ``sqrt(2 + n_fields)`` (the
    query's declaration), calibrated as the sites' ledgers do. 0 without noise.
    """
    from hemafed.privacy.accounting import gaussian_sigma

    if epsilon == 0:
        return 0.0
    return gaussian_sigma(epsilon, delta, math.sqrt(2 + max(n_fields, 1)))


def catalogue_spec_text(*, diseases: Sequence[str] = DISEASES, fields: Sequence[str] = FIELDS,
                        epsilon: float = EPSILON, delta: float = DELTA,
                        round_to: int = ROUND_TO, min_cell: int = MIN_CELL,
                        refresh_every_days: float = REFRESH_EVERY_DAYS) -> str:
    """The YAML of a catalogue plan (the network admin sets it at the hub); ``0``: refreshed
    by hand only (no ``refresh_every_days`` key)."""
    analysis: dict[str, Any] = {
        "id": "catalogue", "kind": "catalogue", "group": "disease",
        "levels": {"disease": list(diseases)}, "columns": list(fields),
        "epsilon": float(epsilon), "delta": float(delta), "round_to": int(round_to),
        "min_cell": int(min_cell)}
    if refresh_every_days:
        analysis["refresh_every_days"] = float(refresh_every_days)
    doc = {"study_id": CATALOGUE_ID, "title": "Network catalogue (feasibility counts)",
           "requester": "hub", "analyses": [analysis]}
    return yaml.safe_dump(doc, sort_keys=False)


def cost_text(plan: CataloguePlan) -> str:
    """The privacy cost of the plan's schedule, for the officer choosing a catalogue budget and
    the admin setting the plan: the year's refreshes composed as the sites' ledgers do (RDP)."""
    from hemafed.privacy.accounting import composed_epsilon, noise_multiplier_for

    if plan.epsilon == 0:
        return "no noise: each refresh releases exact counts (no epsilon is charged)"
    per = f"each refresh costs epsilon {plan.epsilon:g} (noise s.d. {plan.noise_std:.1f} per count)"
    if not plan.refresh_every_days:
        return f"{per}; refreshed by the admin only"
    k = max(1, math.floor(365.25 / plan.refresh_every_days))
    year = composed_epsilon([(noise_multiplier_for(plan.epsilon, plan.delta), k)], plan.delta)
    return (f"{per}; {k} scheduled refresh(es) a year compose to epsilon {year:.2f} at delta "
            f"{plan.delta:g}")


def noise_text(epsilon: str | float, delta: str | float, fields: str | int) -> str:
    """What the admin form shows next to the epsilon field (typed values, parsed leniently)."""
    try:
        eps, dlt = float(epsilon), float(delta)
        n = fields if isinstance(fields, int) else len([x for x in str(fields).split(",")
                                                        if x.strip()])
        if not (math.isfinite(eps) and 0 <= eps <= 100 and 0 < dlt < 1e-3):
            raise ValueError
    except ValueError:
        return "noise s.d.: give an epsilon from 0 to 100 and a delta below 0.001"
    if eps == 0:
        return "no noise: exact counts (each refresh releases them exactly)"
    return (f"noise s.d. {noise_std(eps, dlt, n):.1f} per count of each site "
            f"({max(n, 1)} field(s); a network total over k sites: times the square root of k)")


FORM_FIELDS = ("diseases", "fields", "epsilon", "delta", "round_to", "min_cell",
               "refresh_every_days")


def plan_form(plan: CataloguePlan | None) -> dict[str, str]:
    """The admin form's fields for ``plan`` (the defaults when there is none)."""
    if plan is None:
        plan = parse_plan(catalogue_spec_text())
    return {"diseases": ", ".join(plan.diseases), "fields": ", ".join(plan.fields),
            "epsilon": f"{plan.epsilon:g}", "delta": f"{plan.delta:g}",
            "round_to": str(plan.round_to), "min_cell": str(plan.min_cell),
            "refresh_every_days": f"{plan.refresh_every_days:g}"}


def plan_text_from_form(form: Mapping[str, str]) -> str:
    """The plan YAML from the admin form's fields; ``InvalidInput`` lists every problem, each
    naming its field (the form shows them, never a traceback)."""
    problems: list[str] = []

    def names(key: str, what: str, *, column: bool) -> list[str]:
        out = [x.strip() for x in str(form.get(key, "")).replace("\n", ",").split(",")
               if x.strip()]
        if not out:
            problems.append(f"{key}: give at least one {what}, separated by commas")
        elif len(set(out)) != len(out):
            problems.append(f"{key}: each {what} once")
        elif column and any(len(x) > 64 or not x.replace("_", "").replace(".", "").isalnum()
                            for x in out):
            problems.append(f"{key}: a {what} is a column name of 1-64 letters, digits, '_' "
                            f"or '.'")
        elif any(len(x) > 64 or not x.isprintable() for x in out):
            problems.append(f"{key}: a {what} is 1-64 printable characters")
        return out

    def number(key: str, kind: type, ok: Any, rule: str) -> Any:
        raw = str(form.get(key, "")).strip()
        try:
            v = kind(raw)
        except ValueError:
            problems.append(f"{key}: {rule}; {raw!r} is not a number" if raw
                            else f"{key}: {rule}; the field is empty")
            return None
        if not (math.isfinite(v) and ok(v)):
            problems.append(f"{key}: {rule}; got {raw}")
            return None
        return v

    diseases = names("diseases", "disease area", column=False)  # values, e.g. "MDS/MPN"
    fields = names("fields", "field", column=True)
    if len(fields) > 64 - 2 or len(diseases) > 64:
        problems.append("fields, diseases: at most 62 fields and 64 disease areas")
    eps = number("epsilon", float, lambda v: 0 <= v <= 100,
                 "epsilon per refresh must be a number from 0 (no noise) to 100")
    delta = number("delta", float, lambda v: 0 < v < 1e-3, "delta must be above 0 and below 0.001")
    round_to = number("round_to", int, lambda v: 1 <= v <= 1000,
                      "the rounding base must be a whole number from 1 to 1000")
    min_cell = number("min_cell", int, lambda v: 0 <= v <= 10_000,
                      "the minimum cell must be a whole number from 0 to 10000")
    every = number("refresh_every_days", float, lambda v: 0 <= v <= MAX_REFRESH_DAYS,
                   f"the refresh schedule is a number of days from 0 (by hand only) to "
                   f"{MAX_REFRESH_DAYS:g}")
    if problems:
        raise InvalidInput("the catalogue plan has problems:\n" + "\n".join(
            f"  - {p}" for p in problems))
    text = catalogue_spec_text(diseases=diseases, fields=fields, epsilon=eps, delta=delta,
                               round_to=round_to, min_cell=min_cell, refresh_every_days=every)
    parse_plan(text)  # the same checks as the API
    return text


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
    when = (f"; refreshed every {plan.refresh_every_days:g} days" if plan.refresh_every_days
            else "; refreshed by the admin")
    return (f"patients, patients per disease area ({', '.join(plan.diseases)}) and patients "
            f"with a value of each of {', '.join(plan.fields)}; {noise}, through secure "
            f"aggregation; the hub keeps only counts rounded to {plan.round_to} and suppressed "
            f"under {plan.min_cell}{when}")


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
