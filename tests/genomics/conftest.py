"""Fixtures of the genomics tests (the world is built once per session)."""

from __future__ import annotations

import pytest
from genomics_world import World, make_world


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory)
