"""Shared builders of the refusal-through-the-sum tests: the one-column describe study
(:data:`SPEC`), the two-cell age histogram whose young cell a site can hold below its
``min_cell_size`` (:data:`HIST`), and a cohort restricted to given patients (:func:`_subset`)."""

from __future__ import annotations

from hemafed.cohort.model import Cohort

__all__ = ["HIST", "SPEC", "_subset"]

SPEC = {"study_id": "refusal-sum", "requester": "tester", "analyses": [
    {"id": "d", "kind": "describe", "columns": ["age"]}]}
HIST = {"column": "age", "low": 0.0, "high": 110.0, "bins": 2}  # cells [0, 55) and [55, 110]


def _subset(cohort: Cohort, ids: list[str]) -> Cohort:
    patients = cohort.patients[cohort.patients["patient_id"].isin(ids)].reset_index(drop=True)
    mutations = cohort.mutations[cohort.mutations["patient_id"].isin(ids)]
    return Cohort(patients, mutations.reset_index(drop=True), cohort.panels)
