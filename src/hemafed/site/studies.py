"""Approved study specifications kept at the site, and the plans derived from them.

``hemafed site approve DIR SPEC.yaml`` stores the specification text beside the policy
(``studies/<study_id>.json``, canonical JSON of the parsed spec) and adds the study, pinned to
its SHA-256, to ``policy.yaml``. The site node derives each study's
:class:`~hemafed.study.plan.StudyPlan` from the stored text alone; a stored spec whose hash is
not the approved one (edited after approval) yields no plan, and the node refuses the study.

The site reads the spec model and derives the plan through the hooks below the site
(:mod:`hemafed.studyplan`): the analysis kinds, the spec rules and the planner are registered
by the study layer (the standard site handler, :mod:`hemafed.study.site_runtime`, imports
them). A stored spec checked while none is registered is a clear error, not a study refused
for a wrong reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hemafed import atomic
from hemafed.cohort.study_fields import (
    StudyVariable,
    parse_variables,
    register_variables,
    split_mapping,
)
from hemafed.errors import InvalidInput
from hemafed.site.policy import SitePolicy
from hemafed.studyplan.plans import ApprovedPlan, plan_of
from hemafed.studyplan.spec import StudySpec, require_registered
from hemafed.studyplan.spec import spec_sha256 as sha256_of

log = logging.getLogger(__name__)

STUDIES_DIR = Path("studies")


def spec_path(site_dir: str | Path, study_id: str) -> Path:
    return Path(site_dir) / STUDIES_DIR / f"{study_id}.json"


def store_spec(site_dir: str | Path, spec: StudySpec) -> Path:
    """Write the approved spec's text (atomically) where the node finds it."""
    path = spec_path(site_dir, spec.study_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(dict(spec.raw), sort_keys=True, indent=1) + "\n")
    return path


def _approved_text(site_dir: str | Path, study_id: str, spec_sha256: str
                   ) -> dict[str, Any] | bool | None:
    """The stored spec text (parsed JSON) of an approved study: ``False`` when none is stored,
    ``None`` when it is unreadable or does not match the approved hash (logged)."""
    path = spec_path(site_dir, study_id)
    if not path.exists():
        return False
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("study %s: stored spec %s is unreadable (%s)", study_id, path, exc)
        return None
    if not isinstance(raw, dict) or sha256_of(raw) != spec_sha256 \
            or raw.get("study_id") != study_id:
        log.warning("study %s: stored spec %s does not match the approved hash", study_id, path)
        return None
    return raw


def _approved_spec(site_dir: str | Path, study_id: str, spec_sha256: str
                   ) -> StudySpec | bool | None:
    """The stored spec of an approved study: ``False`` when none is stored, ``None`` when it
    is unreadable, does not match the approved hash or is not a valid spec (logged), else the
    spec. No analysis kinds registered to check it with is an error, not an unreadable spec."""
    raw = _approved_text(site_dir, study_id, spec_sha256)
    if not isinstance(raw, dict):
        return raw
    path = spec_path(site_dir, study_id)
    require_registered(str(path))
    try:
        return StudySpec.from_mapping(raw, source=str(path))
    except InvalidInput as exc:
        log.warning("study %s: stored spec %s is unreadable (%s)", study_id, path, exc)
        return None


def load_plans(site_dir: str | Path, policy: SitePolicy) -> dict[str, ApprovedPlan | None]:
    """The plan of every approved study with a stored spec (``None``: the stored text does not
    match the approved hash; the node refuses that study)."""
    plans: dict[str, ApprovedPlan | None] = {}
    for study in policy.studies:
        spec = _approved_spec(site_dir, study.study_id, study.spec_sha256)
        if spec is not False:
            plans[study.study_id] = (plan_of(spec, str(spec_path(site_dir, study.study_id)))
                                     if isinstance(spec, StudySpec) else None)
    return plans


def approved_variables(site_dir: str | Path, policy: SitePolicy
                       ) -> dict[str, tuple[StudyVariable, ...]]:
    """The study variables each approved study's stored spec declares (the declarations are
    persisted with the approval, in the stored spec text, so a restarted node keeps them).
    A stored spec whose hash is not the approved one contributes nothing (its plan is
    refused). The declarations are read from the hash-checked text alone (they are checked
    by :func:`~hemafed.cohort.study_fields.parse_variables`): loading a cohort needs no
    analysis kind registered."""
    out: dict[str, tuple[StudyVariable, ...]] = {}
    for study in policy.studies:
        raw = _approved_text(site_dir, study.study_id, study.spec_sha256)
        if not isinstance(raw, dict):
            continue
        try:
            variables = parse_variables(raw.get("variables"), "variables")
        except InvalidInput as exc:
            log.warning("study %s: stored spec %s is unreadable (%s)", study.study_id,
                        spec_path(site_dir, study.study_id), exc)
            continue
        if variables:
            out[study.study_id] = variables
    return out


def register_approved_variables(site_dir: str | Path, policy: SitePolicy
                                ) -> dict[str, StudyVariable]:
    """Register every approved study's variables (before the cohort is imported or loaded);
    two approved studies declaring one name differently is a clear error."""
    merged: dict[str, tuple[str, StudyVariable]] = {}
    for study_id, variables in sorted(approved_variables(site_dir, policy).items()):
        for v in variables:
            if v.name in merged and merged[v.name][1] != v:
                raise InvalidInput(f"study variable {v.name!r} is declared differently by the "
                                   f"approved studies {merged[v.name][0]!r} and {study_id!r}; "
                                   "one name, one definition per site")
            merged.setdefault(v.name, (study_id, v))
    register_variables([v for _, v in merged.values()])
    return {name: v for name, (_, v) in merged.items()}


def check_mapping_variables(mapping: str | Path | Mapping[str, Any] | None,
                            approved: Mapping[str, StudyVariable]
                            ) -> str | Path | Mapping[str, Any] | None:
    """A site mapping's ``variables:`` section checked against the approved declarations:
    a conflicting declaration is refused (naming the variable); new ones are registered.
    Returns the mapping without its ``variables:`` section (what the reader takes)."""
    if mapping is None:
        return None
    if isinstance(mapping, str | Path):
        from hemafed.cohort.io.mapping import load_yaml

        data = load_yaml(mapping)
    else:
        data = mapping
    if not isinstance(data, Mapping) or "variables" not in data:
        return mapping
    declared, plain = split_mapping(data)
    for v in declared:
        want = approved.get(v.name)
        if want is not None and want != v:
            raise InvalidInput(f"mapping.variables: {v.name!r} conflicts with the approved "
                               "study spec's declaration of that variable (type, unit, low/high, "
                               "levels and codes must be the spec's); nothing was imported")
    register_variables(declared)
    return plain


def plans_summary(plans: Mapping[str, ApprovedPlan | None]) -> list[str]:
    """One line per study for ``hemafed site check``."""
    return [f"study {sid}: " + ("stored spec does not match the approved hash" if p is None else
                                f"plan with {len(p.queries)} queries, {len(p.columns)} columns")
            for sid, p in sorted(plans.items())]
