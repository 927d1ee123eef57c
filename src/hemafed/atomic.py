"""Atomic file writes: a file is either fully written or not changed at all.

Writes go to a temporary file in the same directory, are flushed and fsynced, then renamed over
the target (``os.replace`` is atomic on POSIX), so a crash or an error never leaves half a file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def create_bytes(target: str | os.PathLike[str], data: bytes) -> bool:
    """Atomically create ``target`` holding ``data`` unless it exists (then change nothing).

    The file appears complete or not at all, with mode 0600 from the start (a ``mkstemp``
    file), and two concurrent callers cannot both create it: the fsynced temporary file is
    hard-linked to ``target``, which fails if ``target`` exists. Returns whether this call
    created it."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Atomically write ``text`` to ``target``."""
    write_bytes(target, text.encode(encoding))


def write_with(target: str | os.PathLike[str], writer: Callable[[IO[bytes]], None]) -> None:
    """Atomically write ``target`` through ``writer(binary_file)``."""
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        writer(fh)
