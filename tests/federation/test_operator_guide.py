"""The operator guide's pilot runs as written: its ``bash pilot`` block is extracted from
docs/operator-guide.md and run in a temporary folder (only the port is changed, to a free one).
It starts a hub and three sites with `hemafed hub start` / `hemafed site serve`, runs a study
with `hemafed hub run`, and stops them with SIGTERM; every process it started, grandchildren
included, must be gone afterwards, and the deployed results must equal the in-process ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hemafed.federation.flower.deployment import descendants, free_port, pid_alive

pytestmark = [pytest.mark.deploy, pytest.mark.slow]
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"


def pilot_block() -> str:
    blocks = re.findall(r"```bash pilot\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, "docs/operator-guide.md must hold one ```bash pilot block"
    return blocks[0]


def test_the_pilot_commands_run_as_written(tmp_path: Path) -> None:
    hemafed = Path(sys.executable).parent / "hemafed"
    if not hemafed.exists():
        pytest.skip("the hemafed command is not installed beside this Python")
    script = pilot_block().replace("9092", str(free_port()))
    env = {**os.environ, "PATH": os.pathsep.join([str(hemafed.parent), os.environ["PATH"]]),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:  # every process the pilot started, however short-lived
        while not done.is_set():
            seen.update(descendants(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        output, _ = proc.communicate(timeout=400)
    finally:
        done.set()
        watcher.join()
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert len(seen) >= 8, "hub, SuperLink, 3 SuperNodes and 3 workers at least"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and [p for p in seen if pid_alive(p)]:
        time.sleep(0.2)
    left = [p for p in seen if pid_alive(p)]
    for pid in left:  # never leave anything behind, even when failing
        os.kill(pid, 9)
    assert not left, f"processes left running after SIGTERM: {left}"

    deployed = json.loads((tmp_path / "pilot" / "deployed" / "results.json").read_text())
    assert (tmp_path / "pilot" / "deployed" / "report.html").is_file()
    assert deployed["sites"] == ["site01", "site02", "site03"]  # ids from site.yaml
    demo = json.loads((tmp_path / "pilot" / "results.json").read_text())
    for a, b in zip(deployed["analyses"], demo["analyses"], strict=True):
        assert a["status"] == b["status"] == "ok", a.get("error")
        assert a["tables"] == b["tables"]
