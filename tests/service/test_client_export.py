"""``hemafed.Client`` is the service client, loaded lazily: the core install needs no service extra."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hemafed
import hemafed.service

SRC = str(Path(hemafed.__file__).resolve().parent.parent)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_hemafed_client_is_the_service_client() -> None:
    assert hemafed.Client is hemafed.service.Client
    assert "Client" in hemafed.__all__


def test_import_hemafed_pulls_in_no_service_dependency() -> None:
    r = _python("import sys, hemafed\n"
                "print(sorted(m for m in ('httpx', 'fastapi', 'starlette', 'sqlalchemy', "
                "'uvicorn') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_without_the_service_extra_the_error_names_it() -> None:
    # httpx made unimportable, as on a core install
    r = _python("import sys\nsys.modules['httpx'] = None\nimport hemafed\n"
                "try:\n    hemafed.Client\nexcept ImportError as e:\n    print(e)\n")
    assert r.returncode == 0, r.stderr
    assert "hemafed[service]" in r.stdout and "'httpx'" in r.stdout
