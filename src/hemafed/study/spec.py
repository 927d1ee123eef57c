"""Study specifications: the analyses, columns and privacy settings a researcher asks sites to run.

A spec is a YAML file. Its SHA-256 (over canonical JSON of the parsed spec, so formatting and
comments do not change it) is what every site approves in its policy: a changed analysis is a
different study.

The model lives below the site, in :mod:`hemafed.studyplan.spec`, so that a site reads the
spec it approved without importing the estimators; this module is its public import path and
registers the built-in kinds and spec rules (:mod:`hemafed.study.kinds`) and the plan
(:mod:`hemafed.study.plan`) on import.

>>> spec = StudySpec.from_mapping({"study_id": "s1", "analyses": [
...     {"id": "size", "kind": "describe", "columns": ["age"]}]})
>>> len(spec.sha256)
64
"""

from __future__ import annotations

from hemafed.study import kinds as _registrations  # noqa: F401  (registers the built-in kinds)
from hemafed.study import plan as _plan  # noqa: F401  (registers the site's planner)
from hemafed.studyplan.spec import (
    FORMULA_LEVEL_KINDS,
    KINDS,
    OWN_LATTICE_MAX_POINTS,
    OWN_TABLE_KINDS,
    Analysis,
    StudySpec,
    check_names,
    known_genes,
    valid_columns,
)

__all__ = ["FORMULA_LEVEL_KINDS", "KINDS", "OWN_LATTICE_MAX_POINTS", "OWN_TABLE_KINDS",
           "Analysis", "StudySpec", "check_names", "known_genes", "valid_columns"]
