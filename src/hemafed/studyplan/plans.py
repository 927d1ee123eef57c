"""The plan a site derives from an approved spec, as the site sees it: a protocol and a hook.

The plan itself (:class:`hemafed.study.plan.StudyPlan`) reads the estimators' models (designs,
lattices, the imaging section), so it lives in the study layer, above the site. The site only
needs what :class:`ApprovedPlan` names, and derives a plan through the planner registered into
this module at run time (:func:`register_planner`; :mod:`hemafed.study.plan` registers
:meth:`~hemafed.study.plan.StudyPlan.from_spec` when imported). A site asked to derive a plan
while no planner is registered refuses with a clear error (:func:`plan_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from hemafed.errors import InvalidInput
from hemafed.federation.checks import QueryParams
from hemafed.studyplan.spec import StudySpec, require_registered

__all__ = ["ApprovedPlan", "Planner", "plan_of", "register_planner", "registered_planner"]


class ApprovedPlan(Protocol):
    """What a site reads of an approved study's plan (:class:`hemafed.study.plan.StudyPlan`)."""

    @property
    def study_id(self) -> str: ...

    @property
    def queries(self) -> frozenset[str]: ...

    @property
    def columns(self) -> frozenset[str]: ...

    def check(self, query: str, params: Mapping[str, Any] | QueryParams, dp: bool,
              distinct_so_far: int = 0) -> tuple[str, str] | None:
        """``None`` if the request fits the plan, else ``(element, detail)``."""

    def on_plan_lattice(self, params: Mapping[str, Any] | QueryParams, query: str | None = None
                        ) -> float | None:
        """``steps_per_unit`` of the plan lattice that is the request's time grid, else
        ``None``."""


Planner = Callable[[StudySpec], ApprovedPlan]
"""``planner(spec) -> plan``: the plan an approved spec implies (the spec alone decides it)."""

_PLANNER: list[Planner] = []


def register_planner(planner: Planner) -> Planner:
    """Set the planner the site derives its plans with (another one replaces it)."""
    _PLANNER[:] = [planner]
    return planner


def registered_planner() -> Planner | None:
    """The registered planner (``None``: none)."""
    return _PLANNER[0] if _PLANNER else None


def plan_of(spec: StudySpec, source: str = "study spec") -> ApprovedPlan:
    """The plan of ``spec`` by the registered planner; refused with a clear error when no
    planner, kinds or spec rules are registered in this process."""
    require_registered(source)
    if not _PLANNER:
        raise InvalidInput(f"{source}: cannot derive the study's plan: no planner is registered "
                           "in this process (import hemafed.study.plan, which registers "
                           "StudyPlan.from_spec)")
    return _PLANNER[0](spec)
