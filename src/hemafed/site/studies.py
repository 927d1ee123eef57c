"""Approved study specifications kept at the site, and the plans derived from them.

``hemafed site approve DIR SPEC.yaml`` stores the specification text beside the policy
(``studies/<study_id>.json``, canonical JSON of the parsed spec) and adds the study, pinned to
its SHA-256, to ``policy.yaml``. The site node derives each study's
:class:`~hemafed.study.plan.StudyPlan` from the stored text alone; a stored spec whose hash is
not the approved one (edited after approval) yields no plan, and the node refuses the study.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from hemafed import atomic
from hemafed.errors import InvalidInput
from hemafed.site.policy import SitePolicy
from hemafed.study.plan import StudyPlan
from hemafed.study.spec import StudySpec

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


def load_plans(site_dir: str | Path, policy: SitePolicy) -> dict[str, StudyPlan | None]:
    """The plan of every approved study with a stored spec (``None``: the stored text does not
    match the approved hash; the node refuses that study)."""
    plans: dict[str, StudyPlan | None] = {}
    for study in policy.studies:
        path = spec_path(site_dir, study.study_id)
        if not path.exists():
            continue
        try:
            spec = StudySpec.from_mapping(json.loads(path.read_text(encoding="utf-8")),
                                          source=str(path))
        except (OSError, ValueError, InvalidInput) as exc:
            log.warning("study %s: stored spec %s is unreadable (%s)", study.study_id, path, exc)
            plans[study.study_id] = None
            continue
        if spec.sha256 != study.spec_sha256 or spec.study_id != study.study_id:
            log.warning("study %s: stored spec %s does not match the approved hash",
                        study.study_id, path)
            plans[study.study_id] = None
            continue
        plans[study.study_id] = StudyPlan.from_spec(spec)
    return plans


def plans_summary(plans: Mapping[str, StudyPlan | None]) -> list[str]:
    """One line per study for ``hemafed site check``."""
    return [f"study {sid}: " + ("stored spec does not match the approved hash" if p is None else
                                f"plan with {len(p.queries)} queries, {len(p.columns)} columns")
            for sid, p in sorted(plans.items())]
