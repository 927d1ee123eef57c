"""Self-contained HTML explanation of one patient's score: a waterfall of the contributions
(inline SVG, no external files) and the plain-language reason. Rule-based scores show the rule.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np

from hemafed.atomic import write_text
from hemafed.scores.result import ScoreResult

_W, _ROW, _LEFT = 640, 22, 170


def waterfall_svg(terms: dict[str, float]) -> str:
    """A horizontal waterfall: each bar starts where the running sum of the previous ones ended."""
    items = [(k, v) for k, v in terms.items() if isinstance(v, float | int) and math.isfinite(v)]
    if not items:
        return "<p>No numeric contributions.</p>"
    cum = np.concatenate([[0.0], np.cumsum([v for _, v in items])])
    lo, hi = min(cum.min(), 0.0), max(cum.max(), 0.0)
    span = (hi - lo) or 1.0
    scale = (_W - _LEFT - 20) / span

    def x(v: float) -> float:
        return _LEFT + (v - lo) * scale

    rows = []
    for i, (name, v) in enumerate(items):
        y = 10 + i * _ROW
        a, b = sorted((cum[i], cum[i + 1]))
        colour = "#c0392b" if v > 0 else "#2874a6"
        rows.append(f'<text x="{_LEFT - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
                    f"{html.escape(name)}</text>"
                    f'<rect x="{x(a):.1f}" y="{y}" width="{max((b - a) * scale, 1):.1f}" '
                    f'height="{_ROW - 6}" fill="{colour}"><title>{v:+.3f}</title></rect>'
                    f'<text x="{x(b) + 4:.1f}" y="{y + 14}" font-size="11">{v:+.2f}</text>')
    height = 20 + len(items) * _ROW
    zero = f'<line x1="{x(0):.1f}" y1="0" x2="{x(0):.1f}" y2="{height}" stroke="#555"/>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W + 40}" height="{height}" '
            f'role="img" aria-label="contributions">{zero}{"".join(rows)}</svg>')


def patient_html(result: ScoreResult, patient_id: str) -> str:
    """The HTML page of one patient."""
    v = result.values.loc[patient_id]
    c = result.contributions.loc[patient_id]
    reason = str(result.reasons.loc[patient_id, "reason"])
    numeric = {str(k): float(val) for k, val in c.items()
               if isinstance(val, float | int | np.floating | np.integer)}
    body = waterfall_svg(numeric) if numeric else "".join(
        f"<p>Rule: <b>{html.escape(str(val))}</b> ({html.escape(str(k))})</p>" for k, val in
        c.items())
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(val))}</td></tr>"
                   for k, val in v.items())
    title = f"{result.score} - patient {patient_id}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif;margin:2em}th{text-align:left;"
            f"padding-right:1em}}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(reason)}</p>{body}<table>{rows}</table></body></html>")


def write_html(result: ScoreResult, folder: str | Path) -> list[Path]:
    """Write one HTML file per patient into ``folder`` (atomically); returns the paths."""
    folder = Path(folder)
    out = []
    for pid in result.values.index:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(pid))
        path = folder / f"{result.score}_{safe}.html"
        write_text(path, patient_html(result, str(pid)))
        out.append(path)
    return out
