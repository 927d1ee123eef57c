"""Flower simulation transport: N virtual sites on this machine through Flower's Simulation Runtime.

``run_in_simulation`` builds a ServerApp (hub) and a ClientApp (sites) and runs them with
``flwr.simulation.run_simulation``. Virtual SuperNode ``partition-id`` *i* is ``sites[i]``;
the site list and the handler factory name are captured in the ClientApp object that the
backend (Ray by default) ships to its workers, so the factory must be importable there (an
installed package, not a test file). The ServerApp runs in a thread of this process and hands
the result back through a closure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from hemafed.errors import ProtocolError
from hemafed.federation.flower.apps import make_client_app, make_server_app
from hemafed.federation.transport import (
    HubMain,
    check_sites,
    load_handler_factory,
    load_hub_main,
    normalise_result,
)

log = logging.getLogger(__name__)


def run_in_simulation(hub_main: HubMain | str, handler_factory: str,
                      sites: Sequence[Mapping[str, Any]], config: Mapping[str, Any], *,
                      timeout: float = 30.0, connect_timeout: float = 60.0,
                      backend: str = "ray", num_cpus: int = 2, client_cpus: float = 0.2,
                      stats: dict[str, Any] | None = None) -> Any:
    """Run ``hub_main`` against ``sites`` in Flower's simulation runtime; return its result.

    ``handler_factory`` is a ``"module:function"`` string (it is imported in the backend's
    workers). ``timeout`` bounds each exchange; sites that answer later are dropped.
    ``num_cpus`` is what Ray may use, ``client_cpus`` what one virtual site reserves (so
    ``num_cpus / client_cpus`` sites run at once). If ``stats`` is a dict it receives
    ``exchange_seconds`` (wall time of each exchange).
    """
    from flwr.simulation import run_simulation  # heavy import, only when simulating

    hub = load_hub_main(hub_main) if isinstance(hub_main, str) else hub_main
    load_handler_factory(handler_factory)  # fail here, not in a worker, if the name is wrong
    checked = check_sites(sites)
    sink: dict[str, Any] = {}
    server = make_server_app(hub, dict(config), sink, expected=len(checked), timeout=timeout,
                             connect_timeout=connect_timeout)
    client = make_client_app(sites=checked, handler_factory=handler_factory)
    backend_config: dict[str, Any] = {"client_resources": {"num_cpus": client_cpus,
                                                           "num_gpus": 0.0}}
    if backend == "ray":
        backend_config["init_args"] = {"num_cpus": num_cpus, "num_gpus": 0,
                                       "logging_level": logging.WARNING, "log_to_driver": False}
    run_simulation(server_app=server, client_app=client, num_supernodes=len(checked),
                   backend_name=backend, backend_config=backend_config)  # type: ignore[arg-type]
    if "result" not in sink:
        raise ProtocolError("the simulation ended without a hub result; see the Flower log")
    if stats is not None:
        stats["exchange_seconds"] = sink.get("exchange_seconds", [])
    return normalise_result(sink["result"])
