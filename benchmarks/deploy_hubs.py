"""Hub protocols the deployment benchmarks run in the ServerApp (importable from benchmarks/)."""

from __future__ import annotations

import time
from typing import Any

from hemafed.federation.runtime import SecureFederation
from hemafed.federation.transport import Exchange
from hemafed.secure import FederationManifest
from hemafed.study.spec import StudySpec


def secure_sums_hub(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
    """``config['sums']`` secure sums of ``cohort_size``; the seconds of each (after set-up)."""
    spec = StudySpec.from_mapping(config["spec"])
    fed = SecureFederation(exchange, FederationManifest.from_json(config["manifest"]),
                           site_ids=site_ids, spec_sha256=spec.sha256, requester=spec.requester)
    seconds, n = [], 0.0
    for _ in range(int(config["sums"])):
        start = time.perf_counter()
        n = float(fed.secure_sum("cohort_size", {}, study=spec.study_id)["n"][0])
        seconds.append(time.perf_counter() - start)
    return {"seconds": seconds, "n": n}


def scale_hub(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
    """``config['sums']`` timed secure sums of ``cohort_size``, then (``config['cox']``) one Cox
    fit of ``config['formula']``: seconds, exchanges and their seconds, sites covered."""
    from hemafed.analytics.cox import FederatedCoxPH

    spec = StudySpec.from_mapping(config["spec"])
    stamps: list[float] = []

    def timed(messages: dict[str, bytes]) -> dict[str, bytes]:
        start = time.perf_counter()
        try:
            return exchange(messages)
        finally:
            stamps.append(time.perf_counter() - start)

    fed = SecureFederation(timed, FederationManifest.from_json(config["manifest"]),
                           site_ids=site_ids, spec_sha256=spec.sha256, requester=spec.requester)
    out: dict[str, Any] = {"sites": len(site_ids), "sums": []}
    for _ in range(int(config["sums"])):
        before, start = len(stamps), time.perf_counter()
        res = fed.secure_sum("cohort_size", {}, study=spec.study_id)
        out["sums"].append({"seconds": time.perf_counter() - start,
                            "exchanges": len(stamps) - before, "n": float(res["n"][0]),
                            "covered": len(res.sites)})
    if config.get("cox"):
        before, start = len(stamps), time.perf_counter()
        cph = FederatedCoxPH().fit(fed, "os_time", "os_status", config["formula"],
                                   study=spec.study_id)
        out["cox"] = {"seconds": time.perf_counter() - start, "exchanges": len(stamps) - before,
                      "exchange seconds": stamps[before:], "newton rounds": cph.rounds,
                      "coef": [float(v) for v in cph.params_], "n": cph.n_,
                      "concordance": cph.concordance_index_,
                      "covered": list(fed.contributors or ())}
    return out
