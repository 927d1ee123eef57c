"""Real Flower deployment on 127.0.0.1: SuperLink + 3 SuperNodes (each with its site worker),
TLS and SuperNode auth; the sites run only the pinned hemafed app."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from probe_reference import expected_sums
from site_handlers import SCALE

from hemafed.federation.flower.deployment import (
    Deployment,
    descendants,
    flower_env,
    pid_alive,
    submit_run,
    wait_for_port,
    worker_command,
)
from hemafed.federation.flower.site_worker import AUTHENTICATED_METHODS
from hemafed.site.store import audit_log, init_site

pytestmark = pytest.mark.deploy
SITES = ["site-a", "site-b", "site-c"]
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deploy")
    site_dirs = []
    for name in SITES:
        # the directory name is not the site id: the id comes from site.yaml
        init_site(root / "sites" / f"dir-{name}", name)
        site_dirs.append(root / "sites" / f"dir-{name}")
    # test CA + certificate are made in tmp_path; site_handlers.py (the site handler these
    # sites chose) and the hostile app must be importable by the site / hub processes
    dep = Deployment.start(root / "hub", extra_env={"PYTHONPATH": str(HERE)})
    try:
        dep.add_sites(site_dirs, max_wait_time=60,
                      handler_factory="site_handlers:scaled_probe_handler")
        yield dep
    finally:
        dep.stop()


def test_multi_round_exchange_over_tls_with_node_auth(deployment: Deployment) -> None:
    body = deployment.run("hemafed.federation.flower.probe:probe_hub", {"rounds": 2},
                          expected_sites=3, timeout=90, connect_timeout=60, run_timeout=240)
    result = body["result"]
    assert result["sites"] == SITES  # site ids came from each site's site.yaml
    for r, rnd in enumerate(result["rounds"]):
        assert rnd["answered"] == SITES
        # scaled by 10: the handler the *site* chose ran, in the site worker
        assert rnd["sum"] == [SCALE * v for v in expected_sums(SITES, r)]
    assert result["counts"] == {s: 2 for s in SITES}  # context.state persisted across messages
    assert len(body["exchange_seconds"]) == 2
    assert deployment.address.startswith("127.0.0.1:")


def test_another_flower_app_is_refused_by_every_site_and_audited(deployment: Deployment
                                                                  ) -> None:
    site_dirs = sorted((deployment.workdir.parent / "sites").iterdir())
    before = {d: len(audit_log(d).entries()) for d in site_dirs}
    job = deployment.workdir / "jobs" / "hostile"
    body = submit_run(deployment.flwr_home, job, "hemafed.federation.flower.probe:probe_hub",
                      {}, expected_sites=3, timeout=60, connect_timeout=60, run_timeout=180,
                      app_dir=HERE / "hostile_app")
    replies = body["result"]["replies"]
    assert body["result"]["nodes"] == 3 and len(replies) == 3
    assert all(r["error"] and "refused" in r["error"] and "not pinned" in r["error"]
               for r in replies)
    for d in site_dirs:
        assert not (d / "HOSTILE-APP-RAN").exists()  # nothing of the app ran at the site
        entries = audit_log(d).entries()
        assert len(entries) == before[d] + 1
        last = entries[-1]
        assert last["decision"] == "refused" and last["query"] == "flower-app"
        assert last["params"]["fab_id"] == "somebody-else/not-hemafed"
        assert len(last["params"]["fab_sha256"]) == 64
        assert audit_log(d).verify()


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


def _acquire(api: str, secret: bytes | None) -> Any:
    """``AcquireTask`` on a SuperNode's Runtime API as any local process could send it, signed
    with ``secret`` if given; no retry (Flower's retry invoker SIGINTs itself on a 401)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # type: ignore[attr-defined]
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if secret is not None:
        interceptors.append(SuperExecAuthHttpInterceptor(
            master_secret=secret, protected_methods=AUTHENTICATED_METHODS))
    client = RuntimeHttpClient.from_server_address(
        server_address=api, insecure=True, root_certificates=None, interceptors=interceptors)
    try:
        return client.AcquireTask(AcquireTaskRequest(
            supported_task_types=[TaskType.CLIENT_APP], agentapp_fab_hashes=[]))
    finally:
        client.close()


def _runtime_api(deployment: Deployment, site_dir: Path) -> tuple[Any, str, Path]:
    """The site worker's process, the Runtime API it polls and the secret file it holds."""
    commands = [(p, [str(a) for a in cast("list[Any]", p.args)]) for p in deployment.processes]
    worker, args = next((p, a) for p, a in commands
                        if "--runtime-api" in a and str(site_dir) in a)
    api = args[args.index("--runtime-api") + 1]
    host, port = api.rsplit(":", 1)
    wait_for_port(host, int(port), timeout=60)
    return worker, api, Path(args[args.index("--superexec-auth-secret-file") + 1])


def _refused(api: str, secret: bytes | None) -> None:
    import httpx

    with pytest.raises(httpx.HTTPStatusError) as info:
        _acquire(api, secret)
    assert info.value.response.status_code == httpx.codes.UNAUTHORIZED
    # Flower's answer: {"code": 1008 (RUNTIME_AUTHENTICATION_FAILED), "detail": ...}
    assert info.value.response.json() == {"code": 1008, "detail": "Authentication failed."}


def test_only_the_site_worker_may_take_the_supernodes_tasks(deployment: Deployment) -> None:
    """The SuperNode's local Runtime API hands ClientApp tasks (and the token that opens their
    messages) only to a caller signing with the site's ``keys/superexec.secret`` (0600)."""
    site_dirs = sorted((deployment.workdir.parent / "sites").iterdir())
    for site_dir in site_dirs:
        _, api, secret = _runtime_api(deployment, site_dir)
        assert secret == site_dir / "keys" / "superexec.secret"
        assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32
        for intruder in (None, b"a guess at the secret"):  # another local process
            _refused(api, intruder)
        # the same call signed with the site's secret is accepted (no task waits: no token)
        assert not _acquire(api, secret.read_bytes()).token

    # With the site worker paused, the hub's task waits at the SuperNode: an intruder polling
    # for it all the while (longer than the SuperNode's 3 s idle poll of the SuperLink) is
    # refused every time, and the study completes once the worker resumes: nothing was taken.
    worker, api, _ = _runtime_api(deployment, site_dirs[0])
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["body"] = deployment.run("hemafed.federation.flower.probe:probe_hub",
                                             {"rounds": 1}, expected_sites=3, timeout=90,
                                             connect_timeout=60, run_timeout=240)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    os.kill(worker.pid, signal.SIGSTOP)
    hub = threading.Thread(target=run)
    try:
        hub.start()
        tries, deadline = 0, time.monotonic() + 10.0
        while time.monotonic() < deadline:
            _refused(api, None)
            tries += 1
            time.sleep(0.2)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        hub.join(timeout=300)
    assert tries > 20 and not hub.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["body"]["result"]["rounds"][0]["answered"] == SITES


def test_a_worker_with_the_wrong_secret_stops_with_a_clear_error(deployment: Deployment,
                                                                  tmp_path: Path) -> None:
    """A second worker given another secret file is refused by the SuperNode; it says so and
    exits with code 2 (not Flower's retry invoker SIGINTing it) and takes nothing."""
    import subprocess

    site_dir = sorted((deployment.workdir.parent / "sites").iterdir())[0]
    _, api, _ = _runtime_api(deployment, site_dir)
    wrong = tmp_path / "other.secret"
    wrong.write_bytes(b"x" * 32)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            worker_command(api, site_dir, "site-a",
                           handler_factory="site_handlers:scaled_probe_handler",
                           auth_secret_file=wrong),
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env=flower_env(extra={"PYTHONPATH": str(HERE)}))
        try:
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert code == 2
    text = log_path.read_text()
    assert "the SuperNode refused this worker's SuperExec auth secret" in text
    assert "Traceback" not in text


def test_stop_ends_every_process_by_pid(deployment: Deployment) -> None:
    started = [p.pid for p in deployment.processes]
    children = [c for p in started for c in descendants(p)]
    assert children, "the SuperLink starts SuperExec children"
    deployment.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in started + children):
        time.sleep(0.1)
    assert not [p for p in started + children if pid_alive(p)]
    assert all(p.poll() is not None for p in deployment.processes)


def test_a_study_with_holds_gives_the_in_process_numbers_and_no_hold_is_audited(
        tmp_path: Path) -> None:
    """Deployed with the hub's holds (on by default), twice in a row (the first run's last
    holds are still out when the second starts): the same Cox fit and the same audit entries
    as in-process; the SuperNodes drop a hold's reply to a finished run and carry on."""
    from hemafed.cohort.demo import generate
    from hemafed.cohort.partition import split_sites
    from hemafed.demo import build_sites
    from hemafed.federation.flower.apps import DEFAULT_HOLD_SECONDS
    from hemafed.federation.inprocess import run_in_process
    from hemafed.study.spec import StudySpec

    hub = "hemafed.study.hub:study_hub_main"
    spec = StudySpec.from_mapping({"study_id": "holds", "requester": "tester", "analyses": [
        {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
         "formula": "age + hb"}]})
    fed = build_sites(tmp_path / "sites", split_sites(generate("MDS", 240, 3), 3, 3), spec,
                      policy_overrides={"refuse_differencing": False})
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}

    def audited() -> dict[str, list[tuple[str, str]]]:
        return {s: [(e["query"], e["decision"]) for e in audit_log(d).entries()]
                for s, d in fed.site_dirs.items()}

    def coef(result: dict[str, Any]) -> list[Any]:
        cox = result["analyses"][0]
        assert cox["status"] == "ok", cox.get("error")
        assert cox["provenance"]["sites covered"] == sorted(fed.site_dirs)
        return [row[0] for row in cox["tables"]["summary"]["data"]]

    handler = "hemafed.study.site_runtime:site_handler"
    reference = coef(run_in_process(hub, handler, fed.site_configs(), config))  # + first use
    seen: list[int] = []
    runs = []
    with Deployment.start(tmp_path / "hub") as dep:
        dep.add_sites(list(fed.site_dirs.values()), max_wait_time=60)
        for _ in range(2):
            before = audited()
            body = dep.run(hub, config, expected_sites=3, timeout=90, connect_timeout=90,
                           run_timeout=400)
            runs.append((body, {s: e[len(before[s]):] for s, e in audited().items()}))
        time.sleep(2 * DEFAULT_HOLD_SECONDS + 3.0)  # the last holds are answered and dropped
        assert all(p.poll() is None for p in dep.processes)  # no SuperNode or worker died
        for proc in dep.processes:
            seen += [proc.pid, *descendants(proc.pid)]
    logs = {p.name: p.read_text() for p in (dep.workdir / "logs").glob("*.log")}
    before = audited()
    alone = run_in_process(hub, handler, fed.site_configs(), config)
    in_process = {s: e[len(before[s]):] for s, e in audited().items()}
    assert coef(alone) == reference
    for body, entries in runs:
        assert coef(body["result"]) == pytest.approx(reference, rel=1e-12)
        assert entries == in_process  # holds wrote no audit entry; every request did
        assert all(entries.values())
    for name, text in logs.items():
        if name.startswith("worker-"):
            assert "task failed" not in text and "Traceback" not in text, name
            held = [ln for ln in text.splitlines() if "of them holds" in ln]
            assert held and " 0 of them holds" not in held[-1], name  # holds were answered
        if name.startswith("supernode-"):
            assert "Failed to send message" not in text, name
            assert "Traceback" not in text, name
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(p) for p in seen):
        time.sleep(0.1)
    assert not [p for p in seen if pid_alive(p)]
