"""A site's catalogue entry: disease areas, cohort sizes rounded and suppressed, fields held.

Computed at the site from its own cohort, with the site's minimum cell size: a count under it is
published as ``None`` (suppressed), any other count rounded to the nearest ``ROUND_TO``. The site
officer sees the entry in the console and publishes it to the hub by an explicit action, which
the site's audit log records. (A per-site count cannot be a secure sum over sites: it is a
release the site chooses to make, under its own disclosure rule.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hemafed.site.store import load_cohort, load_policy

ROUND_TO = 10


def rounded(n: int, min_cell: int) -> int | None:
    if n < min_cell:
        return None
    return max(ROUND_TO, (n + ROUND_TO // 2) // ROUND_TO * ROUND_TO)  # half up


def catalogue_entry(site_dir: str | Path) -> dict[str, Any]:
    """What this site would publish (no patient-level value, no exact count)."""
    policy = load_policy(site_dir)
    patients = load_cohort(site_dir).patients
    diseases = patients["disease"].astype(str).value_counts() if "disease" in patients else {}
    fields = sorted(c for c in patients.columns if c != "patient_id"
                    and patients[c].notna().sum() >= policy.min_cell_size)
    return {"diseases": {str(d): rounded(int(n), policy.min_cell_size)
                         for d, n in dict(diseases).items()},
            "patients": rounded(len(patients), policy.min_cell_size),
            "fields": fields, "rounded_to": ROUND_TO, "min_cell": policy.min_cell_size}
