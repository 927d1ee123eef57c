"""Shared fixtures.

``make_federation(cohorts)`` builds the federation that statistics tests run through. Tests of
maths call it; which transport it uses is decided here, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from hemafed.cohort.model import Cohort
from hemafed.federation.local import LocalSumFederation

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def make_federation() -> Callable[[Mapping[str, Cohort] | Sequence[Cohort]], LocalSumFederation]:
    return LocalSumFederation


@pytest.fixture
def shared_data() -> Path:
    """Path of ../shared/data; skips the test when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real cohorts not available at {SHARED_DATA}")
    return SHARED_DATA
