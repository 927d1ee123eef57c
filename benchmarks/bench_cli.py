"""Start-up and demo timings of the ``hemafed`` command (wall and CPU time of child processes).

    python benchmarks/bench_cli.py --repeats 7              # hemafed --help
    python benchmarks/bench_cli.py --demo                   # also one `hemafed demo` (sim)
    python benchmarks/bench_cli.py --src /path/to/old/src   # the same for another source tree

CPU time (user + sys) is reported beside wall time because on a shared machine the wall time
mostly measures the other processes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--src", type=Path, default=Path(__file__).parents[1] / "src")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()),
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    runs = [timed([sys.executable, "-m", "hemafed.cli", "--help"], env)
            for _ in range(args.repeats)]
    walls, cpus = zip(*runs, strict=True)
    print(f"hemafed --help: wall median {statistics.median(walls):.2f} s "
          f"(min {min(walls):.2f}), CPU median {statistics.median(cpus):.2f} s; "
          f"load {os.getloadavg()[0]:.1f}")
    if args.demo:
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = timed([sys.executable, "-m", "hemafed.cli", "demo", "--out",
                               str(Path(tmp) / "demo")], env)
        print(f"hemafed demo: wall {wall:.0f} s, CPU of the command and its children "
              f"{cpu:.0f} s; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
