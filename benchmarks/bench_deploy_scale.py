"""Many deployed sites on one machine: SuperNode + site worker per site, memory and wall time.

Starts a SuperLink (TLS, SuperNode authentication) and ``--sites`` SuperNodes, each with its
long-running site worker, on 127.0.0.1; reports the resident memory of each process kind, the
time to bring the network up, the seconds per secure sum and per Cox fit.

    python benchmarks/bench_deploy_scale.py --sites 30 --out /tmp/bench_deploy_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STUDY = {"study_id": "bench-scale", "requester": "bench", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": "age + hb + bm_blast"}]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sites", type=int, default=30)
    ap.add_argument("--patients", type=int, default=3000)
    ap.add_argument("--sums", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from hemafed.cohort.demo import generate
    from hemafed.cohort.partition import split_sites
    from hemafed.demo import build_sites
    from hemafed.federation.flower.deployment import Deployment
    from hemafed.study.spec import StudySpec

    out: dict[str, Any] = {"sites": args.sites, "patients": args.patients,
                           "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        spec = StudySpec.from_mapping(STUDY)
        fed = build_sites(root / "sites", split_sites(generate("MDS", args.patients, 9),
                                                      args.sites, 9, size_skew=0.4), spec)
        config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json()}
        env = {"PYTHONPATH": str(HERE)}
        start = time.perf_counter()
        with Deployment.start(root / "hub", extra_env=env) as dep:
            dep.add_sites(list(fed.site_dirs.values()))
            body = dep.run("deploy_hubs:secure_sums_hub", config | {"sums": args.sums},
                           expected_sites=args.sites, timeout=180, connect_timeout=600,
                           run_timeout=1800)
            out["network up + first run seconds"] = time.perf_counter() - start
            out["secure sum seconds"] = body["result"]["seconds"]
            out["secure sum median"] = statistics.median(body["result"]["seconds"])
            kinds: dict[str, list[float]] = {}
            for proc in dep.processes:
                name = Path(str(proc.args[0])).name
                name = "site worker" if "site_worker" in " ".join(map(str, proc.args)) else name
                kinds.setdefault(name, []).append(rss_mb(proc.pid))
            out["resident MB per process (median)"] = {k: statistics.median(v)
                                                       for k, v in kinds.items()}
            out["resident MB per site (SuperNode + worker)"] = (
                out["resident MB per process (median)"].get("flower-supernode", 0)
                + out["resident MB per process (median)"].get("site worker", 0))
            print(out, file=sys.stderr)
            t0 = time.perf_counter()
            body = dep.run("hemafed.study.hub:study_hub_main", config,
                           expected_sites=args.sites, timeout=180, connect_timeout=600,
                           run_timeout=1800)
            cox = body["result"]["analyses"][0]
            out["cox"] = {"status": cox["status"], "seconds": cox["provenance"]["seconds"],
                          "secure sums": cox["provenance"]["secure sums"],
                          "run wall seconds": time.perf_counter() - t0,
                          "sites covered": len(cox["provenance"].get("sites covered", []))}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
