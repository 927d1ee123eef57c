"""Shared helper of the site tests: a digest of a directory tree, to show that a refused
intake left the site exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["tree_digest"]


def tree_digest(root: Path) -> str:
    """SHA-256 over every path, mode and content under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        h.update(oct(p.stat().st_mode).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()
