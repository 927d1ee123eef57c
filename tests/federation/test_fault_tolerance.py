"""Sites failing for real: six SuperNodes on 127.0.0.1, two SIGKILLed in the middle of a Cox fit,
one restarted, the SuperLink restarted once.

The four survivors are exactly the secure-aggregation threshold (the edge that must still work;
more SuperNodes would test nothing more and cost minutes of CI on two cores). The fit completes
on the survivors (the same coefficients as the same fit run in-process over
exactly those sites: never a mixture of rounds), the restarted site joins the next study, no
site directory loses or half-writes anything, and every process (grandchildren included) is
gone afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hemafed.cohort.demo import generate
from hemafed.cohort.partition import split_sites
from hemafed.demo import build_sites
from hemafed.federation.flower.apps import PROGRESS_FILE
from hemafed.federation.flower.certificates import NodeAuthKeys
from hemafed.federation.flower.deployment import Deployment, descendants, pid_alive, submit_run
from hemafed.federation.inprocess import run_in_process
from hemafed.site.store import audit_log
from hemafed.study.spec import StudySpec

pytestmark = [pytest.mark.deploy, pytest.mark.slow]
N_SITES = 6
SPEC = {"study_id": "faults", "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + wbc"}]}
HUB = "hemafed.study.hub:study_hub_main"


def _snapshot(site_dir: Path) -> dict[str, str]:
    """Hashes of everything a request must not change (the audit log and ledger only grow)."""
    keep = ("cohort/", "keys/", "vault/", "policy.yaml", "site.yaml", "federation.json")
    grows = ("keys/audit.anchor",)  # the copy of the audit head, which moves with the log
    return {rel: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(site_dir.rglob("*"))
            if p.is_file() and (rel := str(p.relative_to(site_dir))).startswith(keep)
            and rel not in grows}


def _coef(results: dict[str, Any]) -> list[Any]:
    return [row[0] for row in results["analyses"][0]["tables"]["summary"]["data"]]


def _run(dep: Deployment, name: str, config: dict[str, Any], expected: int,
         out: dict[str, Any]) -> None:
    try:
        out["body"] = submit_run(dep.flwr_home, dep.workdir / "jobs" / name, HUB, config,
                                 expected_sites=expected, timeout=25, connect_timeout=120,
                                 run_timeout=400, watch=[dep.superlink] if dep.superlink else [])
    except Exception as exc:  # reported by the test thread
        out["error"] = exc


def test_study_survives_killed_sites_and_a_superlink_restart(tmp_path: Path) -> None:
    spec = StudySpec.from_mapping(SPEC)
    # sites that accept a restart on the survivors (their differencing rule would refuse the
    # first rounds' requests again over fewer sites; docs/security.md)
    fed = build_sites(tmp_path / "sites", split_sites(generate("AML", 900, 4), N_SITES, 4,
                                                     size_skew=0.3), spec,
                      policy_overrides={"refuse_differencing": False})
    assert fed.manifest.threshold == N_SITES - 2  # the survivors are exactly the threshold
    config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
    ids = sorted(fed.site_dirs)
    before = {s: _snapshot(d) for s, d in fed.site_dirs.items()}
    dep = Deployment.start(tmp_path / "hub", persistent=True)
    seen: set[int] = set()
    try:
        nodes = dict(zip(ids, dep.add_sites([fed.site_dirs[s] for s in ids]), strict=True))
        # 1. a study; two SuperNodes are SIGKILLed after the first Newton round
        first: dict[str, Any] = {}
        runner = threading.Thread(target=_run, args=(dep, "first", config, N_SITES, first))
        runner.start()
        progress = dep.workdir / "jobs" / "first" / PROGRESS_FILE
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and runner.is_alive():
            if progress.exists() and len(progress.read_text().splitlines()) >= 3:
                break  # set-up, time grid, Newton round 1
            time.sleep(0.1)
        killed = ids[2:4]
        for sid in killed:
            os.kill(nodes[sid].pid, signal.SIGKILL)
        runner.join(timeout=400)
        assert "error" not in first, first.get("error")
        results = first["body"]["result"]
        cox = results["analyses"][0]
        assert cox["status"] == "ok", cox.get("error")
        survivors = [s for s in ids if s not in killed]
        assert len(survivors) == fed.manifest.threshold
        assert cox["provenance"]["sites covered"] == survivors
        assert cox["restarts"] and cox["restarts"][0]["to sites"] == survivors
        # exactly the fit over the survivors, computed apart (in-process, same sites)
        alone = run_in_process(HUB, "hemafed.study.site_runtime:site_handler",
                               [c for c in fed.site_configs() if c["site_id"] in survivors],
                               config)
        assert _coef(results) == pytest.approx(_coef(alone), rel=1e-9)

        # 2. one killed site comes back, the SuperLink restarts (its state on disk)
        back = killed[0]
        keys = NodeAuthKeys(dep.workdir / "node-keys" / back,
                            dep.workdir / "node-keys" / f"{back}.pub")
        dep.add_site(fed.site_dirs[back], site_id=back, keys=keys, register=False)
        dep.restart_superlink()

        # 3. the next study runs on the five sites online, the returning one included
        second: dict[str, Any] = {}
        _run(dep, "second", config, N_SITES - 1, second)
        assert "error" not in second, second.get("error")
        again = second["body"]["result"]["analyses"][0]
        assert again["status"] == "ok", again.get("error")
        assert again["provenance"]["sites covered"] == sorted([*survivors, back])

        # nothing in any site directory is lost or half-written
        for sid, site_dir in fed.site_dirs.items():
            assert audit_log(site_dir).verify(), sid
            assert not [p for p in site_dir.rglob("*") if ".tmp" in p.name], sid
            assert _snapshot(site_dir) == before[sid], sid
            ledger = site_dir / "ledger.jsonl"
            for line in (ledger.read_text().splitlines() if ledger.exists() else []):
                json.loads(line)  # every ledger line complete
        for proc in dep.processes:
            seen.add(proc.pid)
            seen.update(descendants(proc.pid))
    finally:
        dep.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and [p for p in seen if pid_alive(p)]:
        time.sleep(0.1)
    assert not [p for p in seen if pid_alive(p)]
