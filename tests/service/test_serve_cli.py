"""`hemafed hub serve` as a real process: the Python client end to end, and a kill -9 mid-run.

The hub restarted after being killed while a run was in flight reports that run as interrupted
(with the reason), keeps every submitted study, and runs it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from hubkit import PASSWORD, SMALL_SPEC, approve_all, free_port, onboard

from hemafed.service import Client

pytestmark = pytest.mark.slow


@contextmanager
def hub_process(data: Path, sites: list[Path], port: int) -> Iterator[str]:
    cmd = [sys.executable, "-m", "hemafed.cli", "hub", "serve", "--data", str(data),
           "--port", str(port)]
    for d in sites:
        cmd += ["--site", str(d)]
    env = dict(os.environ, HEMAFED_ADMIN_PASSWORD=PASSWORD)
    log = (data.parent / f"hub-{port}.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/login", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError((data.parent / f"hub-{port}.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


class _Admin:
    """`hubkit.onboard` drives a hub through any httpx-like client; here the real one."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def post(self, path: str, **kw: object) -> httpx.Response:
        return self.http.post(path, **kw)  # type: ignore[arg-type]

    def ensure_admin(self, *_: object) -> None:
        """The process made its admin from HEMAFED_ADMIN_PASSWORD."""


def test_client_and_kill_mid_run(site_dirs: list[Path], tmp_path: Path) -> None:
    data = tmp_path / "hub"
    port = free_port()
    with hub_process(data, site_dirs, port) as url:
        admin = _Admin(url)
        heads = onboard(admin, admin, site_dirs)  # type: ignore[arg-type]
        client = Client.login(url, "alice", PASSWORD)
        study = client.submit(SMALL_SPEC)
        approve_all(admin, heads, site_dirs, study)  # type: ignore[arg-type]
        results = client.wait(client.run(study["id"])["id"], timeout=600)
        assert results["sites"] == [d.name for d in site_dirs]
        cox = client.table(1, "cox_os")
        assert list(cox.index) == ["age", "hb", "plt"] and (cox["se(coef)"] > 0).all()
        model = client.model("small-mds.cox_os", 1)
        assert model["spec_sha256"] == study["spec_sha256"] and model["run"] == 1
        running = client.run(study["id"])  # killed while in flight
        assert running["state"] in ("queued", "running")
    assert (data / "hub.db").exists()  # the default database: SQLite in --data
    with hub_process(data, site_dirs, free_port()) as url:
        client = Client.login(url, "alice", PASSWORD)
        after = client.status(running["id"])
        assert after["state"] == "interrupted" and "hub stopped" in after["error"]
        assert client.status(1)["state"] == "succeeded"
        assert [s["spec_sha256"] for s in client.studies()] == [study["spec_sha256"]]
        again = client.wait(client.run(study["id"])["id"], timeout=600)
        assert again["analyses"][1]["tables"]["summary"] == results["analyses"][1]["tables"][
            "summary"]
