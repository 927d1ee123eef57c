"""A sample hospital export (made-up patients) with the mapping and panels that import it.

``hemafed samples DIR`` copies the files; docs/operator-guide.md walks through importing them:
``export.csv`` (the patient table as a hospital might export it), ``mutations.csv`` (one row per
variant), ``mapping.yaml`` (site columns -> canonical fields, units converted) and
``study.yaml`` (a study specification to validate and approve).
"""

from __future__ import annotations

from pathlib import Path

FILES = ("export.csv", "mutations.csv", "mapping.yaml", "study.yaml")
HERE = Path(__file__).resolve().parent
