"""The site policy: what a hospital allows, in a YAML file it edits, checked on every request.

The policy says which site queries may run (``name@version`` or ``name@*``), the minimum cell
size, whether answers outside secure aggregation are allowed, the privacy budget (a total for the
site and a default per study), the approved studies (each pinned to the SHA-256 of its approved
specification, with an expiry date and who approved it) and optional thresholds a synthetic-data
release must meet. Loading validates everything and names the file, the key and what was
expected; :meth:`SitePolicy.check` answers one request with a :class:`Decision` and a human reason.

>>> p = SitePolicy(site_id="A", allowed_queries=("cohort_size@1",))
>>> p.allows_query("cohort_size", "1"), p.allows_query("cohort_size", "2")
(True, False)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from hemafed import atomic
from hemafed.errors import InvalidInput
from hemafed.site.membership import MembershipRules

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_QUERY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*@([A-Za-z0-9_.\-]+|\*)$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
_THRESHOLD = re.compile(r"^(max|min)_[a-z0-9_]+$")


@dataclass(frozen=True)
class Budget:
    """A differential-privacy budget: the composed ``(epsilon, delta)`` allowed."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"budget epsilon must be a finite number > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"budget delta must be in (0, 1), got {self.delta}")


@dataclass(frozen=True)
class ApprovedStudy:
    """A study the site approved: its specification hash, expiry and optional restrictions."""

    study_id: str
    spec_sha256: str
    expires: dt.date
    approved_by: str
    budget: Budget | None = None
    allowed_queries: tuple[str, ...] | None = None
    require_dp: bool = False

    def __post_init__(self) -> None:
        if not _ID.match(self.study_id):
            raise ValueError(f"study_id must be 1-128 letters, digits, '_.-', got {self.study_id!r}")
        if not _SHA256.match(self.spec_sha256):
            raise ValueError(f"study {self.study_id}: spec_sha256 must be 64 lowercase hex digits")
        if not self.approved_by.strip():
            raise ValueError(f"study {self.study_id}: approved_by must name who approved it")
        for pattern in self.allowed_queries or ():
            _check_query_pattern(pattern)


class PolicyRequest(Protocol):
    """The fields of a request that the policy looks at (see ``hemafed.federation.request``)."""

    @property
    def study_id(self) -> str: ...
    @property
    def spec_sha256(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def secure(self) -> bool: ...


@dataclass(frozen=True)
class Decision:
    """The policy's answer to one request. ``rule`` is a stable code, ``reason`` is for humans."""

    allowed: bool
    reason: str
    rule: str = "ok"

    def __bool__(self) -> bool:
        return self.allowed


def _check_query_pattern(pattern: str) -> None:
    if not isinstance(pattern, str) or not _QUERY_PATTERN.match(pattern):
        raise ValueError(f"query {pattern!r} must be written 'name@version' or 'name@*' "
                         f"(e.g. 'cohort_size@1')")


def _matches(patterns: tuple[str, ...], name: str, version: str) -> bool:
    return f"{name}@{version}" in patterns or f"{name}@*" in patterns


DEFAULT_TOTAL_BUDGET = Budget(10.0, 1e-5)
DEFAULT_STUDY_BUDGET = Budget(1.0, 1e-6)

DEFAULT_MAX_LATTICE_STEPS = 12.0
"""Finest plan lattice (steps per year) on which a site answers a non-DP request: monthly
(:attr:`SitePolicy.max_lattice_steps_per_unit`)."""


@dataclass(frozen=True)
class SitePolicy:
    """A site's policy. Build it with :meth:`load` from the YAML the hospital edits.

    The protective settings are on unless the policy switches them off in so many words
    (docs/security.md): ``require_plan`` (answer only studies whose specification is stored),
    ``enforce_min_cell`` and ``min_subgroup_size`` (default: ``min_cell_size``; 0 switches it
    off), so a hand-written policy that omits them is protected.

    ``max_lattice_steps_per_unit``: the finest study-plan lattice (steps per year) on which
    the site answers a non-DP request. It bounds how finely the exact risk-set sums on the
    lattice resolve patients' exits (docs/security.md, attack M); a finer one is refused. The
    per-time event counts stay under the min-cell rule on the lattice too.
    """

    site_id: str
    allowed_queries: tuple[str, ...] = ()
    min_cell_size: int = 5
    allow_non_secure: bool = False
    total_budget: Budget = DEFAULT_TOTAL_BUDGET
    study_budget: Budget = DEFAULT_STUDY_BUDGET
    studies: tuple[ApprovedStudy, ...] = ()
    synthetic_release: Mapping[str, float] = field(default_factory=dict)
    federation: MembershipRules = field(default_factory=MembershipRules)
    require_plan: bool = True
    require_dp: bool = False
    enforce_min_cell: bool = True
    min_subgroup_size: int | None = None
    max_cells: int | None = None
    refuse_differencing: bool = True
    max_lattice_steps_per_unit: float = DEFAULT_MAX_LATTICE_STEPS

    def __post_init__(self) -> None:
        if not _ID.match(self.site_id):
            raise ValueError(f"site_id must be 1-128 letters, digits, '_.-', got {self.site_id!r}")
        for pattern in self.allowed_queries:
            _check_query_pattern(pattern)
        if isinstance(self.min_cell_size, bool) or not isinstance(self.min_cell_size, int) \
                or self.min_cell_size < 1:
            raise ValueError(f"min_cell_size must be an int >= 1, got {self.min_cell_size!r}")
        if self.min_subgroup_size is None:
            object.__setattr__(self, "min_subgroup_size", self.min_cell_size)
        if isinstance(self.min_subgroup_size, bool) \
                or not isinstance(self.min_subgroup_size, int) or self.min_subgroup_size < 0:
            raise ValueError(f"min_subgroup_size must be an int >= 0, got "
                             f"{self.min_subgroup_size!r}")
        ids = [s.study_id for s in self.studies]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"studies listed more than once: {', '.join(dupes)}")
        for name, value in self.synthetic_release.items():
            if not _THRESHOLD.match(name):
                raise ValueError(f"synthetic_release threshold {name!r} must be named max_... or min_...")
            if not math.isfinite(value):
                raise ValueError(f"synthetic_release.{name} must be a finite number")

    # --- look-ups -------------------------------------------------------------------------

    def study(self, study_id: str) -> ApprovedStudy | None:
        """The approved study with this id, or ``None``."""
        return next((s for s in self.studies if s.study_id == study_id), None)

    def budget_for(self, study_id: str) -> Budget:
        """The privacy budget of a study: its override, else the per-study default."""
        s = self.study(study_id)
        return s.budget if s is not None and s.budget is not None else self.study_budget

    def allows_query(self, name: str, version: str, study_id: str | None = None) -> bool:
        """Whether the site (and, if named, the study) allows ``name@version``."""
        if not _matches(self.allowed_queries, name, version):
            return False
        s = self.study(study_id) if study_id is not None else None
        return s is None or s.allowed_queries is None or _matches(s.allowed_queries, name, version)

    # --- the check ------------------------------------------------------------------------

    def check(self, request: PolicyRequest, today: dt.date) -> Decision:
        """Decide one request on ``today`` (passed in: clocks live at the edges)."""
        key = f"{request.query}@{request.version}"
        if not _matches(self.allowed_queries, request.query, request.version):
            allowed = ", ".join(self.allowed_queries) or "none"
            return Decision(False, f"query {key} is not allowed by site {self.site_id} "
                                   f"(allowed: {allowed})", "query_not_allowed")
        study = self.study(request.study_id)
        if study is None:
            return Decision(False, f"study {request.study_id!r} is not approved at site "
                                   f"{self.site_id}", "study_not_approved")
        if request.spec_sha256 != study.spec_sha256:
            return Decision(False, f"study {study.study_id!r}: specification hash "
                                   f"{request.spec_sha256[:12]}... does not match the approved "
                                   f"{study.spec_sha256[:12]}...", "spec_hash_mismatch")
        if today > study.expires:
            return Decision(False, f"study {study.study_id!r}: approval expired on "
                                   f"{study.expires.isoformat()}", "study_expired")
        if study.allowed_queries is not None and not _matches(study.allowed_queries,
                                                               request.query, request.version):
            return Decision(False, f"query {key} is not allowed for study {study.study_id!r} "
                                   f"(allowed: {', '.join(study.allowed_queries) or 'none'})",
                            "query_not_allowed")
        if not request.secure and not self.allow_non_secure:
            return Decision(False, f"site {self.site_id} answers only inside secure aggregation "
                                   f"(allow_non_secure is false)", "non_secure_refused")
        return Decision(True, f"{key} allowed for study {study.study_id!r} "
                              f"(approved by {study.approved_by}, expires "
                              f"{study.expires.isoformat()})")

    # --- YAML -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> SitePolicy:
        """Read and validate a policy YAML; ``InvalidInput`` names the file, key and expectation."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"{path}: cannot read the site policy: {exc}") from exc
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InvalidInput(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_mapping(raw, source=str(path))

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "policy") -> SitePolicy:
        """Validate a parsed policy document (see :meth:`load`)."""
        r = _Reader(source)
        top = r.mapping(raw, "", required={"site_id"},
                        optional={"allowed_queries", "min_cell_size", "allow_non_secure",
                                  "privacy_budget", "studies", "synthetic_release",
                                  "federation", "require_plan", "require_dp",
                                  "enforce_min_cell", "min_subgroup_size", "max_cells",
                                  "refuse_differencing", "max_lattice_steps_per_unit"})
        site_id = r.string(top["site_id"], "site_id")
        queries = r.query_list(top.get("allowed_queries", []), "allowed_queries")
        min_cell = r.integer(top.get("min_cell_size", 5), "min_cell_size", low=1)
        non_secure = r.boolean(top.get("allow_non_secure", False), "allow_non_secure")
        total, per_study = DEFAULT_TOTAL_BUDGET, DEFAULT_STUDY_BUDGET
        if "privacy_budget" in top:
            pb = r.mapping(top["privacy_budget"], "privacy_budget", required={"total", "per_study"})
            total = r.budget(pb["total"], "privacy_budget.total")
            per_study = r.budget(pb["per_study"], "privacy_budget.per_study")
        studies = []
        raw_studies = top.get("studies", []) or []
        if not isinstance(raw_studies, list):
            r.fail("studies", "a list of studies", raw_studies)
        for i, item in enumerate(raw_studies):
            where = f"studies[{i}]"
            s = r.mapping(item, where, required={"study_id", "spec_sha256", "expires", "approved_by"},
                          optional={"budget", "allowed_queries", "require_dp"})
            study_id = r.string(s["study_id"], f"{where}.study_id")
            sha = r.string(s["spec_sha256"], f"{where}.spec_sha256")
            if not _SHA256.match(sha):
                r.fail(f"{where}.spec_sha256", "64 lowercase hex digits (sha256 of the study spec)", sha)
            studies.append(r.build(f"{where}", ApprovedStudy,
                                   study_id=study_id, spec_sha256=sha,
                                   expires=r.date(s["expires"], f"{where}.expires"),
                                   approved_by=r.string(s["approved_by"], f"{where}.approved_by"),
                                   budget=(r.budget(s["budget"], f"{where}.budget")
                                           if s.get("budget") is not None else None),
                                   allowed_queries=(r.query_list(s["allowed_queries"],
                                                                 f"{where}.allowed_queries")
                                                    if s.get("allowed_queries") is not None
                                                    else None),
                                   require_dp=r.boolean(s.get("require_dp", False),
                                                        f"{where}.require_dp")))
        synth: dict[str, float] = {}
        if top.get("synthetic_release") is not None:
            sr = r.mapping(top["synthetic_release"], "synthetic_release", open_keys=True)
            for k, v in sr.items():
                synth[str(k)] = r.number(v, f"synthetic_release.{k}")
        membership = MembershipRules()
        if top.get("federation") is not None:
            fr = r.mapping(top["federation"], "federation",
                           optional={"min_threshold", "min_sites", "colluding_sites",
                                     "allow_semi_honest"})
            membership = r.build("federation", MembershipRules, **{
                k: (r.boolean(v, f"federation.{k}") if k == "allow_semi_honest"
                    else r.integer(v, f"federation.{k}", low=0)) for k, v in fr.items()})
        return r.build("", cls, site_id=site_id, allowed_queries=queries, min_cell_size=min_cell,
                       allow_non_secure=non_secure, total_budget=total, study_budget=per_study,
                       studies=tuple(studies), synthetic_release=synth, federation=membership,
                       require_plan=r.boolean(top.get("require_plan", True), "require_plan"),
                       require_dp=r.boolean(top.get("require_dp", False), "require_dp"),
                       enforce_min_cell=r.boolean(top.get("enforce_min_cell", True),
                                                  "enforce_min_cell"),
                       min_subgroup_size=(None if top.get("min_subgroup_size") is None
                                          else r.integer(top["min_subgroup_size"],
                                                         "min_subgroup_size", low=0)),
                       max_cells=(None if top.get("max_cells") is None
                                  else r.integer(top["max_cells"], "max_cells", low=1)),
                       refuse_differencing=r.boolean(top.get("refuse_differencing", True),
                                                     "refuse_differencing"),
                       max_lattice_steps_per_unit=r.positive(
                           top.get("max_lattice_steps_per_unit", DEFAULT_MAX_LATTICE_STEPS),
                           "max_lattice_steps_per_unit"))

    def to_mapping(self) -> dict[str, Any]:
        """The policy as a plain mapping (the shape :meth:`from_mapping` reads)."""
        def budget(b: Budget) -> dict[str, float]:
            return {"epsilon": b.epsilon, "delta": b.delta}
        studies = []
        for s in self.studies:
            item: dict[str, Any] = {"study_id": s.study_id, "spec_sha256": s.spec_sha256,
                                    "expires": s.expires, "approved_by": s.approved_by}
            if s.budget is not None:
                item["budget"] = budget(s.budget)
            if s.allowed_queries is not None:
                item["allowed_queries"] = list(s.allowed_queries)
            if s.require_dp:
                item["require_dp"] = True
            studies.append(item)
        out: dict[str, Any] = {
            "site_id": self.site_id, "allowed_queries": list(self.allowed_queries),
            "min_cell_size": self.min_cell_size, "allow_non_secure": self.allow_non_secure,
            "privacy_budget": {"total": budget(self.total_budget),
                               "per_study": budget(self.study_budget)},
            "studies": studies,
        }
        if self.synthetic_release:
            out["synthetic_release"] = dict(self.synthetic_release)
        # the protective switches are written out either way: a reader sees what is off
        out["require_plan"] = self.require_plan
        if self.require_dp:
            out["require_dp"] = True
        out["enforce_min_cell"] = self.enforce_min_cell
        out["min_subgroup_size"] = self.min_subgroup_size
        if self.max_cells is not None:
            out["max_cells"] = self.max_cells
        if not self.refuse_differencing:
            out["refuse_differencing"] = False
        if self.max_lattice_steps_per_unit != DEFAULT_MAX_LATTICE_STEPS:
            out["max_lattice_steps_per_unit"] = self.max_lattice_steps_per_unit
        if self.federation != MembershipRules():
            out["federation"] = dataclasses.asdict(self.federation)
        return out

    def save(self, path: str | Path) -> None:
        """Write the policy as YAML (atomically; comments of a hand-edited file are not kept)."""
        atomic.write_text(path, yaml.safe_dump(self.to_mapping(), sort_keys=False))


class _Reader:
    """Typed access to a parsed YAML document, failing with file, key and expectation."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, got: Any) -> None:
        where = f"key {key!r}" if key else "top level"
        raise InvalidInput(f"{self.source}: {where}: expected {expected}, got {got!r}")

    def mapping(self, value: Any, key: str, required: set[str] | None = None,
                optional: set[str] | None = None, open_keys: bool = False) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, "a mapping", value)
        required, optional = required or set(), optional or set()
        prefix = f"{key}." if key else ""
        missing = sorted(required - set(value))
        if missing:
            raise InvalidInput(f"{self.source}: missing key(s) "
                               f"{', '.join(prefix + m for m in missing)}")
        if not open_keys:
            unknown = sorted(set(map(str, value)) - required - optional)
            if unknown:
                raise InvalidInput(
                    f"{self.source}: unknown key(s) {', '.join(prefix + u for u in unknown)}; "
                    f"expected {', '.join(sorted(prefix + k for k in required | optional))}")
        return value

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "a non-empty string", value)
        return str(value)

    def integer(self, value: Any, key: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            self.fail(key, f"an integer >= {low}", value)
        return int(value)

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(key, "a finite number", value)
        return float(value)

    def positive(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value) or value <= 0:
            self.fail(key, "a finite number > 0", value)
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(key, "true or false", value)
        return bool(value)

    def date(self, value: Any, key: str) -> dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                pass
        self.fail(key, "a date YYYY-MM-DD", value)
        raise AssertionError  # unreachable: fail raises

    def budget(self, value: Any, key: str) -> Budget:
        b = self.mapping(value, key, required={"epsilon", "delta"})
        eps = self.number(b["epsilon"], f"{key}.epsilon")
        delta = self.number(b["delta"], f"{key}.delta")
        if eps <= 0:
            self.fail(f"{key}.epsilon", "a number > 0", b["epsilon"])
        if not 0 < delta < 1:
            self.fail(f"{key}.delta", "a number in (0, 1), e.g. 1.0e-6", b["delta"])
        return Budget(eps, delta)

    def query_list(self, value: Any, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(key, "a list of 'name@version' or 'name@*'", value)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not _QUERY_PATTERN.match(item):
                self.fail(f"{key}[{i}]", "'name@version' or 'name@*' (e.g. 'cohort_size@1')", item)
        return tuple(value)

    def build(self, key: str, cls: Any, **kwargs: Any) -> Any:
        try:
            return cls(**kwargs)
        except ValueError as exc:
            where = f"key {key!r}" if key else "top level"
            raise InvalidInput(f"{self.source}: {where}: {exc}") from exc


_TEMPLATE = """\
# hemafed site policy for site {site_id!r}.
# The site decides: every request from the hub is checked against this file AT THE SITE,
# written to the audit log (allowed or refused, with the reason), and refused when it does not fit.
# Edit it, then run `hemafed site check DIR` to validate it.

site_id: {site_id}

# Site queries that may run, as name@version (e.g. cohort_size@1) or name@* (any version).
# `hemafed queries` lists the registered ones; `hemafed study validate SPEC` prints those a study
# needs. Anything not listed here is refused. Listed: the patient count and what the bundled
# demo studies need.
allowed_queries:
  - cohort_size@1
  - category_counts@1
  - competing_risk_table@1
  - cox_concordance_histogram@1
  - cox_risk_set_sums@3
  - gbdt_cox_risk_sets@1
  - gbdt_histograms@1
  - km_risk_table@1
  - learn_eval_sums@1
  - learn_risk_histogram@1
  - logistic_newton@1
  - marginal_counts@1
  - numeric_summary@1
  - time_histogram@1

# Counts below this are suppressed in released aggregates.
min_cell_size: 5

# Disclosure control at this site (as DataSHIELD's filters). enforce_min_cell: refuse to
# contribute a count table (category counts, cross-tables, histograms) in which any of this
# site's own non-zero cells is below min_cell_size, unless the release is differentially
# private; in genotype sums a variant whose carriers, non-carriers or missing calls here number
# 1 .. min_cell_size - 1 is left out of this site's sums instead (zeros, never a refusal).
# min_subgroup_size: refuse a non-DP answer in which a subgroup (a level of a grouping
# column) has fewer patients than this (0: off). max_cells: most numbers one request may ask
# for. require_dp: every release must be differentially private (per study: require_dp below).
enforce_min_cell: true
min_subgroup_size: 5
max_cells: 500000
# A study may fix the time grid of its Cox, Fine-Gray and time-varying Cox fits at approval to
# a public lattice (the spec's `lattice`, steps per year; times rounded up to the interval end).
# Their per-time event counts stay under the min-cell rule there too (small cohorts need DP).
# A non-DP fit on a lattice finer than this many steps per year (12: monthly) is refused.
max_lattice_steps_per_unit: 12
require_dp: false
# true: the same non-DP request is released over one set of sites only (a sum over another set
# would give the difference by subtraction). Leave-one-site-out validation without DP needs false.
refuse_differencing: true

# false: this site answers only inside secure aggregation (the hub never sees its own values).
allow_non_secure: false

# Differential-privacy budget, composed over every noisy release (Renyi-DP accounting).
privacy_budget:
  total:                # everything this site ever releases
    epsilon: 10.0
    delta: 1.0e-5
  per_study:            # default for each approved study (a study may override it below)
    epsilon: 1.0
    delta: 1.0e-6

# true: answer only studies approved with `hemafed site approve DIR SPEC.yaml`, which stores the
# specification beside this file; the site derives from it which requests (queries, columns,
# bounds, bins, grids, iterations, DP) the study may send, and refuses the rest.
require_plan: true

# Approved studies. A request must name one of these, carry the SHA-256 of the study
# specification that was approved, and arrive before the expiry date.
studies: []
#  - study_id: MDS-2026-01
#    spec_sha256: 0000000000000000000000000000000000000000000000000000000000000000
#    expires: 2027-12-31
#    approved_by: "Ethics committee, decision 2026-114"
#    budget: {{epsilon: 2.0, delta: 1.0e-6}}     # optional override of per_study
#    allowed_queries: [cohort_size@1]           # optional: narrower than the site list
#    require_dp: true                           # optional: every release of it must be DP

# Which federations this site may join (`hemafed site join` checks the manifest against these):
# against a malicious hub the threshold t of n sites must satisfy 2t > n + colluding_sites.
federation:
  min_threshold: 2
  min_sites: 2
  colluding_sites: 0
  allow_semi_honest: false

# Optional thresholds a synthetic-data release must meet (names start with max_ or min_).
# synthetic_release:
#   max_mia_auc: 0.6
"""


def write_default_policy(path: str | Path, site_id: str) -> SitePolicy:
    """Write a commented policy template for ``site_id`` (atomically) and return it parsed."""
    if not _ID.match(site_id):
        raise InvalidInput(f"site_id must be 1-128 letters, digits, '_.-', got {site_id!r}")
    text = _TEMPLATE.format(site_id=site_id)
    policy = SitePolicy.from_mapping(yaml.safe_load(text), source=str(path))
    atomic.write_text(path, text)
    return policy
