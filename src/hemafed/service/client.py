"""``Client(url, token)``: the hub service from Python (a notebook, a script), shaped like the local API.

>>> client = Client("http://127.0.0.1:8700", token)             # doctest: +SKIP
>>> study = client.submit(Path("study.yaml").read_text())        # doctest: +SKIP
>>> results = client.wait(client.run(study["id"])["id"])         # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from hemafed.errors import HemafedError, InvalidInput
from hemafed.service.registered import RegisteredModel
from hemafed.study.runner import frame_from_json

TERMINAL = ("succeeded", "failed", "interrupted")


class ServiceError(HemafedError):
    """The hub refused a request (the message is the hub's)."""


class Client:
    """A hub service client authenticated with an API token (``POST /api/login`` issues one)."""

    def __init__(self, url: str, token: str, *, http: httpx.Client | None = None,
                 timeout: float = 60.0) -> None:
        self.http = http or httpx.Client(base_url=url.rstrip("/"), timeout=timeout)
        self.http.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def login(cls, url: str, username: str, password: str, **kw: Any) -> Client:
        r = httpx.post(url.rstrip("/") + "/api/login",
                       json={"username": username, "password": password}, timeout=60)
        if r.status_code != 200:
            raise ServiceError(f"login refused ({r.status_code}): {r.text}")
        return cls(url, r.json()["token"], **kw)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                message = r.json().get("error", r.text)
            except ValueError:
                message = r.text
            if r.status_code == 400:
                raise InvalidInput(f"{path}: {message}")
            raise ServiceError(f"{path} ({r.status_code}): {message}")
        return r.json()

    def submit(self, spec_yaml: str) -> dict[str, Any]:
        """Submit a study spec (YAML text); returns the study with its hash and approvals."""
        return dict(self._call("POST", "/api/studies", json={"spec_yaml": spec_yaml}))

    def amend(self, study: int, spec_yaml: str, note: str = "") -> dict[str, Any]:
        return dict(self._call("POST", f"/api/studies/{study}/amend",
                               json={"spec_yaml": spec_yaml, "note": note}))

    def study(self, study: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/studies/{study}"))

    def catalogue(self) -> dict[str, Any]:
        """The network catalogue: each site's released counts (or none), the network totals."""
        return dict(self._call("GET", "/api/catalogue"))

    def studies(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/studies"))

    def run(self, study: int) -> dict[str, Any]:
        """Start a run (every site must have approved the current version)."""
        return dict(self._call("POST", f"/api/studies/{study}/runs"))

    def status(self, run: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/runs/{run}"))

    def wait(self, run: int, timeout: float = 3600.0, poll: float = 0.5) -> dict[str, Any]:
        """Wait for the run to end; its results document, or ``ServiceError`` with the reason."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.status(run)
            if state["state"] in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise ServiceError(f"run {run} still {state['state']} after {timeout:.0f} s")
            time.sleep(poll)
        if state["state"] != "succeeded":
            raise ServiceError(f"run {run} {state['state']}: {state.get('error')}")
        return self.results(run)

    def results(self, run: int) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/runs/{run}/results.json"))

    def table(self, run: int, analysis: str, table: str = "summary") -> Any:
        """One result table as a DataFrame (e.g. the Cox ``summary``)."""
        for doc in self.results(run)["analyses"]:
            if doc["id"] == analysis:
                return frame_from_json(doc["tables"][table])
        raise InvalidInput(f"run {run} has no analysis {analysis!r}")

    def models(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/models"))

    def model(self, name: str, version: int) -> RegisteredModel:
        """A registered model by name and version: coefficients, lineage, linear predictor
        (``.to_dict()`` is the stored document)."""
        return RegisteredModel.from_document(self._call("GET", f"/api/models/{name}/{version}"))
