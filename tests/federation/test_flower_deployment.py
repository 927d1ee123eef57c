"""Real Flower deployment on 127.0.0.1: SuperLink + 3 SuperNodes, TLS and SuperNode auth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from probe_reference import expected_sums
from site_handlers import SCALE

from hemafed.federation.flower.deployment import Deployment, descendants, pid_alive

pytestmark = pytest.mark.deploy
SITES = ["site-a", "site-b", "site-c"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    site_dirs = []
    for name in SITES:
        (root / "sites" / name).mkdir(parents=True)
        site_dirs.append(root / "sites" / name)
    # test CA + certificate are made in tmp_path; site_handlers.py must be importable by the
    # ClientApp processes the SuperNodes start
    dep = Deployment.start(root / "hub", extra_env={"PYTHONPATH": str(Path(__file__).parent)})
    try:
        dep.add_sites(site_dirs, max_wait_time=60)
        yield dep
    finally:
        dep.stop()


def test_multi_round_exchange_over_tls_with_node_auth(deployment: Deployment) -> None:
    body = deployment.run("hemafed.federation.flower.probe:probe_hub",
                          "site_handlers:scaled_probe_handler", {"rounds": 2},
                          expected_sites=3, timeout=90, connect_timeout=60, run_timeout=240)
    result = body["result"]
    assert result["sites"] == SITES  # site ids came from each SuperNode's --node-config
    for r, rnd in enumerate(result["rounds"]):
        assert rnd["answered"] == SITES
        assert rnd["sum"] == [SCALE * v for v in expected_sums(SITES, r)]
    assert result["counts"] == {s: 2 for s in SITES}  # context.state persisted across messages
    assert len(body["exchange_seconds"]) == 2
    assert deployment.address.startswith("127.0.0.1:")


def test_unregistered_supernode_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    rogue_dir = tmp_path / "rogue"
    rogue_dir.mkdir()
    rogue = deployment.add_site(rogue_dir, register=False, max_wait_time=30)
    code = rogue.wait(timeout=90)
    assert code != 0
    superlink_log = (deployment.workdir / "logs" / "superlink.log").read_text()
    rogue_log = (deployment.workdir / "logs" / "supernode-rogue.log").read_text()
    assert "No SuperNode found with the given public key" in superlink_log
    assert "Failed to activate SuperNode" in rogue_log


def test_stop_ends_every_process_by_pid(deployment: Deployment) -> None:
    started = [p.pid for p in deployment.processes]
    children = [c for p in started for c in descendants(p)]
    assert children, "the SuperLink and SuperNodes start SuperExec children"
    deployment.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in started + children):
        time.sleep(0.1)
    assert not [p for p in started + children if pid_alive(p)]
    assert all(p.poll() is not None for p in deployment.processes)
