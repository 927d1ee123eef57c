"""Federated Cox on the real MDS cohort over few and many sites: which side is off, and by how much.

docs/benchmarks.md once reported 5.1e-7 (10 sites) and 3.4e-6 (86 sites) as the largest relative
coefficient difference to pooled lifelines. This script rebuilds the sites, covariates and
reference exactly as ``benchmarks/bench_federation.py`` does, but sums in process: plainly
(``LocalSumFederation``) and through the fixed-point encoding secure aggregation sums (the
declared resolutions, :class:`hemafed.secure.encoding.FixedPointLayout`, masks aside). It
compares both with lifelines at the benchmark's ``precision=1e-10``, with lifelines run to
convergence, and with statsmodels ``PHReg``, and reports how far lifelines' own answer is from
the optimum, in standard errors (one Newton step, from our pooled derivatives at its point).

    .venv/bin/python benchmarks/bench_cox_sites.py --data ../shared/data/mds-ipssm-cohort \
        --sites 10 86
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_federation import FORMULA

CONVERGED = {"precision": 1e-14, "r_precision": 1e-15}
"""lifelines run to convergence (it returns the point before its last step; see test_cox)."""


class FixedPointFederation:
    """Sites' query results encoded as secure aggregation encodes them, summed, decoded."""

    def __init__(self, cohorts: Mapping[str, Any]) -> None:
        from hemafed.federation.local import LocalSumFederation

        self._sites = {name: LocalSumFederation([c]) for name, c in cohorts.items()}
        self.resolutions: dict[str, float] = {}

    @property
    def site_ids(self) -> tuple[str, ...]:
        return tuple(self._sites)

    def secure_sum(self, query: str, params: Mapping[str, Any], *, study: str = "default",
                   dp: Any = None) -> Any:
        from hemafed.federation.api import AggregateResult
        from hemafed.federation.queries import get_query
        from hemafed.secure.encoding import FixedPointLayout

        specs = get_query(query).declare(params)
        layout = FixedPointLayout.from_specs(specs, len(self._sites))
        total = np.zeros(layout.size, dtype=np.uint64)
        for fed in self._sites.values():
            total += layout.encode(fed.secure_sum(query, params, study=study).values)
        if query == "cox_risk_set_sums":
            self.resolutions = {k: s.resolution for k, s in specs.items() if not s.is_count}
        return AggregateResult(layout.decode_sum(total, len(self._sites)), self.site_ids,
                               round_trips=1, seconds=0.0)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/mds-ipssm-cohort"))
    ap.add_argument("--sites", type=int, nargs="+", default=[10, 86])
    args = ap.parse_args()

    from lifelines import CoxPHFitter
    from statsmodels.duration.hazard_regression import PHReg

    from hemafed.analytics.cox import FederatedCoxPH
    from hemafed.analytics.pooled import pooled_design as _design
    from hemafed.demo import demo_cohorts
    from hemafed.federation.local import LocalSumFederation

    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"command: {' '.join(sys.argv)}\n")
    print("| sites | rows | events | Newton rounds plain / fixed point | fed vs lifelines 1e-10 "
          "| fed vs lifelines converged | fed vs statsmodels | fixed point vs converged "
          "| lifelines 1e-10 short by (SE) | worst covariate: coef, coef/SE | s2 resolution "
          "| s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n_sites in args.sites:
        t0 = time.perf_counter()
        cohorts = demo_cohorts("MDS", 0, n_sites, 7, real=args.data)
        plain = FederatedCoxPH().fit(LocalSumFederation(cohorts), "os_time", "os_status",
                                     FORMULA, concordance=False)
        plain_rounds = plain.rounds
        fpf = FixedPointFederation(cohorts)
        fixed = FederatedCoxPH().fit(fpf, "os_time", "os_status", FORMULA, concordance=False)
        x, names, extra = _design(list(cohorts.values()), FORMULA, ["os_time", "os_status"])
        frame = pd.DataFrame(x, columns=names)
        frame["T"] = extra["os_time"].astype(float).to_numpy()
        frame["E"] = extra["os_status"].astype(float).to_numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bench = CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-10})
            conv = CoxPHFitter().fit(frame, "T", "E", fit_options=CONVERGED)
            sm = PHReg(frame["T"].to_numpy(), frame[names].to_numpy(),
                       status=frame["E"].to_numpy(), ties="efron").fit()
        fed_b, ref_b = plain.params_.to_numpy(), conv.params_.to_numpy()
        # lifelines' remaining Newton step at its answer, from our pooled derivatives there
        # (one more evaluation through the fitted object, after its rounds were read)
        _, grad, hess, _ = plain._derivatives(bench.params_.to_numpy())
        short = np.linalg.solve(-hess, grad) / conv.standard_errors_.to_numpy()
        j = int(np.argmax(np.abs(fed_b - bench.params_.to_numpy()) / np.abs(bench.params_)))
        z = ref_b[j] / conv.standard_errors_.to_numpy()[j]
        print(f"| {n_sites} | {len(frame)} | {int(frame['E'].sum())} "
              f"| {plain_rounds} / {fixed.rounds} "
              f"| {_rel(fed_b, bench.params_.to_numpy()):.1e} | {_rel(fed_b, ref_b):.1e} "
              f"| {_rel(fed_b, np.asarray(sm.params)):.1e} "
              f"| {_rel(fixed.params_.to_numpy(), ref_b):.1e} "
              f"| {np.max(np.abs(short)):.1e} | {names[j]}: {ref_b[j]:.2e}, {z:.2f} "
              f"| {fpf.resolutions.get('s2', float('nan')):.1e} "
              f"| {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
