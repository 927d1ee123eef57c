"""Shared helpers of the service browser tests: the headless Chromium to drive
(:data:`CHROMIUM`, :data:`FLAGS`), a uvicorn server on 127.0.0.1 in a thread (:class:`Server`)
and the login form (:func:`_login`)."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import uvicorn
from hubkit import PASSWORD, free_port

__all__ = ["CHROMIUM", "FLAGS", "Server", "_login"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


class Server:
    """A uvicorn server on 127.0.0.1 in a thread of this process, stopped on exit."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _login(page: Any, url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
