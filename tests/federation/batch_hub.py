"""A hub main for the batched-step tests, importable by Flower's processes (``module:function``).

:func:`batch_hub` sends two statistics one at a time and then as one batch, then fits a Cox
model (whose last Newton round carries the concordance), counting the exchanges of each step.
It returns plain JSON (lists of floats), so a simulation run and an in-process run of it can be
compared exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hemafed.federation.runtime import SecureFederation
from hemafed.federation.transport import Exchange
from hemafed.secure.identity import FederationManifest

FORMULA = ["age", "hb", "bm_blast"]
STUDY = "batch-sim-test"
SPEC = {"study_id": STUDY, "requester": "tester", "analyses": [
    {"id": "cox", "kind": "cox", "duration": "os_time", "event": "os_status",
     "formula": " + ".join(FORMULA)}]}
GRID = {"duration_col": "os_time", "event_col": "os_status", "steps_per_unit": 365.25,
        "max_time": 60.0}
PARTS: list[Any] = [("time_histogram", GRID, None), ("cohort_size", {}, None)]


def _plain(values: dict[str, Any]) -> dict[str, list[float]]:
    return {k: np.asarray(v, dtype=float).ravel().tolist() for k, v in sorted(values.items())}


def batch_hub(exchange: Exchange, site_ids: list[str], config: dict[str, Any]) -> Any:
    """``config``: ``manifest`` (JSON text) and ``spec_sha256`` of the approved :data:`SPEC`."""
    from hemafed.analytics.cox import FederatedCoxPH

    count = 0

    def counted(messages: dict[str, bytes]) -> dict[str, bytes]:
        nonlocal count
        count += 1
        return exchange(messages)

    secure = SecureFederation(counted, FederationManifest.from_json(config["manifest"]),
                              site_ids=site_ids, spec_sha256=config["spec_sha256"],
                              requester="tester")
    alone = [secure.secure_sum(q, p, study=STUDY) for q, p, _ in PARTS]
    before = count
    batch = secure.secure_sums(PARTS, study=STUDY)
    batch_exchanges = count - before
    before = count
    cph = FederatedCoxPH().fit(secure, "os_time", "os_status", " + ".join(FORMULA), study=STUDY)
    assert cph.params_ is not None
    return {"sites": list(batch[0].sites),
            "alone": [_plain(r.values) for r in alone],
            "batch": [_plain(r.values) for r in batch],
            "batch_round_trips": [r.round_trips for r in batch],
            "batch_exchanges": batch_exchanges,
            "cox_params": cph.params_.to_numpy().tolist(),
            "cox_concordance": float(cph.concordance_index_),
            "cox_rounds": cph.rounds, "cox_exchanges": count - before,
            "exchanges": count}
