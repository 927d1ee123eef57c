"""Self-contained HTML reports: tables, plots inline (base64 PNG), provenance of each analysis."""

from hemafed.report.html import Report, Section

__all__ = ["Report", "Section"]
