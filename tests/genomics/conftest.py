"""Fixtures of the genomics tests (the world is built once per session). The tests need the
``genomics`` extra (msprime, bed-reader, cyvcf2, pgenlib); without it they are not collected."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import pytest

_MISSING = [m for m in ("msprime", "bed_reader", "cyvcf2", "pgenlib")
            if importlib.util.find_spec(m) is None]
if _MISSING:
    logging.getLogger(__name__).warning("genomics tests not collected: %s missing", _MISSING)
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from genomics_world import make_world

    return make_world(tmp_path_factory)
