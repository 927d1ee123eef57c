"""White-box clinical scores for haematology (MDS, AML, myeloma, sickle cell disease).

Every score takes a cohort table with canonical column names and returns a
:class:`~hemafed.scores.result.ScoreResult`: value, category, per-input contributions (or the rule
that fired) and a plain-language reason for each patient, with malformed patients listed in
``errors`` instead of failing the batch.
"""

from hemafed.scores.eln import eln2017, eln2022
from hemafed.scores.ipssm import calculator_output, ipssm, ipssm_from_calculator_table
from hemafed.scores.ipssr import ipss, ipssr, ipssra
from hemafed.scores.iss import iss, r2iss, riss
from hemafed.scores.result import ScoreResult
from hemafed.scores.scd import scd

__all__ = ["ScoreResult", "calculator_output", "eln2017", "eln2022", "ipss", "ipssm",
           "ipssm_from_calculator_table", "ipssr", "ipssra", "iss", "r2iss", "riss", "scd"]
