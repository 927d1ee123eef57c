"""The quickstart's commands, extracted from docs/quickstart.md and run as written, in order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from docs_blocks import code_blocks

DOC = Path(__file__).parents[1] / "docs" / "quickstart.md"


def run_blocks(doc: Path, cwd: Path, timeout: float) -> list[str]:
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    outputs = []
    for language, code in code_blocks(doc):
        argv = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else \
            [sys.executable, "-c", code]
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{language} block failed:\n{code}\n---\n{output}"
        assert "Traceback" not in output and "Warning" not in output, output
        outputs.append(output)
    return outputs


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    outputs = run_blocks(DOC, tmp_path, timeout=900)
    results = json.loads((tmp_path / "study-out" / "results.json").read_text())
    assert [a["status"] for a in results["analyses"]] == ["ok", "ok"]
    assert len(results["sites"]) == 4
    assert "allowed_queries:" in "".join(outputs)
    assert "exp(coef)" in outputs[-1]  # the Python block printed the Cox summary
