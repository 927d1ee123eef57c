"""Build one self-contained HTML report (no external assets: opens offline, can be e-mailed).

A report is a list of sections; each holds text, key-value provenance (rounds, sites, epsilon
charged), tables (pandas DataFrames) and figures (matplotlib, embedded as base64 PNG).

>>> r = Report("Demo")
>>> s = r.section("Cohort")
>>> s.text("Ten virtual hospitals.")
>>> "<h2" in r.render()
True
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from hemafed import __version__
from hemafed.atomic import write_text

_TEMPLATE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title|e }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1f2933;background:#f7f8fa}
header{background:#7b1e2b;color:#fff;padding:1.2rem 2rem}
header h1{margin:0;font-size:1.6rem} header p{margin:.3rem 0 0;opacity:.85}
nav{padding:.6rem 2rem;background:#fff;border-bottom:1px solid #e3e6ea;font-size:.9rem}
nav a{margin-right:1rem;color:#7b1e2b;text-decoration:none}
main{max-width:1100px;margin:0 auto;padding:1rem 2rem 3rem}
section{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:1rem 1.4rem;margin:1.2rem 0}
h2{margin-top:0;color:#7b1e2b;font-size:1.25rem}
div.table{max-width:100%;margin:.6rem 0}
table{border-collapse:collapse;font-size:.85rem;margin:0;width:auto;max-width:100%;table-layout:auto}
th,td{border-bottom:1px solid #e3e6ea;padding:.3rem .55rem;text-align:right;vertical-align:top}
td{white-space:nowrap} th{white-space:normal;background:#f1f3f5}
td:first-child,th:first-child{text-align:left;white-space:normal}
table.left2 td:nth-child(2),table.left2 th:nth-child(2){text-align:left}
table.metrics th{text-align:left} table.metrics td:nth-child(2){text-align:right}
table.metrics td{white-space:normal;overflow-wrap:anywhere}
table.metrics td:last-child{text-align:left;color:#52606d;max-width:34rem}
table.metrics td:nth-child(2){font-weight:600}
dl.prov{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;font-size:.85rem;
background:#f7f8fa;padding:.6rem .9rem;border-radius:6px}
dl.prov dt{font-weight:600} dl.prov dd{margin:0;overflow-wrap:anywhere}
p.summary{background:#eef4fb;border-left:4px solid #0072b2;padding:.6rem .9rem;border-radius:4px;
font-size:.95rem;line-height:1.45}
figure{margin:.8rem 0} figure img{max-width:100%;height:auto} figcaption{font-size:.85rem;color:#52606d}
.note{font-size:.85rem;color:#52606d}
.ok{color:#1b7f3b;font-weight:600} .warn{color:#b54708;font-weight:600}
@page{size:A4;margin:14mm}
@media print{body{background:#fff;font-size:10pt} nav{display:none} header{padding:.4rem 0;
background:#fff;color:#7b1e2b} main{max-width:none;padding:0}
section{border:none;padding:0;margin:0 0 6mm;break-inside:auto} h2{break-after:avoid}
table{font-size:8pt} th,td{padding:.15rem .35rem} figure{break-inside:avoid}
table.left2 td:nth-child(2),table.left2 th:nth-child(2){text-align:left}
table.metrics th{text-align:left} table.metrics td:nth-child(2){text-align:right}
table.metrics td:last-child{max-width:none} p.summary{border-left-color:#0072b2}}
</style></head><body>
<header><h1>{{ title|e }}</h1><p>{{ subtitle|e }}</p></header>
<nav>{% for s in sections %}<a href="#{{ s.anchor }}">{{ s.title|e }}</a>{% endfor %}</nav>
<main>
{% for s in sections %}<section id="{{ s.anchor }}" data-section="{{ s.anchor }}">
<h2>{{ s.title|e }}</h2>
{% for block in s.blocks %}{{ block }}
{% endfor %}</section>
{% endfor %}
<p class="note">hemafed {{ version }} &middot; generated {{ generated }}</p>
</main></body></html>
"""
)


@dataclass
class Section:
    """One section of a report; blocks are HTML fragments added in order."""

    title: str
    anchor: str
    blocks: list[str] = field(default_factory=list)

    def text(self, text: str, css: str = "") -> None:
        cls = f' class="{css}"' if css else ""
        self.blocks.append(f"<p{cls}>{html.escape(text)}</p>")

    def summary(self, text: str) -> None:
        """A short plain-language summary, shown first in the section."""
        self.blocks.insert(0, f'<p class="summary" data-kind="summary">{html.escape(text)}</p>')

    def metrics(self, rows: list[tuple[str, str, str]], caption: str = "") -> None:
        """A table of (metric, value, what it means) rows."""
        body = "".join(f"<tr><td>{html.escape(m)}</td><td>{html.escape(v)}</td>"
                       f"<td>{html.escape(e)}</td></tr>" for m, v, e in rows)
        cap = f'<p class="note">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(f'<div class="table" data-kind="table"><table class="metrics">'
                           f"<thead><tr><th>Measure</th><th>Value</th><th>What it means</th>"
                           f"</tr></thead><tbody>{body}</tbody></table>{cap}</div>")

    def provenance(self, items: dict[str, Any]) -> None:
        """How the result was computed: rounds, sites, secure aggregation, epsilon charged..."""
        rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>"
                       for k, v in items.items())
        self.blocks.append(f'<dl class="prov">{rows}</dl>')

    def table(self, frame: pd.DataFrame, caption: str = "", float_format: str = "{:.4g}",
              index: bool = True, left: int = 1) -> None:
        """A table; its first ``left`` columns (labels) are left-aligned, the rest (numbers) right."""
        body = frame.to_html(index=index, na_rep="–", border=0, classes=["data", f"left{left}"],
                             float_format=lambda v: float_format.format(v))
        cap = f'<p class="note">{html.escape(caption)}</p>' if caption else ""
        self.blocks.append(f'<div class="table" data-kind="table">{body}{cap}</div>')

    def figure(self, fig: Any, caption: str = "") -> None:
        """Embed a matplotlib figure as a base64 PNG (and close it)."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        alt = html.escape(caption or self.title)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(f'<figure data-kind="plot"><img alt="{alt}" '
                           f'src="data:image/png;base64,{data}">{cap}</figure>')


@dataclass
class Report:
    """An HTML report under construction."""

    title: str
    subtitle: str = ""
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        anchor = "s" + str(len(self.sections) + 1)
        s = Section(title, anchor)
        self.sections.append(s)
        return s

    def render(self) -> str:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return _TEMPLATE.render(title=self.title, subtitle=self.subtitle, sections=self.sections,
                                version=__version__, generated=now)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        write_text(path, self.render())
        return path
