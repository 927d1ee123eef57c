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
