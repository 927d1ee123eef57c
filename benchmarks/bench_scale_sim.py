"""Many virtual sites in Flower's simulation runtime: seconds per secure sum and per Cox fit,
peak memory, and how the cost grows with the number of sites.

For each ``--sites`` count: that many real site directories (intake, policy, audit, ledger;
``--per-site`` virtual MDS patients each), then one run of ``flower-superlink --simulation`` +
``flwr run`` (the project's simulation transport, Ray backend) whose ServerApp runs
``deploy_hubs:scale_hub``: ``--sums`` secure sums of ``cohort_size``, then (unless
``--no-cox``) one Cox fit of ``--formula``. Peak memory is the largest summed resident set of
this process and all its descendants (SuperLink, flwr-simulation, Ray), sampled every 0.5 s.
Each run is bounded by ``--run-timeout``; every process is stopped by PID (the simulation
transport does, process groups included) when it ends or fails.

    python benchmarks/bench_scale_sim.py --sites 10 30 86 300 --per-site 50 \
        --out /tmp/bench_scale_sim.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hemafed.federation.flower.deployment import descendants

HERE = Path(__file__).resolve().parent
FORMULA = "age + hb + bm_blast"


def tree_rss_mb(root: int) -> float:
    """Summed VmRSS (MB) of ``root`` and all its descendants."""
    total = 0.0
    for pid in [root, *descendants(root)]:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


class PeakMemory:
    """Samples :func:`tree_rss_mb` of this process every ``interval`` seconds."""

    def __init__(self, interval: float = 0.5) -> None:
        self.peak, self.interval = 0.0, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_one(n_sites: int, args: argparse.Namespace) -> dict[str, Any]:
    from hemafed.cohort.demo import generate
    from hemafed.cohort.partition import split_sites
    from hemafed.demo import build_sites
    from hemafed.federation.flower.simulation import run_in_simulation
    from hemafed.study.spec import StudySpec

    spec = StudySpec.from_mapping({"study_id": f"bench-scale-sim-{n_sites}", "requester": "bench",
                                   "analyses": [{"id": "cox", "kind": "cox",
                                                 "duration": "os_time", "event": "os_status",
                                                 "formula": args.formula}]})
    row: dict[str, Any] = {"sites": n_sites, "patients": n_sites * args.per_site,
                           "load average at start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-scale-sim-") as tmp:
        start = time.perf_counter()
        cohorts = split_sites(generate("MDS", n_sites * args.per_site, 13), n_sites, 13,
                              size_skew=0.3)
        fed = build_sites(Path(tmp) / "sites", cohorts, spec)
        row["site directories s"] = time.perf_counter() - start
        row["threshold"] = fed.manifest.threshold
        config = {"spec": dict(spec.raw), "manifest": fed.manifest.to_json(),
                  "sums": args.sums, "cox": not args.no_cox, "formula": args.formula}
        stats: dict[str, Any] = {}
        start = time.perf_counter()
        with PeakMemory() as memory:
            try:
                body = run_in_simulation("deploy_hubs:scale_hub",
                                         "hemafed.study.site_runtime:site_handler",
                                         fed.site_configs(), config, timeout=args.timeout,
                                         connect_timeout=args.timeout, stats=stats,
                                         run_timeout=args.run_timeout)
            except Exception as exc:  # a bounded run that did not finish: say so, go on
                row["error"] = f"{type(exc).__name__}: {exc}"[:400]
                body = None
        row["run s (flwr run to result)"] = time.perf_counter() - start
        row["peak memory MB"] = round(memory.peak)
        row["load average at end"] = os.getloadavg()[0]
    if body is not None:
        sums = body["sums"]
        row["secure sum s"] = [round(s["seconds"], 2) for s in sums]
        row["secure sum exchanges"] = [s["exchanges"] for s in sums]
        later = [s["seconds"] for s in sums[1:]] or [sums[0]["seconds"]]
        row["secure sum s (median after set-up)"] = statistics.median(later)
        if "cox" in body:
            cox = body["cox"]
            row["cox s"] = cox["seconds"]
            row["cox exchanges"] = cox["exchanges"]
            row["cox newton rounds"] = cox["newton rounds"]
            row["cox sites covered"] = len(cox["covered"])
            row["cox coef"] = cox["coef"]
            row["cox s per exchange (median)"] = statistics.median(cox["exchange seconds"])
        row["exchange s (median)"] = statistics.median(stats.get("exchange_seconds") or [0.0])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 30, 86, 300])
    ap.add_argument("--per-site", type=int, default=50)
    ap.add_argument("--sums", type=int, default=3)
    ap.add_argument("--formula", default=FORMULA)
    ap.add_argument("--no-cox", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per exchange")
    ap.add_argument("--run-timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    # the ServerApp imports deploy_hubs from this directory
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(HERE))
    out: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "command": " ".join(sys.argv), "runs": []}
    for n in args.sites:
        row = run_one(n, args)
        out["runs"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if args.out:
            args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
