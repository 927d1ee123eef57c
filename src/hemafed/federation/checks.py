"""Named checks of site-query parameters, shared by every query (one rule, one message each).

A query's ``check_params``, ``declare`` and ``compute`` read their parameters through these, so a
parameter means the same thing and has the same default in every query, and a bad value gets
the same clear error naming the parameter (the site refuses it as ``invalid_parameter``).

>>> max_patients({})
1000000
>>> column({"duration": "os_time"}, "duration")
'os_time'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hemafed.errors import InvalidInput

Params = Mapping[str, Any]

MAX_PATIENTS = 1_000_000
"""Default public bound on one site's cohort size (a study's spec may fix a smaller one)."""

_MAX_PATIENTS_LIMIT = 10**9


def max_patients(params: Params, default: int = MAX_PATIENTS) -> int:
    """``params['max_patients']``: the public bound on a site's patient count, an int >= 1."""
    value = params.get("max_patients", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
            or not 1 <= value <= _MAX_PATIENTS_LIMIT:
        raise InvalidInput(f"parameter 'max_patients' must be a whole number in 1..."
                           f"{_MAX_PATIENTS_LIMIT}, got {value!r}")
    return int(value)


def column(params: Params, key: str, default: str | None = None) -> str:
    """``params[key]``: the name of a cohort column (a non-empty string)."""
    col = params.get(key, default)
    if not isinstance(col, str) or not col:
        raise InvalidInput(f"parameter {key!r} must name a cohort column, got {col!r}")
    return col
