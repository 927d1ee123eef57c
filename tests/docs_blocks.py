"""Extract the runnable code blocks of a Markdown page, in order (shared by the docs tests)."""

from __future__ import annotations

import re
from pathlib import Path

SKIP = "<!-- not run by the test"
_FENCE = re.compile(r"^```(\w+)\s*\n(.*?)^```\s*$", re.S | re.M)


def code_blocks(path: Path, languages: tuple[str, ...] = ("bash", "python")) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block not preceded by a skip marker."""
    text = path.read_text(encoding="utf-8")
    out = []
    for match in _FENCE.finditer(text):
        before = text[:match.start()].rstrip().splitlines()
        if before and before[-1].startswith(SKIP):
            continue
        if match.group(1) in languages:
            out.append((match.group(1), match.group(2)))
    return out
