"""Localhost deployment latency: Flower's own floor next to hemafed's round trips, before/after.

Three deployments on 127.0.0.1 (SuperLink with TLS and SuperNode authentication, 3 SuperNodes):

1. *Flower's floor*: Flower's default SuperNodes (``--isolation subprocess``: a fresh
   ``flwr-clientapp`` per message) running the smallest Flower app
   (``benchmarks/flower_floor_app``); seconds per round trip to every node.
2. *before*: the same default SuperNodes running hemafed's app (each message starts
   ``flwr-clientapp``, imports hemafed, opens the site): seconds per secure sum.
3. *Flower's floor with the site worker*: ``--isolation process`` SuperNodes whose site worker
   answers with the connectivity probe (no site data, no cryptography): seconds per round trip,
   i.e. what Flower's SuperNode and SuperLink cost in the deployment hemafed uses.
4. *after*: ``--isolation process`` SuperNodes with hemafed's long-running site worker:
   seconds per secure sum, then a whole KM + Cox study.

Arms 3 and 4 send the hub's hold messages (keep-warm, ``--hold`` seconds, default the
deployment's :data:`~hemafed.federation.flower.apps.DEFAULT_HOLD_SECONDS`; ``--hold 0``: none, as
before holds existed); arm 2 never does (Flower's SuperNodes would start a process per hold).

    python benchmarks/bench_deploy.py --sites 3 --patients 1018 --out /tmp/bench_deploy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STUDY = {"study_id": "bench-deploy", "requester": "bench", "analyses": [
    {"id": "km", "kind": "km", "duration": "os_time", "event": "os_status",
     "group": "ipssm_category"},
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + hb + bm_blast + gene:TP53"}]}


def _summary(seconds: list[float]) -> dict[str, float]:
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
            "n": len(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--patients", type=int, default=1018)
    ap.add_argument("--sums", type=int, default=5)
    ap.add_argument("--before-sums", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma list of arms to skip: floor,worker-floor,before,after")
    ap.add_argument("--hold", type=float, default=None,
                    help="hold seconds for the worker arms (default: the deployment's; 0: none)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from hemafed.cohort.demo import generate
    from hemafed.cohort.partition import split_sites
    from hemafed.demo import build_sites
    from hemafed.federation.flower.deployment import Deployment, submit_run
    from hemafed.site.store import init_site
    from hemafed.study.spec import StudySpec

    env = {"PYTHONPATH": os.pathsep.join([str(HERE), str(HERE / "flower_floor_app")])}
    out: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, "
                                      f"{os.cpu_count()} cores", "sites": args.sites,
                           "patients": args.patients, "hold": args.hold,
                           "load average at start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        root = Path(tmp)
        spec = StudySpec.from_mapping(STUDY)
        cohorts = split_sites(generate("MDS", args.patients, 5), args.sites, 5, size_skew=0.4)
        fed = build_sites(root / "sites", cohorts, spec)
        config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}

        if "floor" not in skip:
            bare = []
            for i in range(args.sites):
                init_site(root / "bare" / f"node{i}", f"node{i}")
                bare.append(root / "bare" / f"node{i}")
            with Deployment.start(root / "floor", extra_env=env) as dep:
                dep.add_sites(bare, isolation="subprocess")
                body = submit_run(dep.flwr_home, dep.workdir / "jobs" / "floor",
                                  "hemafed.federation.flower.probe:probe_hub", {},
                                  expected_sites=args.sites, timeout=120, connect_timeout=120,
                                  run_timeout=600, app_dir=HERE / "flower_floor_app")
            out["flower floor round trip"] = _summary(body["exchange_seconds"])
            print("floor", out["flower floor round trip"], file=sys.stderr)

        if "worker-floor" not in skip:
            probe_sites = []
            for i in range(args.sites):
                init_site(root / "probe" / f"probe{i}", f"probe{i}")
                probe_sites.append(root / "probe" / f"probe{i}")
            with Deployment.start(root / "worker-floor", extra_env=env) as dep:
                dep.add_sites(probe_sites,
                              handler_factory="hemafed.federation.flower.probe:probe_handler")
                body = dep.run("hemafed.federation.flower.probe:probe_hub", {"rounds": 5},
                               expected_sites=args.sites, timeout=120, run_timeout=600,
                               hold=args.hold)
            out["flower floor with the site worker"] = _summary(body["exchange_seconds"])
            print("worker floor", out["flower floor with the site worker"], file=sys.stderr)

        if "before" not in skip:
            with Deployment.start(root / "before", extra_env=env) as dep:
                dep.add_sites(list(fed.site_dirs.values()), isolation="subprocess")
                body = dep.run("deploy_hubs:secure_sums_hub", config | {"sums": args.before_sums},
                               expected_sites=args.sites, timeout=120, run_timeout=900,
                               hold=0)
            out["before: secure sum"] = _summary(body["result"]["seconds"])
            out["before: exchange"] = _summary(body["exchange_seconds"])
            print("before", out["before: secure sum"], file=sys.stderr)

        if "after" not in skip:
            with Deployment.start(root / "after", extra_env=env) as dep:
                dep.add_sites(list(fed.site_dirs.values()))
                body = dep.run("deploy_hubs:secure_sums_hub", config | {"sums": args.sums},
                               expected_sites=args.sites, timeout=120, run_timeout=900,
                               hold=args.hold)
                out["after: secure sum"] = _summary(body["result"]["seconds"])
                out["after: exchange"] = _summary(body["exchange_seconds"])
                print("after", out["after: secure sum"], file=sys.stderr)
                start = time.perf_counter()
                body = dep.run("hemafed.study.hub:study_hub_main", config,
                               expected_sites=args.sites, timeout=120, run_timeout=900,
                               hold=args.hold)
                wall = time.perf_counter() - start
            analyses = {a["id"]: a for a in body["result"]["analyses"]}
            assert all(a["status"] == "ok" for a in analyses.values()), analyses
            out["after: KM + Cox study"] = {
                "wall seconds (flwr run to result)": wall,
                "exchanges": len(body["exchange_seconds"]),
                "exchange seconds": _summary(body["exchange_seconds"]),
                "cox seconds": analyses["cox"]["provenance"]["seconds"],
                "cox secure sums": analyses["cox"]["provenance"]["secure sums"],
                "km seconds": analyses["km"]["provenance"]["seconds"]}
            print("study", out["after: KM + Cox study"], file=sys.stderr)
    out["load average at end"] = os.getloadavg()[0]
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
