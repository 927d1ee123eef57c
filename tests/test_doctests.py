"""The examples in the package's docstrings run and print what they say (issue 14)."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import hemafed

# Alembic's env.py runs only under `alembic`; the Flower app folder is a FAB, not a module
SKIP = ("hemafed.service.migrations", "hemafed.federation.flower.app")


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(hemafed.__path__, "hemafed."):
        if info.name.startswith(SKIP):
            continue
        spec = importlib.util.find_spec(info.name)
        origin = spec.origin if spec is not None else None
        if origin and origin.endswith(".py"):
            with open(origin, encoding="utf-8") as f:
                if ">>> " in f.read():
                    names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples_run(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:  # an optional extra that is not installed
        pytest.skip(f"{name}: {exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (run " \
                               f"python -m doctest -v on it to see which)"
