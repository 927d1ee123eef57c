"""`site serve` takes the site's identity from its site directory (``site.yaml``), not from the
directory's name: a hospital may keep its site in ``hospital-A/`` while the manifest knows it as
``site02``. Before the fix every SuperNode of the operator guide's example was named after its
folder and the study failed with "site(s) [...] are not in the federation manifest".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hemafed.federation.flower.certificates import (
    make_node_auth_keys,
    make_test_ca_and_server_cert,
)
from hemafed.federation.flower.deployment import free_port, pid_alive
from hemafed.federation.flower.site_worker import site_identity
from hemafed.site.store import init_site

SITE_ID = "site02"
FOLDER = "hospital-A"


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    path = tmp_path / FOLDER
    init_site(path, SITE_ID)
    return path


def test_the_worker_names_the_site_after_site_yaml(site_dir: Path, tmp_path: Path) -> None:
    assert site_identity(site_dir) == SITE_ID
    assert site_identity(site_dir, "site07") == "site07"  # an explicit id still wins
    bare = tmp_path / "site09"  # no site.yaml (a test handler's folder): the folder's name
    bare.mkdir()
    assert site_identity(bare) == "site09"


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_site_serve_starts_the_supernode_and_worker_as_the_site_yaml_id(site_dir: Path,
                                                                        tmp_path: Path) -> None:
    hemafed = Path(sys.executable).parent / "hemafed"
    if not hemafed.exists():
        pytest.skip("the hemafed command is not installed beside this Python")
    certs = make_test_ca_and_server_cert(tmp_path / "certs")
    keys = make_node_auth_keys(tmp_path / "keys", SITE_ID)
    # no hub listens there: the SuperNode keeps trying, which is all this test needs
    hub = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.Popen([str(hemafed), "site", "serve", str(site_dir), "--hub", hub,
                             "--ca", str(certs.ca_cert), "--key", str(keys.private_key)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    pids: list[int] = []
    try:
        assert proc.stderr is not None
        started = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline().decode(errors="replace")
            if not line and proc.poll() is not None:
                break
            if "SuperNode pid" in line:
                started = line
                break
        match = re.search(r"site (\S+): SuperNode pid (\d+), site worker pid (\d+)", started)
        assert match, f"site serve did not start its processes: {started!r}"
        pids = [int(match[2]), int(match[3])]
        assert match[1] == SITE_ID
        node, worker = (_cmdline(p) for p in pids)
        assert f"site-id='{SITE_ID}'" in " ".join(node)
        assert worker[worker.index("--site-id") + 1] == SITE_ID
        assert FOLDER not in " ".join(node).replace(str(site_dir), "")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    left = [p for p in pids if pid_alive(p)]
    for pid in left:  # never leave anything behind, even when failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left running after SIGTERM: {left}"
