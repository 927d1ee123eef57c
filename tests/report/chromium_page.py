"""Shared helpers of the report browser tests: a report opened in a real headless Chromium
(:func:`report_page`) and the script measuring how far each table overflows its card
(:data:`OVERFLOW_JS`)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM", "FLAGS", "OVERFLOW_JS", "report_page"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def report_page(report: Path, width: int, media: str = "screen") -> Iterator[Any]:
    """The report opened in headless Chromium (skips when Chromium or playwright is absent)."""
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian package 'chromium'); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.emulate_media(media=media)
            page.goto(report.as_uri())
            yield page
        finally:
            browser.close()


OVERFLOW_JS = """() => Array.from(document.querySelectorAll('div[data-kind="table"] table')).map(t => {
  const card = t.closest('section');
  const tr = t.getBoundingClientRect(), cr = card.getBoundingClientRect();
  const style = getComputedStyle(card);
  const inner = cr.right - parseFloat(style.paddingRight);
  return {over: Math.max(t.scrollWidth - t.clientWidth, tr.right - inner),
          caption: (t.parentElement.querySelector('p.note') || {}).textContent || ''};
})"""
