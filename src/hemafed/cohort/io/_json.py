"""Reading JSON documents with messages that say where a file is broken (and if it looks cut off)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hemafed.errors import InvalidInput


def looks_truncated(text: str) -> bool:
    """True when more brackets are opened than closed, or the error is at the very end."""
    opened = text.count("{") + text.count("[")
    closed = text.count("}") + text.count("]")
    return opened > closed


def load_json(path: Path) -> Any:
    """Parse ``path``; ``InvalidInput`` names the file, line, column and a truncation hint."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "; the file looks truncated (an incomplete copy or download?)" \
            if looks_truncated(text) or exc.pos >= len(text.rstrip()) else ""
        raise InvalidInput(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: "
                           f"{exc.msg}{hint}") from exc
