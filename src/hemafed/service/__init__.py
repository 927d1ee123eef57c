"""The network as a service: the hub service, researcher portal, site console and Python client.

``hemafed hub serve`` runs :func:`hemafed.service.serve.serve_hub`; ``hemafed site console DIR``
runs :func:`hemafed.service.serve.serve_console`; :class:`Client` talks to a hub from Python.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":  # lazily: importing the package must not pull in httpx
        from hemafed.service.client import Client

        return Client
    raise AttributeError(name)
