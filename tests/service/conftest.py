"""Fixtures of the service tests: three local site directories, a hub on SQLite or PostgreSQL.

``db_url`` is parametrised: every test that takes it runs on SQLite and on a real PostgreSQL 15
server, which the ``postgres`` fixture initialises in a temporary directory (as the ``postgres``
user: it refuses to run as root), starts on 127.0.0.1 on a free port and stops by PID.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hubkit import free_port

from hemafed.demo import build_sites, demo_cohorts, demo_spec
from hemafed.site.store import SitePaths, load_policy

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SITE_IDS = ("site-a", "site-b", "site-c")


@pytest.fixture(scope="session")
def site_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three MDS site directories (300 virtual patients) whose policies approve no study yet."""
    root = tmp_path_factory.mktemp("sites")
    cohorts = demo_cohorts("MDS", 300, 3, seed=5)
    fed = build_sites(root, dict(zip(SITE_IDS, cohorts.values(), strict=True)), demo_spec("MDS"))
    for d in fed.site_dirs.values():
        policy = load_policy(d)
        dataclasses.replace(policy, studies=()).save(SitePaths(d).policy)
    return root


@pytest.fixture
def site_dirs(site_root: Path, tmp_path: Path) -> list[Path]:
    """A fresh copy of the three sites for one test (policies, audit logs and ledgers change)."""
    out = tmp_path / "sites"
    shutil.copytree(site_root, out)
    return [out / s for s in SITE_IDS]


def _runuser(*args: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL 15 server on 127.0.0.1; yields its admin URL (database ``postgres``)."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 is not installed ({PG_BIN}); .ci/run installs it")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as 'postgres'")
    # pytest's temporary folders are private to root: the cluster gets its own folder in /tmp
    root = Path(tempfile.mkdtemp(prefix="hemafed-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    init = subprocess.run(_runuser(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                   "--auth=trust", "-E", "UTF8"), capture_output=True, text=True)
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    port = free_port()
    proc = subprocess.Popen(_runuser(str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1",
                                     "-p", str(port), "-k", str(root)),
                            stdout=subprocess.DEVNULL, stderr=(root / "pg.log").open("w"),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"PostgreSQL did not start: {(root / 'pg.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # fast shutdown: do not wait for idle clients
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


_DB_COUNTER = iter(range(10_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or a new database on the PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    admin_url = request.getfixturevalue("postgres")
    import sqlalchemy as sa

    name = f"hub_{os.getpid()}_{next(_DB_COUNTER)}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@dataclasses.dataclass
class HubRun:
    """What :func:`run_small_study` leaves: the client, auth headers, run and its results."""

    client: Any
    heads: dict[str, Any]
    study: dict[str, Any]
    run: dict[str, Any]
    results: dict[str, Any]


@pytest.fixture
def run_small_study(site_dirs: list[Path]) -> Callable[..., HubRun]:
    """The hub setup every end-to-end service test shares: onboard the three sites and the
    researchers through the API, submit :data:`hubkit.SMALL_SPEC` as alice, every site signs
    its approval, start the run and wait for it; returns the :class:`HubRun`."""
    from hubkit import SMALL_SPEC, app_client, approve_all, onboard, wait_run

    def go(service: Any, *, timeout: float = 900.0,
           before_approval: Callable[[Any, dict[str, Any], dict[str, Any]], None] | None = None
           ) -> HubRun:
        client = app_client(service)
        heads = onboard(client, service, site_dirs)
        study = client.post("/api/studies", headers=heads["alice"],
                            json={"spec_yaml": SMALL_SPEC}).json()
        if before_approval is not None:
            before_approval(client, heads, study)
        approve_all(client, heads, site_dirs, study)
        run = client.post(f"/api/studies/{study['id']}/runs", headers=heads["alice"]).json()
        run = wait_run(client, heads["alice"], run["id"], timeout=timeout)
        assert run["state"] == "succeeded", run
        results = client.get(f"/api/runs/{run['id']}/results.json",
                             headers=heads["alice"]).json()
        return HubRun(client, heads, study, run, results)
    return go


@pytest.fixture
def cli_small_study(site_dirs: list[Path], tmp_path: Path) -> Callable[[], dict[str, Any]]:
    """``hemafed study run`` of :data:`hubkit.SMALL_SPEC` on the same sites (in process)."""
    import json

    from hubkit import SMALL_SPEC
    from typer.testing import CliRunner

    from hemafed.cli import app as cli_app

    def go() -> dict[str, Any]:
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(SMALL_SPEC)
        out = tmp_path / "cli"
        args = ["study", "run", str(spec_file), "--transport", "inprocess", "--out", str(out)]
        for d in site_dirs:
            args += ["--site", str(d)]
        res = CliRunner().invoke(cli_app, args)
        assert res.exit_code == 0, res.output
        return dict(json.loads((out / "results.json").read_text()))
    return go
