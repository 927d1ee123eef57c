"""Helpers shared by the service tests: a hub over local sites, accounts, signed decisions."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from hemafed.service.app import create_app
from hemafed.service.approval import decide, identity_public_key
from hemafed.service.db import Database
from hemafed.service.hub import HubService
from hemafed.service.runs import LocalFederation
from hemafed.study.spec import StudySpec

PASSWORD = "correct horse battery"
SMALL_SPEC = """\
study_id: small-mds
title: "Survival by IPSS-M category"
disease: MDS
requester: alice
analyses:
  - {id: km_ipssm, kind: km, duration: os_time, event: os_status, group: ipssm_category}
  - {id: cox_os, kind: cox, duration: os_time, event: os_status, formula: "age + hb + plt"}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_hub(db_url: str, data_dir: Path, site_dirs: list[Path], **kw: Any) -> HubService:
    return HubService(Database(db_url), data_dir,
                      federation=LocalFederation.from_dirs(site_dirs, "inprocess"), **kw)


def bearer(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    r = client.post("/api/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def onboard(client: TestClient, service: HubService, site_dirs: list[Path]) -> dict[str, Any]:
    """Admin onboards the sites with one officer each, and one researcher; returns auth headers."""
    service.ensure_admin("admin", PASSWORD)
    admin = bearer(client, "admin")
    heads: dict[str, Any] = {"admin": admin}
    for d in site_dirs:
        sid = d.name
        r = client.post("/api/sites", headers=admin,
                        json={"site_id": sid, "name": f"Hospital {sid}",
                              "identity_key": identity_public_key(d)})
        assert r.status_code == 200, r.text
        r = client.post("/api/users", headers=admin, json={
            "username": f"officer-{sid}", "password": PASSWORD, "role": "officer",
            "site_id": sid})
        assert r.status_code == 200, r.text
        heads[sid] = bearer(client, f"officer-{sid}")
    for name in ("alice", "bob"):
        r = client.post("/api/users", headers=admin,
                        json={"username": name, "password": PASSWORD, "role": "researcher"})
        assert r.status_code == 200, r.text
        heads[name] = bearer(client, name)
    return heads


def approve_all(client: TestClient, heads: dict[str, Any], site_dirs: list[Path],
                study: dict[str, Any]) -> None:
    spec = StudySpec.from_mapping(__import__("yaml").safe_load(study["spec_yaml"]))
    for d in site_dirs:
        signed = decide(d, spec, "approved", officer=f"officer-{d.name}")
        r = client.post(f"/api/studies/{study['id']}/decisions", headers=heads[d.name],
                        json={"site_id": d.name, "payload": signed.payload,
                              "signature": signed.signature})
        assert r.status_code == 200, r.text


def wait_run(client: TestClient, headers: dict[str, str], run_id: int,
             timeout: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{run_id}", headers=headers).json()
        if run["state"] in ("succeeded", "failed", "interrupted"):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish in {timeout} s")


def app_client(service: HubService) -> TestClient:
    return TestClient(create_app(service))


def assert_same_results(hub_results: dict[str, Any], cli_results: dict[str, Any]) -> None:
    """Every analysis of the hub's results equals the CLI's, table by table."""
    import numpy as np

    for hub_doc, cli_doc in zip(hub_results["analyses"], cli_results["analyses"], strict=True):
        assert hub_doc["status"] == cli_doc["status"] == "ok"
        for name, table in cli_doc["tables"].items():
            got = np.array(hub_doc["tables"][name]["data"], dtype=float)
            np.testing.assert_allclose(got, np.array(table["data"], dtype=float), rtol=1e-9)


@contextmanager
def hub_process(data: Path, sites: list[Path], port: int | None = None
                ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``hemafed hub serve`` as a real process on a loopback port (a free one by default); yields
    its URL and process once it answers; stopped by its process group (SIGKILL) on exit."""
    port = free_port() if port is None else port
    cmd = [sys.executable, "-m", "hemafed.cli", "hub", "serve", "--data", str(data),
           "--port", str(port)]
    for d in sites:
        cmd += ["--site", str(d)]
    env = dict(os.environ, HEMAFED_ADMIN_PASSWORD=PASSWORD)
    log_path = data.parent / f"hub-{port}.log"
    with log_path.open("w") as log:
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
                    raise AssertionError(log_path.read_text()[-3000:])
                time.sleep(0.2)
            yield url, proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


class ProcessAdmin:
    """The admin of a hub process: :func:`onboard` drives a hub through any httpx-like client;
    here the real one, over HTTP."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=60)

    def post(self, path: str, **kw: object) -> httpx.Response:
        return self.http.post(path, **kw)  # type: ignore[arg-type]

    def ensure_admin(self, *_: object) -> None:
        """The process made its admin from HEMAFED_ADMIN_PASSWORD."""
