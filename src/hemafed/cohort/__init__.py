"""The haematology cohort model: schema, vocabularies, validation, importers and demo cohorts."""

from hemafed.cohort.model import Cohort
from hemafed.cohort.schema import FIELDS, Field
from hemafed.cohort.validate import validate_cohort

__all__ = ["FIELDS", "Cohort", "Field", "validate_cohort"]
