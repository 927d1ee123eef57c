"""Benchmark of hemafed secure aggregation (``hemafed.secure``): cost of masking, and scale.

Prints markdown tables:

1. one 100,000-element vector summed over 10 sites: plain numpy sum, plain fixed-point sum
   (encode at each site, sum, decode), and the full secure protocol in process (an aggregation
   in an open session: two round trips as nobody drops, signatures, Shamir sharing, masks; the
   session set-up timed apart); with per-site and hub compute separated, as total work and as critical path;
2. wall time of one whole aggregation at 10, 86 and 300 simulated sites, in process;
3. Flower's own SecAgg+ mask primitives (``flwr.common.secure_aggregation``: quantize and
   ``pseudo_rand_gen`` masks) on the same vector, for comparison of the masking work only.

Usage: ``.venv/bin/python benchmarks/bench_secure.py [--length 100000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np

from hemafed.federation.queries import Statistic
from hemafed.secure import FederationManifest, HubAggregation, HubSession, SiteIdentity, site_step
from hemafed.secure.encoding import FixedPointLayout
from hemafed.secure.protocol import message_round


class TimedSites:
    """In-process sites that time each ``site_step`` call, per round."""

    def __init__(self, n: int, length: int, threshold: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.ids = {f"site{i:03d}": SiteIdentity.generate(f"site{i:03d}") for i in range(n)}
        self.manifest = FederationManifest.build("bench", self.ids.values(), threshold)
        self.specs = {"x": Statistic((length,), -1.0, 1.0, 1e-9)}
        self.values = {s: {"x": np.round(rng.uniform(-1, 1, length), 9)} for s in self.ids}
        self.states: dict[str, dict[str, bytes]] = {s: {} for s in self.ids}
        self.site_seconds: dict[int, list[float]] = {}

    def compute_for(self, site: str) -> Callable[[bytes, int], tuple[dict, dict]]:
        return lambda payload, quorum: (self.values[site], self.specs)

    def __call__(self, messages: Mapping[str, bytes]) -> dict[str, bytes]:
        out = {}
        for site, message in messages.items():
            start = time.perf_counter()
            out[site] = site_step(message, self.states[site], self.ids[site], self.manifest,
                                  self.compute_for(site))
            self.site_seconds.setdefault(message_round(message), []).append(
                time.perf_counter() - start)
        return out


def open_session(sites: TimedSites) -> tuple[HubSession, float]:
    """Set up a session over every site; returns it and the set-up wall seconds."""
    start = time.perf_counter()
    session = HubSession(sites.manifest, list(sites.ids))
    session.receive(sites(session.start()))
    return session, time.perf_counter() - start


def one_secure_run(sites: TimedSites, session: HubSession
                   ) -> tuple[float, float, float, np.ndarray]:
    """One aggregation in ``session``: (wall s, hub s, mean per-site s over its steps, sum)."""
    sites.site_seconds = {}
    start = time.perf_counter()
    hub_seconds = 0.0
    t = time.perf_counter()
    hub = HubAggregation(session, os.urandom(16), b"bench", sites.specs)
    messages: dict[str, bytes] | None = hub.start()
    hub_seconds += time.perf_counter() - t
    while messages is not None:
        replies = sites(messages)
        t = time.perf_counter()
        messages = hub.receive(replies)
        hub_seconds += time.perf_counter() - t
    wall = time.perf_counter() - start
    per_site = sum(sum(v) for v in sites.site_seconds.values()) / len(sites.ids)
    return wall, hub_seconds, per_site, hub.result().values["x"]


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_cost(length: int, repeats: int) -> list[str]:
    n = 10
    sites = TimedSites(n, length, threshold=7)
    arrays = [v["x"] for v in sites.values.values()]
    def plain_sum() -> np.ndarray:
        total = arrays[0].copy()
        for a in arrays[1:]:
            total += a
        return total

    plain = median_time(plain_sum, repeats)
    layout = FixedPointLayout.from_specs(sites.specs, n)

    def fixed_point() -> np.ndarray:
        total = np.zeros(layout.size, dtype=np.uint64)
        for v in sites.values.values():
            total += layout.encode(v)
        return layout.decode_sum(total, n)["x"]

    plain_fp = median_time(fixed_point, repeats)
    encode_one = median_time(lambda: layout.encode(sites.values["site000"]), repeats)
    encoded = [layout.encode(v) for v in sites.values.values()]

    def hub_plain() -> np.ndarray:
        total = np.zeros(layout.size, dtype=np.uint64)
        for e in encoded:
            total += e
        return layout.decode_sum(total, n)["x"]

    hub_fp = median_time(hub_plain, repeats)
    session, setup = open_session(sites)
    one_secure_run(sites, session)  # warm caches, as the study's later aggregations are
    runs = [one_secure_run(sites, session) for _ in range(repeats)]
    wall = statistics.median(r[0] for r in runs)
    hub = statistics.median(r[1] for r in runs)
    per_site = statistics.median(r[2] for r in runs)
    err = float(np.max(np.abs(runs[0][3] - np.sum(arrays, axis=0))))
    ms = 1e3
    plain_path = encode_one + hub_fp
    secure_path = hub + per_site
    return [
        f"### Secure sum of a {length:,}-element vector over {n} sites (in process)",
        "",
        "| what | time (ms) | ratio to plain numpy sum |",
        "| --- | ---: | ---: |",
        f"| plain numpy sum of the {n} vectors (hub only) | {plain * ms:.2f} | 1.0 |",
        f"| plain fixed-point sum (encode at {n} sites, sum, decode) | {plain_fp * ms:.2f} | "
        f"{plain_fp / plain:.1f} |",
        f"| plain fixed-point: encode at one site | {encode_one * ms:.2f} | "
        f"{encode_one / plain:.1f} |",
        f"| plain fixed-point: hub sum and decode | {hub_fp * ms:.2f} | {hub_fp / plain:.1f} |",
        f"| secure: session set-up (once per study run, all sites) | {setup * ms:.1f} | "
        f"{setup / plain:.0f} |",
        f"| secure: one aggregation, all {n} sites one after another (total work) | "
        f"{wall * ms:.1f} | {wall / plain:.0f} |",
        f"| secure: hub compute per aggregation (verify, unmask, decode) | {hub * ms:.1f} | "
        f"{hub / plain:.0f} |",
        f"| secure: compute per site per aggregation (all its steps) | {per_site * ms:.1f} | "
        f"{per_site / plain:.0f} |",
        "",
        f"Secure over plain fixed-point sum, total work: {wall / plain_fp:.1f}x; critical path "
        f"(sites in parallel, hub + one site): {secure_path * ms:.1f} ms vs "
        f"{plain_path * ms:.1f} ms = {secure_path / plain_path:.1f}x. "
        f"Max abs error vs numpy: {err:.2e} (resolution 1e-9).",
        "",
    ]


def bench_scale(length: int, sizes: list[int]) -> list[str]:
    lines = [f"### One aggregation of a {length:,}-element vector, in process", "",
             "| sites | threshold t | degree k | share threshold | wall (s) | hub (s) | "
             "per site (ms) |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n in sizes:
        t = (2 * n) // 3 + 1
        sites = TimedSites(n, length, threshold=t)
        session, _ = open_session(sites)
        wall, hub, per_site, result = one_secure_run(sites, session)
        expected = np.sum([v["x"] for v in sites.values.values()], axis=0)
        assert np.allclose(result, expected, atol=n * 1e-9)
        k = sites.manifest.degree_for(n)
        lines.append(f"| {n} | {t} | {k}{' (complete)' if k == n - 1 else ''} | "
                     f"{sites.manifest.share_threshold_for(n)} | {wall:.2f} | {hub:.2f} | "
                     f"{per_site * 1e3:.1f} |")
        del sites
    return [*lines, ""]


def bench_flower(length: int, repeats: int) -> list[str]:
    try:
        from flwr.common.secure_aggregation.quantization import quantize
        from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    except ImportError:  # pragma: no cover - flwr is a dependency, but keep the bench usable
        return ["(flwr not installed: Flower comparison skipped)", ""]
    n = 10
    rng = np.random.default_rng(0)
    vec = [rng.uniform(-1, 1, length)]
    mod_range = 2**32
    dims: list[tuple[int, ...]] = [(length,)]

    def flower_site() -> None:
        q = quantize(vec, 1.0, 2**22)
        masked: np.ndarray = q[0].astype(np.int64)
        masked = masked + pseudo_rand_gen(os.urandom(32), mod_range, dims)[0]
        for _ in range(n - 1):
            masked = masked + pseudo_rand_gen(os.urandom(32), mod_range, dims)[0]
        np.mod(masked, mod_range)

    def flower_hub() -> None:
        total: np.ndarray = np.zeros(length, dtype=np.int64)
        for _ in range(n):
            total -= pseudo_rand_gen(os.urandom(32), mod_range, dims)[0]
        np.mod(total, mod_range)

    site = median_time(flower_site, repeats)
    hub = median_time(flower_hub, repeats)
    from hemafed.secure import crypto

    def ours_site_masks() -> None:
        y = np.zeros(length, dtype=np.uint64)
        for _ in range(n):
            y += crypto.mask(os.urandom(32), length)

    ours = median_time(ours_site_masks, repeats)
    return [
        f"### Masking work only, {length:,} elements, {n} sites: Flower SecAgg+ primitives "
        "vs hemafed",
        "",
        "| what | time per site (ms) |",
        "| --- | ---: |",
        f"| Flower: quantize + self mask + {n - 1} pairwise masks (`pseudo_rand_gen`, numpy "
        f"RandomState seeded with 32 bits) | {site * 1e3:.1f} |",
        f"| Flower: hub regenerating {n} self masks | {hub * 1e3:.1f} |",
        f"| hemafed: {n} masks from the AES-256-CTR keystream, uint64 | {ours * 1e3:.1f} |",
        "",
        "Flower's figures exclude its key agreement, Shamir sharing and Fernet encryption; the "
        "full Flower workflow (a Flower simulation run) was not timed here.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 86, 300])
    args = parser.parse_args()
    lines = ["## Secure aggregation benchmark", "",
             f"Machine: {os.cpu_count()} cores; numpy {np.__version__}.", ""]
    lines += bench_cost(args.length, args.repeats)
    lines += bench_scale(args.length, args.sizes)
    lines += bench_flower(args.length, args.repeats)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
