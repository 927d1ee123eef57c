"""A study spec in plain language: what each analysis asks every site, and its privacy cost.

Shown to the researcher in the portal and to the site officer in the console before they
decide, so both read the same description of the same hash. Beside the prose,
:func:`plan_view` lists the exact requests the approved plan permits
(:class:`hemafed.study.plan.StudyPlan`, the very object the site checks each request
against), so what the officer reads is what the site will enforce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hemafed.study.plan import StudyPlan
from hemafed.study.spec import Analysis, StudySpec

_WHAT = {
    "describe": "counts, means and histograms of {columns}",
    "crosstab": "a table of counts of {row} by {col}",
    "km": "Kaplan-Meier survival sums (events and numbers at risk per time) of {duration}/{event}"
          "{by}",
    "logrank": "a log-rank test of {duration}/{event} by {group}",
    "cox": "a Cox model of {duration}/{event} on {formula} (gradient and Hessian sums, "
           "a few Newton rounds)",
    "logistic": "a logistic regression of {outcome} on {formula} (gradient and Hessian sums)",
    "competing": "cumulative incidence of competing events {causes}",
    "gbdt": "a boosted survival model of {duration}/{event} on {features} (gradient histograms "
            "per tree level)",
    "synth": "differentially private marginal tables of {columns} for a synthetic cohort",
}


@dataclass(frozen=True)
class AnalysisText:
    id: str
    kind: str
    title: str
    plain: str
    epsilon: float


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def analysis_epsilon(a: Analysis, spec: StudySpec) -> float:
    """The DP epsilon this analysis charges each site's ledger (0: no noisy release)."""
    if a.kind == "synth":
        return float(a.get("epsilon", spec.epsilon or 1.0))
    return 0.0


def plain_language(spec: StudySpec) -> list[AnalysisText]:
    out = []
    for a in spec.analyses:
        opts = {k: _fmt(v) for k, v in a.options.items()}
        opts.setdefault("by", f" by {opts['group']}" if "group" in opts else "")
        try:
            text = _WHAT[a.kind].format(**{**{"by": ""}, **opts})
        except KeyError:
            text = f"{a.kind} with {opts}"
        out.append(AnalysisText(a.id, a.kind, a.title, text, analysis_epsilon(a, spec)))
    return out


def epsilon_per_site(spec: StudySpec) -> float:
    return sum(analysis_epsilon(a, spec) for a in spec.analyses)


@dataclass(frozen=True)
class PlanRequest:
    """One query the plan permits: at most ``cap`` distinct requests, DP-only or not."""

    query: str
    cap: int
    dp_only: bool
    fixed: int
    """How many exact parameter sets the plan pins for it (0: checked element by element)."""


@dataclass(frozen=True)
class PlanColumn:
    """A column a request may name, with its public bounds and category levels, if any."""

    name: str
    bounds: tuple[float, float] | None
    levels: list[list[str]]


@dataclass(frozen=True)
class PlanView:
    """The plan as the console and portal render it (a view of :class:`StudyPlan`, no rules)."""

    requests: list[PlanRequest]
    columns: list[PlanColumn]
    bins: list[int]
    lattices: list[float]
    time_mappings: list[str]
    genes: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"requests": [r.__dict__ for r in self.requests],
                "columns": [{"name": c.name, "bounds": list(c.bounds) if c.bounds else None,
                             "levels": c.levels} for c in self.columns],
                "bins": self.bins, "lattices": self.lattices,
                "time_mappings": self.time_mappings, "genes": self.genes}


def plan_view(spec: StudySpec) -> PlanView:
    """The requests ``spec``'s plan permits, derived by the same code the site enforces with."""
    plan = StudyPlan.from_spec(spec)
    requests = [PlanRequest(q, plan.cap(q), q in plan.dp_required, len(plan.fixed.get(q, ())))
                for q in sorted(plan.queries)]
    columns = [PlanColumn(c, plan.bounds.get(c),
                          sorted(list(lv) for lv in plan.levels.get(c, frozenset())))
               for c in sorted(plan.columns)]
    return PlanView(requests, columns, sorted(plan.bins), sorted(plan.lattices),
                    sorted(plan.time_mappings), sorted(plan.genes))
