"""The operator guide's intake, mapping and policy commands, run as written from the Markdown.

``/srv/hemafed`` is replaced by a temporary folder; everything else is the page's text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from docs_blocks import code_blocks

DOC = Path(__file__).parents[1] / "docs" / "operator-guide.md"


def guide_blocks() -> list[tuple[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    head = text[:text.index("## 4. Join the hub")]
    part = DOC.parent / ".operator-guide-intake.md"
    try:
        part.write_text(head, encoding="utf-8")
        return code_blocks(part, ("bash", "yaml"))
    finally:
        part.unlink()


def test_the_yaml_shown_is_the_mapping_shipped() -> None:
    from hemafed.samples import HERE

    shown = [code for lang, code in guide_blocks() if lang == "yaml"]
    assert yaml.safe_load(shown[0]) == yaml.safe_load((HERE / "mapping.yaml").read_text())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_intake_and_policy_commands_run_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
           "FLWR_TELEMETRY_ENABLED": "0",
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    outputs = []
    for language, code in guide_blocks():
        if language != "bash":
            continue
        script = code.replace("/srv/hemafed", str(tmp_path / "srv"))
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"failed:\n{code}\n---\n{out}"
        assert "Traceback" not in out
        outputs.append(out)
    text = "\n".join(outputs)
    assert "imported 12 patients and 9 mutations" in text
    assert "allowed_queries:" in text and "approved mds-prognosis-2027" in text
    assert "site hospital-a: OK" in text
    # the panel declaration assigned the sequenced patients to it: TP53 is known for them
    from hemafed.site.store import load_cohort

    cohort = load_cohort(tmp_path / "srv" / "site")
    assert cohort.patients["panel"].notna().sum() == 11
