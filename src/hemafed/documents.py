"""Plain-JSON result documents: tables in pandas ``split`` orient, NaN as null.

What every hub step returns is plain JSON, so the same document comes back from Flower
simulation, a deployment's ServerApp or an in-process run. Shared by every layer's hub steps
(this module imports nothing else from hemafed).

>>> import pandas as pd
>>> frame_json(pd.DataFrame({"n": [1.0, float("nan")]}, index=["a", "b"]))["data"]
[[1.0], [None]]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["finite", "frame_from_json", "frame_json"]


def frame_json(frame: pd.DataFrame | pd.Series) -> dict[str, Any]:
    """A DataFrame as plain JSON (``split`` orient, NaN as null)."""
    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    clean = frame.astype(object).where(pd.notna(frame), None)
    return {"columns": [str(c) for c in clean.columns], "index": [_plain(i) for i in clean.index],
            "data": [[_plain(v) for v in row] for row in clean.to_numpy().tolist()]}


def frame_from_json(doc: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(doc["data"], index=doc["index"], columns=doc["columns"])


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return " / ".join(map(str, v))
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def finite(values: Any) -> list[float | None]:
    """Floats for JSON: NaN and infinities (e.g. an undefined confidence bound) become null."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float)]
