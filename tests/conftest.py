"""Shared fixtures.

``make_federation(cohorts)`` builds the federation that statistics tests run through. Tests of
maths call it; which transport it uses is decided here, in one place.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType

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


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Import ``benchmarks/NAME.py`` as module ``NAME`` (once), to test its helpers."""
    def load(name: str) -> ModuleType:
        if name in sys.modules:
            return sys.modules[name]
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    return load
